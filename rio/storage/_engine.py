"""What the networked engines (PostgreSQL, MySQL, Redis) share.

An :class:`Engine` is a connection pool to one server plus the three things every
table set built on it needs, whether it holds actor state or, later, cluster
membership and placement:

* **URL options** — :func:`parse_engine_url` reads host, credentials, database and
  the options every engine knows (``prefix``, ``pool_size``, ``connect_timeout``,
  ``command_timeout``), refuses unknown ones, and keeps the password out of :attr:`EngineURL.url`.
* **Versioned migrations** — :meth:`Engine.migrate` applies a *component*'s list of
  migrations (``"state"``, later ``"membership"``…) once, under a server-side lock,
  so several processes starting at once run each step exactly once. The applied
  count is kept per component in a ``<prefix>schema`` table (a hash in Redis).
* **Errors and reconnects** — :meth:`Engine.run` turns driver errors into
  :class:`StorageUnavailable` (server unreachable, connection lost) or
  :class:`StorageError` (anything else), with the masked URL and the password scrubbed
  from the driver's text. A lost connection is dropped from the pool; calls marked
  ``retry`` are tried once more on a fresh connection, so the first call after a
  server restart succeeds. Only idempotent or replay-safe calls may retry: state
  writes carry a random token so a replayed compare-and-set recognises its own write.
  Connecting is bounded by ``connect_timeout`` and each call by ``command_timeout``,
  so a server that accepts connections but never answers (a wrong port, a network
  partition) fails calls with :class:`StorageUnavailable`, never hangs them.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from rio.core.errors import ConfigError, StateConflict, StorageError, StorageUnavailable
from rio.storage import mask_url

__all__ = [
    "MIGRATION_TIMEOUT",
    "SQL_PREFIX_RE",
    "Engine",
    "EngineURL",
    "Failure",
    "TableNames",
    "apply_migrations",
    "conflict",
    "lock_key",
    "parse_engine_url",
]

T = TypeVar("T")

#: Table prefixes for SQL engines: they become part of unquoted-safe identifiers.
SQL_PREFIX_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")

#: How a driver error is reported: the server is out of reach, it refused the
#: credentials, or the operation itself failed.
Failure = Literal["unavailable", "auth", "other"]

_COMMON_OPTIONS = ("prefix", "pool_size", "connect_timeout", "command_timeout")
#: Seconds a migration may take, waiting for another process's lock included (each
#: engine waits 120 s at most for it).
MIGRATION_TIMEOUT = 180.0
#: Seconds a call past its limit gets to clean up (free its connection) before it is
#: cancelled again.
CLEANUP_GRACE = 1.0


@dataclass(frozen=True)
class EngineURL:
    """A parsed engine URL. ``url`` is the masked form, safe for messages and logs."""

    url: str
    scheme: str
    host: str
    port: int
    user: str | None
    password: str | None = field(repr=False)
    database: str
    prefix: str
    pool_size: int
    connect_timeout: float
    command_timeout: float
    options: dict[str, str]


def parse_engine_url(
    url: str,
    *,
    engine: str,
    default_port: int,
    default_prefix: str,
    prefix_re: re.Pattern[str] = SQL_PREFIX_RE,
    extra_options: Collection[str] = (),
) -> EngineURL:
    """Parse ``scheme://user:password@host:port/database?option=value…``.

    Known options for every engine: ``prefix`` (table or key prefix), ``pool_size``
    (most connections held, default 10), ``connect_timeout`` (seconds to connect,
    default 10) and ``command_timeout`` (seconds a call may wait for its answer,
    default 10); ``extra_options`` names the engine's own, returned in :attr:`EngineURL.options`.

    Example::

        cfg = parse_engine_url("postgresql://app:pw@db/rio?prefix=shop_",
                               engine="postgresql", default_port=5432, default_prefix="rio_")

    Raises:
        ConfigError: malformed URL, bad port, unknown option or bad value.

    """
    masked = mask_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port or default_port
    except ValueError as e:
        raise ConfigError(f"{engine} URL {masked!r} is malformed: {e}") from None
    opts = dict(parse_qsl(parts.query, keep_blank_values=True))
    known = {*_COMMON_OPTIONS, *extra_options}
    unknown = set(opts) - known
    if unknown:
        raise ConfigError(
            f"{engine} URL {masked!r}: unknown option(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
    prefix = opts.pop("prefix", default_prefix)
    if not prefix_re.match(prefix):
        raise ConfigError(
            f"{engine} URL {masked!r}: prefix {prefix!r} is not allowed "
            f"(it must match {prefix_re.pattern})"
        )
    pool_size = _positive(opts.pop("pool_size", "10"), "pool_size", engine, masked)
    timeout = _positive(opts.pop("connect_timeout", "10"), "connect_timeout", engine, masked)
    command = _positive(opts.pop("command_timeout", "10"), "command_timeout", engine, masked)
    if pool_size != int(pool_size):
        raise ConfigError(f"{engine} URL {masked!r}: pool_size must be a whole number")
    return EngineURL(
        url=masked,
        scheme=parts.scheme.lower(),
        host=unquote(parts.hostname or "127.0.0.1"),
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        database=unquote(parts.path.lstrip("/")),
        prefix=prefix,
        pool_size=int(pool_size),
        connect_timeout=timeout,
        command_timeout=command,
        options=opts,
    )


def _positive(text: str, name: str, engine: str, masked: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{engine} URL {masked!r}: {name}={text!r} must be a positive number")
    return value


class TableNames:
    """Quoted table names for SQL templates: ``"{state}".format_map(names)``.

    ``names["state"]`` is the quoted ``<prefix>state`` (in ``schema`` when given), so
    migrations and queries say ``{state}`` and never build identifiers by hand.
    """

    def __init__(self, prefix: str, quote_char: str, schema: str | None = None) -> None:
        self._prefix = prefix
        self._q = quote_char
        self._schema = f"{quote_char}{schema}{quote_char}." if schema else ""

    def __getitem__(self, suffix: str) -> str:
        q = self._q
        return f"{self._schema}{q}{self._prefix}{suffix}{q}"


def lock_key(*parts: str) -> int:
    """Hash ``parts`` to a stable signed 64-bit number (a PostgreSQL advisory lock key)."""
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def apply_migrations(
    url: str,
    component: str,
    count: int,
    read_version: Callable[[], Awaitable[int]],
    apply: Callable[[int], Awaitable[None]],
) -> int:
    """Apply migrations ``applied..count-1`` of ``component``; the caller holds the lock.

    ``apply(i)`` runs migration ``i`` and records ``i + 1`` as the applied count.
    Returns the schema version (``count``).

    Raises:
        StorageError: the store was migrated by a newer rio than this one.

    """
    applied = await read_version()
    if applied > count:
        raise StorageError(
            f"{url}: {component} schema version {applied} is newer than this rio knows "
            f"({count}); upgrade rio on every process sharing this store"
        )
    for index in range(applied, count):
        await apply(index)
    return count


def conflict(
    url: str, type_name: str, object_id: str, actual: int, expected: int, who: str
) -> StateConflict:
    """Build the :class:`StateConflict` for a ``who`` ("writer", "deleter") that read stale."""
    return StateConflict(
        f"{type_name}/{object_id} in {url}: stored version is {actual}, the {who} "
        f"expected {expected}; another activation or process wrote first"
    )


class Engine(abc.ABC):
    """A pool of connections to one server, with migrations and error translation.

    Subclasses connect in :meth:`_connect`, release in :meth:`_disconnect`, say how
    to read a driver error in :meth:`_classify`, and take the migration lock in
    :meth:`migrate`.
    """

    #: Human name of the server kind, e.g. ``"PostgreSQL"``.
    kind: ClassVar[str] = ""

    def __init__(self, cfg: EngineURL) -> None:
        self.cfg = cfg
        self.url = cfg.url
        self._open = False
        self._open_lock = asyncio.Lock()

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` succeeded and :meth:`close` was not called since."""
        return self._open

    async def open(self) -> None:
        """Connect the pool (idempotent).

        Raises:
            StorageUnavailable: the server cannot be reached.
            StorageError: the server refused the credentials or the database.

        """
        async with self._open_lock:
            if self._open:
                return
            try:
                async with asyncio.timeout(self.cfg.connect_timeout) as limit:
                    await self._connect()
            except self._errors() as e:
                if limit.expired():  # connected, perhaps, but the server never answered
                    raise self._unanswered(
                        "connecting", self.cfg.connect_timeout, "connect_timeout"
                    ) from None
                raise self.error("connecting", e) from e
            self._open = True

    async def close(self) -> None:
        """Close every connection (idempotent)."""
        async with self._open_lock:
            if self._open:
                self._open = False
                await self._disconnect()

    async def run(
        self,
        action: str,
        call: Callable[[], Awaitable[T]],
        *,
        retry: bool,
        limit: float | None = None,
    ) -> T:
        """Await ``call()``, translating driver errors; ``action`` names it in messages.

        With ``retry``, a call that failed because its connection was lost is tried
        once more (the pool has dropped the dead connection by then). An attempt
        fails with :class:`StorageUnavailable` once it has waited ``limit``
        seconds (default ``command_timeout``; migrations, which may wait for another
        process's lock, give :data:`MIGRATION_TIMEOUT`), and is not retried then: the
        server may be cut off, and the caller's deadline is running.
        """
        if not self._open:
            raise StorageError(f"{self.url} is not open: call open() first")
        errors = self._errors()
        if limit is None:
            limit = self.cfg.command_timeout
        try:
            return await self._attempt(action, call, limit)
        except StorageError:
            raise  # no answer in time: not retried
        except errors as e:
            if not retry or self._classify(e) != "unavailable":
                raise self.error(action, e) from e
            with contextlib.suppress(Exception):  # best effort: the retry tells the rest
                await self._connection_lost()
        try:
            return await self._attempt(action, call, limit)
        except StorageError:
            raise
        except errors as e:
            raise self.error(action, e) from e

    async def _attempt(self, action: str, call: Callable[[], Awaitable[T]], limit: float) -> T:
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()  # a caller cleaning up after its own cancellation
        loop = asyncio.get_running_loop()
        # A driver may wait, after its query is cancelled, for the server to confirm
        # the cancellation before it frees the connection (asyncpg does): from a cut-off
        # server that never comes. Cancelled again, it drops the connection instead.
        again = _Recancel(task)
        handle = loop.call_at(loop.time() + limit + CLEANUP_GRACE, again)
        try:
            async with asyncio.timeout(limit) as timer:
                return await call()
        except TimeoutError:
            if not timer.expired():
                raise  # the driver's own
            raise self._unanswered(action, limit, "command_timeout") from None
        except asyncio.CancelledError:
            if again.fired and task.uncancel() <= cancelling:  # ours, and no one else's
                raise self._unanswered(action, limit, "command_timeout") from None
            raise
        finally:
            handle.cancel()

    def _unanswered(self, action: str, seconds: float, option: str) -> StorageUnavailable:
        return StorageUnavailable(
            f"{self.kind} at {self.url}: {action} got no answer within {seconds:g}s "
            f"({option}); the server is slow, cut off, or not a {self.kind} server"
        )

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (*self._driver_errors(), OSError, TimeoutError)

    def error(self, action: str, exc: BaseException) -> StorageError:
        """Translate driver error ``exc``, raised while ``action``, into rio's error."""
        detail = self.scrub(f"{type(exc).__name__}: {exc}".rstrip(": "))
        failure = self._classify(exc)
        if failure == "unavailable":
            return StorageUnavailable(
                f"{self.kind} at {self.url}: {action} failed, the server cannot be reached "
                f"or dropped the connection ({detail})"
            )
        if failure == "auth":
            return StorageError(
                f"{self.kind} at {self.url} refused the login ({detail}); check the user, "
                "password and database in the URL"
            )
        return StorageError(f"{self.kind} at {self.url}: {action} failed: {detail}")

    def scrub(self, text: str) -> str:
        """Return ``text`` with every occurrence of the password replaced by ``***``."""
        password = self.cfg.password
        if password:
            text = text.replace(password, "***").replace(quote(password, safe=""), "***")
        return text

    @abc.abstractmethod
    async def schema_version(self, component: str) -> int:
        """``component``'s applied migrations, read without creating anything (0: none)."""

    @abc.abstractmethod
    async def migrate(self, component: str, migrations: Sequence[Any]) -> int:
        """Apply ``component``'s pending migrations once across all processes.

        Returns the component's schema version (``len(migrations)``).
        """

    @abc.abstractmethod
    async def _connect(self) -> None:
        """Create the pool; raise the driver's error when the server refuses."""

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Close the pool."""

    @abc.abstractmethod
    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        """Return the driver's exception classes that :meth:`run` translates."""

    @abc.abstractmethod
    def _classify(self, exc: BaseException) -> Failure:
        """Which kind of failure driver error ``exc`` is."""

    async def _connection_lost(self) -> None:  # noqa: B027 (optional hook)
        """Drop idle connections that may be dead too (after a server restart)."""


class _Recancel:
    """Cancels a task when called, and remembers that it did."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()
