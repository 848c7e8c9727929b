"""Path ``cluster``: an external client calling objects on a node over TCP loopback.

``seq``, ``pipelined``, ``fanout`` and ``activate`` are the call suite of the other
paths, run by a :func:`rio.connect` client against one node (a separate process,
``workers=0``, membership in a SQLite file). ``hop`` is node-to-node: an object on
one node calls an object on another (the two nodes host different types, so every
call crosses), timed inside the calling node. ``pubsub-1`` and ``pubsub-100``: the
client calls a publisher on the node (1,000 calls in flight), each call publishes
one event, and 1 or 100 subscriptions in the client read them all (the node relays
each event once to the client, whose subscriptions share it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from loguru import logger

import rio
from rio.bench.core import Measurement, workload
from rio.bench.workloads import (
    BenchCounter,
    BenchPublisher,
    register_call_suite,
    register_pubsub,
    seq_calls,
)
from rio.cluster.store import cluster_store_from_url

__all__ = ["BenchHopper", "node_main"]

SECRET = "rio-bench-secret"
START_TIMEOUT_S = 60.0


class BenchHopper(rio.Actor[None], name="rio.bench.Hopper", idle_ttl=None):
    """Calls a counter on another node, sequentially, and times it."""

    async def run(self, target: str, n: int) -> list[float]:
        """``n`` awaited calls to ``BenchCounter(target)``; returns [seconds, *samples]."""
        ref = BenchCounter.ref(target)
        await ref.incr(0)
        m = await seq_calls(ref, n)
        return [m.seconds, *m.latencies]


def node_main(argv: list[str] | None = None) -> None:
    """A bench node: ``node_main([cluster_url, "Counter"|"Hopper"|"Publisher", label])``."""
    url, hosts, label = argv if argv is not None else sys.argv[1:4]
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    hosted: dict[str, type[rio.Actor]] = {  # type: ignore[type-arg]
        "Counter": BenchCounter,
        "Hopper": BenchHopper,
        "Publisher": BenchPublisher,
    }
    actors = [hosted[hosts]]
    app = rio.App(
        f"bench-node-{label}",
        storage="memory://",
        actors=actors,
        workers=0,
        cluster=rio.ClusterSettings(url=url, secret=SECRET, node=label),
    )
    app.run()


@contextlib.asynccontextmanager
async def _nodes(*hosts: str) -> AsyncIterator[rio.System]:
    """Start one node per entry of ``hosts`` and yield a client of the cluster."""
    with tempfile.TemporaryDirectory(prefix="rio-bench-cluster-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'cluster.db'}"
        store = cluster_store_from_url(url)  # there before the client looks for it
        await store.open()
        await store.close()
        root = str(Path(__file__).resolve().parents[2])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        }
        env.pop("RIO_WORKER_INDEX", None)
        code = "from rio.bench.cluster_workloads import node_main; node_main()"
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, url, h, f"{h.lower()}{i}", env=env
            )
            for i, h in enumerate(hosts)
        ]
        try:
            async with rio.connect(url, secret=SECRET) as client:
                deadline = time.monotonic() + START_TIMEOUT_S
                while len([m for m in client.members() if m.status == "active"]) < len(hosts):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the bench nodes did not become active")
                    await asyncio.sleep(0.05)
                    await client.view.refresh()
                yield client
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
            for p in procs:
                try:
                    async with asyncio.timeout(10):
                        await p.wait()
                except TimeoutError:
                    p.kill()
                    await p.wait()


register_call_suite(
    "cluster",
    lambda: _nodes("Counter"),
    {
        "seq": (20_000, 5_000),
        "pipelined": (100_000, 20_000),
        "fanout": (50_000, 10_000),
        "activate": (20_000, 5_000),
    },
    where="on a node reached over TCP by an external client",
)


@workload("cluster", "hop", n=20_000, quick_n=5_000)
async def cluster_hop(n: int) -> Measurement:
    """Node-to-node: an object on one node makes sequential calls to one on another."""
    async with _nodes("Counter", "Hopper") as client:
        out = await client.ref(BenchHopper, "h").with_timeout(600).run("target", n)
        return Measurement(n, out[0], out[1:])


register_pubsub(
    "cluster",
    lambda: _nodes("Publisher"),
    {"pubsub-1": (100_000, 20_000), "pubsub-100": (20_000, 5_000)},
    where="on a node, subscribed to by an external client over TCP",
)
