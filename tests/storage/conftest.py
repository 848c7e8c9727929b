"""Fixtures for the storage suite: every engine behind one `backend` fixture.

Networked engines talk to real servers (override with RIO_TEST_POSTGRES_URL,
RIO_TEST_MYSQL_URL, RIO_TEST_REDIS_URL). A server that cannot be reached skips its
tests locally and fails them under CI. Every test gets its own table/key prefix,
dropped afterwards; a session sweep drops anything left with this run's marker.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiomysql
import asyncpg
import pytest
import redis.asyncio as aioredis

from rio.storage import MemoryStorage, StateStorage, storage_from_url

PG_URL = os.environ.get("RIO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("RIO_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("RIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

RUN = f"rt{uuid.uuid4().hex[:6]}"
_counter = iter(range(1_000_000))

ENGINES = ["memory", "sqlite", "postgres", "mysql", "redis"]
NETWORKED = ["postgres", "mysql", "redis"]


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 1):
            return True
    except OSError:
        return False


class Backend:
    """One engine under test: builds URLs for a prefix and cleans up after it."""

    name = ""
    base_url = ""
    sep = "_"

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def new_prefix(self) -> str:
        return f"{RUN}n{next(_counter)}{self.sep}"

    def url(self, prefix: str) -> str:
        sep = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{sep}prefix={prefix}"

    async def drop(self, prefix: str) -> None:
        """Remove every table or key whose name starts with ``prefix``."""

    def check_reachable(self) -> None:
        if self.base_url and not _reachable(self.base_url):
            message = f"{self.name} server at {self.base_url} is not reachable"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)


class MemoryBackend(Backend):
    name = "memory"

    def url(self, prefix: str) -> str:
        return "memory://"


class SQLiteBackend(Backend):
    name = "sqlite"

    def url(self, prefix: str) -> str:
        return f"sqlite:///{self.tmp_path}/rio.db?prefix={prefix}"


class PostgresBackend(Backend):
    name = "postgres"
    base_url = PG_URL

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.base_url)

    async def drop(self, prefix: str) -> None:
        conn = await self.admin()
        try:
            names = await conn.fetch(
                "SELECT schemaname, tablename FROM pg_tables WHERE starts_with(tablename, $1)",
                prefix,
            )
            for schema, table in names:
                await conn.execute(f'DROP TABLE IF EXISTS "{schema}"."{table}"')
        finally:
            await conn.close()

    async def kill(self, prefix: str) -> int:
        """Terminate every server backend serving ``prefix``'s pool."""
        conn = await self.admin()
        try:
            pids = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                f"rio:{prefix}"[:63],
            )
            for (pid,) in pids:  # one by one: a filter and a kill in one WHERE may reorder
                await conn.execute("SELECT pg_terminate_backend($1, 5000)", pid)
            return len(pids)
        finally:
            await conn.close()


class MySQLBackend(Backend):
    name = "mysql"
    base_url = MYSQL_URL

    async def admin(self, db: str | None = None) -> aiomysql.Connection:
        parts = urlsplit(self.base_url)
        return await aiomysql.connect(
            host=parts.hostname,
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
            db=db if db is not None else parts.path.lstrip("/"),
            autocommit=True,
        )

    async def query(self, sql: str, *args: object, db: str | None = None) -> list[tuple]:
        conn = await self.admin(db)
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql, args or None)
                return list(await cur.fetchall())
        finally:
            conn.close()

    async def drop(self, prefix: str) -> None:
        tables = await self.query(
            "SELECT TABLE_NAME FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND LEFT(TABLE_NAME, %s) = %s",
            len(prefix),
            prefix,
        )
        for (table,) in tables:
            await self.query(f"DROP TABLE IF EXISTS `{table}`")

    async def kill_in_database(self, database: str) -> int:
        """KILL every connection whose current database is ``database``."""
        ids = await self.query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
            database,
        )
        conn = await self.admin()
        try:
            async with conn.cursor() as cur:
                for (thread,) in ids:
                    try:
                        await cur.execute(f"KILL {int(thread)}")
                    except aiomysql.OperationalError as e:
                        if e.args[0] != 1094:  # unknown thread: it ended meanwhile
                            raise
        finally:
            conn.close()
        return len(ids)


class RedisBackend(Backend):
    name = "redis"
    base_url = REDIS_URL
    sep = ":"

    def admin(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.base_url)

    async def drop(self, prefix: str) -> None:
        client = self.admin()
        try:
            keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    async def kill(self, prefix: str) -> int:
        """CLIENT KILL every connection of ``prefix``'s pool."""
        client = self.admin()
        try:
            name = f"rio:{prefix}"
            killed = 0
            for entry in await client.client_list():
                if entry.get("name") == name:
                    killed += await client.client_kill_filter(_id=entry["id"])
            return killed
        finally:
            await client.aclose()


BACKENDS: dict[str, type[Backend]] = {
    "memory": MemoryBackend,
    "sqlite": SQLiteBackend,
    "postgres": PostgresBackend,
    "mysql": MySQLBackend,
    "redis": RedisBackend,
}


@pytest.fixture(params=ENGINES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each engine in turn."""
    b = BACKENDS[request.param](tmp_path)
    b.check_reachable()
    return b


@pytest.fixture(params=NETWORKED)
def net_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each networked engine in turn."""
    b = BACKENDS[request.param](tmp_path)
    b.check_reachable()
    return b


OpenStorage = Callable[..., Awaitable[StateStorage]]


@pytest.fixture
async def prefix(backend: Backend) -> AsyncIterator[str]:
    """A fresh prefix for this test, dropped afterwards."""
    p = backend.new_prefix()
    yield p
    await backend.drop(p)


@pytest.fixture
async def open_storage(backend: Backend, prefix: str) -> AsyncIterator[OpenStorage]:
    """``await open_storage(prefix=None)``: an opened engine, closed at teardown.

    Each call makes a separate instance (its own connections), except for memory,
    where instances cannot share data and one is returned per prefix.
    """
    opened: list[StateStorage] = []
    memory: dict[str, MemoryStorage] = {}

    async def make(prefix_: str | None = None) -> StateStorage:
        p = prefix_ or prefix
        if backend.name == "memory":
            return memory.setdefault(p, MemoryStorage())
        storage = storage_from_url(backend.url(p))
        await storage.open()
        opened.append(storage)
        return storage

    yield make
    for storage in opened:
        await storage.close()


@pytest.fixture(scope="session", autouse=True)
def _sweep_run_leftovers() -> object:
    """Drop whatever this run left behind (a test that crashed before its teardown)."""
    yield None
    import asyncio

    async def sweep() -> None:
        for cls in (PostgresBackend, MySQLBackend, RedisBackend):
            b = cls(Path("."))
            if _reachable(b.base_url):
                await b.drop(RUN)

    asyncio.run(sweep())
