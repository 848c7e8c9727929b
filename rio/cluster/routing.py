"""How a call finds the node hosting its object, in every process of a cluster.

Each process that calls (a node, one of its workers, an external client) keeps a
:class:`Router`: a placement cache ``(type, id) → member``, the membership view, and
one connection per member it talks to. A call to an object it has not seen picks a
member by the type's strategy and sends the call there; the member claims the object
in the directory before activating it, or answers :class:`~rio.core.errors.Redirect`
naming the member that holds it. The router corrects its cache and sends again (at
most ``redirects`` times). A call whose member becomes unreachable waits (within its
deadline) until the membership declares that member dead, then goes to the object's
new home; such a call may have run once already on the dead node, so a call in flight
when its node dies is delivered at least once, every other call at most once.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from ssl import SSLContext
from typing import Any

import msgspec

from rio.cluster.membership import MembershipView
from rio.cluster.settings import split_address
from rio.cluster.store import Key, Member
from rio.cluster.transport import Connection, OnewayHandler, TransportOptions, connect
from rio.core.errors import (
    CallTimeout,
    NodeUnreachable,
    NoNodesAvailable,
    Overloaded,
    RemoteError,
    RioError,
    SystemStopping,
)
from rio.core.registry import Handler
from rio.core.runtime import MAX_QUEUED
from rio.local.protocol import decode_result, encode, positional_args
from rio.local.remote import unencodable

__all__ = [
    "CallReq",
    "DeactivateReq",
    "MembersReq",
    "PlacementCache",
    "ProbeReq",
    "Redirect",
    "Request",
    "Router",
    "StatsReq",
    "SubscribeReq",
    "UnsubscribeReq",
    "choose",
]


class Redirect(RioError):
    """The object is placed on another member (or this one takes no new activations).

    Raised by a node that was sent a call for an object it does not host; the cluster
    router catches it, corrects its placement cache and sends the call again, so user
    code sees it only when the redirects run out. ``owner`` is the member id now holding
    the object, or ``""`` when it should be placed afresh (the node is draining).
    """

    def __init__(self, message: str, owner: str = "") -> None:
        super().__init__(message, owner)
        self.owner = owner

    def __str__(self) -> str:
        return str(self.args[0])


class CallReq(msgspec.Struct, array_like=True, tag=1):
    """Node-bound: run ``type_name/object_id.method(*args)``; the reply is the result."""

    type_name: str
    object_id: str
    method: str
    budget: float
    chain: tuple[tuple[str, str], ...]
    args: msgspec.Raw


class ProbeReq(msgspec.Struct, array_like=True, tag=2):
    """Are you ``member_id``? The reply is the answering node's member id."""

    member_id: str


class MembersReq(msgspec.Struct, array_like=True, tag=3):
    """The membership table as the node sees it (for clients given seed addresses)."""


class StatsReq(msgspec.Struct, array_like=True, tag=4):
    """The node's activations: ``{"activations": n, "by_type": {...}}``."""


class DeactivateReq(msgspec.Struct, array_like=True, tag=5):
    """Deactivate one object if this node hosts it; the reply is whether it did."""

    type_name: str
    object_id: str


class SubscribeReq(msgspec.Struct, array_like=True, tag=6):
    """Send the events of a stream published on this node back on this connection.

    They are tagged ``sub`` (see :mod:`rio.cluster.streams`); the reply (True) comes
    once the node's processes registered the stream.
    """

    type_name: str
    object_id: str
    sub: int


class UnsubscribeReq(msgspec.Struct, array_like=True, tag=7):
    """Stop what :class:`SubscribeReq` ``sub`` asked; the reply is whether it was there."""

    type_name: str
    object_id: str
    sub: int


Request = CallReq | ProbeReq | MembersReq | StatsReq | DeactivateReq | SubscribeReq | UnsubscribeReq
request_decoder: msgspec.msgpack.Decoder[Request] = msgspec.msgpack.Decoder(Request)
members_decoder = msgspec.msgpack.Decoder(list[Member])


class PlacementCache:
    """Where objects were last seen: ``(type, id) → member id``, least recently used out."""

    def __init__(self, size: int = 100_000) -> None:
        self._map: OrderedDict[Key, str] = OrderedDict()
        self._size = size

    def get(self, key: Key) -> str | None:
        """The cached member of ``key``."""
        return self._map.get(key)

    def put(self, key: Key, member_id: str) -> None:
        """Remember that ``key`` lives on ``member_id``."""
        m = self._map
        m[key] = member_id
        if len(m) > self._size:
            m.popitem(last=False)

    def drop(self, key: Key, member_id: str | None = None) -> None:
        """Forget ``key`` (only if cached on ``member_id``, when given)."""
        if member_id is None or self._map.get(key) == member_id:
            self._map.pop(key, None)

    def forget_member(self, member_id: str) -> None:
        """Forget every object cached on ``member_id``."""
        for k in [k for k, v in self._map.items() if v == member_id]:
            del self._map[k]

    def __len__(self) -> int:
        return len(self._map)


def _score(key: Key, member_id: str) -> bytes:
    return hashlib.blake2b(f"{key[0]}\x00{key[1]}\x00{member_id}".encode(), digest_size=8).digest()


def choose(
    strategy: str,
    key: Key,
    candidates: list[Member],
    local: str | None,
    rng: random.Random,
) -> Member:
    """Pick the member to host ``key`` among ``candidates`` (non-empty).

    ``local`` is the calling node's member id (None for a client): ``prefer-local``
    picks it when it is a candidate, else falls back to consistent hashing.
    """
    if strategy == "prefer-local" and local is not None:
        for m in candidates:
            if m.member_id == local:
                return m
    if strategy == "random":
        return rng.choice(candidates)
    if strategy == "least-loaded":
        if len(candidates) == 1:
            return candidates[0]
        a, b = rng.sample(candidates, 2)
        return a if a.activations <= b.activations else b
    return max(candidates, key=lambda m: _score(key, m.member_id))


#: ``local(key, handler, args, kwargs, chain, deadline, now)`` runs a call on this node.
LocalCall = Callable[
    [Key, Handler, tuple[Any, ...], dict[str, Any], tuple[Key, ...], float, float],
    "asyncio.Future[Any]",
]


class Router:
    """Sends calls to the members hosting their objects; see the module docstring.

    Args:
        view: the membership view (started by the owner).
        secret: the cluster secret.
        local_member: this node's member id (None in a client).
        local: runs a call on this node (None in a client).
        strategy_of: the placement strategy of a type.
        redirects: redirects a call follows before it fails.
        options: transport settings of the connections it opens.
        name: for messages.
    """

    def __init__(
        self,
        view: MembershipView,
        secret: str,
        *,
        local_member: str | None,
        local: LocalCall | None,
        strategy_of: Callable[[str], str],
        redirects: int = 3,
        options: TransportOptions | None = None,
        name: str = "rio",
        ssl: SSLContext | None = None,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.view = view
        self.max_queued = max_queued
        #: Calls made outside a turn still waiting here for a placement or a
        #: connection (see :meth:`_routed`).
        self.routing = 0
        self.ssl = ssl
        self.secret = secret
        self.me = local_member
        self._local = local
        self._strategy_of = strategy_of
        self.redirects = redirects
        self.options = options or TransportOptions()
        self.name = name
        self.cache = PlacementCache()
        self._cached = self.cache._map.get  # PlacementCache.get with no Python frame
        self._conns: dict[str, Connection] = {}
        self._connecting: dict[str, asyncio.Future[Connection]] = {}
        self._rng = random.Random()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Members that said they take no new activations, with the view's generation
        #: then: each is passed over until two more reads of the table (the first may
        #: have been made before it said so) show whether it still takes them.
        self._refusing: dict[str, int] = {}
        #: Of those, the ones that refused this process in the handshake (a wrong
        #: secret, TLS): the refusal, for calls that have no other host to go to.
        self._refused_auth: dict[str, BaseException] = {}
        #: Set by :meth:`close`: calls still routing fail instead of waiting or redialing.
        self._closed = False
        #: The loop of the first call (``asyncio.get_running_loop`` costs a system call
        #: per use on Python 3.11, for its fork check).
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Takes the one-way messages members send on this router's connections
        #: (events for this process's subscribers; see rio.cluster.streams).
        self.on_oneway: OnewayHandler | None = None
        view.on_gone(self._member_gone)

    # -- calls ------------------------------------------------------------------------

    def call(
        self,
        key: Key,
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chain: tuple[Key, ...],
        deadline: float,
        now: float,
    ) -> asyncio.Future[Any]:
        """Send a checked call; returns the future of its answer.

        A call to an object cached on a member with an open, writable connection goes
        out at once, with no task: its answer is decoded straight into the returned
        future when the reply is read (see :class:`_Routed`). Everything else (first
        calls, redirects, failover, a peer that reads slower than we send) runs in
        :meth:`_route`.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        member = self._cached(key)
        if member is None or member == self.me:
            body = None if self._local is not None else self.encode_args(handler, args, kwargs)
            # Placed here already: it goes to this node's runtime at once, uncounted.
            counted = member is None and len(chain) <= 1
            return self._routed(key, handler, args, kwargs, chain, deadline, body, counted)
        conn = self._conns.get(member)
        if conn is None or not conn.writable or member not in self.view.live or now >= deadline:
            body = self.encode_args(handler, args, kwargs)
            counted = len(chain) <= 1
            return self._routed(key, handler, args, kwargs, chain, deadline, body, counted)
        # Encoded now, once: a redirect or failover resends these bytes, not the
        # caller's objects as they are by then.
        if kwargs or not handler.wire_ok or len(args) != len(handler.param_names):
            body = self.encode_args(handler, args, kwargs)
        else:  # encode_args' common case, inlined
            try:
                body = msgspec.Raw(encode(args))
            except Exception as e:
                raise unencodable(handler, args, e) from None
        budget = deadline - now
        out: asyncio.Future[Any] = loop.create_future()
        conn.call_into(
            key[0],
            key[1],
            handler.name,
            chain if len(chain) > 1 else (),  # just the target: restored there
            body,
            deadline,
            budget,
            _Routed(self, out, member, key, handler, args, kwargs, chain, deadline, budget, body),
        )
        return out

    def _routed(
        self,
        key: Key,
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chain: tuple[Key, ...],
        deadline: float,
        body: msgspec.Raw | None,
        counted: bool,
    ) -> asyncio.Future[Any]:
        """Route a call in a task (:meth:`_route`).

        A ``counted`` call (made outside any turn, not placed on this node) counts
        in :attr:`routing` until it is handed to this node's runtime or written to
        a connection: while it waits for a placement, a connection or a node, it
        holds its caller's arguments and a task, and a caller that starts calls
        faster than the peers take them would pile those up without limit. At most
        ``max_queued`` count at once; beyond, a call is refused with Overloaded. (A
        turn's calls never are: refusing them would fail turns that wait on calls
        already made.)
        """
        slot: list[bool] | None = None
        if counted:
            if self.routing >= self.max_queued:
                raise Overloaded(
                    f"{key[0]}/{key[1]}.{handler.name}() refused: {self.routing} calls "
                    f"from {self.name} already wait for a placement, a connection or a "
                    f"node (max_queued={self.max_queued}); the cluster takes calls "
                    "slower than they are made. Await the calls already made before "
                    "starting more"
                )
            slot = [True]
            self.routing += 1
        assert self._loop is not None
        task = self._loop.create_task(
            self._route(key, handler, args, kwargs, chain, deadline, body, slot=slot)
        )
        if slot is not None:
            task.add_done_callback(partial(self._handed_off, slot))
        return task

    def _handed_off(self, slot: list[bool], _task: object = None) -> None:
        """A counted call no longer waits in this router (see :meth:`_routed`)."""
        if slot[0]:
            slot[0] = False
            self.routing -= 1

    def encode_args(
        self, handler: Handler, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> msgspec.Raw:
        """The call's arguments as they cross the network (raises BadArguments)."""
        if not handler.wire_ok:
            handler.args_decoder  # noqa: B018 - raises BadArguments naming the handler
        values = positional_args(handler, args, kwargs)
        try:
            return msgspec.Raw(encode(values))
        except Exception as e:
            raise unencodable(handler, values, e) from None

    async def _route(
        self,
        key: Key,
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chain: tuple[Key, ...],
        deadline: float,
        body: msgspec.Raw | None,
        first: tuple[str, BaseException] | None = None,
        *,
        slot: list[bool] | None = None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        redirects = waits = 0
        last: BaseException | None = None
        refreshed = False
        while True:
            if self._closed:
                raise SystemStopping(
                    f"{self.name} closed its cluster connections: call to "
                    f"{key[0]}/{key[1]}.{handler.name}() abandoned ({last or 'not sent'})"
                )
            now = loop.time()
            if now >= deadline:
                raise CallTimeout(
                    f"{key[0]}/{key[1]}.{handler.name}(): no node answered before the "
                    f"deadline ({last or 'waiting for a home'})"
                )
            if first is not None:  # the fast path's attempt failed: handle it here,
                member, exc = first  # as the failure of the member it was sent to
            else:
                try:
                    member = self.place(key)
                except NoNodesAvailable as e:
                    refusal = self._only_refusals(key[0])
                    if refusal is not None:
                        raise _again(refusal) from None  # every host turned this away
                    # A host is starting, or one passed over since it refused
                    # (a node still starting, or draining) may be back: wait for it.
                    joining = self.view.joining(key[0]) or self._passed_over(key[0])
                    if refreshed and not joining:
                        raise
                    refreshed = True  # a node may have joined since the last refresh
                    try:  # within the call's deadline (CallTimeout above when it passed)
                        async with asyncio.timeout_at(deadline):
                            if joining:  # a host is starting: wait for it to serve
                                await self.view.changed()
                            else:
                                await self.view.refresh()
                    except TimeoutError:
                        last = e
                    continue
            try:
                if first is not None:
                    first = None
                    raise exc
                if member == self.me and self._local is not None:
                    if slot is not None:
                        self._handed_off(slot)
                    return await self._local(key, handler, args, kwargs, chain, deadline, now)
                if body is None:
                    body = self.encode_args(handler, args, kwargs)
                conn = self._conns.get(member)
                if conn is None or conn.is_closed:
                    try:  # a dial waits for the call's deadline at most (and goes on)
                        async with asyncio.timeout_at(deadline):
                            conn = await self.connection(member)
                    except TimeoutError:
                        last = NodeUnreachable(f"connecting to {member} took too long")
                        continue  # the deadline has passed: CallTimeout above
                    now = loop.time()
                    if now >= deadline:
                        continue
                budget = deadline - now
                req = CallReq(key[0], key[1], handler.name, budget, chain, body)
                if slot is not None and conn.writable:
                    self._handed_off(slot)  # written at once, not waiting here
                try:
                    raw = await conn.request(req, timeout=budget)
                except CallTimeout as e:
                    raise _unanswered(e, key, handler, member, budget) from None
            except Redirect as r:
                last = r
                self.cache.drop(key, member)
                if not r.owner:  # that member takes no new activations (it drains)
                    self._refusing[member] = self.view.generation
                    continue
                refusal = self._refused_auth.get(r.owner)
                if refusal is not None and self._refuses(r.owner):
                    raise _again(refusal) from None  # its home turns this process away
                if self._refuses(r.owner) or not self.view.is_live(r.owner):
                    # Its old home drains (or died): wait for it to let go, then claim.
                    await self._backoff(waits, deadline)
                    waits += 1
                    continue
                if r.owner != member:
                    self.cache.put(key, r.owner)
                redirects += 1
                if redirects > self.redirects:
                    raise NoNodesAvailable(
                        f"{key[0]}/{key[1]}.{handler.name}(): redirected {redirects} times "
                        f"without finding the object's home (last: {r})"
                    ) from r
                continue
            except NodeUnreachable as e:
                if getattr(e, "handshake_refused", False):
                    # The node is up and turned us away (a wrong secret, TLS...): the
                    # call never reached it, so another host of the type may take it.
                    # When none is left, this one's reason is the call's error.
                    self.cache.drop(key, member)
                    self._refusing[member] = self.view.generation
                    self._refused_auth[member] = e
                    if all(self._refuses(m.member_id) for m in self.view.accepting(key[0])):
                        raise
                    last = e
                    continue
                if not _route_failed(e):
                    raise  # the handler there raised it about a node of its own
                last = e
                if not self._closed:
                    # A little longer each time: a peer that keeps dropping the call
                    # is not dialed and sent to in a tight loop.
                    await self._backoff(waits, deadline)
                    waits += 1
                    await self._wait_gone(member, deadline)
                continue
            try:
                return decode_result(handler, raw)
            except msgspec.DecodeError as e:
                raise _bad_answer(key, handler, e) from None

    def place(self, key: Key) -> str:
        """The member to send ``key``'s call to: cached, or chosen by the type's strategy.

        Raises:
            NoNodesAvailable: no live member hosts the type.
        """
        member = self.cache.get(key)
        if member is not None and self.view.is_live(member):
            return member
        candidates = self.view.accepting(key[0])
        if self._refusing:
            candidates = [m for m in candidates if not self._refuses(m.member_id)]
        if not candidates:
            live = ", ".join(sorted(self.view.live)) or "none"
            raise NoNodesAvailable(
                f"no cluster member takes new activations of {key[0]!r} (live members: "
                f"{live}); start a node that hosts it"
            )
        chosen = choose(self._strategy_of(key[0]), key, candidates, self.me, self._rng)
        self.cache.put(key, chosen.member_id)
        return chosen.member_id

    def _refuses(self, member_id: str) -> bool:
        """Whether ``member_id`` refused new activations recently enough to pass it over."""
        mark = self._refusing.get(member_id)
        if mark is None:
            return False
        if self.view.generation >= mark + 2:  # the view caught up: trust it again
            del self._refusing[member_id]
            self._refused_auth.pop(member_id, None)
            return False
        return True

    def _only_refusals(self, type_name: str) -> BaseException | None:
        """A handshake refusal, when every host of ``type_name`` refused this process."""
        refusal = None
        for m in self.view.accepting(type_name):
            refusal = self._refused_auth.get(m.member_id)
            if refusal is None or not self._refuses(m.member_id):
                return None
        return refusal

    def _passed_over(self, type_name: str) -> bool:
        """Whether a member the view says takes ``type_name`` is passed over for now."""
        return any(m.member_id in self._refusing for m in self.view.accepting(type_name))

    async def _backoff(self, waits: int, deadline: float) -> None:
        """Sleep a little longer each time (5 ms doubling up to 200 ms), within the deadline."""
        loop = asyncio.get_running_loop()
        delay = min(0.005 * (2**waits), 0.2, max(0.0, deadline - loop.time()))
        await asyncio.sleep(delay)

    async def _wait_gone(self, member: str, deadline: float) -> None:
        """Wait until ``member`` is declared gone, or answers a dial again (or the deadline).

        A member whose connection broke is dialed again now and then (50 ms doubling
        up to 1 s): one that is alive (the connection was cut, not the node) takes the
        call again at once, rather than after the call's whole deadline. One that is
        dead is re-placed as soon as the view says so.
        """
        loop = asyncio.get_running_loop()
        pause = 0.05
        while self.view.is_live(member) and not self._closed and loop.time() < deadline:
            # A hung node may not answer a dial at all: look at the view again between
            # waits for the dial (which goes on meanwhile), so a failover is not missed.
            limit = min(deadline, loop.time() + self.view.refresh_period)
            try:
                async with asyncio.timeout_at(limit):
                    await self.connection(member)
                return  # reachable: the call goes there again
            except NodeUnreachable:
                # Refused, reset, or closed during the handshake: a node being killed
                # does all of these. This member took our secret before; it is
                # re-placed once the view drops it.
                pass
            except TimeoutError:
                continue
            await self._wait_view(min(deadline, loop.time() + pause))
            pause = min(pause * 2, 1.0)

    async def _wait_view(self, until: float) -> None:
        """Wait for the next change of the membership view, until ``until`` at most."""
        loop = asyncio.get_running_loop()
        remaining = until - loop.time()
        if remaining <= 0:
            return
        try:
            async with asyncio.timeout(min(remaining, self.view.refresh_period * 2)):
                await self.view.changed()
        except TimeoutError:
            pass

    # -- connections ------------------------------------------------------------------

    async def connection(self, member_id: str) -> Connection:
        """The open connection to ``member_id`` (dialed on first use).

        Raises:
            NodeUnreachable: the member is unknown or cannot be reached.
        """
        conn = self._conns.get(member_id)
        if conn is not None and not conn.is_closed:
            return conn
        pending = self._connecting.get(member_id)
        if pending is None:
            pending = asyncio.get_running_loop().create_task(self._dial(member_id))
            self._connecting[member_id] = pending
            pending.add_done_callback(partial(self._dialed, member_id))
        return await asyncio.shield(pending)

    def _dialed(self, member_id: str, task: asyncio.Task[Connection]) -> None:
        self._connecting.pop(member_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that gave up is not there to see it

    async def _dial(self, member_id: str) -> Connection:
        m = self.view.members.get(member_id)
        if m is None or not m.live:
            raise NodeUnreachable(f"member {member_id} is not in the cluster (dead or left)")
        host, port = split_address(m.address, "member address")
        conn = await connect(
            host,
            port,
            secret=self.secret,
            name=f"{m.node} ({m.address})",
            options=self.options,
            ssl=self.ssl,
            on_oneway=self._take_oneway,
        )
        if not self.view.is_live(member_id):  # declared gone while we dialed
            await conn.close()
            raise NodeUnreachable(f"member {member_id} left the cluster while being dialed")
        self._conns[member_id] = conn
        return conn

    def _take_oneway(self, conn: Connection, body: msgspec.Raw) -> object:
        handler = self.on_oneway
        return None if handler is None else handler(conn, body)

    def connected(self, member_id: str) -> Connection | None:
        """The open connection to ``member_id``, if there is one (no dialing)."""
        conn = self._conns.get(member_id)
        return conn if conn is not None and not conn.is_closed else None

    def _member_gone(self, member_id: str) -> None:
        self.cache.forget_member(member_id)
        self._refusing.pop(member_id, None)
        self._refused_auth.pop(member_id, None)
        conn = self._conns.pop(member_id, None)
        if conn is not None:
            task = asyncio.get_running_loop().create_task(conn.close())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Close every connection, and stop the dials in progress."""
        self._closed = True
        dials = list(self._connecting.values())
        for d in dials:
            d.cancel()
        await asyncio.gather(*dials, return_exceptions=True)
        conns, self._conns = list(self._conns.values()), {}
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def request(self, member_id: str, req: Any, limit: float) -> msgspec.Raw:
        """Send one control request (probe, stats...) to ``member_id``; wait ``limit`` s."""
        conn = await self.connection(member_id)
        return await conn.request(req, timeout=limit)


def _bad_answer(key: Key, handler: Handler, e: Exception) -> RemoteError:
    return RemoteError(
        "msgspec.DecodeError",
        f"{key[0]}/{key[1]}.{handler.name}() answered a value that does not match its "
        f"return annotation: {e}",
    )


def _again(refusal: BaseException) -> BaseException:
    """A fresh copy of a stored handshake refusal.

    Raising one object again and again would grow its traceback with every call.
    """
    copy = NodeUnreachable(*refusal.args)
    copy.handshake_refused = True  # type: ignore[attr-defined]
    return copy


class _Routed:
    """The answer of a call sent on the fast path, taken the moment its reply is read.

    The connection's :class:`~rio.cluster._calls.Waiter` for the request: it decodes a
    value into ``out``; a redirect or a lost way to the member starts the slow road
    (:meth:`Router._route`) whose outcome lands in ``out``; any other failure is
    the call's.
    """

    __slots__ = (
        "args",
        "body",
        "budget",
        "chain",
        "deadline",
        "handler",
        "key",
        "kwargs",
        "member",
        "out",
        "router",
    )

    def __init__(
        self,
        router: Router,
        out: asyncio.Future[Any],
        member: str,
        key: Key,
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chain: tuple[Key, ...],
        deadline: float,
        budget: float,
        body: msgspec.Raw,
    ) -> None:
        self.router = router
        self.out = out
        self.member = member
        self.key = key
        self.handler = handler
        self.args = args
        self.kwargs = kwargs
        self.chain = chain
        self.deadline = deadline
        self.budget = budget
        self.body = body

    def done(self) -> bool:
        """True once the caller's future is settled (or cancelled)."""
        return self.out.done()

    def set_result(self, result: msgspec.Raw, /) -> None:
        """Decode the reply into the caller's future."""
        try:
            self.out.set_result(self.handler.result_decoder.decode(result))
        except msgspec.DecodeError as e:
            self.out.set_exception(_bad_answer(self.key, self.handler, e))

    def set_exception(self, exception: BaseException, /) -> None:
        """Fail the call, or take the slow road when the way to the member failed."""
        if isinstance(exception, Redirect) or _route_failed(exception):
            r = self.router
            task = asyncio.get_running_loop().create_task(
                r._route(
                    self.key,
                    self.handler,
                    self.args,
                    self.kwargs,
                    self.chain,
                    self.deadline,
                    self.body,
                    (self.member, exception),
                )
            )
            task.add_done_callback(partial(_copy_outcome, self.out))
        elif isinstance(exception, CallTimeout):
            budget = self.budget
            self.out.set_exception(
                _unanswered(exception, self.key, self.handler, self.member, budget)
            )
        else:
            self.out.set_exception(exception)


def _unanswered(
    e: CallTimeout, key: Key, handler: Handler, member: str, budget: float
) -> CallTimeout:
    """A call's own deadline passed on its way to ``member``: say which call it was.

    (The connection's error names only the request; one the peer raised is its own.)
    """
    if getattr(e, "from_peer", False):
        return e
    return CallTimeout.unanswered(f"{key[0]}/{key[1]}", handler.name, budget, f" (node {member})")


def _copy_outcome(out: asyncio.Future[Any], task: asyncio.Future[Any]) -> None:
    if out.done():
        return
    if task.cancelled():
        out.cancel()
    elif (exc := task.exception()) is not None:
        out.set_exception(exc)
    else:
        out.set_result(task.result())


def _route_failed(exc: BaseException) -> bool:
    """Whether ``exc`` says the way to the member failed (not the handler there)."""
    return isinstance(exc, NodeUnreachable) and not getattr(exc, "from_peer", False)
