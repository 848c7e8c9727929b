"""In-process cluster nodes for tests: ``App(cluster=..., workers=0)`` apps in one loop.

Each node has its own listener and store connections, so what crosses between nodes
really crosses TCP and the store. :data:`FAST` shortens the membership periods.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import rio
from rio.cluster.node import ClusterNode

__all__ = ["FAST", "Nodes", "hosting", "node_launcher"]

#: Membership periods short enough for tests (a silent node is dead in well under 1 s).
FAST: dict[str, float] = {
    "probe_period": 0.1,
    "probe_timeout": 0.5,
    "refresh": 0.1,
    "heartbeat_period": 0.2,
    "suspicion_window": 5.0,
}

#: ``await nodes(n, **cluster_settings)``: n started nodes.
Nodes = Callable[..., Awaitable[list[ClusterNode]]]


@asynccontextmanager
async def node_launcher(
    name: str,
    default_actors: list[type[rio.Actor[Any]]],
    cluster_url: str,
    state_url: str,
    secret: str,
    **app_options: Any,
) -> AsyncIterator[Nodes]:
    """Yield ``start(n, actors=None, **settings)``; every node started is stopped after.

    ``settings`` override :data:`FAST` and the URL; ``app_options`` go to every App.
    """
    apps: list[rio.App] = []

    async def start(
        n: int, actors: list[type[rio.Actor[Any]]] | None = None, **settings: Any
    ) -> list[ClusterNode]:
        out = []
        for _ in range(n):
            cluster = rio.ClusterSettings(secret=secret, **{"url": cluster_url, **FAST, **settings})
            app = rio.App(
                name,
                actors=actors or default_actors,
                storage=state_url,
                workers=0,
                cluster=cluster,
                **app_options,
            )
            apps.append(app)
            system = await app.start()
            assert isinstance(system, ClusterNode)
            out.append(system)
        return out

    try:
        yield start
    finally:
        for app in reversed(apps):
            await app.stop()


def hosting(nodes: list[ClusterNode], key: tuple[str, str]) -> list[int]:
    """Indexes of the nodes where ``key`` is active."""
    return [i for i, n in enumerate(nodes) if key in n.runtime._acts]
