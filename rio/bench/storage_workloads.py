"""Storage workloads: rio saving actor state to each engine, next to the bare driver.

For each engine X in ``sqlite``, ``postgres``, ``mysql`` and ``redis``:

* ``inproc/persist-X`` — sequential awaited calls to one :class:`BenchSaver`, each
  saving its small state (``BenchState(value: int)``) to X;
* ``inproc/persist-X-concurrent`` — 1,000 savers; rounds of one call to each, all
  1,000 in flight at once, each call saving;
* ``baseline/driver-X`` and ``baseline/driver-X-concurrent`` — the same versioned
  write done with the bare driver: the engine's SQL (or Lua script), the same driver
  and connection setup (pool size, autocommit, pragmas, codecs), the same encoded
  bytes, and the same check that exactly one row changed.

The issue's goal is ``persist-X`` at 75% or more of ``driver-X``. Both run in one
``rio bench`` invocation; on a shared machine run them back to back for a fair ratio
(``-w persist-redis -w driver-redis``), since the table groups rows by path.

Servers come from ``RIO_BENCH_POSTGRES_URL``, ``RIO_BENCH_MYSQL_URL`` and
``RIO_BENCH_REDIS_URL`` (default: the local servers, databases ``test`` and 0). Every
run writes under a fresh prefix ``riobench_<random>_`` and drops its tables or keys
afterwards. A server that cannot be reached fails the workload at once with a
one-line :class:`rio.StorageUnavailable`. Drivers are imported when a workload runs,
so ``rio bench --list`` works without the optional extras installed.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import random
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import msgspec

from rio.bench.core import Measurement, workload
from rio.bench.workloads import BenchSaver, BenchState, _app, perf, seq_calls
from rio.core.errors import StateConflict, StorageError, StorageUnavailable
from rio.storage import mask_url

#: How many objects save at once in the ``-concurrent`` workloads.
CONCURRENT = 1000
#: The type name both rio and the drivers write under.
TYPE_NAME = BenchSaver._rio_type.name

_msgpack = msgspec.msgpack.Encoder().encode
_json = msgspec.json.Encoder().encode


class _Saver(Protocol):
    """What :func:`seq_calls` and :func:`_concurrent` call: a ref, or a driver stand-in."""

    def incr(self, by: int) -> Awaitable[int]: ...


async def _concurrent(objs: list[_Saver], n: int) -> Measurement:
    """Rounds of one ``incr(1)`` per object, all in flight at once; one sample per round."""
    await asyncio.gather(*[o.incr(0) for o in objs])  # activate / insert: not timed
    rounds = max(1, n // len(objs))
    lat: list[float] = []
    start = perf()
    for _ in range(rounds):
        t0 = perf()
        await asyncio.gather(*[o.incr(1) for o in objs])
        lat.append(perf() - t0)
    return Measurement(rounds * len(objs), perf() - start, lat)


def _conflict(object_id: str, version: int) -> StateConflict:
    return StateConflict(f"{TYPE_NAME}/{object_id}: stored version is not {version}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _driver_error(who: str, engine: Any, exc: BaseException) -> StorageError:
    """The engine's own translation of a driver error (password scrubbed), in one line."""
    err: StorageError = engine.error("connecting", exc)
    return type(err)(_one_line(f"{who}: {err}"))


class _Target(abc.ABC):
    """One storage engine: where its server is, its rio URL, and its bare-driver writer."""

    name: str = ""
    kind: str = ""
    env: str = ""
    default_url: str = ""
    sep = "_"

    @property
    def base_url(self) -> str:
        return os.environ.get(self.env) or self.default_url

    def new_prefix(self) -> str:
        return f"riobench_{secrets.token_hex(4)}{self.sep}"

    async def require(self, who: str) -> None:
        """Fail at once, in one line, when the server does not accept connections."""
        url = self.base_url
        parts = urlsplit(url)
        try:
            host, port = parts.hostname or "127.0.0.1", parts.port
        except ValueError as e:
            raise StorageError(f"{who}: {self.env}={mask_url(url)!r} is malformed: {e}") from None
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 3)
        except (OSError, TimeoutError) as e:
            detail = _one_line(f"{type(e).__name__}: {e}".rstrip(": "))
            raise StorageUnavailable(
                f"{who}: {self.kind} at {mask_url(url)} is not reachable ({detail}); "
                f"start it or point {self.env} at one"
            ) from None
        writer.close()

    @contextlib.asynccontextmanager
    async def storage_url(self, who: str) -> AsyncIterator[str]:
        """Yield a rio storage URL with a fresh prefix; drop what it created afterwards."""
        await self.require(who)
        prefix = self.new_prefix()
        sep = "&" if "?" in self.base_url else "?"
        async with self._cleanup(prefix):
            yield f"{self.base_url}{sep}prefix={prefix}"

    @contextlib.asynccontextmanager
    async def _cleanup(self, prefix: str) -> AsyncIterator[None]:
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # keep the workload's own error
                await self.drop(prefix)
            raise
        await self.drop(prefix)

    @abc.abstractmethod
    async def drop(self, prefix: str) -> None:
        """Remove every table or key this run created under ``prefix``."""

    @abc.abstractmethod
    def drivers(self, who: str, count: int) -> contextlib.AbstractAsyncContextManager[list[_Saver]]:
        """Open the bare driver and yield ``count`` writers, one object each."""


# -- SQLite ------------------------------------------------------------------------------


class _SQLite(_Target):
    name, kind = "sqlite", "SQLite"

    async def require(self, who: str) -> None:
        return None  # a file in a temporary folder

    @contextlib.asynccontextmanager
    async def storage_url(self, who: str) -> AsyncIterator[str]:
        folder = tempfile.mkdtemp(prefix="rio-bench-")
        try:
            yield f"sqlite:///{os.path.join(folder, 'bench.db')}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def drop(self, prefix: str) -> None:
        return None  # the folder goes

    @contextlib.asynccontextmanager
    async def drivers(self, who: str, count: int) -> AsyncIterator[list[_Saver]]:
        import aiosqlite  # what rio.storage.sqlite uses; connection set up the same way

        folder = tempfile.mkdtemp(prefix="rio-bench-")
        try:
            db = await aiosqlite.connect(
                os.path.join(folder, "bench.db"), isolation_level=None, timeout=30.0
            )
            try:
                await db.execute("PRAGMA busy_timeout=30000")
                await db.execute("PRAGMA journal_mode=WAL")
                await db.execute("PRAGMA synchronous=NORMAL")
                await db.execute(
                    "CREATE TABLE drv_state (type_name TEXT NOT NULL, object_id TEXT NOT NULL, "
                    "version INTEGER NOT NULL, data BLOB NOT NULL, "
                    "PRIMARY KEY (type_name, object_id)) WITHOUT ROWID"
                )
                yield [_SQLiteWriter(db, f"d{i}") for i in range(count)]
            finally:
                await db.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


class _SQLiteWriter:
    insert = (
        "INSERT INTO drv_state (type_name, object_id, version, data) VALUES (?, ?, 1, ?) "
        "ON CONFLICT (type_name, object_id) DO NOTHING"
    )
    update = (
        "UPDATE drv_state SET data=?, version=version+1 "
        "WHERE type_name=? AND object_id=? AND version=?"
    )

    def __init__(self, db: Any, object_id: str) -> None:
        self.db, self.id, self.state, self.version = db, object_id, BenchState(), 0

    async def incr(self, by: int) -> int:
        self.state.value += by
        data = _msgpack(self.state)
        if self.version == 0:
            cur = await self.db.execute(self.insert, (TYPE_NAME, self.id, data))
        else:
            cur = await self.db.execute(self.update, (data, TYPE_NAME, self.id, self.version))
        changed = cur.rowcount
        await cur.close()
        if changed != 1:
            raise _conflict(self.id, self.version)
        self.version += 1
        return self.state.value


# -- PostgreSQL --------------------------------------------------------------------------


class _Postgres(_Target):
    name, kind = "postgres", "PostgreSQL"
    env = "RIO_BENCH_POSTGRES_URL"
    default_url = "postgresql://postgres@127.0.0.1:5432/test"

    def _engine(self, prefix: str) -> Any:
        from rio.storage.postgres import PostgresEngine

        sep = "&" if "?" in self.base_url else "?"
        return PostgresEngine(f"{self.base_url}{sep}prefix={prefix}")

    async def _connect(self, who: str, engine: Any, **pool: Any) -> Any:
        import asyncpg

        cfg = engine.cfg
        try:
            return await asyncpg.create_pool(
                host=cfg.host,
                port=cfg.port,
                user=cfg.user or "postgres",
                password=cfg.password,
                database=cfg.database or None,
                ssl=engine.sslmode,
                timeout=cfg.connect_timeout,
                **pool,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise _driver_error(who, engine, e) from None

    async def drop(self, prefix: str) -> None:
        engine = self._engine(prefix)
        pool = await self._connect("cleanup", engine, min_size=1, max_size=1)
        try:
            names = await pool.fetch(
                "SELECT schemaname, tablename FROM pg_tables WHERE starts_with(tablename, $1)",
                prefix,
            )
            for schema, table in names:
                await pool.execute(f'DROP TABLE IF EXISTS "{schema}"."{table}"')
        finally:
            await pool.close()

    @contextlib.asynccontextmanager
    async def drivers(self, who: str, count: int) -> AsyncIterator[list[_Saver]]:
        from rio.storage.postgres import STATE_MIGRATIONS

        await self.require(who)
        prefix = self.new_prefix()
        engine = self._engine(prefix)
        cfg = engine.cfg

        async def init(conn: Any) -> None:  # jsonb in binary form, as the engine sets it up
            await conn.set_type_codec(
                "jsonb",
                schema="pg_catalog",
                encoder=lambda doc: b"\x01" + doc,
                decoder=lambda raw: raw[1:],
                format="binary",
            )

        async def no_reset(conn: Any) -> None:  # the engine skips asyncpg's reset query too
            return None

        pool = await self._connect(
            who,
            engine,
            min_size=1,
            max_size=cfg.pool_size,
            init=init,
            reset=no_reset,
            server_settings={"application_name": f"rio:{prefix}"[:63]},
        )
        try:
            table = engine.tables["state"]
            for statement in STATE_MIGRATIONS[0]:
                await pool.execute(statement.format_map(engine.tables))
            try:
                yield [_PostgresWriter(pool, table, f"d{i}") for i in range(count)]
            finally:
                await pool.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            await pool.close()


class _PostgresWriter:
    def __init__(self, pool: Any, table: str, object_id: str) -> None:
        self.pool, self.id, self.state, self.version = pool, object_id, BenchState(), 0
        self.insert = (
            f"INSERT INTO {table} (type_name, object_id, version, token, doc, data) "
            "VALUES ($1, $2, 1, $3, $4, $5) ON CONFLICT (type_name, object_id) DO NOTHING"
        )
        self.update = (
            f"UPDATE {table} SET version=version+1, token=$3, doc=$4, data=$5 "
            "WHERE type_name=$1 AND object_id=$2 AND version=$6"
        )

    async def incr(self, by: int) -> int:
        self.state.value += by
        # BenchState is all JSON-able, so the engine stores it as a jsonb document.
        doc = _json(self.state)
        token = random.getrandbits(63)
        if self.version == 0:
            status = await self.pool.execute(self.insert, TYPE_NAME, self.id, token, doc, None)
        else:
            status = await self.pool.execute(
                self.update, TYPE_NAME, self.id, token, doc, None, self.version
            )
        if not status.endswith(" 1"):
            raise _conflict(self.id, self.version)
        self.version += 1
        return self.state.value


# -- MySQL / MariaDB ---------------------------------------------------------------------


class _MySQL(_Target):
    name, kind = "mysql", "MySQL"
    env = "RIO_BENCH_MYSQL_URL"
    default_url = "mysql://root@127.0.0.1:3306/test"

    def _engine(self, prefix: str) -> Any:
        from rio.storage.mysql import MySQLEngine

        sep = "&" if "?" in self.base_url else "?"
        return MySQLEngine(f"{self.base_url}{sep}prefix={prefix}")

    async def _connect(self, who: str, engine: Any, **pool: Any) -> Any:
        import aiomysql

        cfg = engine.cfg
        try:
            return await aiomysql.create_pool(
                host=cfg.host,
                port=cfg.port,
                user=cfg.user or "root",
                password=cfg.password or "",
                db=cfg.database,
                connect_timeout=cfg.connect_timeout,
                autocommit=True,
                charset="utf8mb4",
                **pool,
            )
        except (OSError, aiomysql.MySQLError) as e:
            raise _driver_error(who, engine, e) from None

    @staticmethod
    async def _close(pool: Any) -> None:
        pool.close()
        await pool.wait_closed()

    async def drop(self, prefix: str) -> None:
        pool = await self._connect("cleanup", self._engine(prefix), minsize=1, maxsize=1)
        try:
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute(
                    "SELECT TABLE_NAME FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = DATABASE() AND LEFT(TABLE_NAME, %s) = %s",
                    (len(prefix), prefix),
                )
                for (table,) in await cur.fetchall():
                    await cur.execute(f"DROP TABLE IF EXISTS `{table}`")
        finally:
            await self._close(pool)

    @contextlib.asynccontextmanager
    async def drivers(self, who: str, count: int) -> AsyncIterator[list[_Saver]]:
        from rio.storage.mysql import STATE_MIGRATIONS

        await self.require(who)
        prefix = self.new_prefix()
        engine = self._engine(prefix)
        pool = await self._connect(
            who,
            engine,
            minsize=1,
            maxsize=engine.cfg.pool_size,
            program_name=f"rio:{prefix}",
        )
        try:
            table = engine.tables["state"]
            async with pool.acquire() as conn, conn.cursor() as cur:
                for statement in STATE_MIGRATIONS[0]:
                    await cur.execute(statement.format_map(engine.tables))
            try:
                yield [_MySQLWriter(pool, table, f"d{i}") for i in range(count)]
            finally:
                async with pool.acquire() as conn, conn.cursor() as cur:
                    await cur.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            await self._close(pool)


class _MySQLWriter:
    def __init__(self, pool: Any, table: str, object_id: str) -> None:
        self.pool, self.id, self.state, self.version = pool, object_id, BenchState(), 0
        where = "WHERE type_name=%s AND object_id=%s"
        self.insert = (
            f"INSERT INTO {table} (type_name, object_id, version, token, data) "
            "VALUES (%s, %s, 1, %s, UNHEX(%s))"
        )
        self.update = (
            f"UPDATE {table} SET version=version+1, token=%s, data=UNHEX(%s) {where} AND version=%s"
        )

    async def incr(self, by: int) -> int:
        self.state.value += by
        data = _msgpack(self.state).hex()  # the engine sends states hex-encoded too
        token = random.getrandbits(63)
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            if self.version == 0:
                await cur.execute(self.insert, (TYPE_NAME, self.id, token, data))
            else:
                await cur.execute(self.update, (token, data, TYPE_NAME, self.id, self.version))
            changed = cur.rowcount
        if changed != 1:
            raise _conflict(self.id, self.version)
        self.version += 1
        return self.state.value


# -- Redis -------------------------------------------------------------------------------


class _Redis(_Target):
    name, kind = "redis", "Redis"
    env = "RIO_BENCH_REDIS_URL"
    default_url = "redis://127.0.0.1:6379/0"
    sep = ":"

    def _engine(self, prefix: str) -> Any:
        from rio.storage.redis import RedisEngine

        sep = "&" if "?" in self.base_url else "?"
        return RedisEngine(f"{self.base_url}{sep}prefix={prefix}")

    async def _connect(self, who: str, engine: Any, **pool: Any) -> Any:
        import redis.asyncio as aioredis
        from redis.asyncio.connection import SSLConnection
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        cfg = engine.cfg
        client = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool(
                connection_class=SSLConnection if cfg.scheme == "rediss" else aioredis.Connection,
                timeout=None,
                host=cfg.host,
                port=cfg.port,
                db=int(cfg.database or 0),
                username=cfg.user,
                password=cfg.password,
                socket_connect_timeout=cfg.connect_timeout,
                retry=Retry(NoBackoff(), 0),
                **pool,
            )
        )
        try:
            await client.ping()
        except (OSError, RedisError) as e:
            await client.aclose()
            raise _driver_error(who, engine, e) from None
        return client

    @staticmethod
    async def _drop_keys(client: Any, prefix: str) -> None:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])

    async def drop(self, prefix: str) -> None:
        client = await self._connect("cleanup", self._engine(prefix), max_connections=1)
        try:
            await self._drop_keys(client, prefix)
        finally:
            await client.aclose()

    @contextlib.asynccontextmanager
    async def drivers(self, who: str, count: int) -> AsyncIterator[list[_Saver]]:
        from rio.storage.redis import _SAVE  # the engine's compare-and-set script

        await self.require(who)
        prefix = self.new_prefix()
        engine = self._engine(prefix)
        client = await self._connect(
            who, engine, max_connections=engine.cfg.pool_size, client_name=f"rio:{prefix}"
        )
        try:
            script = client.register_script(_SAVE)
            try:
                yield [_RedisWriter(script, f"{prefix}state:", f"d{i}") for i in range(count)]
            finally:
                await self._drop_keys(client, prefix)
        finally:
            await client.aclose()


class _RedisWriter:
    def __init__(self, script: Any, key_prefix: str, object_id: str) -> None:
        self.script, self.id, self.state, self.version = script, object_id, BenchState(), 0
        t = TYPE_NAME.encode()
        self.keys = [b"%s%d:%s:%s" % (key_prefix.encode(), len(t), t, object_id.encode())]

    async def incr(self, by: int) -> int:
        self.state.value += by
        args = [self.version, _msgpack(self.state), random.getrandbits(63)]
        ok, version = await self.script(keys=self.keys, args=args)
        if not ok:
            raise _conflict(self.id, self.version)
        self.version = int(version)
        return self.state.value


# -- the workloads -----------------------------------------------------------------------


def _persist(target: _Target, who: str) -> Callable[[int], Awaitable[Measurement]]:
    async def run(n: int) -> Measurement:
        async with target.storage_url(who) as url, _app(url) as system:
            ref = system.ref(BenchSaver, "p")
            await ref.incr(0)
            return await seq_calls(ref, n)

    return run


def _persist_concurrent(target: _Target, who: str) -> Callable[[int], Awaitable[Measurement]]:
    async def run(n: int) -> Measurement:
        async with target.storage_url(who) as url, _app(url) as system:
            count = min(CONCURRENT, n)  # the runner's warm-up (n // 10) uses fewer
            refs: list[_Saver] = [system.ref(BenchSaver, f"c{i}") for i in range(count)]
            return await _concurrent(refs, n)

    return run


def _driver(target: _Target, who: str) -> Callable[[int], Awaitable[Measurement]]:
    async def run(n: int) -> Measurement:
        async with target.drivers(who, 1) as (writer,):
            await writer.incr(0)
            return await seq_calls(writer, n)

    return run


def _driver_concurrent(target: _Target, who: str) -> Callable[[int], Awaitable[Measurement]]:
    async def run(n: int) -> Measurement:
        async with target.drivers(who, min(CONCURRENT, n)) as writers:
            return await _concurrent(writers, n)

    return run


def _register(target: _Target, *, n: int, quick_n: int, cn: int, quick_cn: int) -> None:
    x, kind = target.name, target.kind
    where = "SQLite (WAL, synchronous=NORMAL)" if x == "sqlite" else kind
    specs = [
        (
            "inproc",
            f"persist-{x}",
            _persist,
            n,
            quick_n,
            f"Sequential calls that each save a small state to {where}.",
        ),
        (
            "baseline",
            f"driver-{x}",
            _driver,
            n,
            quick_n,
            f"The bare {kind} driver doing persist-{x}'s versioned write in a loop.",
        ),
        (
            "inproc",
            f"persist-{x}-concurrent",
            _persist_concurrent,
            cn,
            quick_cn,
            f"1,000 actors; rounds of one call each, all in flight, each saving to {kind}.",
        ),
        (
            "baseline",
            f"driver-{x}-concurrent",
            _driver_concurrent,
            cn,
            quick_cn,
            f"The bare {kind} driver writing 1,000 objects at once per round (one pool).",
        ),
    ]
    for path, name, make, size, quick_size, doc in specs:
        fn = make(target, name)
        fn.__doc__ = doc
        workload(path, name, n=size, quick_n=quick_size)(fn)


# Sizes: a few seconds each in a full run, well under 2 s with --quick, on a quiet
# machine. PostgreSQL and MySQL wait for the server's commit flush: about 0.35 ms each
# on this machine's disk when idle, ten times that when other work is flushing too.
_register(_SQLite(), n=20_000, quick_n=2_000, cn=20_000, quick_cn=2_000)
_register(_Postgres(), n=5_000, quick_n=300, cn=10_000, quick_cn=1_000)
_register(_MySQL(), n=5_000, quick_n=300, cn=10_000, quick_cn=1_000)
_register(_Redis(), n=10_000, quick_n=1_000, cn=8_000, quick_cn=1_000)
