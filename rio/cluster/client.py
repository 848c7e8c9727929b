"""The external client: any process calling a cluster's objects with the usual refs.

Example::

    async with rio.connect("redis://127.0.0.1:6379/0", secret="s3cret") as cluster:
        print(await Counter.ref("a").incr(1))          # or cluster.ref(Counter, "a")

The client reads the membership from the store (or, given only ``seeds``, from any
node it can reach), keeps a placement cache, follows redirects, and retries a call
whose node died on the object's new home within the call's deadline. With no live
member hosting the type, calls fail with :class:`rio.NoNodesAvailable`.

It subscribes too: ``async for event in Table.ref("t1").subscribe()`` (or
``cluster.subscribe("topic")``) registers the stream with every live member, so
events come from wherever the object is active, and keep coming when it moves
(see :mod:`rio.cluster.streams`). ``cluster.publish(event, topic=...)`` publishes
through one member.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from functools import partial
from ssl import SSLContext
from typing import Any

import msgspec

from rio.cluster.membership import MembershipView
from rio.cluster.node import deactivate_anywhere
from rio.cluster.routing import MembersReq, Router, members_decoder
from rio.cluster.settings import client_context, split_address
from rio.cluster.store import ClusterStore, Member, cluster_store_from_url, require_existing
from rio.cluster.streams import ClusterSubscriptions
from rio.cluster.transport import connect as dial
from rio.core.context import (
    CALLER_DEADLINE,
    reset_system,
    set_default_system,
    system_token,
)
from rio.core.errors import ConfigError, NoNodesAvailable, RioError, SystemStopping
from rio.core.registry import Handler
from rio.core.runtime import MAX_QUEUED, check_max_queued
from rio.core.streams import Streams
from rio.core.system import System, _topic, key_of

__all__ = ["ClientStats", "ClusterClient", "connect"]


class ClientStats(msgspec.Struct, frozen=True):
    """What a client knows: live members and cached placements."""

    members: list[str]
    cached_placements: int
    #: Streams this client subscribes to (registered with the members).
    streams: int = 0
    #: Subscriptions in this client.
    subscribers: int = 0


#: Seconds a client waits for an SQLite cluster file its nodes have not created yet.
STORE_FILE_WAIT = 5.0


class ClusterClient(System):
    """A cluster seen from outside: made by :func:`rio.connect`."""

    def __init__(
        self,
        url: str | None,
        *,
        seeds: Sequence[str] = (),
        secret: str | None = None,
        name: str = "client",
        default_timeout: float = 30.0,
        refresh: float = 1.0,
        placement: dict[str, str] | None = None,
        ssl: SSLContext | None = None,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        import os

        if not url and not seeds:
            raise ConfigError("rio.connect() needs a membership URL or seed node addresses")
        for s in seeds:
            split_address(s, "seed")
        self.secret = secret or os.environ.get("RIO_CLUSTER_SECRET", "")
        if not self.secret:
            raise ConfigError(
                "rio.connect() needs the cluster secret: pass secret= or set RIO_CLUSTER_SECRET"
            )
        self.name = name
        self.default_timeout = float(default_timeout)
        self.seeds = list(seeds)
        self.store: ClusterStore | None = cluster_store_from_url(url) if url else None
        self._url = url or ""
        self.view = MembershipView(self._fetch, refresh, name)
        table = dict(placement or {})
        self.router = Router(
            self.view,
            self.secret,
            local_member=None,
            local=None,
            strategy_of=lambda t: table.get(t, "consistent-hash"),
            name=name,
            ssl=ssl,
            max_queued=max_queued,
        )
        self.ssl = ssl
        #: Pub/sub: this client's subscriptions, fed by the members' relays.
        self.streams = Streams(name, self.default_timeout)
        self.subscriptions = ClusterSubscriptions(self.streams, self.router, self.view, None, name)
        self._started = False
        self._stopping = False
        self._token: Any = None

    async def _fetch(self) -> list[Member]:
        if self.store is not None:
            return await self.store.members()
        # Seeds: ask a live member we know, else each seed in turn.
        for mid in list(self.view.live):
            with contextlib.suppress(RioError, OSError, msgspec.DecodeError):
                raw = await self.router.request(mid, MembersReq(), 5.0)
                return members_decoder.decode(raw)
        errors = []
        for seed in self.seeds:
            host, port = split_address(seed, "seed")
            try:
                conn = await dial(host, port, secret=self.secret, ssl=self.ssl)
            except RioError as e:
                errors.append(str(e))
                continue
            try:
                return members_decoder.decode(await conn.request(MembersReq(), timeout=5.0))
            except (RioError, msgspec.DecodeError) as e:
                errors.append(f"{seed}: {e}")
            finally:
                await conn.close()
        raise NoNodesAvailable(f"no seed node answered: {'; '.join(errors) or 'none given'}")

    async def start(self) -> None:
        """Read the membership and get ready to call."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        if self.store is not None:
            await self._store_file(self.store)
        self.streams.start()
        if self.store is not None:
            await self.store.open()
        try:
            await self.view.start()
        except BaseException:
            if self.store is not None:
                await self.store.close()
            raise
        self._started = True

    async def _store_file(self, store: ClusterStore) -> None:
        """Wait a little for an SQLite cluster file that does not exist yet, then refuse.

        Its nodes may be creating it right now (a client started with them); a path
        that stays missing is a mistake, and opening it would make it an empty cluster.
        """
        give_up = time.monotonic() + STORE_FILE_WAIT
        while True:
            try:
                require_existing(store, self._url)
                return
            except ConfigError:
                if time.monotonic() >= give_up:
                    raise
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Close connections and the store."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        await self.subscriptions.close()
        self.streams.close()
        await self.view.stop()
        await self.router.close()
        if self.store is not None:
            await self.store.close()

    @property
    def running(self) -> bool:
        """True between start and stop."""
        return self._started and not self._stopping

    def call(
        self,
        key: tuple[str, str],
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """Send a call to the member hosting ``key``."""
        if self._stopping or not self._started:  # not running (inlined); no loop yet
            state = "closed" if self._stopping else "not started"
            raise SystemStopping(
                f"{self.name}: the cluster client is {state}: call to "
                f"{key[0]}/{key[1]}.{handler.name}() refused"
            )
        if threading.get_ident() != self._thread_id:
            return self.call_from_thread(self._loop, key, handler, args, kwargs, timeout)
        args, kwargs = handler.check(args, kwargs)
        now = self._loop.time()
        deadline = now + (timeout or self.default_timeout)  # fresh_deadline(), inlined
        outer = CALLER_DEADLINE.get()
        if outer is not None and outer < deadline:
            deadline = outer
        return self.router.call(key, handler, args, kwargs, (key,), deadline, now)

    def publish(self, event: Any, *, topic: str) -> None:
        """Publish ``event`` on the named topic, through one live member (never blocks).

        Every subscriber in the cluster gets it, this client's own included (it comes
        back through the member, like the others).
        """
        if threading.get_ident() != self._thread_id:
            self._loop.call_soon_threadsafe(partial(self.publish, event, topic=topic))
            return
        self.subscriptions.publish_topic(_topic(topic), event)

    async def deactivate(self, actor: Any, object_id: Any = None) -> bool:
        """Deactivate one object wherever it is active."""
        return await deactivate_anywhere(self.router, key_of(actor, object_id))

    def stats(self) -> ClientStats:
        """Live members and the size of the placement cache."""
        streams, subscribers = self.streams.stats()
        return ClientStats(sorted(self.view.live), len(self.router.cache), streams, subscribers)

    def members(self) -> list[Member]:
        """Every member row as last read."""
        return list(self.view.members.values())

    async def __aenter__(self) -> ClusterClient:
        await self.start()
        self._token = system_token(self)
        set_default_system(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.stop()
        finally:
            with contextlib.suppress(ValueError):
                reset_system(self._token)
            set_default_system(None)


def connect(
    url: str | None = None,
    *,
    seeds: Sequence[str] = (),
    secret: str | None = None,
    timeout: float = 30.0,
    placement: dict[str, str] | None = None,
    ssl: SSLContext | str | None = None,
    max_queued: int = MAX_QUEUED,
) -> ClusterClient:
    """A client of the cluster whose membership lives at ``url`` (or reachable via ``seeds``).

    Use it as ``async with rio.connect(url, secret=...) as cluster:``; inside, refs
    (``Counter.ref("a")``) call the cluster.

    Args:
        url: the membership store (``redis://``, ``postgresql://``, ``mysql://``,
            ``sqlite:///``), as the nodes were given.
        seeds: node addresses (``host:port``) to ask for the membership instead.
        secret: the cluster secret (default ``RIO_CLUSTER_SECRET``).
        timeout: default seconds per call.
        placement: per-type placement strategy for objects this client calls first
            (default ``consistent-hash``: spreads objects over the nodes).
        ssl: for nodes that speak TLS: an ``ssl.SSLContext``, or the path of a PEM
            file of the certificates to trust.
        max_queued: calls that may wait for a connection, a placement or a node at
            once (default 100,000); beyond them a call is refused at once with
            :class:`rio.Overloaded`.

    Raises:
        ConfigError: no URL and no seeds, no secret, or a malformed address.
    """
    if isinstance(ssl, str):
        ssl = client_context(ssl)
    check_max_queued(max_queued)
    return ClusterClient(
        url,
        seeds=seeds,
        secret=secret,
        default_timeout=timeout,
        placement=placement,
        ssl=ssl,
        max_queued=max_queued,
    )
