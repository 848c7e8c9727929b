"""SQLite state storage through aiosqlite: rio's embedded default.

One file under the data directory, WAL mode, schema created on first use. Several
processes may share the file: each opens its own connection, writes are
compare-and-set on the version column, and a busy database is waited on
(``busy_timeout``), never turned into a lost write.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiosqlite

from rio.core.codec import decode_state, encode_checked
from rio.core.errors import ConfigError, StateConflict, StorageError, StorageUnavailable
from rio.storage.base import StateStorage, StoredReminder, StoredState, to_ms

__all__ = ["SQLiteStorage", "is_locked", "open_sqlite", "retry_locked"]

T = TypeVar("T")
_PREFIX_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")

#: Migrations, applied in order (each a list of statements); the schema version is
#: the number applied.
_MIGRATIONS: list[tuple[str, ...]] = [
    (
        """
        CREATE TABLE IF NOT EXISTS {p}state (
            type_name TEXT NOT NULL,
            object_id TEXT NOT NULL,
            version   INTEGER NOT NULL,
            data      BLOB NOT NULL,
            PRIMARY KEY (type_name, object_id)
        ) WITHOUT ROWID
        """,
    ),
    (
        """
        CREATE TABLE IF NOT EXISTS {p}reminders (
            type_name TEXT NOT NULL,
            object_id TEXT NOT NULL,
            name      TEXT NOT NULL,
            period    REAL NOT NULL,
            due_ms    INTEGER NOT NULL,
            PRIMARY KEY (type_name, object_id, name)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX IF NOT EXISTS {p}reminders_due ON {p}reminders (due_ms)",
    ),
]


def is_locked(e: sqlite3.Error) -> bool:
    """Whether ``e`` says another connection holds the lock (worth a retry)."""
    text = str(e)
    return isinstance(e, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


async def retry_locked(body: Callable[[], Awaitable[T]], busy_timeout_ms: int) -> T:
    """Run ``body`` again while the file is locked (1 ms doubling to 50 ms between tries).

    For what ``busy_timeout`` does not cover: switching a file to WAL, and a
    ``BEGIN IMMEDIATE`` that another process's transaction holds off.

    Raises:
        sqlite3.Error: ``body``'s error, at once when it is not a lock, or the last
            lock error once ``busy_timeout_ms`` has passed.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + busy_timeout_ms / 1000
    delay = 0.001
    while True:
        try:
            return await body()
        except sqlite3.Error as e:
            if not is_locked(e) or loop.time() + delay > give_up:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


async def open_sqlite(
    path: str,
    url: str,
    *,
    busy_timeout_ms: int,
    synchronous: str,
    prepare: Callable[[aiosqlite.Connection], Awaitable[None]],
) -> aiosqlite.Connection:
    """Open ``path`` the way every rio SQLite file is opened, then ``prepare`` it.

    Its folder is created; the connection is in autocommit mode (statements open
    their own transactions), waits ``busy_timeout_ms`` for other processes' locks,
    and uses WAL (so readers never wait for the writer) and ``synchronous``.
    ``prepare`` runs the caller's migrations; on any failure the connection is
    closed.

    Raises:
        rio.StorageUnavailable: the file cannot be opened or prepared (``url`` names it).
    """
    if path != ":memory:":
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise StorageUnavailable(f"cannot create the folder {folder!r} for {url}: {e}") from e
    try:
        db = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    except (sqlite3.Error, OSError) as e:
        raise StorageUnavailable(f"cannot open {url}: {e}") from e
    try:
        await db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if path != ":memory:":
            # Switching a new file to WAL takes a lock that SQLite does not wait for
            # (busy_timeout does not apply), so processes opening one new file
            # together (a worker pool starting) retry it.
            await retry_locked(lambda: db.execute("PRAGMA journal_mode=WAL"), busy_timeout_ms)
        await db.execute(f"PRAGMA synchronous={synchronous}")
        await prepare(db)
    except BaseException as e:
        await db.close()
        if isinstance(e, sqlite3.Error):
            if is_locked(e):
                raise StorageUnavailable(
                    f"cannot prepare {url}: the file stayed locked by another process for "
                    f"over {busy_timeout_ms} ms ({e})"
                ) from e
            raise StorageUnavailable(f"cannot prepare {url}: {e}") from e
        raise
    return db


class SQLiteStorage(StateStorage):
    """State in one SQLite file.

    Args:
        path: the database file; its folder is created. ``":memory:"`` works too.
        prefix: table name prefix, so several apps can share one file.
        synchronous: SQLite's ``synchronous`` pragma. ``NORMAL`` (default) survives a
            process crash (kill -9) with every acknowledged write; ``FULL`` also
            survives power loss, at the cost of an fsync per write.
        busy_timeout_ms: how long a writer waits for another process's lock.

    Example::

        app = rio.App(storage="sqlite:///var/lib/myapp/state.db")
    """

    def __init__(
        self,
        path: str,
        *,
        prefix: str = "rio_",
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 30_000,
        url: str | None = None,
    ) -> None:
        if not _PREFIX_RE.match(prefix):
            raise ConfigError(
                f"sqlite table prefix {prefix!r} is not allowed: use letters, digits and _"
            )
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigError(
                f"sqlite synchronous={synchronous!r}: expected OFF, NORMAL, FULL or EXTRA"
            )
        self.path = path
        self.url = url or f"sqlite:///{path}"
        self._prefix = prefix
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        p = prefix
        self._sql_load = f"SELECT data, version FROM {p}state WHERE type_name=? AND object_id=?"
        self._sql_insert = (
            f"INSERT INTO {p}state (type_name, object_id, version, data) VALUES (?, ?, 1, ?) "
            "ON CONFLICT (type_name, object_id) DO NOTHING"
        )
        self._sql_update = (
            f"UPDATE {p}state SET data=?, version=version+1 "
            "WHERE type_name=? AND object_id=? AND version=?"
        )
        self._sql_delete = f"DELETE FROM {p}state WHERE type_name=? AND object_id=? AND version=?"
        self._sql_version = f"SELECT version FROM {p}state WHERE type_name=? AND object_id=?"
        r, key = f"{p}reminders", "type_name=? AND object_id=? AND name=?"
        self._sql_rem_upsert = (
            f"INSERT INTO {r} (type_name, object_id, name, period, due_ms) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (type_name, object_id, name) "
            "DO UPDATE SET period=excluded.period, due_ms=excluded.due_ms"
        )
        self._sql_rem_delete = f"DELETE FROM {r} WHERE {key}"
        self._sql_rem_list = (
            f"SELECT type_name, object_id, name, period, due_ms FROM {r} "
            "WHERE type_name=? AND object_id=? ORDER BY name"
        )
        self._sql_rem_due = (
            f"SELECT type_name, object_id, name, period, due_ms FROM {r} "
            "WHERE due_ms <= ? ORDER BY due_ms LIMIT ?"
        )
        self._sql_rem_advance = f"UPDATE {r} SET due_ms=? WHERE {key} AND due_ms=?"

    async def open(self) -> None:
        """Open the file (creating its folder) and apply pending migrations."""
        if self._db is not None:
            return
        self._db = await open_sqlite(
            self.path,
            self.url,
            busy_timeout_ms=self._busy_timeout_ms,
            synchronous=self._synchronous,
            prepare=self._migrate,
        )

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        p = self._prefix
        # BEGIN IMMEDIATE takes the write lock, so two processes starting at once
        # run each migration exactly once.
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute(f"CREATE TABLE IF NOT EXISTS {p}schema (version INTEGER NOT NULL)")
            async with db.execute(f"SELECT version FROM {p}schema") as cur:
                row = await cur.fetchone()
            applied = int(row[0]) if row else 0
            if row is None:
                await db.execute(f"INSERT INTO {p}schema (version) VALUES (0)")
            if applied > len(_MIGRATIONS):
                raise StorageError(
                    f"{self.url} has schema version {applied}, newer than this rio "
                    f"knows ({len(_MIGRATIONS)}): upgrade rio"
                )
            for statements in _MIGRATIONS[applied:]:
                for sql in statements:
                    await db.execute(sql.format(p=p))
            await db.execute(f"UPDATE {p}schema SET version=?", (len(_MIGRATIONS),))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Close the connection."""
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StorageError(f"{self.url} is not open: call open() first")
        return self._db

    async def load(self, type_name: str, object_id: str, state_type: Any) -> StoredState | None:
        """Read one state."""
        try:
            rows = await self._read(self._sql_load, (type_name, object_id))
        except sqlite3.Error as e:
            raise StorageError(f"{self.url}: loading {type_name}/{object_id} failed: {e}") from e
        if not rows:
            return None
        row = rows[0]
        return StoredState(decode_state(row[0], state_type, type_name, object_id), int(row[1]))

    async def save(
        self,
        type_name: str,
        object_id: str,
        state: Any,
        state_type: Any,
        expected_version: int,
    ) -> int:
        """Compare-and-set one state (an INSERT for version 0, an UPDATE otherwise)."""
        data = encode_checked(state, state_type, type_name, object_id)
        db = self._conn()
        try:
            if expected_version == 0:
                cur = await db.execute(self._sql_insert, (type_name, object_id, data))
            else:
                cur = await db.execute(
                    self._sql_update, (data, type_name, object_id, expected_version)
                )
            changed = cur.rowcount
            await cur.close()
        except sqlite3.Error as e:
            raise StorageError(f"{self.url}: saving {type_name}/{object_id} failed: {e}") from e
        if changed != 1:
            raise await self._conflict(type_name, object_id, expected_version, "writer")
        return expected_version + 1

    async def delete(self, type_name: str, object_id: str, expected_version: int) -> None:
        """Compare-and-delete one state."""
        if expected_version == 0:
            if await self._version(type_name, object_id) != 0:
                raise await self._conflict(type_name, object_id, 0, "deleter")
            return
        try:
            cur = await self._conn().execute(
                self._sql_delete, (type_name, object_id, expected_version)
            )
            changed = cur.rowcount
            await cur.close()
        except sqlite3.Error as e:
            raise StorageError(f"{self.url}: deleting {type_name}/{object_id} failed: {e}") from e
        if changed != 1:
            raise await self._conflict(type_name, object_id, expected_version, "deleter")

    async def _read(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        """Every row of a query, read in one step on the connection's thread.

        Never a cursor left open across an ``await``: the connection is shared by
        every activation of this process, and a write made by another task while
        a read is still stepping would run inside that read's transaction, where
        SQLite refuses it at once (SQLITE_BUSY_SNAPSHOT, "database is locked", which
        ``busy_timeout`` does not wait out) whenever another process wrote meanwhile.
        """
        return list(await self._conn().execute_fetchall(sql, args))

    async def _version(self, type_name: str, object_id: str) -> int:
        rows = await self._read(self._sql_version, (type_name, object_id))
        return int(rows[0][0]) if rows else 0

    async def _conflict(
        self, type_name: str, object_id: str, expected: int, who: str
    ) -> StateConflict:
        actual = await self._version(type_name, object_id)
        return StateConflict(
            f"{type_name}/{object_id} in {self.url}: stored version is {actual}, "
            f"the {who} expected {expected}; another activation or process wrote first"
        )

    # -- durable reminders ---------------------------------------------------------

    async def _write(self, action: str, sql: str, args: tuple[Any, ...]) -> int:
        try:
            cur = await self._conn().execute(sql, args)
            changed = cur.rowcount
            await cur.close()
        except sqlite3.Error as e:
            raise StorageError(f"{self.url}: {action} failed: {e}") from e
        return int(changed)

    async def _rows(self, action: str, sql: str, args: tuple[Any, ...]) -> list[StoredReminder]:
        try:
            rows = await self._read(sql, args)
        except sqlite3.Error as e:
            raise StorageError(f"{self.url}: {action} failed: {e}") from e
        return [StoredReminder(t, i, n, float(p), int(d) / 1000) for t, i, n, p, d in rows]

    async def upsert_reminder(
        self, type_name: str, object_id: str, name: str, period: float, next_due: float
    ) -> None:
        """Create or replace one reminder."""
        args = (type_name, object_id, name, float(period), to_ms(next_due))
        await self._write(
            f"saving reminder {name!r} of {type_name}/{object_id}", self._sql_rem_upsert, args
        )

    async def delete_reminder(self, type_name: str, object_id: str, name: str) -> bool:
        """Remove one reminder; False when there was none."""
        action = f"deleting reminder {name!r} of {type_name}/{object_id}"
        return await self._write(action, self._sql_rem_delete, (type_name, object_id, name)) == 1

    async def list_reminders(self, type_name: str, object_id: str) -> list[StoredReminder]:
        """The reminders of one object, by name."""
        action = f"listing the reminders of {type_name}/{object_id}"
        return await self._rows(action, self._sql_rem_list, (type_name, object_id))

    async def due_reminders(self, now: float, limit: int) -> list[StoredReminder]:
        """The reminders due at ``now``, earliest first."""
        return await self._rows("reading due reminders", self._sql_rem_due, (to_ms(now), limit))

    async def advance_reminder(
        self, type_name: str, object_id: str, name: str, expected_due: float, new_due: float
    ) -> bool:
        """Compare-and-set one reminder's due time."""
        args = (to_ms(new_due), type_name, object_id, name, to_ms(expected_due))
        action = f"advancing reminder {name!r} of {type_name}/{object_id}"
        return await self._write(action, self._sql_rem_advance, args) == 1
