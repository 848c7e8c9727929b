"""Cluster store on PostgreSQL (asyncpg) and MySQL/MariaDB (aiomysql).

URLs and options are the state engines' (:mod:`rio.storage.postgres`,
:mod:`rio.storage.mysql`): ``postgresql://`` or ``postgres://`` and ``mysql://`` or
``mariadb://``, with ``prefix``, ``pool_size``, ``connect_timeout`` and each engine's
own. The pool, the migrations (component ``"cluster"`` in ``<prefix>schema``, applied
once under the server-side lock) and the error translation are the engine's
(:class:`rio.storage._engine.Engine`), so cluster and state tables can live side by
side under one prefix.

Tables:

* ``<prefix>members`` — one row per member, keyed by ``member_id``: ``node``,
  ``address``, ``incarnation``, ``status``, ``types`` (JSON list), ``activations``,
  ``by_type`` (JSON object), ``heartbeat`` and ``started`` (unix seconds, double).
  ``types``/``by_type`` are ``jsonb`` in PostgreSQL and JSON text in a ``MEDIUMBLOB``
  in MySQL.
* ``<prefix>suspicions`` — ``(target, observer)`` primary key and ``at`` (double):
  each observer's latest suspicion of each target.
* ``<prefix>placements`` — ``(type_name, object_id)`` primary key and ``owner`` (a
  member id, indexed so a member's placements are found without a scan).

In MySQL every key column is ``VARBINARY`` (UTF-8 bytes): the server's text collations
would make ``"a"``, ``"A"`` and ``"a "`` one key. Member ids hold at most 255 bytes,
type names 255 and object ids 1024.

Atomicity. :meth:`~ClusterStore.claim` runs in one transaction: it takes a shared
lock on the claimant's member row (so :meth:`~ClusterStore.declare_dead` of the
claimant waits for it, or it sees the claimant dead), inserts the placement if
absent, otherwise locks the placement row and moves it only when the owner's row is
terminal or missing. ``declare_dead`` updates the member row (waiting for claims
holding its lock) and then, in a later statement of the same transaction, deletes
its placements, so a claim that committed meanwhile is purged too. MySQL transactions
run at READ COMMITTED (no gap locks between racing inserts); a transaction the server
aborts as a deadlock is replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

import aiomysql
import asyncpg

from rio.cluster.store import (
    LIVE,
    ClusterStore,
    Key,
    Member,
    Status,
    open_existing_schema,
    register_cluster_store,
)
from rio.cluster.stores._rows import (
    LIVE_SQL,
    MEMBER_COLUMNS,
    TERMINAL_SQL,
    check_update,
    claiming,
    decode_member,
    encode_json,
    member_values,
    text,
)
from rio.core.errors import ConfigError, StorageError
from rio.storage._engine import Engine, TableNames
from rio.storage.mysql import _ID_MAX, _TYPE_MAX, MySQLEngine
from rio.storage.postgres import PostgresEngine

__all__ = ["MySQLClusterStore", "PostgresClusterStore", "SQLClusterStore"]

T = TypeVar("T")

#: How often a transaction the server aborted as a deadlock is replayed.
_DEADLOCK_RETRIES = 5
#: Keys deleted per statement by ``release``.
_RELEASE_CHUNK = 500

#: Migrations of the ``cluster`` component on PostgreSQL.
POSTGRES_MIGRATIONS: list[tuple[str, ...]] = [
    (
        """
        CREATE TABLE {members} (
            member_id   text             PRIMARY KEY,
            node        text             NOT NULL,
            address     text             NOT NULL,
            incarnation bigint           NOT NULL,
            status      text             NOT NULL,
            types       jsonb            NOT NULL,
            activations bigint           NOT NULL,
            by_type     jsonb            NOT NULL,
            heartbeat   double precision NOT NULL,
            started     double precision NOT NULL
        )
        """,
        """
        CREATE TABLE {suspicions} (
            target   text             NOT NULL,
            observer text             NOT NULL,
            at       double precision NOT NULL,
            PRIMARY KEY (target, observer)
        )
        """,
        """
        CREATE TABLE {placements} (
            type_name text NOT NULL,
            object_id text NOT NULL,
            owner     text NOT NULL,
            PRIMARY KEY (type_name, object_id)
        )
        """,
        "CREATE INDEX ON {placements} (owner)",
    ),
]

#: Migrations of the ``cluster`` component on MySQL/MariaDB (DDL is not transactional
#: there: each statement may run again after a crash, hence ``IF NOT EXISTS``).
MYSQL_MIGRATIONS: list[tuple[str, ...]] = [
    (
        """
        CREATE TABLE IF NOT EXISTS {members} (
            member_id   VARBINARY(255) NOT NULL PRIMARY KEY,
            node        VARBINARY(1024) NOT NULL,
            address     VARBINARY(1024) NOT NULL,
            incarnation BIGINT NOT NULL,
            status      VARCHAR(16) CHARACTER SET ascii NOT NULL,
            types       MEDIUMBLOB NOT NULL,
            activations BIGINT NOT NULL,
            by_type     MEDIUMBLOB NOT NULL,
            heartbeat   DOUBLE NOT NULL,
            started     DOUBLE NOT NULL
        ) ENGINE=InnoDB
        """,
        """
        CREATE TABLE IF NOT EXISTS {suspicions} (
            target   VARBINARY(255) NOT NULL,
            observer VARBINARY(255) NOT NULL,
            at       DOUBLE NOT NULL,
            PRIMARY KEY (target, observer)
        ) ENGINE=InnoDB
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {{placements}} (
            type_name VARBINARY({_TYPE_MAX}) NOT NULL,
            object_id VARBINARY({_ID_MAX}) NOT NULL,
            owner     VARBINARY(255) NOT NULL,
            PRIMARY KEY (type_name, object_id),
            KEY owner_idx (owner)
        ) ENGINE=InnoDB
        """,
    ),
]

_MEMBER_MAX = 255


class _Conn(Protocol):
    """One connection (inside or outside a transaction), as the queries need it."""

    async def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        """Run a query; return its rows."""

    async def count(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run a statement; return how many rows it changed."""

    async def insert(self, sql: str, args: Sequence[Any]) -> bool:
        """Run an INSERT; return False when the key existed (nothing inserted)."""


_Body = Callable[[_Conn], Awaitable[T]]


class SQLClusterStore(ClusterStore):
    """What the PostgreSQL and MySQL cluster stores share: the queries and their logic.

    Queries are written once with ``?`` placeholders and ``{members}``-style table
    names; each dialect turns them into its own (:meth:`_sql`) and says how to lock a
    row for sharing, insert-if-absent and run a transaction.
    """

    #: The engine's migrations for the ``cluster`` component.
    migrations: ClassVar[Sequence[Sequence[str]]] = ()
    #: The clause that takes a shared lock on the rows a SELECT reads.
    share_lock: ClassVar[str] = ""
    #: Appended to an INSERT into placements so an existing key is left alone.
    keep_existing: ClassVar[str] = ""
    #: Appended to an INSERT into members so an existing id is left alone.
    keep_member: ClassVar[str] = ""
    #: The conflict clause of the suspicion upsert; its one ``?`` is the new time.
    upsert_at: ClassVar[str] = ""

    def __init__(self, engine: Engine, tables: TableNames) -> None:
        self.engine = engine
        self.url = engine.url
        self._ready = False
        self._open_lock = asyncio.Lock()
        names = {
            "members": tables["members"],
            "suspicions": tables["suspicions"],
            "placements": tables["placements"],
            "cols": ", ".join(MEMBER_COLUMNS),
            "marks": ", ".join("?" * len(MEMBER_COLUMNS)),
            "live": LIVE_SQL,
            "terminal": TERMINAL_SQL,
            "share": self.share_lock,
            "keep": self.keep_existing,
            "keep_member": self.keep_member,
        }

        def q(template: str) -> str:
            return self._sql(template.format_map(names))

        key = "type_name = ? AND object_id = ?"
        gone = "SELECT member_id FROM {members} WHERE status IN {terminal} AND heartbeat < ?"
        self._q_register = q("INSERT INTO {members} ({cols}) VALUES ({marks}){keep_member}")
        self._q_member = q("SELECT {cols} FROM {members} WHERE member_id = ?")
        self._q_members = q("SELECT {cols} FROM {members} ORDER BY member_id")
        self._q_update = q(
            "UPDATE {members} SET status = COALESCE(?, status), "
            "heartbeat = COALESCE(?, heartbeat), activations = COALESCE(?, activations), "
            "by_type = COALESCE(?, by_type) WHERE member_id = ? AND status NOT IN {terminal}"
        )
        self._q_suspect = q(
            "INSERT INTO {suspicions} (target, observer, at) VALUES (?, ?, ?) " + self.upsert_at
        )
        self._q_suspicions = q("SELECT count(*) FROM {suspicions} WHERE target = ? AND at >= ?")
        self._q_kill = q(
            "UPDATE {members} SET status = 'dead' WHERE member_id = ? AND status IN {live}"
        )
        self._q_purge = q("DELETE FROM {placements} WHERE owner = ?")
        self._q_prune_suspicions = q(
            "DELETE FROM {suspicions} WHERE target IN (" + gone + ") OR observer IN (" + gone + ")"
        )
        self._q_prune = q("DELETE FROM {members} WHERE status IN {terminal} AND heartbeat < ?")
        self._q_status = q("SELECT status FROM {members} WHERE member_id = ?")
        self._q_status_shared = q("SELECT status FROM {members} WHERE member_id = ? {share}")
        self._q_lookup = q(f"SELECT owner FROM {{placements}} WHERE {key}")
        self._q_lookup_locked = q(f"SELECT owner FROM {{placements}} WHERE {key} FOR UPDATE")
        self._q_place = q(
            "INSERT INTO {placements} (type_name, object_id, owner) VALUES (?, ?, ?){keep}"
        )
        self._q_move = q(f"UPDATE {{placements}} SET owner = ? WHERE {key} AND owner = ?")
        self._q_counts = q("SELECT owner, count(*) FROM {placements} GROUP BY owner")

    def _sql(self, template: str) -> str:
        """Turn ``?`` placeholders into the driver's."""
        raise NotImplementedError

    async def _session(self, action: str, body: _Body[T], *, retry: bool, write: bool) -> T:
        """Run ``body`` on a pooled connection, in a transaction if ``write``.

        Driver errors leave as :class:`StorageError` (``action`` names the step);
        ``retry`` replays the call once on a lost connection (replay-safe calls only).
        """
        raise NotImplementedError

    async def _release(self, conn: _Conn, keys: list[Key], member_id: str) -> int:
        """Delete those of ``keys`` that ``member_id`` owns; return how many."""
        raise NotImplementedError

    def _check_key(self, key: Key) -> None:
        """Refuse a key the tables cannot hold exactly."""

    def _check_member(self, member_id: str) -> None:
        """Refuse a member id the tables cannot hold exactly."""

    def _json(self, doc: str) -> Any:
        """A JSON text as the driver passes it to a JSON column."""
        return doc

    # -- connection -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect the engine's pool and apply pending ``cluster`` migrations."""
        async with self._open_lock:
            if self._ready:
                return
            await self.engine.open()
            try:
                await self.engine.migrate("cluster", self.migrations)
            except BaseException:
                await self.engine.close()
                raise
            self._ready = True

    async def open_existing(self) -> None:
        """See :meth:`ClusterStore.open_existing`."""
        async with self._open_lock:
            if self._ready:
                return
            await open_existing_schema(self.engine, len(self.migrations))
            self._ready = True

    async def close(self) -> None:
        """Close the pool (idempotent)."""
        async with self._open_lock:
            self._ready = False
            await self.engine.close()

    # -- membership -----------------------------------------------------------------------

    async def register(self, member: Member) -> None:
        """Insert ``member``'s row; ConfigError if its ``member_id`` is taken."""
        self._check_member(member.member_id)
        values = list(member_values(member))
        values[5], values[7] = self._json(values[5]), self._json(values[7])

        async def body(conn: _Conn) -> bool:
            return await conn.insert(self._q_register, values)

        # Not replayed: a replay of a committed insert would look like a duplicate.
        if not await self._session(
            f"registering {member.member_id}", body, retry=False, write=False
        ):
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
        doc = None if by_type is None else self._json(encode_json(by_type))
        hb = None if heartbeat is None else float(heartbeat)
        args = (status, hb, activations, doc, member_id)

        async def body(conn: _Conn) -> Member | None:
            await conn.count(self._q_update, args)
            rows = await conn.rows(self._q_member, (member_id,))
            return decode_member(rows[0]) if rows else None

        return await self._session(f"updating {member_id}", body, retry=True, write=False)

    async def members(self) -> list[Member]:
        """Every row, terminal ones included."""

        async def body(conn: _Conn) -> list[Member]:
            return [decode_member(row) for row in await conn.rows(self._q_members)]

        return await self._session("reading the members", body, retry=True, write=False)

    async def suspect(self, target: str, observer: str, now: float, window: float) -> int:
        """Record the suspicion; count distinct observers since ``now - window``."""
        self._check_member(target)
        self._check_member(observer)

        async def body(conn: _Conn) -> int:
            at = float(now)
            await conn.count(self._q_suspect, (target, observer, at, at))
            rows = await conn.rows(self._q_suspicions, (target, at - window))
            return int(rows[0][0])

        return await self._session(
            f"recording a suspicion of {target}", body, retry=True, write=False
        )

    async def declare_dead(self, member_id: str) -> bool:
        """Move a live row to ``dead`` and delete its placements, in one transaction."""

        async def body(conn: _Conn) -> bool:
            if not await conn.count(self._q_kill, (member_id,)):
                return False
            # A later statement: it sees claims that held the row until the UPDATE.
            await conn.count(self._q_purge, (member_id,))
            return True

        return await self._session(f"declaring {member_id} dead", body, retry=False, write=True)

    async def prune(self, before: float) -> int:
        """Delete terminal rows with a heartbeat older than ``before``, and their suspicions."""

        async def body(conn: _Conn) -> int:
            cutoff = float(before)
            await conn.count(self._q_prune_suspicions, (cutoff, cutoff))
            return await conn.count(self._q_prune, (cutoff,))

        return await self._session("pruning members", body, retry=False, write=True)

    # -- placement ------------------------------------------------------------------------

    async def lookup(self, key: Key) -> str | None:
        """The member ``key`` is placed on, or None."""

        async def body(conn: _Conn) -> str | None:
            rows = await conn.rows(self._q_lookup, key)
            return text(rows[0][0]) if rows else None

        return await self._session(f"looking up {key[0]}/{key[1]}", body, retry=True, write=False)

    async def claim(self, key: Key, member_id: str) -> str:
        """Place ``key`` on ``member_id`` unless a live member holds it; return the owner."""
        (owner,) = await self.claim_many([key], member_id)
        return owner

    async def claim_many(self, keys: Sequence[Key], member_id: str) -> list[str]:
        """:meth:`claim` each of ``keys``, all in one transaction; their owners, in order."""
        if not keys:
            return []
        for key in keys:
            self._check_key(key)
        self._check_member(member_id)
        # Rows are locked in one order by every claimer: two batches never deadlock.
        ordered = sorted(set(keys))

        async def body(conn: _Conn) -> dict[Key, str]:
            # Held to the end: declare_dead(member_id) waits, or has already won.
            mine = await conn.rows(self._q_status_shared, (member_id,))
            live = bool(mine) and text(mine[0][0]) in LIVE
            return {key: await self._claim_one(conn, key, member_id, live) for key in ordered}

        # Replay-safe: a committed first attempt is found as ours.
        owners = await self._session(claiming(keys), body, retry=True, write=True)
        return [owners[key] for key in keys]

    async def _claim_one(self, conn: _Conn, key: Key, member_id: str, live: bool) -> str:
        if not live:
            rows = await conn.rows(self._q_lookup, key)
            return text(rows[0][0]) if rows else ""
        while True:
            if await conn.insert(self._q_place, (*key, member_id)):
                return member_id
            rows = await conn.rows(self._q_lookup_locked, key)
            if not rows:
                continue  # released or purged since the insert: try again
            owner = text(rows[0][0])
            if owner == member_id:
                return owner
            # Not locked: declare_dead(owner) cannot commit while this transaction
            # holds the placement row, so a live answer stays right.
            theirs = await conn.rows(self._q_status, (owner,))
            if theirs and text(theirs[0][0]) in LIVE:
                return owner
            await conn.count(self._q_move, (member_id, *key, owner))
            return member_id

    async def release(self, keys: Iterable[Key], member_id: str) -> int:
        """Delete the placements of ``keys`` that ``member_id`` owns; return how many."""
        wanted = sorted(set(keys))
        if not wanted:
            return 0

        async def body(conn: _Conn) -> int:
            # Shares the member row with claims: declare_dead of this member goes
            # before or after, never interleaved row by row (no deadlock).
            await conn.rows(self._q_status_shared, (member_id,))
            released = 0
            for start in range(0, len(wanted), _RELEASE_CHUNK):
                chunk = wanted[start : start + _RELEASE_CHUNK]
                released += await self._release(conn, chunk, member_id)
            return released

        return await self._session(
            f"releasing placements of {member_id}", body, retry=False, write=True
        )

    async def placement_counts(self) -> dict[str, int]:
        """Placements per owning member id."""

        async def body(conn: _Conn) -> dict[str, int]:
            return {text(owner): int(n) for owner, n in await conn.rows(self._q_counts)}

        return await self._session("counting placements", body, retry=True, write=False)


# -- PostgreSQL -----------------------------------------------------------------------------


class _PostgresConn:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list(await self._conn.fetch(sql, *args))

    async def count(self, sql: str, args: Sequence[Any] = ()) -> int:
        status: str = await self._conn.execute(sql, *args)
        return int(status.rsplit(" ", 1)[-1])

    async def insert(self, sql: str, args: Sequence[Any]) -> bool:
        return await self.count(sql, args) == 1  # ... ON CONFLICT DO NOTHING


class PostgresClusterStore(SQLClusterStore):
    """Membership and placement in PostgreSQL, on :class:`PostgresEngine`.

    Example::

        store = cluster_store_from_url("postgresql://app:pw@db/rio?prefix=shop_")
    """

    migrations = POSTGRES_MIGRATIONS
    share_lock = "FOR SHARE"
    keep_existing = " ON CONFLICT (type_name, object_id) DO NOTHING"
    keep_member = " ON CONFLICT (member_id) DO NOTHING"
    upsert_at = "ON CONFLICT (target, observer) DO UPDATE SET at = ?"

    def __init__(self, url: str) -> None:
        engine = PostgresEngine(url)
        super().__init__(engine, engine.tables)
        self._pg = engine
        t = engine.tables["placements"]
        self._q_release = (
            f"DELETE FROM {t} p USING unnest($1::text[], $2::text[]) AS k(t, i) "
            "WHERE p.type_name = k.t AND p.object_id = k.i AND p.owner = $3"
        )

    def _sql(self, template: str) -> str:
        numbers = itertools.count(1)
        return "".join(
            part if i == 0 else f"${next(numbers)}{part}"
            for i, part in enumerate(template.split("?"))
        )

    def _json(self, doc: str) -> Any:
        return doc.encode()  # the engine's jsonb codec takes the JSON as bytes

    async def _session(self, action: str, body: _Body[T], *, retry: bool, write: bool) -> T:
        pool = self._pg.pool

        async def call() -> T:
            for attempt in itertools.count(1):
                try:
                    async with pool.acquire() as conn:
                        if not write:
                            return await body(_PostgresConn(conn))
                        async with conn.transaction():
                            return await body(_PostgresConn(conn))
                except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                    if attempt > _DEADLOCK_RETRIES:
                        raise
            raise AssertionError("unreachable")

        return await self.engine.run(action, call, retry=retry)

    async def _release(self, conn: _Conn, keys: list[Key], member_id: str) -> int:
        types = [t for t, _ in keys]
        ids = [i for _, i in keys]
        return await conn.count(self._q_release, (types, ids, member_id))


# -- MySQL / MariaDB ------------------------------------------------------------------------

_DUP_ENTRY = 1062
_DEADLOCK = 1213


class _MySQLConn:
    def __init__(self, cur: Any) -> None:
        self._cur = cur

    async def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        await self._cur.execute(sql, tuple(args) or None)
        return list(await self._cur.fetchall())

    async def count(self, sql: str, args: Sequence[Any] = ()) -> int:
        await self._cur.execute(sql, tuple(args) or None)
        return int(self._cur.rowcount)

    async def insert(self, sql: str, args: Sequence[Any]) -> bool:
        try:
            # Placements: ON DUPLICATE KEY UPDATE owner = owner, which counts 0 for an
            # existing key (the pool does not ask for CLIENT_FOUND_ROWS) and, unlike a
            # failed INSERT, locks that row exclusively, not shared: racing claims
            # queue on it instead of deadlocking when they upgrade their locks.
            return await self.count(sql, args) == 1
        except aiomysql.IntegrityError as e:
            if e.args and e.args[0] == _DUP_ENTRY:
                return False
            raise


class MySQLClusterStore(SQLClusterStore):
    """Membership and placement in MySQL or MariaDB, on :class:`MySQLEngine`.

    Example::

        store = cluster_store_from_url("mysql://app:pw@db/rio?prefix=shop_")
    """

    migrations = MYSQL_MIGRATIONS
    share_lock = "LOCK IN SHARE MODE"
    keep_existing = " ON DUPLICATE KEY UPDATE owner = owner"
    upsert_at = "ON DUPLICATE KEY UPDATE at = ?"

    def __init__(self, url: str) -> None:
        engine = MySQLEngine(url)
        super().__init__(engine, engine.tables)
        self._my = engine
        self._placements = engine.tables["placements"]

    def _sql(self, template: str) -> str:
        return template.replace("?", "%s")

    async def _session(self, action: str, body: _Body[T], *, retry: bool, write: bool) -> T:
        pool = self._my.pool

        async def once() -> T:
            async with pool.acquire() as conn, conn.cursor() as cur:
                if not write:
                    return await body(_MySQLConn(cur))
                # Per transaction, not per session: pooled connections keep no state.
                await cur.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                await conn.begin()
                try:
                    result = await body(_MySQLConn(cur))
                    await conn.commit()
                except aiomysql.MySQLError:
                    with contextlib.suppress(Exception):
                        await conn.rollback()
                    raise
                except BaseException:
                    conn.close()  # mid-statement (cancelled): the pool drops it
                    raise
                return result

        async def call() -> T:
            for attempt in itertools.count(1):
                try:
                    return await once()
                except aiomysql.MySQLError as e:
                    if not (e.args and e.args[0] == _DEADLOCK) or attempt > _DEADLOCK_RETRIES:
                        raise
            raise AssertionError("unreachable")

        return await self.engine.run(action, call, retry=retry)

    async def _release(self, conn: _Conn, keys: list[Key], member_id: str) -> int:
        marks = ", ".join(["(%s, %s)"] * len(keys))
        sql = (
            f"DELETE FROM {self._placements} WHERE owner = %s "
            f"AND (type_name, object_id) IN ({marks})"
        )
        return await conn.count(sql, (member_id, *itertools.chain.from_iterable(keys)))

    def _check_key(self, key: Key) -> None:
        if len(key[0].encode()) > _TYPE_MAX or len(key[1].encode()) > _ID_MAX:
            raise StorageError(
                f"{key[0][:40]}/{key[1][:40]} in {self.url}: MySQL placement keys hold at "
                f"most {_TYPE_MAX} bytes of type name and {_ID_MAX} bytes of id (UTF-8)"
            )

    def _check_member(self, member_id: str) -> None:
        if len(member_id.encode()) > _MEMBER_MAX:
            raise StorageError(
                f"member id {member_id[:40]!r} in {self.url}: MySQL member ids hold at most "
                f"{_MEMBER_MAX} bytes (UTF-8)"
            )


def _postgres(url: str) -> PostgresClusterStore:
    return PostgresClusterStore(url)


def _mysql(url: str) -> MySQLClusterStore:
    return MySQLClusterStore(url)


register_cluster_store("postgresql", _postgres)
register_cluster_store("postgres", _postgres)
register_cluster_store("mysql", _mysql)
register_cluster_store("mariadb", _mysql)
