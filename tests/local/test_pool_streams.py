"""Pub/sub when worker processes die: subscribers forgotten, subscriptions renewed."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import msgspec
import pytest

import rio
from rio.local.pool import PoolSystem

pytestmark = pytest.mark.slow


class PsMove(msgspec.Struct, frozen=True):
    n: int


class PsTable(rio.Actor, idle_ttl=None):
    async def play(self, n: int) -> None:
        self.publish(PsMove(n))

    async def shout(self, n: int) -> None:
        self.publish(PsMove(n), topic="ps-news")

    async def streams(self) -> tuple[int, int]:
        """``(streams, subscribers)`` kept by this actor's worker."""
        return self._rio_system.streams.stats()


class PsPlayer(rio.Actor, idle_ttl=None):
    async def follow(self, table: str) -> None:
        ready = asyncio.Event()

        async def run() -> None:
            async with PsTable.ref(table).subscribe() as moves:
                ready.set()
                async for _ in moves:
                    pass

        self.spawn(run())
        await ready.wait()


def _pool() -> rio.App:
    return rio.App("pool-streams", storage="memory://", workers=2, drain_timeout=5)


def _id_on(system: PoolSystem, actor: str, worker: int) -> str:
    return next(f"x{i}" for i in range(1000) if system.owner((actor, f"x{i}")) == worker)


async def _until(check: Any, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_a_subscriber_in_a_killed_worker_is_forgotten() -> None:
    async with _pool() as system:
        assert isinstance(system, PoolSystem)
        table = PsTable.ref(_id_on(system, "PsTable", 1))
        await PsPlayer.ref(_id_on(system, "PsPlayer", 2)).follow(table.id)
        assert await table.streams() == (1, 1)  # worker 2 subscribes, once
        os.kill(system.worker_pid(2), signal.SIGKILL)

        async def forgotten() -> bool:
            return await table.streams() == (0, 0)

        await _until(forgotten)
        await table.play(1)  # publishing goes on, to nobody


async def test_a_subscription_survives_its_owner_worker_dying() -> None:
    async with _pool() as system:
        assert isinstance(system, PoolSystem)
        table = PsTable.ref(_id_on(system, "PsTable", 1))
        async with table.subscribe() as moves:
            await table.play(1)
            assert await anext(moves) == PsMove(1)
            os.kill(system.worker_pid(1), signal.SIGKILL)
            notice = await asyncio.wait_for(anext(moves), 10)
            assert notice == rio.Lagged(0, "lost")
            await table.play(2)  # waits for the restart; the object re-activates there
            assert await asyncio.wait_for(anext(moves), 10) == PsMove(2)
        assert system.stats().restarts == 1


async def test_a_topic_subscription_survives_a_publishing_worker_dying() -> None:
    async with _pool() as system:
        assert isinstance(system, PoolSystem)
        table = PsTable.ref(_id_on(system, "PsTable", 1))
        async with system.subscribe("ps-news") as news:
            await table.shout(1)
            assert await anext(news) == PsMove(1)
            os.kill(system.worker_pid(1), signal.SIGKILL)
            assert await asyncio.wait_for(anext(news), 10) == rio.Lagged(0, "lost")
            await table.shout(2)  # from the replacement worker, which learnt of us again
            assert await asyncio.wait_for(anext(news), 10) == PsMove(2)
