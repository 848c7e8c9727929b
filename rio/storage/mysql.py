"""MySQL and MariaDB state storage through aiomysql.

URL: ``mysql://user:password@host:3306/database?prefix=rio_`` (``mariadb://`` too).
Options: ``prefix`` (table prefix, default ``rio_``), ``pool_size`` (default 10),
``connect_timeout`` and ``command_timeout`` (seconds, 10 each). The user defaults to
``root``; the database is required.

One InnoDB table, ``<prefix>state``: msgpack in a ``LONGBLOB``, keyed by
``(type_name, object_id)`` stored as ``VARBINARY`` (UTF-8 bytes), because the
server's text collations would make ``"a"``, ``"A"`` and ``"a "`` the same key. Keys
are limited to 255 bytes for the type name and 1024 for the id (InnoDB's index limit);
longer ones are refused with a clear error. States travel hex-encoded in the SQL
text, so one state can be at most half the server's ``max_allowed_packet`` (16 MiB by
default on MariaDB, 64 MiB on MySQL 8); a larger one is refused before it is sent.
``version`` is the compare-and-set counter, ``token`` a random number per write that
lets a write retried after a lost connection recognise that its first attempt had
already committed.

Durable reminders live in ``<prefix>reminders`` (component ``reminders``): one row
per ``(type_name, object_id, name)`` (VARBINARY, reminder names up to 255 bytes) with
``period`` (seconds) and ``due_ms`` (when it is next due, in milliseconds since the
epoch, indexed for the pollers).

DDL is not transactional in MySQL, so migrations run one by one under
``GET_LOCK`` and each is recorded as soon as it has run; their statements use
``IF NOT EXISTS`` so a process that died halfway can run them again.

aiomysql was chosen over asyncmy: both speak the same protocol with client-side
parameter escaping, aiomysql is pure Python (no compiler needed, installs anywhere)
and is the one the ``mysql`` extra already named; the driver is rarely the
bottleneck next to the server's fsync.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import aiomysql

from rio.core.codec import decode_state, encode_checked
from rio.core.errors import ConfigError, StorageError
from rio.storage import register_engine
from rio.storage._engine import (
    MIGRATION_TIMEOUT,
    Engine,
    Failure,
    TableNames,
    apply_migrations,
    conflict,
    parse_engine_url,
)
from rio.storage.base import StateStorage, StoredReminder, StoredState, to_ms

__all__ = ["REMINDER_MIGRATIONS", "STATE_MIGRATIONS", "MySQLEngine", "MySQLStorage"]

#: Error numbers that mean the connection or the server went away.
_UNAVAILABLE = {1053, 1927, 2002, 2003, 2006, 2013, 2055, 4031}
#: Error numbers that mean the login or the database was refused.
_AUTH = {1044, 1045, 1049, 1698}
_DUP_ENTRY = 1062

_TYPE_MAX, _ID_MAX, _NAME_MAX = 255, 1024, 255

#: Migrations of the ``state`` component; each is a list of statements.
STATE_MIGRATIONS: list[tuple[str, ...]] = [
    (
        f"""
        CREATE TABLE IF NOT EXISTS {{state}} (
            type_name VARBINARY({_TYPE_MAX}) NOT NULL,
            object_id VARBINARY({_ID_MAX}) NOT NULL,
            version   BIGINT NOT NULL,
            token     BIGINT NOT NULL,
            data      LONGBLOB NOT NULL,
            PRIMARY KEY (type_name, object_id)
        ) ENGINE=InnoDB
        """,
    ),
]

#: Migrations of the ``reminders`` component.
REMINDER_MIGRATIONS: list[tuple[str, ...]] = [
    (
        f"""
        CREATE TABLE IF NOT EXISTS {{reminders}} (
            type_name VARBINARY({_TYPE_MAX}) NOT NULL,
            object_id VARBINARY({_ID_MAX}) NOT NULL,
            name      VARBINARY({_NAME_MAX}) NOT NULL,
            period    DOUBLE NOT NULL,
            due_ms    BIGINT NOT NULL,
            PRIMARY KEY (type_name, object_id, name),
            KEY due (due_ms)
        ) ENGINE=InnoDB
        """,
    ),
]


class MySQLEngine(Engine):
    """An aiomysql pool plus migrations, shared by every rio table set on one database.

    Example::

        engine = MySQLEngine("mysql://app:pw@db/rio?prefix=shop_")
        await engine.open()
        await engine.migrate("state", STATE_MIGRATIONS)
    """

    kind = "MySQL"

    def __init__(self, url: str) -> None:
        cfg = parse_engine_url(url, engine="mysql", default_port=3306, default_prefix="rio_")
        if not cfg.database:
            raise ConfigError(f"mysql URL {cfg.url!r} names no database: e.g. mysql://host/rio")
        super().__init__(cfg)
        #: Quoted table names: ``self.tables["state"]`` is ```<prefix>state```.
        self.tables = TableNames(cfg.prefix, "`")
        self.pool: Any = None

    async def _connect(self) -> None:
        cfg = self.cfg
        self.pool = await aiomysql.create_pool(
            host=cfg.host,
            port=cfg.port,
            user=cfg.user or "root",
            password=cfg.password or "",
            db=cfg.database,
            minsize=1,
            maxsize=cfg.pool_size,
            connect_timeout=cfg.connect_timeout,
            autocommit=True,
            charset="utf8mb4",
            program_name=f"rio:{cfg.prefix}",
        )

    async def _disconnect(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.close()
            await pool.wait_closed()

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (aiomysql.MySQLError,)

    def _classify(self, exc: BaseException) -> Failure:
        if isinstance(exc, OSError):
            return "unavailable"
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if code in _UNAVAILABLE or isinstance(exc, aiomysql.InterfaceError):
            return "unavailable"
        if code in _AUTH:
            return "auth"
        return "other"

    async def _connection_lost(self) -> None:
        # After a server restart every idle connection is dead: drop them all.
        if self.pool is not None:
            await self.pool.clear()

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> tuple[int, list[Any]]:
        """Run one statement on a pooled connection; return (affected rows, rows)."""
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql, tuple(args) or None)
            return cur.rowcount, list(await cur.fetchall())

    async def schema_version(self, component: str) -> int:
        """See :meth:`Engine.schema_version`."""
        table = self.tables["schema"]

        async def read() -> int:
            async with self.pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute(
                    "SELECT 1 FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                    (f"{self.cfg.prefix}schema",),
                )
                if not await cur.fetchall():
                    return 0
                await cur.execute(f"SELECT version FROM {table} WHERE component = %s", (component,))
                rows = await cur.fetchall()
                return int(rows[0][0]) if rows else 0

        return await self.run(f"reading the {component} schema version", read, retry=True)

    async def migrate(self, component: str, migrations: Sequence[Sequence[str]]) -> int:
        """Apply pending migrations of ``component`` (statements use ``{table}`` names)."""
        name = f"rio-migrate:{self.cfg.database}.{self.cfg.prefix}"[:64]
        table = self.tables["schema"]

        async def run() -> int:
            async with self.pool.acquire() as conn, conn.cursor() as cur:

                async def query(sql: str, *args: Any) -> list[Any]:
                    await cur.execute(sql, args or None)
                    return list(await cur.fetchall())

                got = await query("SELECT GET_LOCK(%s, %s)", name, 120)
                if not got or got[0][0] != 1:
                    raise StorageError(
                        f"{self.url}: timed out waiting for the migration lock {name!r}"
                    )
                try:
                    exists = await query(
                        "SELECT 1 FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                        f"{self.cfg.prefix}schema",
                    )
                    if not exists:
                        await query(
                            f"CREATE TABLE IF NOT EXISTS {table} (component VARCHAR(64) "
                            "PRIMARY KEY, version INT NOT NULL) ENGINE=InnoDB"
                        )

                    async def read() -> int:
                        rows = await query(
                            f"SELECT version FROM {table} WHERE component = %s", component
                        )
                        return int(rows[0][0]) if rows else 0

                    async def apply(index: int) -> None:
                        for statement in migrations[index]:
                            await query(statement.format_map(self.tables))
                        await query(
                            f"INSERT INTO {table} (component, version) VALUES (%s, %s) "
                            "ON DUPLICATE KEY UPDATE version = %s",
                            component,
                            index + 1,
                            index + 1,
                        )

                    return await apply_migrations(self.url, component, len(migrations), read, apply)
                finally:
                    if not conn.closed:
                        await query("SELECT RELEASE_LOCK(%s)", name)

        return await self.run(
            f"migrating {component} tables", run, retry=True, limit=MIGRATION_TIMEOUT
        )


class MySQLStorage(StateStorage):
    """Actor state in MySQL or MariaDB, as msgpack blobs.

    Example::

        app = rio.App(storage="mysql://app:secret@db.internal/rio?prefix=shop_")
    """

    def __init__(self, url: str) -> None:
        self.engine = MySQLEngine(url)
        self.url = self.engine.url
        t = self.engine.tables["state"]
        where = "WHERE type_name=%s AND object_id=%s"
        self._sql_load = f"SELECT version, data FROM {t} {where}"
        self._sql_insert = (
            f"INSERT INTO {t} (type_name, object_id, version, token, data) "
            "VALUES (%s, %s, 1, %s, UNHEX(%s))"
        )
        self._sql_update = (
            f"UPDATE {t} SET version=version+1, token=%s, data=UNHEX(%s) {where} AND version=%s"
        )
        self._sql_delete = f"DELETE FROM {t} {where} AND version=%s"
        self._sql_version = f"SELECT version, token FROM {t} {where}"
        r = self.engine.tables["reminders"]
        key = f"{where} AND name=%s"
        cols = "type_name, object_id, name, period, due_ms"
        self._sql_rem_upsert = (
            f"INSERT INTO {r} ({cols}) VALUES (%s, %s, %s, %s, %s) "
            "ON DUPLICATE KEY UPDATE period=%s, due_ms=%s"
        )
        self._sql_rem_delete = f"DELETE FROM {r} {key}"
        self._sql_rem_list = f"SELECT {cols} FROM {r} {where} ORDER BY name"
        self._sql_rem_due = f"SELECT {cols} FROM {r} WHERE due_ms <= %s ORDER BY due_ms LIMIT %s"
        self._sql_rem_advance = f"UPDATE {r} SET due_ms=%s {key} AND due_ms=%s"
        self._sql_rem_get = f"SELECT due_ms FROM {r} {key}"
        self._max_packet = 0

    async def open(self) -> None:
        """Connect and apply pending migrations."""
        if self.engine.is_open:
            return
        await self.engine.open()
        try:
            await self.engine.migrate("state", STATE_MIGRATIONS)
            await self.engine.migrate("reminders", REMINDER_MIGRATIONS)
            _, rows = await self.engine.run(
                "reading max_allowed_packet",
                lambda: self.engine.execute("SELECT @@max_allowed_packet"),
                retry=True,
            )
            self._max_packet = int(rows[0][0])
        except BaseException:
            await self.engine.close()
            raise

    async def close(self) -> None:
        """Close the pool."""
        await self.engine.close()

    async def load(self, type_name: str, object_id: str, state_type: Any) -> StoredState | None:
        """Read one state."""
        self._check_key(type_name, object_id)
        _, rows = await self.engine.run(
            f"loading {type_name}/{object_id}",
            lambda: self.engine.execute(self._sql_load, (type_name, object_id)),
            retry=True,
        )
        if not rows:
            return None
        version, data = rows[0]
        return StoredState(decode_state(data, state_type, type_name, object_id), int(version))

    async def save(
        self,
        type_name: str,
        object_id: str,
        state: Any,
        state_type: Any,
        expected_version: int,
    ) -> int:
        """Compare-and-set one state (INSERT for version 0, UPDATE otherwise)."""
        self._check_key(type_name, object_id)
        # Sent as hex, the same size as the driver's own _binary X'..' literal: aiomysql
        # cannot escape bytes with PyMySQL >= 1.2.3 (aio-libs/aiomysql#1080).
        data = encode_checked(state, state_type, type_name, object_id).hex()
        if len(data) + len(object_id) * 4 + 1024 > self._max_packet:
            raise StorageError(
                f"{type_name}/{object_id} in {self.url}: the state is {len(data) // 2} bytes "
                f"encoded, too large for the server's max_allowed_packet ({self._max_packet}) "
                "once hex-encoded; raise max_allowed_packet to over twice the state size"
            )
        token = random.getrandbits(63)

        async def write() -> int:
            if expected_version != 0:
                update = (token, data, type_name, object_id, expected_version)
                return (await self.engine.execute(self._sql_update, update))[0]
            try:
                insert = (type_name, object_id, token, data)
                return (await self.engine.execute(self._sql_insert, insert))[0]
            except aiomysql.IntegrityError as e:
                if e.args and e.args[0] == _DUP_ENTRY:
                    return 0
                raise

        changed = await self.engine.run(f"saving {type_name}/{object_id}", write, retry=True)
        if changed == 1:
            return expected_version + 1
        actual, stored_token = await self._version(type_name, object_id)
        if actual == expected_version + 1 and stored_token == token:
            return actual  # our first attempt committed before its connection was lost
        raise conflict(self.url, type_name, object_id, actual, expected_version, "writer")

    async def delete(self, type_name: str, object_id: str, expected_version: int) -> None:
        """Compare-and-delete one state."""
        self._check_key(type_name, object_id)
        if expected_version != 0:
            changed, _ = await self.engine.run(
                f"deleting {type_name}/{object_id}",
                lambda: self.engine.execute(
                    self._sql_delete, (type_name, object_id, expected_version)
                ),
                retry=False,
            )
            if changed == 1:
                return
        actual, _ = await self._version(type_name, object_id)
        if actual != 0 or expected_version != 0:
            raise conflict(self.url, type_name, object_id, actual, expected_version, "deleter")

    async def _version(self, type_name: str, object_id: str) -> tuple[int, int]:
        _, rows = await self.engine.run(
            f"reading the version of {type_name}/{object_id}",
            lambda: self.engine.execute(self._sql_version, (type_name, object_id)),
            retry=True,
        )
        return (0, 0) if not rows else (int(rows[0][0]), int(rows[0][1]))

    def _check_key(self, type_name: str, object_id: str) -> None:
        if len(type_name.encode()) > _TYPE_MAX or len(object_id.encode()) > _ID_MAX:
            raise StorageError(
                f"{type_name[:40]}…/{object_id[:40]}… in {self.url}: MySQL keys hold at most "
                f"{_TYPE_MAX} bytes of type name and {_ID_MAX} bytes of id (UTF-8)"
            )

    # -- durable reminders ---------------------------------------------------------

    def _check_reminder(self, type_name: str, object_id: str, name: str) -> None:
        self._check_key(type_name, object_id)
        if len(name.encode()) > _NAME_MAX:
            raise StorageError(
                f"reminder {name[:40]!r}… of {type_name}/{object_id} in {self.url}: MySQL "
                f"keys hold at most {_NAME_MAX} bytes of reminder name (UTF-8)"
            )

    async def upsert_reminder(
        self, type_name: str, object_id: str, name: str, period: float, next_due: float
    ) -> None:
        """Create or replace one reminder (an idempotent write: retried once if cut off)."""
        self._check_reminder(type_name, object_id, name)
        p, due = float(period), to_ms(next_due)
        args = (type_name, object_id, name, p, due, p, due)
        await self.engine.run(
            f"saving reminder {name!r} of {type_name}/{object_id}",
            lambda: self.engine.execute(self._sql_rem_upsert, args),
            retry=True,
        )

    async def delete_reminder(self, type_name: str, object_id: str, name: str) -> bool:
        """Remove one reminder; False when there was none."""
        self._check_reminder(type_name, object_id, name)
        changed, _ = await self.engine.run(
            f"deleting reminder {name!r} of {type_name}/{object_id}",
            lambda: self.engine.execute(self._sql_rem_delete, (type_name, object_id, name)),
            retry=False,
        )
        return bool(changed == 1)

    async def list_reminders(self, type_name: str, object_id: str) -> list[StoredReminder]:
        """The reminders of one object, by name."""
        self._check_key(type_name, object_id)
        _, rows = await self.engine.run(
            f"listing the reminders of {type_name}/{object_id}",
            lambda: self.engine.execute(self._sql_rem_list, (type_name, object_id)),
            retry=True,
        )
        return [_reminder(row) for row in rows]

    async def due_reminders(self, now: float, limit: int) -> list[StoredReminder]:
        """The reminders due at ``now``, earliest first."""
        _, rows = await self.engine.run(
            "reading due reminders",
            lambda: self.engine.execute(self._sql_rem_due, (to_ms(now), limit)),
            retry=True,
        )
        return [_reminder(row) for row in rows]

    async def advance_reminder(
        self, type_name: str, object_id: str, name: str, expected_due: float, new_due: float
    ) -> bool:
        """Compare-and-set one reminder's due time."""
        self._check_reminder(type_name, object_id, name)
        key = (type_name, object_id, name)
        expected, new = to_ms(expected_due), to_ms(new_due)
        action = f"advancing reminder {name!r} of {type_name}/{object_id}"
        if expected == new:  # MySQL counts changed rows, not matched ones: read instead
            _, rows = await self.engine.run(
                action, lambda: self.engine.execute(self._sql_rem_get, key), retry=True
            )
            return bool(rows) and int(rows[0][0]) == expected
        changed, _ = await self.engine.run(
            action,
            lambda: self.engine.execute(self._sql_rem_advance, (new, *key, expected)),
            retry=False,
        )
        return bool(changed == 1)


def _reminder(row: Any) -> StoredReminder:
    t, i, n, period, due = row
    return StoredReminder(
        bytes(t).decode(), bytes(i).decode(), bytes(n).decode(), float(period), int(due) / 1000
    )


def _from_url(url: str) -> MySQLStorage:
    return MySQLStorage(url)


register_engine("mysql", _from_url)
register_engine("mariadb", _from_url)
