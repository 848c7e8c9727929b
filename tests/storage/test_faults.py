"""Connections killed server-side (never the shared servers themselves).

PostgreSQL: pg_terminate_backend on the pool's backends (found by application_name).
MySQL: KILL on the pool's threads (found by a database of their own).
Redis: CLIENT KILL on the pool's clients (found by client name).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import pytest

from rio.core.errors import StateConflict, StorageError, StorageUnavailable
from rio.storage import StateStorage, storage_from_url

from .conftest import RUN, Backend, MySQLBackend, PostgresBackend, RedisBackend


class Counter(msgspec.Struct):
    n: int = 0


Kill = Callable[[], Awaitable[set[Any]]]
Alive = Callable[[], Awaitable[set[Any]]]


@pytest.fixture
async def faulty(net_backend: Backend) -> AsyncIterator[tuple[StateStorage, Kill, Alive]]:
    """An opened storage, a function that kills all its connections, one that lists them."""
    prefix = net_backend.new_prefix()
    cleanup: list[Callable[[], Awaitable[None]]] = [lambda: net_backend.drop(prefix)]
    if isinstance(net_backend, PostgresBackend):
        pg = net_backend
        url = pg.url(prefix)
        app = f"rio:{prefix}"[:63]

        async def alive() -> set[Any]:
            conn = await pg.admin()
            try:
                rows = await conn.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = $1", app
                )
                return {r[0] for r in rows}
            finally:
                await conn.close()

        async def kill() -> set[Any]:
            pids = await alive()  # by pid only: never anything but this pool's backends
            conn = await pg.admin()
            try:
                for pid in pids:
                    # The timeout makes the call wait until the backend has exited.
                    await conn.execute("SELECT pg_terminate_backend($1, 5000)", pid)
                return pids
            finally:
                await conn.close()

    elif isinstance(net_backend, MySQLBackend):
        my = net_backend
        database = f"{RUN}_{prefix}fault"
        await my.query(f"CREATE DATABASE `{database}`")
        cleanup.append(lambda: my.query(f"DROP DATABASE IF EXISTS `{database}`"))
        base = urlsplit(my.url(prefix))  # whatever database RIO_TEST_MYSQL_URL names
        url = urlunsplit(base._replace(path=f"/{database}"))
        assert database in url

        async def alive() -> set[Any]:
            rows = await my.query(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s", database
            )
            return {r[0] for r in rows}

        async def kill() -> set[Any]:
            ids = await alive()
            await my.kill_in_database(database)
            return ids

    else:
        assert isinstance(net_backend, RedisBackend)
        rd = net_backend
        url = rd.url(prefix)

        async def alive() -> set[Any]:
            client = rd.admin()
            try:
                return {
                    c["id"] for c in await client.client_list() if c.get("name") == f"rio:{prefix}"
                }
            finally:
                await client.aclose()

        async def kill() -> set[Any]:
            ids = await alive()
            await rd.kill(prefix)
            return ids

    storage = storage_from_url(url)
    await storage.open()
    yield storage, kill, alive
    await storage.close()
    for step in reversed(cleanup):
        await step()


async def test_next_calls_after_every_connection_died_succeed(
    faulty: tuple[StateStorage, Kill, Alive],
) -> None:
    """What a server restart looks like to the pool: every connection is dead at once."""
    storage, kill, alive = faulty
    await asyncio.gather(*(storage.save("R", f"o{i}", Counter(1), Counter, 0) for i in range(6)))
    for round_ in range(3):
        killed = await kill()
        assert killed
        # No error reaches the caller: dead connections are dropped and calls retried.
        for i in range(6):
            got = await storage.load("R", f"o{i}", Counter)
            assert got == (Counter(round_ + 1), round_ + 1)
            assert await storage.save("R", f"o{i}", Counter(round_ + 2), Counter, round_ + 1) == (
                round_ + 2
            )
        assert not (await alive()) & killed


async def test_connections_killed_while_calls_run(
    faulty: tuple[StateStorage, Kill, Alive],
) -> None:
    storage, kill, _ = faulty
    writers, kills = 6, 5
    acked: dict[str, int] = {}
    errors: list[StorageError] = []
    acks = 0
    progress = asyncio.Condition()
    kills_done = asyncio.Event()
    killed_total = 0

    async def reload(object_id: str) -> int:
        for _ in range(10):
            try:
                got = await storage.load("F", object_id, Counter)
            except StorageUnavailable as e:
                errors.append(e)
                continue
            return 0 if got is None else got.version
        raise AssertionError(f"could not reload {object_id}: {errors[-3:]}")

    async def writer(i: int) -> None:
        nonlocal acks
        object_id, version, tail = f"w{i}", 0, 0
        while tail < 5:
            try:
                version = await storage.save("F", object_id, Counter(version + 1), Counter, version)
            except StateConflict:
                raise  # each writer owns its object: a conflict would be a replay bug
            except StorageError as e:
                errors.append(e)
                version = await reload(object_id)  # the write may or may not have happened
                continue
            acked[object_id] = version
            acks += 1
            if kills_done.is_set():
                tail += 1
            async with progress:
                progress.notify_all()

    async def killer() -> None:
        nonlocal killed_total
        for k in range(1, kills + 1):
            target = k * 15
            async with progress:
                await progress.wait_for(lambda: acks >= target)  # noqa: B023 (awaited here)
            killed_total += len(await kill())
        kills_done.set()

    await asyncio.gather(killer(), *(writer(i) for i in range(writers)))

    assert killed_total >= kills
    for e in errors:
        assert isinstance(e, StorageUnavailable), e
        assert storage.url in str(e)
        assert "cannot be reached or dropped the connection" in str(e)
    # Nothing acknowledged is lost, nothing unacknowledged sneaks in after it.
    for i in range(writers):
        got = await storage.load("F", f"w{i}", Counter)
        assert got is not None
        assert got.version == acked[f"w{i}"]
        assert got.value == Counter(got.version)
