"""Durable reminders in a cluster of in-process nodes: every node polls, one takes each
firing, and a reminder keeps firing after the node that registered it died.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cluster.inproc import FAST, Nodes, node_launcher

import rio

SECRET = "test-secret"


class Firings:
    """Which runtime each firing ran in; wakes waiters on every firing."""

    def __init__(self) -> None:
        self.where: list[Any] = []
        self._changed = asyncio.Event()

    def add(self, runtime: Any) -> None:
        self.where.append(runtime)
        self._changed.set()

    async def wait(self, check: Callable[[], bool], within: float, what: str) -> None:
        try:
            async with asyncio.timeout(within):
                while not check():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"not within {within}s: {what}") from None


FIRINGS = Firings()


class CrClock(rio.Actor[None], idle_ttl=None):
    async def start(self, period: float) -> None:
        await self.register_reminder("tick", period, due=0)

    async def stop(self) -> bool:
        return await self.unregister_reminder("tick")

    async def receive_reminder(self, name: str) -> None:
        FIRINGS.add(self._rio_system)


class CrCount(msgspec.Struct):
    n: int = 0


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Nodes]:
    """``await nodes(n)``: n started nodes hosting CrClock, stopped at teardown."""
    async with node_launcher(
        "cr",
        [CrClock],
        f"sqlite:///{tmp_path}/cluster.db",
        f"sqlite:///{tmp_path}/state.db",
        SECRET,
        reminder_poll=0.05,
        default_timeout=2.0,  # a claim dies with its node for 3 s at most
        drain_timeout=2.0,
    ) as start:
        yield start


async def test_a_reminder_keeps_firing_after_its_node_dies(nodes: Nodes) -> None:
    a, b = await nodes(2)
    global FIRINGS
    FIRINGS = Firings()
    await a.ref(CrClock, "c").start(0.1)  # placed on a (prefer-local), registered there
    await FIRINGS.wait(lambda: FIRINGS.where.count(a.runtime) >= 3, 5.0, "3 firings on a")
    assert b.runtime not in FIRINGS.where  # both nodes poll, but the object lives on a
    # a dies: its poller, listener and membership duties end at once (whatever firing
    # it had claimed stays claimed until its lease runs out, as with a real crash).
    assert a.reminders is not None
    assert a.core._agent is not None
    assert a.core.server is not None
    dead_noticed = asyncio.Event()
    a.core._agent._on_dead = dead_noticed.set  # a real node would exit; this one must not
    await a.reminders.stop(0.0)
    await a.core._agent.stop()
    await a.core.server.close()
    # b's poller keeps firing it: once a is declared dead, the object activates on b.
    await FIRINGS.wait(
        lambda: FIRINGS.where.count(b.runtime) >= 3, 20.0, "3 firings on b after a died"
    )
    assert ("CrClock", "c") in b.runtime._acts
    assert b.reminders is not None
    assert b.reminders.delivered >= 3  # only b's poller runs now
    assert await b.ref(CrClock, "c").stop() is True


class CrTally(rio.Actor[CrCount]):
    async def start(self, period: float) -> None:
        await self.register_reminder("tally", period, due=0)

    async def stop(self) -> bool:
        return await self.unregister_reminder("tally")

    async def count(self) -> int:
        return self.state.n

    async def receive_reminder(self, name: str) -> None:
        self.state.n += 1
        await self.save()


async def test_a_pool_node_fires_reminders_from_its_driver(tmp_path: Path) -> None:
    settings = rio.ClusterSettings(
        url=f"sqlite:///{tmp_path}/cluster.db",
        secret=SECRET,
        **FAST,  # type: ignore[arg-type]
    )
    app = rio.App(
        "crp",
        actors=[CrTally],
        storage=f"sqlite:///{tmp_path}/state.db",
        workers=1,
        cluster=settings,
        reminder_poll=0.05,
        drain_timeout=2.0,
    )
    pool = await app.start()
    try:
        tally = pool.ref(CrTally, "t")
        await tally.start(0.05)  # in the worker; fired by the driver, through the cluster
        for _ in range(200):
            if await tally.count() >= 3:
                break
            await asyncio.sleep(0.05)
        assert await tally.count() >= 3
        assert await tally.stop() is True
    finally:
        await app.stop()
