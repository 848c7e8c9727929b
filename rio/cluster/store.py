"""Where a cluster keeps its membership table and its placement directory.

One :class:`ClusterStore` per process that takes part in a cluster, built from a URL by
:func:`cluster_store_from_url` on the same engines as actor state:

=====================================  ==============================================
URL                                    store
=====================================  ==============================================
``sqlite:///path/cluster.db``          clusters on one box (WAL, several processes)
``postgresql://u:pw@host/db``          ``rio.cluster.stores.sql`` (asyncpg)
``mysql://u:pw@host/db``               ``rio.cluster.stores.sql`` (aiomysql)
``redis://host:6379/0``                ``rio.cluster.stores.redis`` (Lua scripts)
=====================================  ==============================================

The URL options are the state engines' (``prefix``, ``pool_size``,
``connect_timeout``…), so one server can hold state and cluster tables side by side.

**Membership.** Each node registers a :class:`Member` row under a fresh *incarnation*
(a restarted node is a new member). Rows move ``joining → active → draining → left``
or to ``dead``; ``dead`` and ``left`` are terminal: no update brings them back. Members
heartbeat into their row (activation counts ride along) and record *suspicions* of
the members they probe; :meth:`ClusterStore.declare_dead` is the one way to ``dead``
and purges the member's placements with it.

**Placement.** The directory maps an object ``(type, id)`` to the member hosting it.
:meth:`ClusterStore.claim` is atomic (insert-if-absent, or compare-and-set over an
owner that is gone): two members never both win the same object.
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from rio.core.errors import ConfigError
from rio.storage import mask_url

__all__ = [
    "LIVE",
    "TERMINAL",
    "ClusterStore",
    "Key",
    "Member",
    "Status",
    "cluster_store_from_url",
    "register_cluster_store",
    "require_existing",
]

#: ``(type name, object id)``.
Key = tuple[str, str]

#: A member's lifecycle: ``joining`` (registered, not serving yet), ``active``
#: (serving, takes new activations), ``draining`` (serving what it hosts, takes no new
#: activations), ``left`` (drained and gone) and ``dead`` (declared dead by others,
#: or by its own successor).
Status = Literal["joining", "active", "draining", "left", "dead"]

#: Statuses no update leaves.
TERMINAL: frozenset[str] = frozenset({"left", "dead"})
#: Statuses of a member that still answers calls.
LIVE: frozenset[str] = frozenset({"joining", "active", "draining"})


class Member(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the membership table: one incarnation of one node."""

    #: Unique across all time: ``"<node>#<incarnation>"``.
    member_id: str
    #: The node's name (stable across restarts); defaults to its address.
    node: str
    #: ``host:port`` where the node's cluster listener takes calls.
    address: str
    #: Larger is newer; a node restarting on the same name gets a larger one.
    incarnation: int
    status: Status = "joining"
    #: Actor types this node hosts (placement only picks nodes hosting the type).
    types: list[str] = []
    #: Activations hosted, in all and per type, as of the last heartbeat.
    activations: int = 0
    by_type: dict[str, int] = {}
    #: Unix time of the last heartbeat and of registration, by the member's clock.
    heartbeat: float = 0.0
    started: float = 0.0

    @property
    def live(self) -> bool:
        """Whether the member still answers calls (joining, active or draining)."""
        return self.status in LIVE


class ClusterStore(abc.ABC):
    """Membership table and placement directory on one engine.

    Every method may raise :class:`rio.StorageUnavailable` (the server is out of
    reach) or :class:`rio.StorageError`; callers keep serving what they host and retry.
    """

    #: The URL with its password masked, for messages.
    url: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the tables (idempotent, safe to race)."""

    async def open_existing(self) -> None:
        """Connect to a cluster's tables as they are, for a reader (``rio status``).

        Nothing is created or migrated (a mistyped URL must not become an empty
        cluster, nor a newer rio migrate the tables under running nodes).

        Raises:
            ConfigError: no rio cluster tables there, or at another schema version.
        """
        await self.open()

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections (idempotent)."""

    # -- membership ---------------------------------------------------------------------

    @abc.abstractmethod
    async def register(self, member: Member) -> None:
        """Insert ``member``'s row.

        Raises:
            ConfigError: a row with this ``member_id`` exists already.

        """

    @abc.abstractmethod
    async def update(
        self,
        member_id: str,
        *,
        status: Status | None = None,
        heartbeat: float | None = None,
        activations: int | None = None,
        by_type: dict[str, int] | None = None,
    ) -> Member | None:
        """Change the given fields of ``member_id``'s row and return the row as stored.

        A row in a terminal status (``dead``, ``left``) is left as it is and returned
        unchanged, so a member learns from its own heartbeat that it was declared dead.
        ``status="dead"`` is refused here (use :meth:`declare_dead`). Returns None for
        an unknown member.
        """

    @abc.abstractmethod
    async def members(self) -> list[Member]:
        """Every row, terminal ones included (until :meth:`prune` removes them)."""

    @abc.abstractmethod
    async def suspect(self, target: str, observer: str, now: float, window: float) -> int:
        """Record that ``observer`` suspects ``target`` at ``now``.

        Returns how many distinct observers suspected ``target`` at a time
        ``>= now - window`` (this one included). A later suspicion by the same
        observer replaces its earlier one.
        """

    @abc.abstractmethod
    async def declare_dead(self, member_id: str) -> bool:
        """Move ``member_id`` to ``dead`` and delete every placement it owns.

        Returns True when this call made the change, False when the row was already
        terminal or unknown. Atomic with respect to :meth:`claim`: once it returns,
        no placement names the member (a claim racing it either lands before and is
        purged, or sees the member dead and is refused or replaced).
        """

    @abc.abstractmethod
    async def prune(self, before: float) -> int:
        """Delete terminal rows whose heartbeat is older than ``before``, and their suspicions."""

    # -- placement ----------------------------------------------------------------------

    @abc.abstractmethod
    async def lookup(self, key: Key) -> str | None:
        """The member id that ``key`` is placed on, or None."""

    @abc.abstractmethod
    async def claim(self, key: Key, member_id: str) -> str:
        """Place ``key`` on ``member_id`` unless a live member holds it; return the owner.

        Atomic: insert-if-absent; when the current owner's row is terminal or missing,
        compare-and-set it over to ``member_id``. Two racing claims never both win.
        A claim by a member that is itself terminal or unknown does not take the key
        (returns the current owner, or ``""`` when there is none).
        """

    async def claim_many(self, keys: Sequence[Key], member_id: str) -> list[str]:
        """:meth:`claim` each of ``keys`` for ``member_id``; their owners, in order.

        Each key is claimed with the rules of :meth:`claim`. The built-in stores do
        the whole batch in one transaction (one round trip on Redis): a node claims
        the objects activated in one loop pass together. This default runs the
        claims concurrently, for stores that have no batch form.

        Raises:
            rio.StorageError: the store failed; claims that landed before it are
                found as the member's own by a later claim.
        """
        return list(await asyncio.gather(*(self.claim(key, member_id) for key in keys)))

    @abc.abstractmethod
    async def release(self, keys: Iterable[Key], member_id: str) -> int:
        """Delete the placements of ``keys`` that ``member_id`` owns; return how many."""

    @abc.abstractmethod
    async def placement_counts(self) -> dict[str, int]:
        """Placements per owning member id (for ``rio status``)."""

    async def __aenter__(self) -> ClusterStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


StoreFactory = Callable[[str], ClusterStore]

_STORES: dict[str, StoreFactory] = {}
#: scheme -> module whose import registers it
_LAZY: dict[str, str] = {
    "sqlite": "rio.cluster.stores.sqlite",
    "postgresql": "rio.cluster.stores.sql",
    "postgres": "rio.cluster.stores.sql",
    "mysql": "rio.cluster.stores.sql",
    "mariadb": "rio.cluster.stores.sql",
    "redis": "rio.cluster.stores.redis",
    "rediss": "rio.cluster.stores.redis",
}


def register_cluster_store(scheme: str, factory: StoreFactory) -> None:
    """Make ``scheme://…`` cluster URLs build a store with ``factory(url)``."""
    _STORES[scheme] = factory


def require_existing(store: ClusterStore, url: str) -> None:
    """Refuse an SQLite cluster store whose file does not exist (for readers of a cluster).

    A client or ``rio status`` given a mistyped path must not make it into an empty
    cluster (nodes create the file; whoever only reads one needs it to be there).

    Raises:
        ConfigError: ``store`` is an SQLite file that does not exist.
    """
    path = getattr(store, "path", None)
    if isinstance(path, str) and path != ":memory:" and not os.path.exists(path):
        raise ConfigError(
            f"no cluster store at {url}: the file {path} does not exist (nodes create it "
            "when they start: check the path, or start a node first)"
        )


def check_existing_schema(url: str, version: int, migrations: int) -> None:
    """Refuse to read cluster tables at ``version`` (0: none) when this rio has ``migrations``.

    Raises:
        ConfigError: no rio cluster tables there, or at another schema version.
    """
    if version == 0:
        raise ConfigError(
            f"no cluster store at {url}: it holds no rio cluster tables (check the URL, its "
            "database or path, and prefix, or start a node first)"
        )
    if version != migrations:
        raise ConfigError(
            f"the cluster store at {url} is at schema version {version}, and this rio reads "
            f"version {migrations}: use the rio version its nodes run"
        )


async def open_existing_schema(engine: Any, migrations: int) -> None:
    """:meth:`ClusterStore.open_existing` for a store on a networked ``engine``."""
    await engine.open()
    try:
        check_existing_schema(engine.url, await engine.schema_version("cluster"), migrations)
    except BaseException:
        await engine.close()
        raise


def cluster_store_from_url(url: str) -> ClusterStore:
    """Build (unopened) the cluster store that ``url`` names.

    Raises:
        ConfigError: unknown scheme or malformed URL.

    """
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _STORES and scheme in _LAZY:
        importlib.import_module(_LAZY[scheme])
    factory = _STORES.get(scheme)
    if factory is None:
        known = ", ".join(sorted({*_STORES, *_LAZY}))
        raise ConfigError(
            f"cluster URL {mask_url(url)!r}: unknown scheme {scheme!r}; known: {known}"
        )
    return factory(url)
