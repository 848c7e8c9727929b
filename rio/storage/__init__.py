"""State storage engines, chosen by URL.

=====================================  =========================================
URL                                    engine
=====================================  =========================================
``memory://``                          :class:`MemoryStorage` (nothing persists)
``sqlite:///relative/or/abs/path.db``  :class:`SQLiteStorage` (the default)
``postgresql://u:pw@host/db``          ``rio.storage.postgres.PostgresStorage``
                                       (also ``postgres://``; ``rio-actors[postgres]``)
``mysql://u:pw@host/db``               ``rio.storage.mysql.MySQLStorage``
                                       (also ``mariadb://``; ``rio-actors[mysql]``)
``redis://host:6379/0``                ``rio.storage.redis.RedisStorage``
                                       (also ``rediss://``; ``rio-actors[redis]``)
=====================================  =========================================

Every networked engine takes ``?prefix=`` (table or key prefix), ``pool_size=``,
``connect_timeout=`` and ``command_timeout=`` (seconds, 10 each); see each module for
its own options.

Engines register a URL scheme with :func:`register_engine`; :func:`storage_from_url`
builds an (unopened) engine from a URL.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from rio.core.errors import ConfigError
from rio.storage.base import StateStorage, StoredState
from rio.storage.memory import MemoryStorage
from rio.storage.sqlite import SQLiteStorage

__all__ = [
    "MemoryStorage",
    "SQLiteStorage",
    "StateStorage",
    "StoredState",
    "check_storage_url",
    "mask_url",
    "register_engine",
    "storage_from_url",
]

EngineFactory = Callable[[str], StateStorage]

_ENGINES: dict[str, EngineFactory] = {}
#: scheme -> (module that registers it, pip extra that installs its driver)
_LAZY: dict[str, tuple[str, str]] = {}


def register_engine(scheme: str, factory: EngineFactory) -> None:
    """Make ``scheme://…`` URLs build storage with ``factory(url)``."""
    _ENGINES[scheme] = factory


def register_lazy_engine(scheme: str, module: str, extra: str) -> None:
    """Declare that importing ``module`` registers ``scheme``; its driver comes with ``extra``."""
    _LAZY[scheme] = (module, extra)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def storage_from_url(url: str) -> StateStorage:
    """Build the storage engine a URL names (not yet opened).

    Raises:
        ConfigError: unknown scheme, malformed URL, or the engine's driver is not
            installed (the message names the pip extra to install).
    """
    if "://" not in url:
        what = "is missing '://'" if ":" in url else "has no scheme"
        raise ConfigError(
            f"storage URL {mask_url(url)!r} {what}: expected one of "
            f"{', '.join(sorted({*_ENGINES, *_LAZY}))} (e.g. 'sqlite:///data/rio.db')"
        )
    scheme = url.split("://", 1)[0].lower()
    factory = _ENGINES.get(scheme)
    if factory is None and scheme in _LAZY:
        module, extra = _LAZY[scheme]
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(
                f"storage URL {mask_url(url)!r} needs a driver that is not installed "
                f"({e.name or e}): pip install 'rio-actors[{extra}]'"
            ) from e
        factory = _ENGINES.get(scheme)
    if factory is None:
        raise ConfigError(
            f"unknown storage scheme {scheme!r} in {mask_url(url)!r}: expected one of "
            f"{', '.join(sorted({*_ENGINES, *_LAZY}))}"
        )
    return factory(url)


def check_storage_url(url: str) -> None:
    """Refuse a malformed storage URL now, as :func:`storage_from_url` would.

    A URL whose engine's driver is not installed passes: the app may be run with
    another storage (``rio run --storage``), and the driver is needed only to use it.

    Raises:
        ConfigError: unknown scheme or malformed URL.
    """
    try:
        storage_from_url(url)
    except ConfigError as e:
        if not isinstance(e.__cause__, ImportError):
            raise


def _sqlite_from_url(url: str) -> SQLiteStorage:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(
            f"sqlite URL {url!r} names a host; use sqlite:///relative.db or sqlite:////abs.db"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ConfigError(f"sqlite URL {url!r} names no file: e.g. sqlite:///data/rio.db")
    opts = dict(parse_qsl(parts.query))
    unknown = set(opts) - {"prefix", "synchronous", "busy_timeout_ms"}
    if unknown:
        raise ConfigError(
            f"sqlite URL {url!r}: unknown option(s) {', '.join(sorted(unknown))}; "
            "known: prefix, synchronous, busy_timeout_ms"
        )
    try:
        busy = int(opts.get("busy_timeout_ms", "30000"))
    except ValueError:
        raise ConfigError(f"sqlite URL {url!r}: busy_timeout_ms must be an integer") from None
    return SQLiteStorage(
        os.path.expanduser(path),
        prefix=opts.get("prefix", "rio_"),
        synchronous=opts.get("synchronous", "NORMAL"),
        busy_timeout_ms=busy,
        url=url,
    )


def _memory_from_url(url: str) -> MemoryStorage:
    if url.partition(":")[2].strip("/"):
        raise ConfigError(
            f"memory storage URL {url!r} takes no host, path or options: write memory://"
        )
    return MemoryStorage(url)


register_engine("memory", _memory_from_url)
register_engine("sqlite", _sqlite_from_url)
register_lazy_engine("postgresql", "rio.storage.postgres", "postgres")
register_lazy_engine("postgres", "rio.storage.postgres", "postgres")
register_lazy_engine("mysql", "rio.storage.mysql", "mysql")
register_lazy_engine("mariadb", "rio.storage.mysql", "mysql")
register_lazy_engine("redis", "rio.storage.redis", "redis")
register_lazy_engine("rediss", "rio.storage.redis", "redis")
