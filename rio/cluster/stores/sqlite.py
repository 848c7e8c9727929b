"""Cluster store on SQLite, for a cluster whose nodes share one box (and one file).

URL: ``sqlite:///relative/cluster.db`` or ``sqlite:////abs/cluster.db``, parsed by the
state engine's own URL reader, so the options are the same: ``prefix`` (table prefix,
default ``rio_``), ``synchronous`` and ``busy_timeout_ms``. The file's folder is
created. State and cluster tables may share one file and one prefix.

Tables:

* ``<prefix>members`` — one row per member: ``member_id TEXT PRIMARY KEY``, ``node``,
  ``address``, ``incarnation``, ``status``, ``types`` (JSON list), ``activations``,
  ``by_type`` (JSON object), ``heartbeat`` and ``started`` (unix seconds, REAL).
* ``<prefix>suspicions`` — ``(target, observer)`` primary key and ``at`` (REAL): the
  latest time each observer suspected each target.
* ``<prefix>placements`` — ``(type_name, object_id)`` primary key and ``owner`` (a
  member id, indexed so a dead member's placements are found without a scan).
* ``<prefix>cluster_schema`` — one row, the number of cluster migrations applied (the
  state engine's ``<prefix>schema`` keeps its own count in another layout).

Every process opens its own connection on the file in WAL mode. Read-modify-write
operations (claim, declare_dead, suspect, update, prune, release) run in
``BEGIN IMMEDIATE`` transactions: the write lock is taken first, so two processes
never interleave them, and a busy file is waited on (``busy_timeout``); a
"database is locked" that still gets through is retried until the busy timeout is
spent, then reported as :class:`rio.StorageUnavailable`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import aiosqlite

from rio.cluster.store import (
    LIVE,
    ClusterStore,
    Key,
    Member,
    Status,
    check_existing_schema,
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
)
from rio.core.errors import ConfigError, StorageError, StorageUnavailable
from rio.storage import _sqlite_from_url, mask_url
from rio.storage.sqlite import is_locked, open_sqlite, retry_locked

__all__ = ["SQLiteClusterStore"]

T = TypeVar("T")

#: Migrations of the cluster tables, applied in order; each is a list of statements.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """
        CREATE TABLE IF NOT EXISTS {p}members (
            member_id   TEXT PRIMARY KEY NOT NULL,
            node        TEXT NOT NULL,
            address     TEXT NOT NULL,
            incarnation INTEGER NOT NULL,
            status      TEXT NOT NULL,
            types       TEXT NOT NULL,
            activations INTEGER NOT NULL,
            by_type     TEXT NOT NULL,
            heartbeat   REAL NOT NULL,
            started     REAL NOT NULL
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE IF NOT EXISTS {p}suspicions (
            target   TEXT NOT NULL,
            observer TEXT NOT NULL,
            at       REAL NOT NULL,
            PRIMARY KEY (target, observer)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE IF NOT EXISTS {p}placements (
            type_name TEXT NOT NULL,
            object_id TEXT NOT NULL,
            owner     TEXT NOT NULL,
            PRIMARY KEY (type_name, object_id)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX IF NOT EXISTS {p}placements_owner ON {p}placements (owner)",
    ),
]


#: Keys (or member ids) per statement of a batch: 400 parameters at most, under
#: the 999 that SQLite builds before 3.32 allow.
_KEYS_PER_STATEMENT = 200


class SQLiteClusterStore(ClusterStore):
    """Membership and placement in one SQLite file shared by the processes of one box.

    Example::

        store = cluster_store_from_url("sqlite:///.rio/cluster.db")
        async with store:
            await store.register(member)
    """

    def __init__(self, url: str) -> None:
        # The state engine's reader validates the path and the options; the engine
        # it builds is never opened, only read for its settings.
        parsed = _sqlite_from_url(url)
        self.path = parsed.path
        self.url = mask_url(url)
        self._busy_timeout_ms = parsed._busy_timeout_ms
        self._synchronous = parsed._synchronous
        p = parsed._prefix
        self._p = p
        self._db: aiosqlite.Connection | None = None
        # One connection per store: its statements and transactions take turns.
        self._lock = asyncio.Lock()
        cols = ", ".join(MEMBER_COLUMNS)
        self._sql_register = (
            f"INSERT INTO {p}members ({cols}) VALUES ({', '.join('?' * len(MEMBER_COLUMNS))}) "
            "ON CONFLICT (member_id) DO NOTHING"
        )
        self._sql_member = f"SELECT {cols} FROM {p}members WHERE member_id=?"
        self._sql_members = f"SELECT {cols} FROM {p}members ORDER BY member_id"
        self._sql_update = (
            f"UPDATE {p}members SET status=coalesce(?, status), "
            "heartbeat=coalesce(?, heartbeat), activations=coalesce(?, activations), "
            f"by_type=coalesce(?, by_type) WHERE member_id=? AND status NOT IN {TERMINAL_SQL}"
        )
        self._sql_status = f"SELECT status FROM {p}members WHERE member_id=?"
        self._sql_suspect = (
            f"INSERT INTO {p}suspicions (target, observer, at) VALUES (?, ?, ?) "
            "ON CONFLICT (target, observer) DO UPDATE SET at=excluded.at"
        )
        self._sql_suspicions = f"SELECT count(*) FROM {p}suspicions WHERE target=? AND at >= ?"
        self._sql_kill = (
            f"UPDATE {p}members SET status='dead' WHERE member_id=? AND status IN {LIVE_SQL}"
        )
        self._sql_purge = f"DELETE FROM {p}placements WHERE owner=?"
        gone = f"SELECT member_id FROM {p}members WHERE status IN {TERMINAL_SQL} AND heartbeat < ?"
        self._sql_prune_suspicions = (
            f"DELETE FROM {p}suspicions WHERE target IN ({gone}) OR observer IN ({gone})"
        )
        self._sql_prune = f"DELETE FROM {p}members WHERE status IN {TERMINAL_SQL} AND heartbeat < ?"
        where = "WHERE type_name=? AND object_id=?"
        self._sql_lookup = f"SELECT owner FROM {p}placements {where}"
        self._sql_place = (
            f"INSERT INTO {p}placements (type_name, object_id, owner) VALUES (?, ?, ?)"
        )
        self._sql_move = f"UPDATE {p}placements SET owner=? {where} AND owner=?"
        self._sql_release = f"DELETE FROM {p}placements {where} AND owner=?"
        self._sql_counts = f"SELECT owner, count(*) FROM {p}placements GROUP BY owner"

    # -- connection -----------------------------------------------------------------------

    async def open(self) -> None:
        """Open the file (creating its folder), switch it to WAL and migrate the tables."""
        await self._open(self._migrate_tables)

    async def open_existing(self) -> None:
        """See :meth:`ClusterStore.open_existing`: the tables must be there, as they are."""
        await self._open(self._check_tables)

    async def _open(self, prepare: Callable[[aiosqlite.Connection], Awaitable[None]]) -> None:
        async with self._lock:
            if self._db is None:
                self._db = await open_sqlite(
                    self.path,
                    self.url,
                    busy_timeout_ms=self._busy_timeout_ms,
                    synchronous=self._synchronous,
                    prepare=prepare,
                )

    async def _check_tables(self, db: aiosqlite.Connection) -> None:
        table = f"{self._p}cluster_schema"
        found = await _one(
            db, "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)
        )
        row = await _one(db, f"SELECT version FROM {table}") if found else None
        check_existing_schema(self.url, int(row[0]) if row else 0, len(MIGRATIONS))

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        async with self._lock:
            db, self._db = self._db, None
            if db is not None:
                await db.close()

    async def _migrate_tables(self, db: aiosqlite.Connection) -> None:
        await self._transaction(db, "migrating the cluster tables", self._migrate)

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        p = self._p
        await db.execute(f"CREATE TABLE IF NOT EXISTS {p}cluster_schema (version INTEGER NOT NULL)")
        row = await _one(db, f"SELECT version FROM {p}cluster_schema")
        applied = int(row[0]) if row else 0
        if row is None:
            await db.execute(f"INSERT INTO {p}cluster_schema (version) VALUES (0)")
        if applied > len(MIGRATIONS):
            raise StorageError(
                f"{self.url} has cluster schema version {applied}, newer than this rio "
                f"knows ({len(MIGRATIONS)}): upgrade rio on every process sharing it"
            )
        for statements in MIGRATIONS[applied:]:
            for sql in statements:
                await db.execute(sql.format(p=p))
        await db.execute(f"UPDATE {p}cluster_schema SET version=?", (len(MIGRATIONS),))

    # -- running statements ---------------------------------------------------------------

    async def _run(
        self, action: str, body: Callable[[aiosqlite.Connection], Awaitable[T]], *, write: bool
    ) -> T:
        """Run ``body`` on the connection, in a ``BEGIN IMMEDIATE`` transaction if ``write``."""
        async with self._lock:
            db = self._db
            if db is None:
                raise StorageError(f"{self.url} is not open: call open() first")
            if write:
                return await self._transaction(db, action, body)
            return await self._retry_locked(db, action, body)

    async def _transaction(
        self,
        db: aiosqlite.Connection,
        action: str,
        body: Callable[[aiosqlite.Connection], Awaitable[T]],
    ) -> T:
        async def attempt(db: aiosqlite.Connection) -> T:
            await db.execute("BEGIN IMMEDIATE")
            try:
                result = await body(db)
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise
            return result

        return await self._retry_locked(db, action, attempt)

    async def _retry_locked(
        self,
        db: aiosqlite.Connection,
        action: str,
        body: Callable[[aiosqlite.Connection], Awaitable[T]],
    ) -> T:
        """Run ``body``, again while the file is locked, until the busy timeout is spent."""
        try:
            return await retry_locked(lambda: body(db), self._busy_timeout_ms)
        except sqlite3.Error as e:
            if is_locked(e):
                raise StorageUnavailable(
                    f"{self.url}: {action} failed, the file stayed locked by another "
                    f"process for over {self._busy_timeout_ms} ms ({e})"
                ) from e
            raise StorageError(f"{self.url}: {action} failed: {e}") from e

    # -- membership -----------------------------------------------------------------------

    async def register(self, member: Member) -> None:
        """Insert ``member``'s row; ConfigError if its ``member_id`` is taken."""

        async def body(db: aiosqlite.Connection) -> int:
            return await _changes(db, self._sql_register, member_values(member))

        if not await self._run(f"registering {member.member_id}", body, write=True):
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
        doc = None if by_type is None else encode_json(by_type)
        args = (status, heartbeat, activations, doc, member_id)

        async def body(db: aiosqlite.Connection) -> Member | None:
            await db.execute(self._sql_update, args)
            row = await _one(db, self._sql_member, (member_id,))
            return None if row is None else decode_member(row)

        return await self._run(f"updating {member_id}", body, write=True)

    async def members(self) -> list[Member]:
        """Every row, terminal ones included."""

        async def body(db: aiosqlite.Connection) -> list[Member]:
            async with db.execute(self._sql_members) as cur:
                return [decode_member(row) for row in await cur.fetchall()]

        return await self._run("reading the members", body, write=False)

    async def suspect(self, target: str, observer: str, now: float, window: float) -> int:
        """Record the suspicion; count distinct observers since ``now - window``."""

        async def body(db: aiosqlite.Connection) -> int:
            await db.execute(self._sql_suspect, (target, observer, now))
            row = await _one(db, self._sql_suspicions, (target, now - window))
            return int(row[0]) if row else 0

        return await self._run(f"recording a suspicion of {target}", body, write=True)

    async def declare_dead(self, member_id: str) -> bool:
        """Move a live row to ``dead`` and delete its placements, in one transaction."""

        async def body(db: aiosqlite.Connection) -> bool:
            if not await _changes(db, self._sql_kill, (member_id,)):
                return False
            await db.execute(self._sql_purge, (member_id,))
            return True

        return await self._run(f"declaring {member_id} dead", body, write=True)

    async def prune(self, before: float) -> int:
        """Delete terminal rows with a heartbeat older than ``before``, and their suspicions."""

        async def body(db: aiosqlite.Connection) -> int:
            await db.execute(self._sql_prune_suspicions, (before, before))
            return await _changes(db, self._sql_prune, (before,))

        return await self._run("pruning members", body, write=True)

    # -- placement ------------------------------------------------------------------------

    async def lookup(self, key: Key) -> str | None:
        """The member ``key`` is placed on, or None."""

        async def body(db: aiosqlite.Connection) -> str | None:
            row = await _one(db, self._sql_lookup, key)
            return None if row is None else str(row[0])

        return await self._run(f"looking up {key[0]}/{key[1]}", body, write=False)

    async def claim(self, key: Key, member_id: str) -> str:
        """Place ``key`` on ``member_id`` unless a live member holds it; return the owner."""
        (owner,) = await self.claim_many([key], member_id)
        return owner

    async def claim_many(self, keys: Sequence[Key], member_id: str) -> list[str]:
        """:meth:`claim` each of ``keys``, all in one transaction; their owners, in order.

        A handful of statements for the whole batch (the owners of all keys, the
        status of those owners, one insert and one move of many rows), not a few per
        key: each statement is a round trip to the connection's thread.
        """
        if not keys:
            return []
        unique = list(dict.fromkeys(keys))

        async def body(db: aiosqlite.Connection) -> list[str]:
            owners: dict[Key, str] = {}
            for start in range(0, len(unique), _KEYS_PER_STATEMENT):
                chunk = unique[start : start + _KEYS_PER_STATEMENT]
                found = await db.execute_fetchall(self._sql_owners(len(chunk)), _flat(chunk))
                owners.update({(str(t), str(i)): str(o) for t, i, o in found})
            mine = await _one(db, self._sql_status, (member_id,))
            if mine is None or mine[0] not in LIVE:  # takes nothing
                return [owners.get(k, "") for k in keys]
            others = sorted({o for o in owners.values() if o != member_id})
            live: set[str] = set()
            for start in range(0, len(others), _KEYS_PER_STATEMENT):
                chunk_ids = others[start : start + _KEYS_PER_STATEMENT]
                found = await db.execute_fetchall(self._sql_live_of(len(chunk_ids)), chunk_ids)
                live.update(str(row[0]) for row in found)
            free = [k for k in unique if k not in owners]
            # Held by a member that is gone (terminal, or no row at all): taken over.
            orphans = [
                k
                for k in unique
                if k in owners and owners[k] not in live and owners[k] != member_id
            ]
            if free:
                await db.executemany(self._sql_place, [(*k, member_id) for k in free])
            if orphans:
                moves = [(member_id, *k, owners[k]) for k in orphans]
                await db.executemany(self._sql_move, moves)
            for k in (*free, *orphans):
                owners[k] = member_id
            return [owners[k] for k in keys]

        return await self._run(claiming(keys), body, write=True)

    def _sql_owners(self, n: int) -> str:
        keys = ", ".join(["(?, ?)"] * n)
        return (
            f"SELECT type_name, object_id, owner FROM {self._p}placements "
            f"WHERE (type_name, object_id) IN (VALUES {keys})"
        )

    def _sql_live_of(self, n: int) -> str:
        ids = ", ".join(["?"] * n)
        return (
            f"SELECT member_id FROM {self._p}members "
            f"WHERE member_id IN ({ids}) AND status IN {LIVE_SQL}"
        )

    async def release(self, keys: Iterable[Key], member_id: str) -> int:
        """Delete the placements of ``keys`` that ``member_id`` owns; return how many."""
        rows = [(*key, member_id) for key in keys]
        if not rows:
            return 0

        async def body(db: aiosqlite.Connection) -> int:
            released = 0
            for args in rows:
                released += await _changes(db, self._sql_release, args)
            return released

        return await self._run(f"releasing placements of {member_id}", body, write=True)

    async def placement_counts(self) -> dict[str, int]:
        """Placements per owning member id."""

        async def body(db: aiosqlite.Connection) -> dict[str, int]:
            async with db.execute(self._sql_counts) as cur:
                return {str(owner): int(n) for owner, n in await cur.fetchall()}

        return await self._run("counting placements", body, write=False)


async def _one(db: aiosqlite.Connection, sql: str, args: Iterable[Any] = ()) -> Any:
    async with db.execute(sql, tuple(args)) as cur:
        return await cur.fetchone()


def _flat(keys: Sequence[Key]) -> list[str]:
    return [part for key in keys for part in key]


async def _changes(db: aiosqlite.Connection, sql: str, args: Iterable[Any]) -> int:
    async with db.execute(sql, tuple(args)) as cur:
        return int(cur.rowcount)


def _from_url(url: str) -> SQLiteClusterStore:
    return SQLiteClusterStore(url)


register_cluster_store("sqlite", _from_url)
