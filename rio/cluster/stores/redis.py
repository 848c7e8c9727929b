"""Cluster store on Redis, through the state engine's connection layer.

URL and options are :mod:`rio.storage.redis`'s: ``redis://user:pw@host:6379/0`` (or
``rediss://`` for TLS) with ``prefix`` (default ``rio:``), ``pool_size`` and
``connect_timeout``. Migrations (component ``"cluster"``) and error translation are
the engine's (:class:`rio.storage.redis.RedisEngine`).

Keys, all under ``<prefix>cluster:``:

* ``members`` — a set of every member id (the index of the member hashes).
* ``member:<member_id>`` — a hash per member: ``node``, ``address``,
  ``incarnation``, ``status``, ``types`` (JSON list), ``activations``, ``by_type``
  (JSON object), ``heartbeat`` and ``started`` (unix seconds, as decimal text).
* ``suspicions:<target>`` — a sorted set per suspected member: observer ids, scored
  by the time of their latest suspicion (``ZADD`` replaces it; ``ZCOUNT`` counts).
* ``place:<n>:<type>:<id>`` — a string per placement holding the owner's member id
  (``<n>`` is the type name's length in UTF-8 bytes, so ``a:b``/``c`` and
  ``a``/``b:c`` stay apart).
* ``owned:<member_id>`` — a set of the placement keys the member owns, so purging a
  dead member costs its own placements, not a ``SCAN`` of the keyspace.
* ``counts`` — a hash of placements per owner, for :meth:`placement_counts`.

Every change that reads before it writes is one Lua script, atomic on the server:
register (insert if absent), update (refused on terminal rows), claim (checks the
claimant's and the current owner's status, moves the key between ``owned`` sets),
release, declare_dead (sets the status and deletes that member's placements) and
prune. A claim names the owner it expects so that every key it touches is declared
to the script; when the owner changed meanwhile it reads again and retries.
``declare_dead`` deletes placement keys found in the ``owned`` set, so the store needs
one Redis server (or a primary with replicas), not Redis Cluster, like the state
engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from rio.cluster.store import (
    ClusterStore,
    Key,
    Member,
    Status,
    open_existing_schema,
    register_cluster_store,
)
from rio.cluster.stores._rows import (
    MEMBER_COLUMNS,
    check_update,
    decode_member,
    encode_json,
    member_values,
    text,
)
from rio.core.errors import ConfigError, StorageError
from rio.storage.redis import RedisEngine, RedisMigration

__all__ = ["RedisClusterStore"]

#: Placement keys per ``release`` script call.
_RELEASE_CHUNK = 500
#: Claims re-read a changed owner at most this often before giving up.
_CLAIM_ATTEMPTS = 64

_LIVE_LUA = """
local function live(status)
  return status == 'joining' or status == 'active' or status == 'draining'
end
"""

# KEYS: member hash, index set. ARGV: member id, then field, value, ...
_REGISTER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: member hash. ARGV: field, value, ... (possibly none).
_UPDATE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if status ~= 'dead' and status ~= 'left' and #ARGV > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: member hash, its owned set, counts. ARGV: member id.
_DECLARE_DEAD = (
    _LIVE_LUA
    + """
if not live(redis.call('HGET', KEYS[1], 'status')) then return 0 end
redis.call('HSET', KEYS[1], 'status', 'dead')
for _, key in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""
)

# KEYS: placement, claimant's hash, claimant's owned set, counts, expected owner's
# hash, expected owner's owned set. ARGV: claimant id, expected owner id ('' = none).
# Returns {0, owner} when the owner is not the expected one (read again), else
# {1, owner after the claim}.
_CLAIM = (
    _LIVE_LUA
    + """
local owner = redis.call('GET', KEYS[1])
if (owner or '') ~= ARGV[2] then return {0, owner or ''} end
if not live(redis.call('HGET', KEYS[2], 'status')) then return {1, owner or ''} end
if owner then
  if owner == ARGV[1] or live(redis.call('HGET', KEYS[5], 'status')) then
    return {1, owner}
  end
  redis.call('SREM', KEYS[6], KEYS[1])
  if redis.call('HINCRBY', KEYS[4], owner, -1) <= 0 then redis.call('HDEL', KEYS[4], owner) end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[3], KEYS[1])
redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
return {1, ARGV[1]}
"""
)

# KEYS: owned set, counts, placement keys... ARGV: member id.
_RELEASE = """
local n = 0
for i = 3, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    redis.call('SREM', KEYS[1], KEYS[i])
    n = n + 1
  end
end
if n > 0 and redis.call('HINCRBY', KEYS[2], ARGV[1], -n) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return n
"""

# KEYS: member hash, index set, its suspicions. ARGV: member id, before.
_PRUNE = """
local row = redis.call('HMGET', KEYS[1], 'status', 'heartbeat')
if not row[1] then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 0
end
if row[1] ~= 'dead' and row[1] ~= 'left' then return 0 end
if tonumber(row[2]) >= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""


async def _layout_v1(client: aioredis.Redis, prefix: str) -> None:
    """Members, suspicions and placements as described above: nothing to convert."""


#: Migrations of the ``cluster`` component.
MIGRATIONS: list[RedisMigration] = [_layout_v1]


class RedisClusterStore(ClusterStore):
    """Membership and placement in Redis, every read-modify-write a Lua script.

    Example::

        store = cluster_store_from_url("redis://cache.internal:6379/0?prefix=shop:")
    """

    def __init__(self, url: str) -> None:
        self.engine = RedisEngine(url)
        self.url = self.engine.url
        base = f"{self.engine.prefix}cluster:"
        self._base = base.encode()
        self._index = f"{base}members"
        self._counts = f"{base}counts"
        self._scripts: dict[str, Any] = {}

    # -- keys -----------------------------------------------------------------------------

    def _member(self, member_id: str) -> bytes:
        return self._base + b"member:" + member_id.encode()

    def _owned(self, member_id: str) -> bytes:
        return self._base + b"owned:" + member_id.encode()

    def _suspicions(self, target: str) -> bytes:
        return self._base + b"suspicions:" + target.encode()

    def placement_key(self, key: Key) -> bytes:
        """The Redis key holding the owner of ``key``."""
        type_name = key[0].encode()
        return b"%splace:%d:%s:%s" % (self._base, len(type_name), type_name, key[1].encode())

    # -- connection -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and apply pending ``cluster`` migrations."""
        if self._scripts:
            return
        await self.engine.open()
        try:
            await self.engine.migrate("cluster", MIGRATIONS)
        except BaseException:
            await self.engine.close()
            raise
        self._load_scripts()

    async def open_existing(self) -> None:
        """See :meth:`ClusterStore.open_existing`."""
        if self._scripts:
            return
        await open_existing_schema(self.engine, len(MIGRATIONS))
        self._load_scripts()

    def _load_scripts(self) -> None:
        client = self.engine.client
        assert client is not None  # opened just above
        sources = {
            "register": _REGISTER,
            "update": _UPDATE,
            "declare_dead": _DECLARE_DEAD,
            "claim": _CLAIM,
            "release": _RELEASE,
            "prune": _PRUNE,
        }
        self._scripts = {name: client.register_script(src) for name, src in sources.items()}

    async def close(self) -> None:
        """Close the pool (idempotent)."""
        self._scripts = {}
        await self.engine.close()

    def _client(self) -> aioredis.Redis:
        client = self.engine.client
        if client is None or not self._scripts:
            raise StorageError(f"{self.url} is not open: call open() first")
        return client

    async def _eval(
        self, name: str, action: str, keys: list[Any], args: list[Any], *, retry: bool
    ) -> Any:
        """Run script ``name`` through the engine (errors translated, ``retry`` as there)."""
        self._client()
        script = self._scripts[name]
        return await self.engine.run(action, lambda: script(keys=keys, args=args), retry=retry)

    # -- membership -----------------------------------------------------------------------

    async def register(self, member: Member) -> None:
        """Insert ``member``'s hash; ConfigError if its ``member_id`` is taken."""
        fields: list[Any] = []
        for name, value in zip(MEMBER_COLUMNS[1:], member_values(member)[1:], strict=True):
            fields += [name, value]
        keys = [self._member(member.member_id), self._index]
        # Not replayed: a replay of a committed insert would look like a duplicate.
        added = await self._eval(
            "register",
            f"registering {member.member_id}",
            keys,
            [member.member_id, *fields],
            retry=False,
        )
        if not added:
            raise ConfigError(
                f"member {member.member_id!r} is already registered in {self.url}: "
                "a restarted node registers under a new incarnation"
            )

    async def update(
        self,
        member_id: str,
        *,
        status: Status | None = None,
        heartbeat: float | None = None,
        activations: int | None = None,
        by_type: dict[str, int] | None = None,
    ) -> Member | None:
        """Change the given fields unless the row is terminal; return the row as stored."""
        check_update(status)
        args: list[Any] = []
        if status is not None:
            args += ["status", status]
        if heartbeat is not None:
            args += ["heartbeat", float(heartbeat)]
        if activations is not None:
            args += ["activations", int(activations)]
        if by_type is not None:
            args += ["by_type", encode_json(by_type)]
        flat = await self._eval(
            "update", f"updating {member_id}", [self._member(member_id)], args, retry=True
        )
        if not flat:
            return None
        return _decode(member_id, dict(zip(flat[::2], flat[1::2], strict=True)))

    async def members(self) -> list[Member]:
        """Every row, terminal ones included."""
        client = self._client()

        async def read() -> list[Member]:
            ids = sorted(text(m) for m in await client.smembers(self._index))
            async with client.pipeline(transaction=False) as pipe:
                for member_id in ids:
                    pipe.hgetall(self._member(member_id))
                hashes = await pipe.execute()
            return [_decode(i, h) for i, h in zip(ids, hashes, strict=True) if h]

        return await self.engine.run("reading the members", read, retry=True)

    async def suspect(self, target: str, observer: str, now: float, window: float) -> int:
        """Record the suspicion; count distinct observers since ``now - window``."""
        client = self._client()
        key = self._suspicions(target)

        async def record() -> int:
            async with client.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {observer: float(now)})
                pipe.zcount(key, float(now - window), "+inf")
                _, count = await pipe.execute()
            return int(count)

        return await self.engine.run(f"recording a suspicion of {target}", record, retry=True)

    async def declare_dead(self, member_id: str) -> bool:
        """Set ``dead`` and delete the member's placements, in one script."""
        keys = [self._member(member_id), self._owned(member_id), self._counts]
        changed = await self._eval(
            "declare_dead", f"declaring {member_id} dead", keys, [member_id], retry=False
        )
        return bool(changed)

    async def prune(self, before: float) -> int:
        """Delete terminal rows with a heartbeat older than ``before``, and their suspicions."""
        client = self._client()
        rows = await self.members()
        candidates = [m.member_id for m in rows if not m.live and m.heartbeat < before]
        pruned: list[str] = []
        for member_id in candidates:
            keys = [self._member(member_id), self._index, self._suspicions(member_id)]
            # A replay finds the row gone and prunes nothing more.
            if await self._eval(
                "prune", f"pruning {member_id}", keys, [member_id, float(before)], retry=True
            ):
                pruned.append(member_id)
        if pruned:
            # Their suspicions of others go too.
            remaining = [m.member_id for m in rows if m.member_id not in set(pruned)]

            async def forget() -> None:
                async with client.pipeline(transaction=False) as pipe:
                    for target in remaining:
                        pipe.zrem(self._suspicions(target), *pruned)
                    await pipe.execute()

            await self.engine.run("pruning suspicions", forget, retry=True)
        return len(pruned)

    # -- placement ------------------------------------------------------------------------

    async def lookup(self, key: Key) -> str | None:
        """The member ``key`` is placed on, or None."""
        client = self._client()
        name = self.placement_key(key)
        owner = await self.engine.run(
            f"looking up {key[0]}/{key[1]}", lambda: client.get(name), retry=True
        )
        return None if owner is None else text(owner)

    async def claim(self, key: Key, member_id: str) -> str:
        """Place ``key`` on ``member_id`` unless a live member holds it; return the owner."""
        name = self.placement_key(key)
        mine = [name, self._member(member_id), self._owned(member_id), self._counts]
        expected = ""
        for _ in range(_CLAIM_ATTEMPTS):
            theirs = [self._member(expected), self._owned(expected)] if expected else mine[1:3]
            # Replay-safe: a committed first attempt is found as ours.
            done, owner = await self._eval(
                "claim",
                f"claiming {key[0]}/{key[1]}",
                [*mine, *theirs],
                [member_id, expected],
                retry=True,
            )
            if done:
                return text(owner)
            expected = text(owner)
        raise StorageError(
            f"{self.url}: claiming {key[0]}/{key[1]} gave up, its owner changed "
            f"{_CLAIM_ATTEMPTS} times in a row"
        )

    async def release(self, keys: Iterable[Key], member_id: str) -> int:
        """Delete the placements of ``keys`` that ``member_id`` owns; return how many."""
        names = sorted({self.placement_key(key) for key in keys})
        head = [self._owned(member_id), self._counts]
        released = 0
        for start in range(0, len(names), _RELEASE_CHUNK):
            chunk = [*head, *names[start : start + _RELEASE_CHUNK]]
            action = f"releasing placements of {member_id}"
            released += int(await self._eval("release", action, chunk, [member_id], retry=False))
        return released

    async def placement_counts(self) -> dict[str, int]:
        """Placements per owning member id."""
        client = self._client()
        counts = await self.engine.run(
            "counting placements",
            lambda: client.hgetall(self._counts),
            retry=True,
        )
        return {text(k): int(v) for k, v in counts.items() if int(v) > 0}


def _decode(member_id: str, fields: dict[bytes, bytes]) -> Member:
    return decode_member([member_id, *(fields[c.encode()] for c in MEMBER_COLUMNS[1:])])


def _from_url(url: str) -> RedisClusterStore:
    return RedisClusterStore(url)


register_cluster_store("redis", _from_url)
register_cluster_store("rediss", _from_url)
