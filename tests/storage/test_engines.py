"""The networked engines' own behaviour: URLs, connection errors, drivers, schema versions."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import msgspec
import pytest

from rio.core.errors import ConfigError, StorageError, StorageUnavailable
from rio.storage import storage_from_url
from rio.storage._engine import parse_engine_url

from .conftest import MYSQL_URL, PG_URL, REDIS_URL, Backend


class Counter(msgspec.Struct):
    n: int = 0


SCHEMES = {
    "postgres": ["postgresql", "postgres"],
    "mysql": ["mysql", "mariadb"],
    "redis": ["redis", "rediss"],
}


# -- URLs -------------------------------------------------------------------------


def test_every_scheme_builds_its_engine() -> None:
    from rio.storage.mysql import MySQLStorage
    from rio.storage.postgres import PostgresStorage
    from rio.storage.redis import RedisStorage

    expected = {"postgres": PostgresStorage, "mysql": MySQLStorage, "redis": RedisStorage}
    for engine, schemes in SCHEMES.items():
        for scheme in schemes:
            storage = storage_from_url(f"{scheme}://u:pw@db.example:1234/3?prefix=app_1")
            assert isinstance(storage, expected[engine])
            assert storage.url == f"{scheme}://u:***@db.example:1234/3?prefix=app_1"


def test_url_options_are_parsed() -> None:
    cfg = parse_engine_url(
        "postgresql://app%40corp:p%2Fw%3A@db:6543/rio?prefix=shop_&pool_size=3&connect_timeout=2.5",
        engine="postgresql",
        default_port=5432,
        default_prefix="rio_",
    )
    assert (cfg.user, cfg.password, cfg.host, cfg.port, cfg.database) == (
        "app@corp",
        "p/w:",
        "db",
        6543,
        "rio",
    )
    assert (cfg.prefix, cfg.pool_size, cfg.connect_timeout) == ("shop_", 3, 2.5)
    assert "p/w" not in repr(cfg)
    assert "p%2Fw" not in cfg.url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:secret@h/db?prefx=a", "unknown option(s) prefx"),
        ("postgresql://u:secret@h/db?prefix=1bad", "prefix '1bad' is not allowed"),
        ("postgresql://u:secret@h/db?prefix=a;drop", "is not allowed"),
        ("postgresql://u:secret@h/db?pool_size=0", "pool_size='0' must be a positive"),
        ("postgresql://u:secret@h/db?pool_size=2.5", "pool_size must be a whole number"),
        ("postgresql://u:secret@h/db?connect_timeout=x", "connect_timeout='x'"),
        ("postgresql://u:secret@h:99999/db", "is malformed"),
        ("postgresql://u:secret@h/db?schema=a-b", "schema 'a-b' is not allowed"),
        ("postgresql://u:secret@h/db?sslmode=maybe", "sslmode='maybe'"),
        ("mysql://u:secret@h", "names no database"),
        ("mysql://u:secret@h/db?schema=x", "unknown option(s) schema"),
        ("redis://u:secret@h/abc", "must be a database number"),
        ("redis://u:secret@h/0?prefix=a*b", "prefix 'a*b' is not allowed"),
        ("memory://foo", "takes no host, path or options"),
        ("memory://?prefix=x", "takes no host, path or options"),
    ],
)
def test_bad_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        storage_from_url(url)
    assert message in str(info.value)
    assert "secret" not in str(info.value)


def test_missing_drivers_name_the_extra() -> None:
    # A fresh interpreter where the drivers cannot be imported.
    code = """
import sys
for name in ("asyncpg", "aiomysql", "redis"):
    sys.modules[name] = None
from rio.core.errors import ConfigError
from rio.storage import storage_from_url
for url in ("postgresql://u:secret@h/db", "postgres://h/db", "mysql://h/db",
            "mariadb://h/db", "redis://h/0", "rediss://h/0"):
    try:
        storage_from_url(url)
    except ConfigError as e:
        print(e)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out == [
        "storage URL 'postgresql://u:***@h/db' needs a driver that is not installed "
        "(asyncpg): pip install 'rio-actors[postgres]'",
        "storage URL 'postgres://h/db' needs a driver that is not installed (asyncpg): "
        "pip install 'rio-actors[postgres]'",
        "storage URL 'mysql://h/db' needs a driver that is not installed (aiomysql): "
        "pip install 'rio-actors[mysql]'",
        "storage URL 'mariadb://h/db' needs a driver that is not installed (aiomysql): "
        "pip install 'rio-actors[mysql]'",
        "storage URL 'redis://h/0' needs a driver that is not installed (redis.asyncio): "
        "pip install 'rio-actors[redis]'",
        "storage URL 'rediss://h/0' needs a driver that is not installed (redis.asyncio): "
        "pip install 'rio-actors[redis]'",
    ]


# -- connecting -------------------------------------------------------------------


def _with(url: str, *, netloc: str | None = None, path: str | None = None) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(
        parts._replace(netloc=netloc or parts.netloc, path=path if path is not None else parts.path)
    )


UNREACHABLE = {
    "postgres": "postgresql://app:s3cr3t-pw@127.0.0.1:1/test",
    "mysql": "mysql://app:s3cr3t-pw@127.0.0.1:1/test",
    "redis": "redis://app:s3cr3t-pw@127.0.0.1:1/0",
}


async def test_unreachable_server_at_open(net_backend: Backend) -> None:
    url = UNREACHABLE[net_backend.name]
    storage = storage_from_url(url)
    with pytest.raises(StorageUnavailable) as info:
        await storage.open()
    message = str(info.value)
    assert "app:***@127.0.0.1:1" in message
    assert "s3cr3t" not in message
    assert "cannot be reached" in message
    await storage.close()


def _bad_login(name: str) -> str:
    host = {"postgres": PG_URL, "mysql": MYSQL_URL, "redis": REDIS_URL}[name]
    from urllib.parse import urlsplit

    hostport = urlsplit(host).netloc.rsplit("@", 1)[-1]
    user = {"postgres": "rio_no_such_role", "mysql": "root", "redis": "rio_no_such_user"}[name]
    return _with(host, netloc=f"{user}:s3cr3t-pw@{hostport}")


async def test_wrong_credentials(net_backend: Backend) -> None:
    storage = storage_from_url(_bad_login(net_backend.name))
    with pytest.raises(StorageError) as info:
        await storage.open()
    assert not isinstance(info.value, StorageUnavailable)
    message = str(info.value)
    assert "refused the login" in message
    assert ":***@" in message
    assert "s3cr3t" not in message


async def test_missing_database(net_backend: Backend) -> None:
    if net_backend.name == "redis":
        pytest.skip("redis databases are numbers that always exist")
    storage = storage_from_url(_with(net_backend.base_url, path="/rio_no_such_db"))
    with pytest.raises(StorageError, match="rio_no_such_db"):
        await storage.open()


async def test_calls_before_open_are_refused(net_backend: Backend) -> None:
    storage = storage_from_url(net_backend.url("rio_never_"))
    with pytest.raises(StorageError, match="is not open: call open"):
        await storage.load("Counter", "a", Counter)


# -- schema versions ----------------------------------------------------------------


async def _set_schema_version(backend: Backend, storage: Any, version: int) -> None:
    e = storage.engine
    if backend.name == "postgres":
        await e.pool.execute(
            f"UPDATE {e.tables['schema']} SET version=$1 WHERE component='state'", version
        )
    elif backend.name == "mysql":
        await e.execute(
            f"UPDATE {e.tables['schema']} SET version=%s WHERE component='state'", (version,)
        )
    else:
        await e.client.hset(f"{e.prefix}schema", "state", version)


async def test_schema_from_a_newer_rio_is_refused(net_backend: Backend, tmp_path: Any) -> None:
    prefix = net_backend.new_prefix()
    try:
        first = storage_from_url(net_backend.url(prefix))
        await first.open()
        await _set_schema_version(net_backend, first, 99)
        await first.close()
        second = storage_from_url(net_backend.url(prefix))
        with pytest.raises(StorageError, match="state schema version 99 is newer than this rio"):
            await second.open()
        assert not second.engine.is_open  # type: ignore[attr-defined]
    finally:
        await net_backend.drop(prefix)


async def test_mysql_refuses_a_state_over_max_allowed_packet_before_sending() -> None:
    from .conftest import MySQLBackend

    backend = MySQLBackend(tmp_path=None)  # type: ignore[arg-type]
    backend.check_reachable()
    prefix = backend.new_prefix()
    storage = storage_from_url(backend.url(prefix))
    try:
        await storage.open()
        limit: int = storage._max_packet  # type: ignore[attr-defined]

        class Big(msgspec.Struct):
            data: bytes

        with pytest.raises(StorageError, match="too large for the server's max_allowed_packet"):
            await storage.save("Big", "b", Big(b"x" * (limit // 2 + 1)), Big, 0)
        assert await storage.load("Big", "b", Big) is None
    finally:
        await storage.close()
        await backend.drop(prefix)
