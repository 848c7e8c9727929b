"""Redis state storage through redis-py's asyncio client.

URL: ``redis://user:password@host:6379/0?prefix=rio:`` (``rediss://`` for TLS); the
path is the database number. Options: ``prefix`` (key prefix, default ``rio:``;
letters, digits and ``_:.-``, so it is also a safe ``SCAN`` pattern), ``pool_size``
(default 10), ``connect_timeout`` and ``command_timeout`` (seconds, 10 each).

Each state is one hash, ``<prefix>state:<len>:<type>:<id>`` (the type name's length in
UTF-8 bytes keeps ``a:b``/``c`` and ``a``/``b:c`` apart), with fields ``v`` (version),
``d`` (msgpack) and ``t`` (a random token per write). Writes and deletes are Lua
scripts, so the compare-and-set is atomic on the server; a write retried after a
lost connection finds its own token and reports success instead of a conflict.

Durable reminders (component ``reminders``): a sorted set ``<prefix>reminders:due``
scores every reminder with its due time in milliseconds since the epoch, a hash
``<prefix>reminders:period`` holds its period, and a set per object,
``<prefix>reminders:o:<len>:<type>:<id>``, names its reminders. A reminder is
``<len(type)>:<type>:<len(id)>:<id>:<name>`` in the first two. Each write is one Lua
script, so the due-time compare-and-set of the pollers is atomic.

Migrations are recorded per component in the ``<prefix>schema`` hash and run under a
``SET NX PX`` lock. Durability is Redis's: run it with ``appendonly yes`` (and
``appendfsync always`` if a power cut must not lose acknowledged writes).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    ConnectionError,
    NoPermissionError,
    RedisError,
    ResponseError,
    TimeoutError,
)

from rio.core.codec import decode_state, encode_checked
from rio.core.errors import ConfigError, StorageError
from rio.storage import register_engine
from rio.storage._engine import (
    MIGRATION_TIMEOUT,
    Engine,
    Failure,
    apply_migrations,
    conflict,
    parse_engine_url,
)
from rio.storage.base import StateStorage, StoredReminder, StoredState, to_ms

__all__ = [
    "REMINDER_MIGRATIONS",
    "STATE_MIGRATIONS",
    "RedisEngine",
    "RedisMigration",
    "RedisStorage",
]

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_:.\-]{1,64}$")

#: A Redis migration: a coroutine given the client and the key prefix.
RedisMigration = Callable[[aioredis.Redis, str], Awaitable[None]]

_SAVE = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'v')) or 0
local expected = tonumber(ARGV[1])
if cur == expected then
  redis.call('HSET', KEYS[1], 'v', cur + 1, 'd', ARGV[2], 't', ARGV[3])
  return {1, cur + 1}
end
if cur == expected + 1 and redis.call('HGET', KEYS[1], 't') == ARGV[3] then
  return {1, cur}
end
return {0, cur}
"""

_DELETE = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'v')) or 0
if cur == tonumber(ARGV[1]) then
  if cur ~= 0 then redis.call('DEL', KEYS[1]) end
  return {1, cur}
end
return {0, cur}
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_REM_UPSERT = """
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"""

_REM_DELETE = """
local n = redis.call('SREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return n
"""

_REM_ADVANCE = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
  return 1
end
return 0
"""

_REM_DUE = """
local m = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local out = {}
for i = 1, #m, 2 do
  local p = redis.call('HGET', KEYS[2], m[i])
  if p then
    out[#out + 1] = m[i]
    out[#out + 1] = m[i + 1]
    out[#out + 1] = p
  end
end
return out
"""

_REM_LIST = """
local out = {}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local m = ARGV[1] .. n
  local s = redis.call('ZSCORE', KEYS[2], m)
  local p = redis.call('HGET', KEYS[3], m)
  if s and p then
    out[#out + 1] = n
    out[#out + 1] = s
    out[#out + 1] = p
  end
end
return out
"""


async def _layout_v1(client: aioredis.Redis, prefix: str) -> None:
    """States as hashes {v, d, t}: nothing to convert, the version marks the layout."""


#: Migrations of the ``state`` component.
STATE_MIGRATIONS: list[RedisMigration] = [_layout_v1]


async def _reminders_v1(client: aioredis.Redis, prefix: str) -> None:
    """Reminders in a sorted set, a hash and a set per object: a new key space."""


#: Migrations of the ``reminders`` component.
REMINDER_MIGRATIONS: list[RedisMigration] = [_reminders_v1]


class RedisEngine(Engine):
    """A redis-py connection pool plus migrations, shared by every rio key set on one server.

    Example::

        engine = RedisEngine("redis://cache.internal:6379/0?prefix=shop:")
        await engine.open()
    """

    kind = "Redis"

    def __init__(self, url: str) -> None:
        cfg = parse_engine_url(
            url, engine="redis", default_port=6379, default_prefix="rio:", prefix_re=_PREFIX_RE
        )
        if not re.fullmatch(r"\d{0,5}", cfg.database):
            raise ConfigError(
                f"redis URL {cfg.url!r}: the path must be a database number, e.g. redis://host/0"
            )
        super().__init__(cfg)
        self.prefix = cfg.prefix
        self.client: aioredis.Redis | None = None

    async def _connect(self) -> None:
        cfg = self.cfg
        pool = aioredis.BlockingConnectionPool(
            connection_class=SSLConnection if cfg.scheme == "rediss" else aioredis.Connection,
            max_connections=cfg.pool_size,
            timeout=None,
            host=cfg.host,
            port=cfg.port,
            db=int(cfg.database or 0),
            username=cfg.user,
            password=cfg.password,
            socket_connect_timeout=cfg.connect_timeout,
            client_name=f"rio:{cfg.prefix}",
            # Retries are rio's (Engine.run): only for calls that are safe to replay.
            retry=Retry(NoBackoff(), 0),
        )
        client = aioredis.Redis.from_pool(pool)
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self.client = client

    async def _disconnect(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (RedisError,)

    def _classify(self, exc: BaseException) -> Failure:
        if isinstance(
            exc, AuthenticationError | AuthenticationWrongNumberOfArgsError | NoPermissionError
        ):
            return "auth"
        if isinstance(exc, ResponseError) and str(exc).startswith(("WRONGPASS", "NOAUTH")):
            return "auth"
        if isinstance(exc, ConnectionError | TimeoutError | OSError):
            return "unavailable"
        return "other"

    def _client(self) -> aioredis.Redis:
        if self.client is None:
            raise StorageError(f"{self.url} is not open: call open() first")
        return self.client

    async def schema_version(self, component: str) -> int:
        """See :meth:`Engine.schema_version`."""
        client = self._client()

        async def read() -> int:
            return int(await client.hget(f"{self.prefix}schema", component) or 0)

        return await self.run(f"reading the {component} schema version", read, retry=True)

    async def migrate(self, component: str, migrations: Sequence[RedisMigration]) -> int:
        """Apply pending migrations of ``component`` under a ``SET NX`` lock."""
        client = self._client()
        lock, table = f"{self.prefix}schema:lock", f"{self.prefix}schema"
        token = os.urandom(16).hex()

        async def read() -> int:
            return int(await client.hget(table, component) or 0)

        async def apply(index: int) -> None:
            await migrations[index](client, self.prefix)
            await client.hset(table, component, str(index + 1))

        async def run() -> int:
            deadline = time.monotonic() + 120
            # A holder that died leaves the lock to expire; the lease outlives any
            # migration rio ships (they are key layout markers or short scans).
            while not await client.set(lock, token, nx=True, px=60_000):
                if await client.get(lock) == token.encode():
                    break  # ours already: a retry after the connection dropped
                if time.monotonic() > deadline:
                    raise StorageError(f"{self.url}: timed out waiting for the lock {lock!r}")
                await asyncio.sleep(0.01)
            try:
                return await apply_migrations(self.url, component, len(migrations), read, apply)
            finally:
                await client.eval(_UNLOCK, 1, lock, token)

        return await self.run(
            f"migrating {component} keys", run, retry=True, limit=MIGRATION_TIMEOUT
        )


class RedisStorage(StateStorage):
    """Actor state in Redis: one hash per object, compare-and-set in Lua.

    Example::

        app = rio.App(storage="redis://cache.internal:6379/0?prefix=shop:")
    """

    def __init__(self, url: str) -> None:
        self.engine = RedisEngine(url)
        self.url = self.engine.url
        self._prefix = f"{self.engine.prefix}state:".encode()
        self._save: Any = None
        self._delete: Any = None
        rem = f"{self.engine.prefix}reminders:".encode()
        self._rem_due = rem + b"due"
        self._rem_period = rem + b"period"
        self._rem_object = rem + b"o:"
        self._rem_scripts: dict[str, Any] = {}

    def key(self, type_name: str, object_id: str) -> bytes:
        """Return the Redis key of ``(type_name, object_id)``."""
        t = type_name.encode()
        return b"%s%d:%s:%s" % (self._prefix, len(t), t, object_id.encode())

    async def open(self) -> None:
        """Connect and apply pending migrations."""
        if self.engine.is_open:
            return
        await self.engine.open()
        try:
            await self.engine.migrate("state", STATE_MIGRATIONS)
            await self.engine.migrate("reminders", REMINDER_MIGRATIONS)
        except BaseException:
            await self.engine.close()
            raise
        client = self.engine._client()
        self._save = client.register_script(_SAVE)
        self._delete = client.register_script(_DELETE)
        self._rem_scripts = {
            "upsert": client.register_script(_REM_UPSERT),
            "delete": client.register_script(_REM_DELETE),
            "advance": client.register_script(_REM_ADVANCE),
            "due": client.register_script(_REM_DUE),
            "list": client.register_script(_REM_LIST),
        }

    async def close(self) -> None:
        """Close the pool."""
        await self.engine.close()

    async def load(self, type_name: str, object_id: str, state_type: Any) -> StoredState | None:
        """Read one state."""
        client = self.engine._client()
        key = self.key(type_name, object_id)
        version, data = await self.engine.run(
            f"loading {type_name}/{object_id}",
            lambda: client.hmget(key, ["v", "d"]),
            retry=True,
        )
        if version is None:
            return None
        assert isinstance(data, bytes)  # decode_responses is off
        value = decode_state(data, state_type, type_name, object_id)
        return StoredState(value, int(version))

    async def save(
        self,
        type_name: str,
        object_id: str,
        state: Any,
        state_type: Any,
        expected_version: int,
    ) -> int:
        """Compare-and-set one state in a Lua script."""
        data = encode_checked(state, state_type, type_name, object_id)
        args = [expected_version, data, random.getrandbits(63)]
        key = self.key(type_name, object_id)
        ok, version = await self.engine.run(
            f"saving {type_name}/{object_id}",
            lambda: self._save(keys=[key], args=args),
            retry=True,
        )
        if not ok:
            raise conflict(self.url, type_name, object_id, version, expected_version, "writer")
        return int(version)

    async def delete(self, type_name: str, object_id: str, expected_version: int) -> None:
        """Compare-and-delete one state in a Lua script."""
        key = self.key(type_name, object_id)
        ok, version = await self.engine.run(
            f"deleting {type_name}/{object_id}",
            lambda: self._delete(keys=[key], args=[expected_version]),
            retry=False,
        )
        if not ok:
            raise conflict(self.url, type_name, object_id, version, expected_version, "deleter")

    # -- durable reminders ---------------------------------------------------------

    def _rem_member_prefix(self, type_name: str, object_id: str) -> bytes:
        t, i = type_name.encode(), object_id.encode()
        return b"%d:%s:%d:%s:" % (len(t), t, len(i), i)

    def _rem_keys(self, type_name: str, object_id: str) -> list[bytes]:
        t = type_name.encode()
        obj = b"%s%d:%s:%s" % (self._rem_object, len(t), t, object_id.encode())
        return [self._rem_due, self._rem_period, obj]

    async def _rem(
        self, script: str, action: str, keys: list[bytes], args: list[Any], *, retry: bool
    ) -> Any:
        run = self._rem_scripts.get(script)
        if run is None:
            raise StorageError(f"{self.url} is not open: call open() first")
        return await self.engine.run(action, lambda: run(keys=keys, args=args), retry=retry)

    async def upsert_reminder(
        self, type_name: str, object_id: str, name: str, period: float, next_due: float
    ) -> None:
        """Create or replace one reminder (an idempotent script: retried once if cut off)."""
        member = self._rem_member_prefix(type_name, object_id) + name.encode()
        await self._rem(
            "upsert",
            f"saving reminder {name!r} of {type_name}/{object_id}",
            self._rem_keys(type_name, object_id),
            [member, name.encode(), repr(float(period)), to_ms(next_due)],
            retry=True,
        )

    async def delete_reminder(self, type_name: str, object_id: str, name: str) -> bool:
        """Remove one reminder; False when there was none."""
        member = self._rem_member_prefix(type_name, object_id) + name.encode()
        removed = await self._rem(
            "delete",
            f"deleting reminder {name!r} of {type_name}/{object_id}",
            self._rem_keys(type_name, object_id),
            [member, name.encode()],
            retry=False,
        )
        return bool(removed)

    async def list_reminders(self, type_name: str, object_id: str) -> list[StoredReminder]:
        """The reminders of one object, by name."""
        due, period, obj = self._rem_keys(type_name, object_id)
        flat = await self._rem(
            "list",
            f"listing the reminders of {type_name}/{object_id}",
            [obj, due, period],
            [self._rem_member_prefix(type_name, object_id)],
            retry=True,
        )
        out = [
            StoredReminder(type_name, object_id, n.decode(), float(p), int(float(s)) / 1000)
            for n, s, p in zip(flat[0::3], flat[1::3], flat[2::3], strict=True)
        ]
        return sorted(out)

    async def due_reminders(self, now: float, limit: int) -> list[StoredReminder]:
        """The reminders due at ``now``, earliest first."""
        flat = await self._rem(
            "due",
            "reading due reminders",
            [self._rem_due, self._rem_period],
            [to_ms(now), limit],
            retry=True,
        )
        out = []
        for m, s, p in zip(flat[0::3], flat[1::3], flat[2::3], strict=True):
            t, i, n = _split_member(m)
            out.append(StoredReminder(t, i, n, float(p), int(float(s)) / 1000))
        return out

    async def advance_reminder(
        self, type_name: str, object_id: str, name: str, expected_due: float, new_due: float
    ) -> bool:
        """Compare-and-set one reminder's due time."""
        member = self._rem_member_prefix(type_name, object_id) + name.encode()
        done = await self._rem(
            "advance",
            f"advancing reminder {name!r} of {type_name}/{object_id}",
            [self._rem_due],
            [member, to_ms(expected_due), to_ms(new_due)],
            retry=False,
        )
        return bool(done)


def _split_member(member: bytes) -> tuple[str, str, str]:
    """``(type, id, name)`` from ``<len>:<type>:<len>:<id>:<name>``."""
    head, _, rest = member.partition(b":")
    t, rest = rest[: int(head)], rest[int(head) + 1 :]
    head, _, rest = rest.partition(b":")
    i, name = rest[: int(head)], rest[int(head) + 1 :]
    return t.decode(), i.decode(), name.decode()


def _from_url(url: str) -> RedisStorage:
    return RedisStorage(url)


register_engine("redis", _from_url)
register_engine("rediss", _from_url)
