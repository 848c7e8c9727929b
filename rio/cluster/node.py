"""A cluster node: its listener, its membership duties, and the placement of what it hosts.

A node is one ``rio run --cluster URL`` (or ``App(cluster=...)``). Its main process
listens for calls from other members and clients (:class:`Gateway`), registers and
heartbeats (:class:`~rio.cluster.membership.MembershipAgent`), and routes its own
calls (:class:`~rio.cluster.routing.Router`). The processes that host actors (the node
itself with ``workers=0``, each worker otherwise) claim an object in the directory
before activating it and release it after (:class:`Placement`), so a node hosts an
object only while the directory says it does.

A call from another member reaches the hosting worker through at most one local
shared-memory hop (the gateway hands it to the worker that owns the object on this
box); calls that actors make go from their own process straight to the member
hosting the target.

Pub/sub (:mod:`rio.cluster.streams`): the gateway keeps a relay per stream and
subscribing process elsewhere (:class:`~rio.cluster.streams.StreamRelays`), fed by
the node's main process's streams; every process that subscribes registers its
streams with the other members (:class:`~rio.cluster.streams.ClusterSubscriptions`,
kept by its :class:`ClusterLink`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from rio.cluster._frames import Call
from rio.cluster.membership import MembershipAgent, MembershipView, new_incarnation
from rio.cluster.routing import (
    CallReq,
    DeactivateReq,
    MembersReq,
    ProbeReq,
    Redirect,
    Router,
    StatsReq,
    SubscribeReq,
    UnsubscribeReq,
    request_decoder,
)
from rio.cluster.settings import ClusterSettings, advertised
from rio.cluster.store import ClusterStore, Key, Member, cluster_store_from_url
from rio.cluster.streams import ClusterSubscriptions, StreamRelays
from rio.cluster.transport import Connection, Server, serve
from rio.core.errors import (
    BadArguments,
    RioError,
    StorageError,
)
from rio.core.registry import Handler, lookup_type
from rio.core.reminders import Reminders
from rio.core.runtime import MAX_QUEUED
from rio.core.streams import Streams
from rio.core.system import System, key_of
from rio.core.turns import ACTIVE
from rio.local.protocol import decode_args

if TYPE_CHECKING:
    from rio.app import App
    from rio.core.runtime import Runtime
    from rio.local.pool import PoolSystem

__all__ = [
    "ClusterLink",
    "ClusterNode",
    "Gateway",
    "NodeCore",
    "NodeStats",
    "Placement",
    "PoolNode",
]

_NO_KWARGS: dict[str, Any] = {}  # shared by calls with no keyword arguments; never written
#: Most objects a node claims in one store transaction (the rest go in the next).
CLAIM_BATCH = 1000


class Placement:
    """A hosting process's side of the directory (the runtime's placement hook).

    Claims happen before activation; releases are batched and written as soon as the
    event loop is free. A claim for an object whose release is being written waits
    for that write, so the directory never loses an object that is active here.
    """

    def __init__(self, store: ClusterStore, member_id: str, name: str) -> None:
        self.store = store
        self.member_id = member_id
        self.name = name
        #: No new activations here (the node drains); claims answer Redirect("").
        self.draining = False
        self.owned: set[Key] = set()
        self._pending: set[Key] = set()
        self._writing: dict[Key, asyncio.Future[None]] = {}
        self._flush_task: asyncio.Task[None] | None = None
        #: Claims waiting for the next batch, and the task writing batches.
        self._claims: list[tuple[Key, asyncio.Future[str]]] = []
        self._claim_task: asyncio.Task[None] | None = None

    async def claim(self, key: Key) -> None:
        """Claim ``key`` for this node (see :class:`rio.core.lifecycle.PlacementHook`).

        The claims made while a batch is being written go together in the next one
        (:meth:`ClusterStore.claim_many`): a burst of activations costs a few store
        transactions, not one each.
        """
        if self.draining:
            raise Redirect(f"{key[0]}/{key[1]}: {self.name} is draining", "")
        if key in self._pending:  # released but not written: still ours
            self._pending.discard(key)
            self.owned.add(key)
            return
        writing = self._writing.get(key)
        if writing is not None:
            await asyncio.shield(writing)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()
        self._claims.append((key, answer))
        if self._claim_task is None:
            self._claim_task = loop.create_task(self._claim_batches())
        owner = await answer
        if owner != self.member_id:
            raise Redirect(
                f"{key[0]}/{key[1]} is placed on {owner or 'no live member'}, not {self.name}",
                owner,
            )
        self.owned.add(key)

    async def _claim_batches(self) -> None:
        try:
            while self._claims:
                batch = self._claims[:CLAIM_BATCH]
                del self._claims[:CLAIM_BATCH]
                try:
                    owners = await self.store.claim_many([k for k, _ in batch], self.member_id)
                except BaseException as e:
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(e)
                    if not isinstance(e, Exception):
                        raise
                    continue
                # A claimer that gave up (cancelled) meanwhile leaves its placement as
                # a lone claim would: a later call activates the object here, or
                # another member takes it over once this one is gone.
                for (_, answer), owner in zip(batch, owners, strict=True):
                    if not answer.done():
                        answer.set_result(owner)
        finally:
            self._claim_task = None

    def released(self, key: Key) -> None:
        """Queue the release of ``key`` (written in the background)."""
        if key not in self.owned:
            return
        self.owned.discard(key)
        self._pending.add(key)
        if self._flush_task is None:
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, set()
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                for k in batch:
                    self._writing[k] = done
                try:
                    await self.store.release(batch, self.member_id)
                except (StorageError, OSError) as e:
                    logger.warning(
                        "{}: releasing {} placement(s) failed ({}); they go when this "
                        "member leaves or is declared dead",
                        self.name,
                        len(batch),
                        e,
                    )
                finally:
                    for k in batch:
                        if self._writing.get(k) is done:
                            del self._writing[k]
                    done.set_result(None)
        finally:
            self._flush_task = None

    async def flush(self) -> None:
        """Wait until every queued release is written."""
        while self._flush_task is not None:
            await asyncio.shield(self._flush_task)


class NodeStats(msgspec.Struct, frozen=True):
    """What a node hosts (``rio status`` shows it per node)."""

    member_id: str
    address: str
    status: str
    activations: int
    by_type: dict[str, int]
    #: Relays this node keeps: one per stream and subscribing process elsewhere.
    relays: int = 0


def strategy_table(app: App, default: str) -> Callable[[str], str]:
    """The placement strategy of each type: the app's per-type option, else ``default``."""
    table = dict(app.placement)
    return lambda type_name: table.get(type_name, default)


class ClusterLink:
    """What every process of a node keeps: the store, the membership view, a router.

    Args:
        settings: the cluster settings (resolved).
        member_id: the node's member id.
        strategy_of: placement strategy per type.
        local: runs a call on this node (the router's shortcut).
        name: for messages.
        max_queued: calls the router may have waiting at once (see :class:`Router`).
    """

    def __init__(
        self,
        settings: ClusterSettings,
        member_id: str,
        strategy_of: Callable[[str], str],
        local: Any,
        name: str,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.settings = settings
        self.member_id = member_id
        self.name = name
        self.store = cluster_store_from_url(settings.url)
        self.view = MembershipView(
            self.store.members, settings.refresh, name, 5 * settings.heartbeat_period
        )
        self.router = Router(
            self.view,
            settings.secret,
            local_member=member_id,
            local=local,
            strategy_of=strategy_of,
            redirects=settings.redirects,
            name=name,
            ssl=settings.client_ssl(),
            max_queued=max_queued,
        )
        self.placement = Placement(self.store, member_id, name)
        #: This process's subscriptions to streams published on other nodes.
        self.subscriptions: ClusterSubscriptions | None = None

    def attach_streams(self, streams: Streams) -> ClusterSubscriptions:
        """Register ``streams``' subscriptions with the other members from now on."""
        self.subscriptions = ClusterSubscriptions(
            streams, self.router, self.view, self.member_id, self.name
        )
        return self.subscriptions

    async def start(self) -> None:
        """Open the store and start the view."""
        await self.store.open()
        await self.view.start()

    async def stop(self) -> None:
        """Write pending releases, stop the view, close connections and the store."""
        await self.placement.flush()
        if self.subscriptions is not None:
            await self.subscriptions.close()
        await self.view.stop()
        await self.router.close()
        await self.store.close()


#: A call that came over the network: a ``Call`` frame, or a ``CallReq`` in a request
#: (the router's slow road). Both name the same fields.
NetCall = Call | CallReq
#: ``deliver(call)`` runs a call that came over the network; returns its result (or a
#: future or coroutine of it).
Deliver = Callable[[NetCall], Any]
#: ``on_call(conn, call)``: the same, with the connection it came on.
OnCall = Callable[[Connection, NetCall], Any]


class Gateway:
    """Answers what other members and clients send a node's listener."""

    def __init__(
        self,
        member_id: str,
        view: MembershipView,
        deliver: OnCall,
        stats: Callable[[], tuple[int, dict[str, int]]],
        deactivate: Callable[[Key], Awaitable[bool]],
        name: str,
        relays: StreamRelays,
    ) -> None:
        self.member_id = member_id
        self.view = view
        self._deliver = deliver
        self._stats = stats
        self._deactivate = deactivate
        self.name = name
        self.relays = relays

    def handle(self, conn: Connection, body: msgspec.Raw) -> Any:
        """Serve one request (the transport's handler)."""
        try:
            req = request_decoder.decode(body)
        except msgspec.DecodeError as e:
            raise BadArguments(f"{self.name}: unreadable request from {conn.peer}: {e}") from None
        if isinstance(req, CallReq):
            return self._deliver(conn, req)
        if isinstance(req, ProbeReq):
            return self.member_id
        if isinstance(req, MembersReq):
            return list(self.view.members.values())
        if isinstance(req, SubscribeReq):
            return self.relays.subscribe(conn, req)
        if isinstance(req, UnsubscribeReq):
            return self.relays.unsubscribe(conn, req)
        if isinstance(req, StatsReq):
            n, by_type = self._stats()
            return {"activations": n, "by_type": by_type, "relays": len(self.relays)}
        if isinstance(req, DeactivateReq):
            return self._deactivate((req.type_name, req.object_id))
        raise BadArguments(f"{self.name}: unknown request {type(req).__name__}")


def resolve(req: NetCall, handlers: dict[tuple[str, str], Handler]) -> tuple[Handler, Any, Any]:
    """The handler and decoded ``(args, kwargs)`` of a call that came over the network.

    Raises:
        UnknownActorType, UnknownMethod, BadArguments: naming what was wrong.
    """
    handler = handlers.get((req.type_name, req.method))
    if handler is None:
        handler = lookup_type(req.type_name).handler(req.method)
        handlers[(req.type_name, req.method)] = handler
    try:
        values = handler.args_decoder.decode(req.args)
    except msgspec.DecodeError:
        values = decode_args(handler, req.args)  # raises BadArguments naming the argument
    if len(values) == handler.n_positional:
        return handler, values, _NO_KWARGS
    args, kwargs = handler.split_wire_args(values)
    return handler, args, kwargs


class NodeCore:
    """What every node runs in its main process: listener, membership agent, router.

    Args:
        app: the app this node runs.
        settings: its cluster settings (resolved).
        deliver: runs a call that came over the network.
        stats: ``(activations, per type)`` of this node.
        deactivate_here: deactivates an object if this node hosts it.
        local: runs a call on this node (the router's shortcut).
        streams: the pub/sub streams of this process (relays feed on them; its
            subscribers register with the other members).
    """

    def __init__(
        self,
        app: App,
        settings: ClusterSettings,
        *,
        deliver: Deliver,
        stats: Callable[[], tuple[int, dict[str, int]]],
        deactivate_here: Callable[[Key], Awaitable[bool]],
        local: Any,
        streams: Streams,
    ) -> None:
        self.app = app
        self.settings = settings
        self.streams = streams
        self.relays = StreamRelays(streams, app.name)
        self._deliver = deliver
        self._stats = stats
        self._deactivate_here = deactivate_here
        self._local = local
        self.server: Server | None = None
        self.member: Member | None = None
        self.member_id = ""
        #: This node's name (``settings.node``, else its address), once it listens.
        self.node_name = ""
        self._link: ClusterLink | None = None
        self._agent: MembershipAgent | None = None
        #: Set once this node drained: calls that still come are redirected.
        self.left = False
        #: Set once this node is active: until then its processes may not have a
        #: placement hook yet, so calls that come (meant for a previous incarnation
        #: at this address) are redirected rather than activated unclaimed.
        self._serving = False
        self._joined_at = 0.0  # monotonic time its row said joining

    @property
    def link(self) -> ClusterLink:
        """The store, view and router (after :meth:`join`)."""
        assert self._link is not None, "the node has not joined"
        return self._link

    @property
    def status(self) -> str:
        """The membership status of this node."""
        return self._agent.status if self._agent is not None else "joining"

    async def join(self) -> None:
        """Listen, register as ``joining``, start the view and the agent."""
        s = self.settings
        self.server = await serve(
            self._handle,
            on_call=self._on_call,
            secret=s.secret,
            host=s.host,
            port=s.port,
            ssl=s.server_ssl(),
            on_oneway=self.relays.on_oneway,
        )
        address = s.advertise or advertised(s.host, self.server.port)
        node = self.node_name = s.node or address
        incarnation = new_incarnation()
        self.member_id = f"{node}#{incarnation}"
        if self.app.actors is not None:
            hosted = sorted(a.name for a in self.app.actors)
        else:
            from rio.core.registry import all_types

            hosted = sorted(all_types())
        now = time.time()
        self.member = Member(
            member_id=self.member_id,
            node=node,
            address=address,
            incarnation=incarnation,
            types=hosted,
            started=now,
            heartbeat=now,
        )
        strategy = strategy_table(self.app, s.placement)
        link = self._link = ClusterLink(
            s, self.member_id, strategy, self._local, node, self.app.max_queued
        )
        self.gateway = Gateway(
            self.member_id,
            link.view,
            self._on_call,
            self._stats,
            self._deactivate_here,
            node,
            self.relays,
        )
        link.attach_streams(self.streams)
        try:
            await link.start()
            self._agent = MembershipAgent(
                link.store, s, self.member, link.view, self._probe, self._stats
            )
            await self._agent.join()
            self._joined_at = time.monotonic()
        except BaseException:
            await self.abort()
            raise

    def _handle(self, conn: Connection, body: msgspec.Raw) -> Any:
        return self.gateway.handle(conn, body)

    def _on_call(self, conn: Connection, req: NetCall) -> Any:
        """Serve one call that came over the network (``Call`` frame or ``CallReq``)."""
        if not req.budget > 0:  # NaN would break the deadline heap of the runtime
            raise BadArguments(f"{self.node_name}: call budget must be > 0, got {req.budget!r}")
        if self.left or not self._serving:
            state = "has left the cluster" if self.left else "is not serving yet"
            raise Redirect(f"{self.member_id} {state}", "")
        return self._deliver(req)

    async def _probe(self, m: Member, limit: float) -> bool:
        return await probe(self.link.router, m, limit)

    async def activate(self) -> None:
        """Take new activations."""
        assert self._agent is not None
        # Subscribers register their streams with a joining node as they see it: give
        # them the grace before anything is activated or published here.
        wait = self._joined_at + self.settings.grace - time.monotonic()
        if wait > 0:
            logger.info(
                "{}: node {} joined; serving in {:.1f}s (join_grace: time for subscribers "
                "to register here)",
                self.app.name,
                self.member_id,
                wait,
            )
            await asyncio.sleep(wait)
        # Serving first: once the table says active, a call placed here must be
        # served, not turned away as "not serving yet".
        self._serving = True
        try:
            await self._agent.activate()
        except BaseException:
            self._serving = False
            raise
        assert self.member is not None
        logger.info(
            "{}: node {} serving at {} ({})",
            self.app.name,
            self.member.node,
            self.member.address,
            self.member_id,
        )

    async def drain(self) -> None:
        """Take no new activations (what this node hosts still answers)."""
        self.link.placement.draining = True
        assert self._agent is not None
        try:
            await self._agent.drain()
        except (RioError, OSError) as e:
            logger.warning("{}: cannot mark this node draining: {}", self.member_id, e)

    async def leave(self) -> None:
        """After the drain: write the last releases and leave the membership."""
        await self.link.placement.flush()
        self.left = True
        assert self._agent is not None
        await self._agent.leave()
        await self.relays.close()  # what this node published went out: goodbye

    async def close(self) -> None:
        """Close the listener, the connections and the store."""
        await self.relays.close()
        if self.server is not None:
            await self.server.close()
        if self._link is not None:
            await self._link.stop()

    async def abort(self) -> None:
        """Undo a failed start."""
        await self.relays.close()
        if self._agent is not None:
            # Its row says joining: marked left, so no one waits for it to serve.
            await self._agent.leave()
        if self.server is not None:
            await self.server.close()
        if self._link is not None:
            await self._link.stop()

    async def deactivate(self, key: Key) -> bool:
        """Deactivate ``key`` wherever in the cluster it is active."""
        return await deactivate_anywhere(self.link.router, key)


class ClusterNode(System):
    """A node whose actors run in this process (``workers=0``), in a cluster.

    Built by :class:`rio.App` when given ``cluster=`` and ``workers=0``.
    """

    def __init__(self, app: App, settings: ClusterSettings) -> None:
        self.app = app
        self.name = app.name
        self.default_timeout = app.default_timeout
        # Reminders are fired from this node once it serves (not from runtime.start).
        self.runtime: Runtime = app.make_runtime(poll_reminders=False)
        self.runtime.system = self
        #: Pub/sub: this node's subscribers, and relays for subscribers elsewhere.
        self.streams = self.runtime.streams
        self._handlers: dict[tuple[str, str], Handler] = {}
        self._started = False
        self._stopping = False
        #: Fires the durable reminders of the state storage (every node polls; each
        #: firing goes to one of them).
        self.reminders: Reminders | None = None
        self.core = NodeCore(
            app,
            settings.resolved(),
            deliver=self._deliver,
            stats=self._stats,
            deactivate_here=self.runtime.deactivate_key,
            local=self._local,
            streams=self.streams,
        )

    async def start(self) -> None:
        """Listen, join the membership, and serve."""
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        await self.runtime.start()
        try:
            await self.core.join()
            self.runtime.placement = self.core.link.placement
            await self.core.activate()
        except BaseException:
            await self.core.abort()
            await self.runtime.stop()
            raise
        self._started = True
        self.reminders = Reminders(
            self.runtime.storage,
            self,
            poll=self.app.reminder_poll,
            timeout=self.default_timeout,
            name=self.core.member_id,
        )
        self.runtime.reminder_poller = self.reminders  # a local registration wakes it
        self.reminders.start()

    def stop_problems(self) -> list[str]:
        """See :meth:`rio.System.stop_problems`."""
        return self.runtime.stop_problems()

    async def stop(self) -> None:
        """Drain: take no new activations, finish turns, save, release, leave."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        if self.reminders is not None:
            # No new firings; those in flight land during the runtime's drain, which
            # stops this poller (it is the runtime's reminder_poller).
            self.reminders.halt()
        await self.core.drain()
        await self.runtime.drain()
        await self.core.leave()
        await self.core.close()
        await self.runtime.close()

    @property
    def running(self) -> bool:
        """True between start and stop."""
        return self._started and not self._stopping

    def call(
        self,
        key: Key,
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """Run here when the object is active here, else route it through the cluster."""
        rt = self.runtime
        if threading.get_ident() != self._thread_id:
            return self.call_from_thread(self._loop, key, handler, args, kwargs, timeout)
        act = rt._acts.get(key)
        # While draining, an active object may deactivate before the call runs, and its
        # next activation go elsewhere: only the router follows it there.
        if act is not None and act._rio_status == ACTIVE and not self.core.link.placement.draining:
            return rt.call(key, handler, args, kwargs, timeout)
        args, kwargs = handler.check(args, kwargs)
        chain, deadline, now = rt.call_context(key, handler, timeout)
        return self.core.link.router.call(key, handler, args, kwargs, chain, deadline, now)

    def _local(
        self,
        key: Key,
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chain: tuple[Key, ...],
        deadline: float,
        now: float,
    ) -> asyncio.Future[Any]:
        return self.runtime.deliver(key, handler, args, kwargs, chain, deadline, now)

    def _deliver(self, req: NetCall) -> Any:
        handler, args, kwargs = resolve(req, self._handlers)
        key = (req.type_name, req.object_id)
        chain = req.chain or (key,)
        if self.runtime._closed:
            raise Redirect(f"{self.name} has stopped", "")
        now = self._loop.time()
        # plain: a turn that finishes at once answers its value, with no future for it
        return self.runtime.deliver(key, handler, args, kwargs, chain, now + req.budget, now, True)

    def _stats(self) -> tuple[int, dict[str, int]]:
        st = self.runtime.stats()
        return st.activations, dict(st.by_type)

    async def deactivate(self, actor: Any, object_id: Any = None) -> bool:
        """Deactivate one object wherever in the cluster it is active."""
        return await self.core.deactivate(key_of(actor, object_id))

    def stats(self) -> NodeStats:
        """The activations of this node."""
        n, by_type = self._stats()
        core = self.core
        return NodeStats(
            core.member_id,
            core.member.address if core.member else "",
            core.status,
            n,
            by_type,
            len(core.relays),
        )


class PoolNode(NodeCore):
    """The cluster side of a worker pool's driver: the gateway forwards to the owning worker."""

    def __init__(self, pool: PoolSystem, settings: ClusterSettings) -> None:
        self.pool = pool
        self._raw_handlers: dict[tuple[str, str], Handler] = {}
        self._counts: tuple[int, dict[str, int]] = (0, {})
        self._poller: asyncio.Task[None] | None = None
        super().__init__(
            pool.app,
            settings,
            deliver=self._forward,
            stats=lambda: self._counts,
            deactivate_here=pool.deactivate_here,
            local=pool.local_route,
            streams=pool.streams,
        )

    def _forward(self, req: NetCall) -> asyncio.Future[Any]:
        key = (req.type_name, req.object_id)
        handler = self._raw_handlers.get((req.type_name, req.method))
        if handler is None:
            if len(self._raw_handlers) >= 4096:  # names come off the wire: bounded
                self._raw_handlers.clear()
            handler = Handler(owner=req.type_name, name=req.method, fn=_raw_answer, reentrant=True)
            handler.prepare()
            self._raw_handlers[(req.type_name, req.method)] = handler
        loop = self.pool._loop
        now = loop.time()
        from rio.local.config import owner_of

        dst = owner_of(key, self.pool.n)
        return self.pool.remote.send(
            dst, key, handler, req.args, req.chain or (key,), now + req.budget, now
        )

    async def activate(self) -> None:
        """Take new activations, and keep activation counts fresh for heartbeats."""
        await super().activate()
        self._poller = asyncio.get_running_loop().create_task(self._poll_counts())

    async def _poll_counts(self) -> None:
        from rio.local.worker import STATS

        handler = Handler(owner="", name=STATS, fn=_counts_answer, reentrant=True)
        handler.prepare()
        pool = self.pool
        while True:
            total = 0
            by_type: dict[str, int] = {}
            now = pool._loop.time()
            futs = [
                pool.remote.send(w, ("", ""), handler, (), [], now + 5.0, now)
                for w in range(1, pool.n + 1)
                if not pool.remote.is_down(w)
            ]
            for r in await asyncio.gather(*futs, return_exceptions=True):
                if isinstance(r, tuple):
                    total += r[0]
                    for t, c in r[1].items():
                        by_type[t] = by_type.get(t, 0) + c
            self._counts = (total, by_type)
            await asyncio.sleep(self.settings.heartbeat_period)

    async def leave(self) -> None:
        """Stop polling, then leave."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        await super().leave()


async def _raw_answer(self: Any) -> msgspec.Raw:  # pragma: no cover - never called
    """Stands for any handler whose answer is forwarded as it came."""
    raise NotImplementedError


async def _counts_answer(self: Any) -> tuple[int, dict[str, int]]:  # pragma: no cover
    """Stands for a worker's activation counts."""
    raise NotImplementedError


async def probe(router: Router, m: Member, limit: float) -> bool:
    """Whether member ``m`` answers as itself within ``limit`` seconds."""
    try:
        async with asyncio.timeout(limit):
            raw = await router.request(m.member_id, ProbeReq(m.member_id), limit)
    except (RioError, TimeoutError, OSError):
        return False
    try:
        return bool(msgspec.msgpack.decode(raw) == m.member_id)
    except msgspec.DecodeError:
        return False


async def deactivate_anywhere(router: Router, key: Key) -> bool:
    """Ask every live member to deactivate ``key``; True when one did."""
    results = await asyncio.gather(
        *(
            router.request(mid, DeactivateReq(key[0], key[1]), 10.0)
            for mid in list(router.view.live)
        ),
        return_exceptions=True,
    )
    return any(isinstance(r, msgspec.Raw) and msgspec.msgpack.decode(r) is True for r in results)
