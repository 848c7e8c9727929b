"""PostgreSQL state storage through asyncpg.

URL: ``postgresql://user:password@host:5432/database?prefix=rio_&schema=public``
(``postgres://`` too). Options: ``prefix`` (table prefix, default ``rio_``),
``schema`` (created if missing), ``pool_size`` (default 10), ``connect_timeout`` and
``command_timeout`` (seconds, 10 each), ``sslmode`` (``disable``, ``prefer``,
``require``, ``verify-ca``, ``verify-full``).

One table, ``<prefix>state``, keyed by ``(type_name, object_id)``, with two value
columns of which exactly one is set (a CHECK constraint says so):

* ``doc jsonb`` when the state type is fully JSON-able — every field is a struct,
  string, number, bool, list, dict, enum, date/time, UUID or decimal — so operators
  can read and query state in SQL (``doc->>'balance'``). Floats are checked per
  value: NaN and infinity have no JSON form, so such a value goes to ``data``.
  jsonb re-orders object keys; structs are unaffected, plain dicts reload sorted.
* ``data bytea`` (msgpack) otherwise: types with ``bytes`` fields, ``Any``, or
  values JSON cannot carry (strings holding NUL, non-finite floats).

The choice is made per state type (cached) with the per-value fallback above, and
per row on load (whichever column is set), so a state type can change between the
two without a migration. ``version`` is the compare-and-set counter; ``token`` is a
random number per write that lets a write retried after a lost connection recognise
that its first attempt had already committed.

Durable reminders live in ``<prefix>reminders`` (component ``reminders``): one row
per ``(type_name, object_id, name)`` with ``period`` (seconds) and ``due_ms`` (when it
is next due, in milliseconds since the epoch, indexed for the pollers).

Migrations run under ``pg_advisory_xact_lock`` inside one transaction, so processes
that start together apply each step once, and a failed step leaves nothing behind.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import asyncpg

from rio.core.codec import decode_state, decode_state_json, encode_checked
from rio.core.errors import ConfigError
from rio.storage import register_engine
from rio.storage._engine import (
    MIGRATION_TIMEOUT,
    SQL_PREFIX_RE,
    Engine,
    Failure,
    TableNames,
    apply_migrations,
    conflict,
    lock_key,
    parse_engine_url,
)
from rio.storage._json import json_document
from rio.storage.base import StateStorage, StoredReminder, StoredState, to_ms

__all__ = ["REMINDER_MIGRATIONS", "STATE_MIGRATIONS", "PostgresEngine", "PostgresStorage"]

_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

#: Migrations of the ``state`` component; each is a list of statements.
STATE_MIGRATIONS: list[tuple[str, ...]] = [
    (
        """
        CREATE TABLE {state} (
            type_name text   NOT NULL,
            object_id text   NOT NULL,
            version   bigint NOT NULL,
            token     bigint NOT NULL,
            doc       jsonb,
            data      bytea,
            PRIMARY KEY (type_name, object_id),
            CHECK ((doc IS NULL) <> (data IS NULL))
        )
        """,
    ),
]

#: Migrations of the ``reminders`` component.
REMINDER_MIGRATIONS: list[tuple[str, ...]] = [
    (
        """
        CREATE TABLE {reminders} (
            type_name text             NOT NULL,
            object_id text             NOT NULL,
            name      text             NOT NULL,
            period    double precision NOT NULL,
            due_ms    bigint           NOT NULL,
            PRIMARY KEY (type_name, object_id, name)
        )
        """,
        "CREATE INDEX ON {reminders} (due_ms)",
    ),
]


class PostgresEngine(Engine):
    """An asyncpg pool plus migrations, shared by every rio table set on one database.

    Example::

        engine = PostgresEngine.from_url("postgresql://app:pw@db/rio?prefix=shop_")
        await engine.open()
        await engine.migrate("state", STATE_MIGRATIONS)
    """

    kind = "PostgreSQL"

    def __init__(self, url: str) -> None:
        cfg = parse_engine_url(
            url,
            engine="postgresql",
            default_port=5432,
            default_prefix="rio_",
            extra_options=("schema", "sslmode"),
        )
        super().__init__(cfg)
        schema = cfg.options.get("schema", "public")
        if not SQL_PREFIX_RE.match(schema):
            raise ConfigError(f"postgresql URL {cfg.url!r}: schema {schema!r} is not allowed")
        sslmode = cfg.options.get("sslmode", "prefer")
        if sslmode not in _SSLMODES:
            raise ConfigError(
                f"postgresql URL {cfg.url!r}: sslmode={sslmode!r}; expected one of "
                f"{', '.join(_SSLMODES)}"
            )
        self.schema = schema
        self.sslmode = sslmode
        #: Quoted table names: ``self.tables["state"]`` is ``"schema"."<prefix>state"``.
        self.tables = TableNames(cfg.prefix, '"', schema)
        self.pool: Any = None

    async def _connect(self) -> None:
        cfg = self.cfg
        self.pool = await asyncpg.create_pool(
            host=cfg.host,
            port=cfg.port,
            user=cfg.user or "postgres",
            password=cfg.password,
            database=cfg.database or None,
            ssl=self.sslmode,
            min_size=1,
            max_size=cfg.pool_size,
            timeout=cfg.connect_timeout,
            init=_init_connection,
            reset=_no_reset,
            server_settings={"application_name": f"rio:{cfg.prefix}"[:63]},
        )

    async def _disconnect(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.close()

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)

    def _classify(self, exc: BaseException) -> Failure:
        if isinstance(
            exc,
            OSError
            | asyncpg.PostgresConnectionError
            | asyncpg.AdminShutdownError
            | asyncpg.CrashShutdownError
            | asyncpg.CannotConnectNowError,
        ):
            return "unavailable"
        if isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc):
            return "unavailable"
        if isinstance(exc, asyncpg.InternalClientError):
            # The protocol lost its footing when the server cut the connection (e.g.
            # while the pool was resetting it); the pool has dropped that connection.
            return "unavailable"
        if isinstance(
            exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidCatalogNameError
        ):
            return "auth"
        return "other"

    async def _connection_lost(self) -> None:
        # After a server restart every pooled connection is dead: reconnect them lazily.
        if self.pool is not None:
            await self.pool.expire_connections()

    async def schema_version(self, component: str) -> int:
        """See :meth:`Engine.schema_version`."""
        table = self.tables["schema"]

        async def read() -> int:
            async with self.pool.acquire() as conn:
                if await conn.fetchval("SELECT to_regclass($1)", table) is None:
                    return 0
                row = await conn.fetchval(
                    f"SELECT version FROM {table} WHERE component=$1", component
                )
                return int(row or 0)

        return await self.run(f"reading the {component} schema version", read, retry=True)

    async def migrate(self, component: str, migrations: Sequence[Sequence[str]]) -> int:
        """Apply pending migrations of ``component`` (statements use ``{table}`` names)."""

        async def run() -> int:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1)",
                    lock_key("rio-migrate", self.cfg.database, self.schema, self.cfg.prefix),
                )
                if self.schema != "public":
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                table = self.tables["schema"]
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} "
                    "(component text PRIMARY KEY, version integer NOT NULL)"
                )

                async def read() -> int:
                    row = await conn.fetchval(
                        f"SELECT version FROM {table} WHERE component=$1", component
                    )
                    return int(row or 0)

                async def apply(index: int) -> None:
                    for statement in migrations[index]:
                        await conn.execute(statement.format_map(self.tables))
                    await conn.execute(
                        f"INSERT INTO {table} (component, version) VALUES ($1, $2) "
                        "ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
                        component,
                        index + 1,
                    )

                return await apply_migrations(self.url, component, len(migrations), read, apply)

        return await self.run(
            f"migrating {component} tables", run, retry=True, limit=MIGRATION_TIMEOUT
        )


async def _no_reset(conn: Any) -> None:
    # rio's queries leave no session state behind (no SET, LISTEN, cursors or session
    # advisory locks), so asyncpg's reset query, a round trip per call, is skipped.
    # Code sharing this pool must keep it that way.
    return None


async def _init_connection(conn: Any) -> None:
    # jsonb travels as its binary form (a version byte, then the JSON text), so
    # msgspec's bytes go in and come out without a str round trip.
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_jsonb_encode,
        decoder=_jsonb_decode,
        format="binary",
    )


def _jsonb_encode(doc: bytes) -> bytes:
    return b"\x01" + doc


def _jsonb_decode(raw: bytes) -> bytes:
    return raw[1:]


class PostgresStorage(StateStorage):
    """Actor state in PostgreSQL: jsonb for JSON-able state types, msgpack bytea otherwise.

    Example::

        app = rio.App(storage="postgresql://app:secret@db.internal/rio?prefix=shop_")
    """

    def __init__(self, url: str) -> None:
        self.engine = PostgresEngine(url)
        self.url = self.engine.url
        t = self.engine.tables["state"]
        self._sql_load = f"SELECT version, doc, data FROM {t} WHERE type_name=$1 AND object_id=$2"
        self._sql_insert = (
            f"INSERT INTO {t} (type_name, object_id, version, token, doc, data) "
            "VALUES ($1, $2, 1, $3, $4, $5) ON CONFLICT (type_name, object_id) DO NOTHING"
        )
        self._sql_update = (
            f"UPDATE {t} SET version=version+1, token=$3, doc=$4, data=$5 "
            "WHERE type_name=$1 AND object_id=$2 AND version=$6"
        )
        self._sql_delete = f"DELETE FROM {t} WHERE type_name=$1 AND object_id=$2 AND version=$3"
        self._sql_version = f"SELECT version, token FROM {t} WHERE type_name=$1 AND object_id=$2"
        r = self.engine.tables["reminders"]
        key = "type_name=$1 AND object_id=$2 AND name=$3"
        cols = "type_name, object_id, name, period, due_ms"
        self._sql_rem_upsert = (
            f"INSERT INTO {r} ({cols}) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (type_name, object_id, name) "
            "DO UPDATE SET period=EXCLUDED.period, due_ms=EXCLUDED.due_ms"
        )
        self._sql_rem_delete = f"DELETE FROM {r} WHERE {key}"
        self._sql_rem_list = (
            f'SELECT {cols} FROM {r} WHERE type_name=$1 AND object_id=$2 ORDER BY name COLLATE "C"'
        )
        self._sql_rem_due = f"SELECT {cols} FROM {r} WHERE due_ms <= $1 ORDER BY due_ms LIMIT $2"
        self._sql_rem_advance = f"UPDATE {r} SET due_ms=$5 WHERE {key} AND due_ms=$4"

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

    async def close(self) -> None:
        """Close the pool."""
        await self.engine.close()

    async def load(self, type_name: str, object_id: str, state_type: Any) -> StoredState | None:
        """Read one state (from ``doc`` or ``data``, whichever is set)."""
        pool = self.engine.pool
        row = await self.engine.run(
            f"loading {type_name}/{object_id}",
            lambda: pool.fetchrow(self._sql_load, type_name, object_id),
            retry=True,
        )
        if row is None:
            return None
        version, doc, data = row
        if doc is not None:
            value = decode_state_json(doc, state_type, type_name, object_id)
        else:
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
        """Compare-and-set one state (INSERT for version 0, UPDATE otherwise)."""
        doc = json_document(state, state_type)
        data = encode_checked(state, state_type, type_name, object_id) if doc is None else None
        token = random.getrandbits(63)
        pool = self.engine.pool
        if expected_version == 0:
            args: tuple[Any, ...] = (self._sql_insert, type_name, object_id, token, doc, data)
        else:
            args = (self._sql_update, type_name, object_id, token, doc, data, expected_version)
        action = f"saving {type_name}/{object_id}"
        status = await self.engine.run(action, lambda: pool.execute(*args), retry=True)
        if status.endswith(" 1"):
            return expected_version + 1
        actual, stored_token = await self._version(type_name, object_id)
        if actual == expected_version + 1 and stored_token == token:
            return actual  # our first attempt committed before its connection was lost
        raise conflict(self.url, type_name, object_id, actual, expected_version, "writer")

    async def delete(self, type_name: str, object_id: str, expected_version: int) -> None:
        """Compare-and-delete one state."""
        if expected_version != 0:
            pool = self.engine.pool
            status = await self.engine.run(
                f"deleting {type_name}/{object_id}",
                lambda: pool.execute(self._sql_delete, type_name, object_id, expected_version),
                retry=False,
            )
            if status.endswith(" 1"):
                return
        actual, _ = await self._version(type_name, object_id)
        if actual != 0 or expected_version != 0:
            raise conflict(self.url, type_name, object_id, actual, expected_version, "deleter")

    async def _version(self, type_name: str, object_id: str) -> tuple[int, int]:
        pool = self.engine.pool
        row = await self.engine.run(
            f"reading the version of {type_name}/{object_id}",
            lambda: pool.fetchrow(self._sql_version, type_name, object_id),
            retry=True,
        )
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    # -- durable reminders ---------------------------------------------------------

    async def upsert_reminder(
        self, type_name: str, object_id: str, name: str, period: float, next_due: float
    ) -> None:
        """Create or replace one reminder (an idempotent write: retried once if cut off)."""
        pool = self.engine.pool
        args = (type_name, object_id, name, float(period), to_ms(next_due))
        await self.engine.run(
            f"saving reminder {name!r} of {type_name}/{object_id}",
            lambda: pool.execute(self._sql_rem_upsert, *args),
            retry=True,
        )

    async def delete_reminder(self, type_name: str, object_id: str, name: str) -> bool:
        """Remove one reminder; False when there was none."""
        pool = self.engine.pool
        status = await self.engine.run(
            f"deleting reminder {name!r} of {type_name}/{object_id}",
            lambda: pool.execute(self._sql_rem_delete, type_name, object_id, name),
            retry=False,
        )
        return bool(status.endswith(" 1"))

    async def list_reminders(self, type_name: str, object_id: str) -> list[StoredReminder]:
        """The reminders of one object, by name."""
        pool = self.engine.pool
        rows = await self.engine.run(
            f"listing the reminders of {type_name}/{object_id}",
            lambda: pool.fetch(self._sql_rem_list, type_name, object_id),
            retry=True,
        )
        return [_reminder(row) for row in rows]

    async def due_reminders(self, now: float, limit: int) -> list[StoredReminder]:
        """The reminders due at ``now``, earliest first."""
        pool = self.engine.pool
        rows = await self.engine.run(
            "reading due reminders",
            lambda: pool.fetch(self._sql_rem_due, to_ms(now), limit),
            retry=True,
        )
        return [_reminder(row) for row in rows]

    async def advance_reminder(
        self, type_name: str, object_id: str, name: str, expected_due: float, new_due: float
    ) -> bool:
        """Compare-and-set one reminder's due time."""
        pool = self.engine.pool
        args = (type_name, object_id, name, to_ms(expected_due), to_ms(new_due))
        status = await self.engine.run(
            f"advancing reminder {name!r} of {type_name}/{object_id}",
            lambda: pool.execute(self._sql_rem_advance, *args),
            retry=False,
        )
        return bool(status.endswith(" 1"))


def _reminder(row: Any) -> StoredReminder:
    t, i, n, period, due = row
    return StoredReminder(t, i, n, float(period), int(due) / 1000)


def _from_url(url: str) -> PostgresStorage:
    return PostgresStorage(url)


register_engine("postgresql", _from_url)
register_engine("postgres", _from_url)
