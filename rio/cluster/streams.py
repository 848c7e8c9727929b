"""Pub/sub across the nodes of a cluster: registrations go out, events come back.

**Subscribing.** A process with subscribers to a stream (a :func:`rio.connect`
client, or a node's process where an actor or script subscribes) registers the
stream, once however many subscribe there, with *every* other live member that may
publish it (every member for a topic; the members hosting the type for an object's
stream), with a :class:`~rio.cluster.routing.SubscribeReq` on its router's connection
to that member, and with members that join later. :class:`ClusterSubscriptions` does
this for a process; it is the :class:`~rio.core.streams.StreamUplink` of its
:class:`~rio.core.streams.Streams`.

**Relaying.** Each member keeps, per registration, a relay (:class:`StreamRelays`)
attached to its own streams: it gets the events published on that node (in a node
with workers, the driver registers with its workers as any process does, and their
events reach it over the box's rings), never events that came from other nodes. It
sends them back on the connection the registration came on, as one-way
:class:`StreamEvents` messages, batched per pass of the event loop. The subscriber
appends them to the log its subscribers share, so ``async for`` and
:class:`rio.Lagged` work as on one box.

**Following objects.** Since every member holds the registration, events reach the
subscriber from wherever the object is active, and from its new home when it moves
(a node drains or dies): nothing is re-registered when an object moves.

**Lag and loss.** A relay never makes the publisher wait: when the connection's
write buffer is full (the subscriber reads slower than the node publishes), events
for it are dropped and counted, and the count reaches the subscriber as a
``Lagged(missed)`` notice. When a connection to a member closes without the member
saying goodbye (:class:`RelaysClosed`, sent when a node leaves), events may have been
lost: each stream registered there gets a ``Lagged(0, "lost")`` notice, and the
registrations are renewed once the member answers again (if it is still live). A
member declared dead or gone needs nothing more: its objects publish from their new
homes, where the streams are registered already.

**Freeing.** Unsubscribing (the last subscriber of a stream in a process leaves)
sends an :class:`~rio.cluster.routing.UnsubscribeReq` to each member; a closed
connection (the subscriber vanished) frees every relay it carried.

**Publishing on a topic from a client.** A client hosts no relays, so
:meth:`ClusterSubscriptions.publish_topic` hands topic events to one live member
(the same one for a topic while the membership holds), which publishes them there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from rio.cluster.routing import SubscribeReq, UnsubscribeReq
from rio.core.background import cancel_and_wait
from rio.core.errors import BadArguments, NodeUnreachable, RioError, SystemStopping
from rio.core.streams import TOPIC, StreamKey, StreamRelay, Streams, StreamUplink
from rio.local.streams import EventDecoders, event_runs

if TYPE_CHECKING:
    from rio.cluster.membership import MembershipView
    from rio.cluster.routing import Router
    from rio.cluster.transport import Connection

__all__ = [
    "ClusterSubscriptions",
    "PublishMsg",
    "RelaysClosed",
    "StreamEvents",
    "StreamRelays",
]

#: Events per message at most (a loop pass may publish many more).
CHUNK = 1024
#: Seconds until a dropped-events count is retried when no later batch carried it.
RETRY = 0.05


class StreamEvents(msgspec.Struct, array_like=True, tag=1):
    """Node to subscriber: events published on the node for registration ``sub``.

    ``events`` is a msgpack array of values of one class, named by ``event_type``
    (``module:qualname``; empty for builtins); ``missed`` events were dropped before
    them; ``lost``: events may be missing (a publishing worker died).
    """

    sub: int
    missed: int
    event_type: str
    events: msgspec.Raw
    lost: bool = False


class RelaysClosed(msgspec.Struct, array_like=True, tag=2):
    """Node to subscriber: this node leaves; every event was sent, its relays are gone."""


class PublishMsg(msgspec.Struct, array_like=True, tag=3):
    """Client to node: publish these events on ``topic`` there.

    ``events`` are of one class, as in :class:`StreamEvents`.
    """

    topic: str
    event_type: str
    events: msgspec.Raw


#: An empty msgpack array: the events of a message that only carries a count.
_NONE = msgspec.Raw(b"\x90")

Oneway = StreamEvents | RelaysClosed | PublishMsg
oneway_decoder: msgspec.msgpack.Decoder[Oneway] = msgspec.msgpack.Decoder(Oneway)


def _read_oneway(name: str, conn: Connection, body: msgspec.Raw) -> Oneway | None:
    """Decode a one-way message from ``conn``; None when unreadable.

    An unreadable one is the end of ``conn`` (logged once), as a malformed frame is:
    a peer that sends one is broken, and a flood of them must not cost a log line each.
    """
    try:
        return oneway_decoder.decode(body)
    except msgspec.DecodeError as e:
        conn.protocol_error(f"{name}: unreadable one-way message: {e}")
        return None


def send_runs(
    conn: Connection,
    events: list[Any],
    missed: int,
    make: Callable[[int, str, Any], Any],
    name: str,
) -> None:
    """Send ``events`` as one-way ``make(missed, type_name, run)`` messages.

    Each holds at most :data:`CHUNK` events of one class; the first carries
    ``missed``. A message the connection refuses (an event that cannot be encoded,
    or over ``max_frame_size``) is split in halves down to single events; an event
    that cannot go on its own is dropped (logged) and counted in the next ``missed``.

    Raises:
        rio.NodeUnreachable: the connection closed.
    """

    def send(type_name: str, chunk: list[Any], missed: int) -> int:
        """Send ``chunk``; returns the count of dropped events still to report."""
        try:
            conn.send_oneway_nowait(make(missed, type_name, chunk))
        except BadArguments as e:
            if len(chunk) == 1:
                logger.error("{}: a published event was dropped: {}", name, e)
                return missed + 1
            half = len(chunk) // 2
            return send(type_name, chunk[half:], send(type_name, chunk[:half], missed))
        return 0

    for type_name, run in event_runs(events) if events else []:
        for i in range(0, len(run), CHUNK):
            missed = send(type_name, run[i : i + CHUNK], missed)
    if missed:
        conn.send_oneway_nowait(make(missed, "", []))


# -- the member's side: relays ---------------------------------------------------------


class _Relay(StreamRelay):
    """One registration on this node: a stream's events for one subscribing process."""

    __slots__ = ("closed", "conn", "key", "lost", "missed", "out", "owner", "queued", "sub")

    def __init__(self, owner: StreamRelays, conn: Connection, sub: int, key: StreamKey) -> None:
        self.owner = owner
        self.conn = conn
        self.sub = sub
        self.key = key
        self.out: list[Any] = []
        self.missed = 0
        self.lost = False
        self.queued = False
        self.closed = False

    def push(self, event: Any) -> None:
        self.out.append(event)
        if not self.queued:
            self.owner._queue(self)

    def push_many(self, events: list[Any], missed: int) -> None:
        if missed:
            self.dropped(missed)
        self.out.extend(events)
        if not self.queued:
            self.owner._queue(self)

    def dropped(self, missed: int, lost: bool = False) -> None:
        if self.out:  # the count goes after what is queued already
            self.out.append(_Gap(missed, lost))
        else:
            self.missed += missed
            self.lost = self.lost or lost
        if not self.queued:
            self.owner._queue(self)


class _Gap:
    """Marks where events were dropped among those queued for a relay."""

    __slots__ = ("lost", "missed")

    def __init__(self, missed: int, lost: bool) -> None:
        self.missed = missed
        self.lost = lost


class StreamRelays:
    """A node's relays: the events published here, for subscribers elsewhere.

    The node's gateway hands it :class:`~rio.cluster.routing.SubscribeReq` and
    :class:`~rio.cluster.routing.UnsubscribeReq` with the connection they came on;
    the relays of a connection go when it closes.

    Args:
        streams: this node's streams (in a node with workers, the driver's).
        name: a label for logs.
    """

    def __init__(self, streams: Streams, name: str) -> None:
        self.streams = streams
        self.name = name
        self._by_conn: dict[Connection, dict[int, _Relay]] = {}
        self._watchers: dict[Connection, asyncio.Task[None]] = {}
        self._dirty: list[_Relay] = []
        self._behind: set[_Relay] = set()
        self._scheduled = False
        self._retry_armed = False
        self._closed = False
        self._decoders = EventDecoders(name)

    def __len__(self) -> int:
        """How many relays are attached (one per subscribing process and stream)."""
        return sum(len(r) for r in self._by_conn.values())

    # -- requests --------------------------------------------------------------------

    def subscribe(self, conn: Connection, req: SubscribeReq) -> Any:
        """Attach a relay for ``req`` on ``conn``; the reply (True) once registered here.

        Raises:
            SystemStopping: this node is leaving.
        """
        if self._closed or self.streams.closed:
            raise SystemStopping(f"{self.name} is leaving: it relays no new subscriptions")
        key = (req.type_name, req.object_id)
        relays = self._by_conn.get(conn)
        if relays is None:
            relays = self._by_conn[conn] = {}
            self._watchers[conn] = asyncio.get_running_loop().create_task(self._watch(conn))
        old = relays.pop(req.sub, None)
        if old is not None:
            self._free(old)
        relay = _Relay(self, conn, req.sub, key)
        ready = self.streams.add_relay(key, relay)
        relays[req.sub] = relay
        if ready is None:
            return True
        return self._confirmed(ready)

    async def _confirmed(self, ready: asyncio.Future[None]) -> bool:
        # The future is shared with others: wait for it without cancelling it.
        await asyncio.wait({ready}, timeout=self.streams.timeout)
        return True

    def unsubscribe(self, conn: Connection, req: UnsubscribeReq) -> bool:
        """Detach the relay ``req`` names; whether it was there."""
        relays = self._by_conn.get(conn)
        relay = relays.pop(req.sub, None) if relays is not None else None
        if relay is None:
            return False
        self._free(relay)
        return True

    def on_oneway(self, conn: Connection, body: msgspec.Raw) -> None:
        """Take a one-way message from a client: a :class:`PublishMsg`."""
        msg = _read_oneway(self.name, conn, body)
        if isinstance(msg, PublishMsg) and not self.streams.closed:
            events = self._decoders.decode(msg.event_type, msg.events, f"topic {msg.topic!r}")
            for event in events or ():
                self.streams.publish((TOPIC, msg.topic), event)

    async def _watch(self, conn: Connection) -> None:
        await conn.wait_closed()
        self._watchers.pop(conn, None)
        for relay in self._by_conn.pop(conn, {}).values():
            self._free(relay)

    def _free(self, relay: _Relay) -> None:
        relay.closed = True
        relay.out = []
        self._behind.discard(relay)
        self.streams.remove_relay(relay.key, relay)

    async def close(self) -> None:
        """The node leaves: send what is queued, say goodbye, free every relay."""
        if self._closed:
            return
        self._flush()
        self._closed = True
        for conn, relays in self._by_conn.items():
            with contextlib.suppress(RioError):
                conn.send_oneway_nowait(RelaysClosed())
            for relay in relays.values():
                self._free(relay)
        self._by_conn.clear()
        watchers = list(self._watchers.values())
        self._watchers.clear()
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)

    # -- sending ---------------------------------------------------------------------

    def _queue(self, relay: _Relay) -> None:
        relay.queued = True
        self._dirty.append(relay)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for relay in dirty:
            relay.queued = False
            if relay.closed:
                continue
            out, relay.out = relay.out, []
            conn = relay.conn
            if not conn.writable:
                if not conn.is_closed:  # the subscriber reads slower: drop, count
                    for e in out:
                        if type(e) is _Gap:
                            relay.missed += e.missed
                            relay.lost = relay.lost or e.lost
                        else:
                            relay.missed += 1
                    self._behind.add(relay)
                continue
            self._behind.discard(relay)
            try:
                self._send(relay, out)
            except NodeUnreachable:
                continue  # closed: its watcher frees the relays
        if self._behind and not self._retry_armed:
            self._retry_armed = True
            asyncio.get_running_loop().call_later(RETRY, self._retry)

    def _send(self, relay: _Relay, out: list[Any]) -> None:
        missed, relay.missed = relay.missed, 0
        lost, relay.lost = relay.lost, False
        start = 0
        for i, e in enumerate(out):  # gaps split the batch; rare
            if type(e) is _Gap:
                self._send_part(relay, out[start:i], missed, lost)
                missed, lost, start = e.missed, e.lost, i + 1
        self._send_part(relay, out[start:] if start else out, missed, lost)

    def _send_part(self, relay: _Relay, events: list[Any], missed: int, lost: bool) -> None:
        sub = relay.sub
        if lost:  # the notice first, on its own
            relay.conn.send_oneway_nowait(StreamEvents(sub, missed, "", _NONE, True))
            missed = 0

        def make(missed: int, type_name: str, run: Any) -> StreamEvents:
            return StreamEvents(sub, missed, type_name, run)

        send_runs(relay.conn, events, missed, make, self.name)

    def _retry(self) -> None:
        """Send dropped-events counts that no later batch carried."""
        self._retry_armed = False
        for relay in list(self._behind):
            if not relay.queued and not relay.closed:
                self._queue(relay)


# -- the subscriber's side -------------------------------------------------------------


class _Peer:
    """What a subscribing process knows of one member."""

    __slots__ = ("clean", "conn", "dialing", "member_id", "pending", "publish", "registered")

    def __init__(self, member_id: str) -> None:
        self.member_id = member_id
        self.conn: Connection | None = None
        #: Registrations sent on ``conn``.
        self.registered: set[int] = set()
        #: Registrations to send once connected.
        self.pending: set[int] = set()
        self.dialing: asyncio.Task[None] | None = None
        #: The member said goodbye on ``conn``: it leaves, nothing was lost.
        self.clean = False
        #: Topic events (client publishing) waiting for the connection.
        self.publish: list[tuple[str, list[Any]]] = []


class ClusterSubscriptions(StreamUplink):
    """One process's subscriptions to streams published on other nodes.

    Args:
        streams: this process's streams (it becomes their uplink).
        router: this process's router (its connections carry the events back).
        view: the membership view (members joining and leaving).
        me: this node's member id (None in a client): never registered with.
        name: a label for logs.
    """

    def __init__(
        self,
        streams: Streams,
        router: Router,
        view: MembershipView,
        me: str | None,
        name: str,
    ) -> None:
        self.streams = streams
        self.router = router
        self.view = view
        self.me = me
        self.name = name
        self._subs: dict[int, StreamKey] = {}
        self._peers: dict[str, _Peer] = {}
        self._by_conn: dict[Connection, _Peer] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._decoders = EventDecoders(name)
        self._publish_out: list[tuple[str, Any]] = []
        self._publish_scheduled = False
        #: Members that said goodbye (RelaysClosed) while their rows still say live.
        self._departed: set[str] = set()
        self._closed = False
        router.on_oneway = self.on_oneway
        view.on_joined(self._joined)
        view.on_gone(self._gone)
        streams.uplink = self

    def stats(self) -> tuple[int, int]:
        """``(streams registered, members connected)``."""
        return len(self._subs), sum(1 for p in self._peers.values() if p.conn is not None)

    # -- StreamUplink ----------------------------------------------------------------

    def register(self, key: StreamKey, link_id: int) -> tuple[str, ...]:
        """Ask every live member that may publish ``key`` (see the module docstring)."""
        if self._closed:
            return ()
        self._subs[link_id] = key
        asked = []
        for member_id in self._targets(key):
            self._subscribe(self._peer(member_id), link_id, key)
            asked.append(member_id)
        return tuple(asked)

    def unregister(self, key: StreamKey, link_id: int) -> None:
        """Tell each member it was registered with to free its relay."""
        self._subs.pop(link_id, None)
        for peer in self._peers.values():
            peer.pending.discard(link_id)
            if link_id in peer.registered:
                peer.registered.discard(link_id)
                conn = peer.conn
                if conn is not None and not conn.is_closed:
                    with contextlib.suppress(RioError):
                        req = UnsubscribeReq(key[0], key[1], link_id)
                        conn.request(req, timeout=self.streams.timeout).add_done_callback(_consume)

    def _targets(self, key: StreamKey) -> list[str]:
        topic = key[0] == TOPIC
        return [
            mid
            for mid, m in self.view.live.items()
            if mid != self.me and (topic or key[0] in m.types)
        ]

    def _peer(self, member_id: str) -> _Peer:
        peer = self._peers.get(member_id)
        if peer is None:
            peer = self._peers[member_id] = _Peer(member_id)
        return peer

    def _subscribe(self, peer: _Peer, link_id: int, key: StreamKey) -> None:
        conn = peer.conn
        if conn is None or conn.is_closed:
            peer.pending.add(link_id)
            self._dial(peer)
            return
        peer.registered.add(link_id)
        loop = asyncio.get_running_loop()
        try:
            fut = conn.request(SubscribeReq(key[0], key[1], link_id), timeout=self.streams.timeout)
        except RioError as e:
            logger.warning("{}: cannot register with {}: {}", self.name, peer.member_id, e)
            loop.call_soon(self.streams.confirmed, link_id, peer.member_id)
            return
        fut.add_done_callback(partial(self._subscribed, peer, link_id))

    def _subscribed(self, peer: _Peer, link_id: int, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled():
            e = fut.exception()
            # A closed connection is renewed by its watcher, a leaving member is soon
            # gone: say why for anything else.
            quiet = isinstance(e, NodeUnreachable | SystemStopping)
            if e is not None and not quiet and link_id in self._subs:
                logger.warning(
                    "{}: member {} did not register {}: {}",
                    self.name,
                    peer.member_id,
                    self._subs[link_id],
                    e,
                )
        self.streams.confirmed(link_id, peer.member_id)

    # -- connections -----------------------------------------------------------------

    def _dial(self, peer: _Peer) -> None:
        if peer.dialing is None and not self._closed:
            peer.dialing = asyncio.get_running_loop().create_task(self._connect(peer))

    async def _connect(self, peer: _Peer) -> None:
        """Connect to ``peer`` (retrying while it is live), then send what waits."""
        delay = 0.05
        try:
            while True:
                if self._closed or self._peers.get(peer.member_id) is not peer:
                    return
                if not self.view.is_live(peer.member_id):
                    self._forget(peer)
                    return
                try:
                    conn = await self.router.connection(peer.member_id)
                    break
                except (RioError, OSError):
                    # Unreachable for now: don't hold up subscribing; retry.
                    for link_id in peer.pending:
                        self.streams.confirmed(link_id, peer.member_id)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
        finally:
            peer.dialing = None
        self._attach(peer, conn)

    def _attach(self, peer: _Peer, conn: Connection) -> None:
        if peer.conn is not conn:
            peer.conn = conn
            peer.clean = False
            peer.registered = set()
            self._by_conn[conn] = peer
            task = asyncio.get_running_loop().create_task(self._watch(peer, conn))
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)
        pending, peer.pending = peer.pending, set()
        for link_id in sorted(pending):
            key = self._subs.get(link_id)
            if key is not None:
                self._subscribe(peer, link_id, key)
        publish, peer.publish = peer.publish, []
        for topic, events in publish:
            self._send_publish(conn, topic, events)

    async def _watch(self, peer: _Peer, conn: Connection) -> None:
        await conn.wait_closed()
        self._by_conn.pop(conn, None)
        if self._closed or peer.conn is not conn:
            return
        peer.conn = None
        registered, peer.registered = peer.registered, set()
        if peer.clean:  # the member left and sent everything: nothing to renew
            self._departed.add(peer.member_id)  # its row may say active a while yet
            self._forget(peer)
            return
        for link_id in sorted(registered):
            self.streams.receive_from_node(link_id, [], 0, lost=True)
        if self._peers.get(peer.member_id) is peer and self.view.is_live(peer.member_id):
            peer.pending |= {i for i in registered if i in self._subs}
            if peer.pending:
                self._dial(peer)

    def _forget(self, peer: _Peer) -> None:
        if self._peers.get(peer.member_id) is peer:
            del self._peers[peer.member_id]
        for link_id in peer.pending:
            self.streams.confirmed(link_id, peer.member_id)
        peer.pending = set()
        if peer.publish:
            queued, peer.publish = peer.publish, []
            if self._closed:
                dropped = sum(len(e) for _, e in queued)
                logger.warning(
                    "{}: {} topic event(s) for {} dropped: closing",
                    self.name,
                    dropped,
                    peer.member_id,
                )
            else:  # through another member, ahead of what came since
                self._publish_out[:0] = [(t, e) for t, events in queued for e in events]
                if not self._publish_scheduled:
                    self._publish_scheduled = True
                    asyncio.get_running_loop().call_soon(self._flush_publish)

    def _joined(self, member_id: str) -> None:
        if self._closed or member_id == self.me or not self._subs:
            return
        m = self.view.live.get(member_id)
        if m is None:
            return
        peer = self._peer(member_id)
        for link_id, key in list(self._subs.items()):
            if key[0] == TOPIC or key[0] in m.types:
                self._subscribe(peer, link_id, key)

    def _gone(self, member_id: str) -> None:
        peer = self._peers.get(member_id)
        if peer is None:
            return
        if peer.dialing is not None:
            peer.dialing.cancel()
        self._forget(peer)
        # Its connection closes (the router closes it): the watcher adds the notices.

    # -- receiving -------------------------------------------------------------------

    def on_oneway(self, conn: Connection, body: msgspec.Raw) -> None:
        """Take a one-way message a member sent on one of the router's connections."""
        msg = _read_oneway(self.name, conn, body)
        if type(msg) is StreamEvents:
            events = self._decoders.decode(msg.event_type, msg.events, f"sub {msg.sub}")
            if events is None:
                missed = msg.missed + self._decoders.count(msg.events)
                self.streams.receive_from_node(msg.sub, [], missed, lost=msg.lost)
            else:
                self.streams.receive_from_node(msg.sub, events, msg.missed, lost=msg.lost)
        elif type(msg) is RelaysClosed:
            peer = self._by_conn.get(conn)
            if peer is not None:
                peer.clean = True

    # -- publishing on topics (clients) ----------------------------------------------

    def publish_topic(self, topic: str, event: Any) -> None:
        """Publish ``event`` on ``topic`` through one live member (see the module docstring)."""
        if self._closed:
            raise SystemStopping(f"{self.name} is closed: nothing can be published")
        self._publish_out.append((topic, event))
        if not self._publish_scheduled:
            self._publish_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_publish)

    def _flush_publish(self) -> None:
        self._publish_scheduled = False
        out, self._publish_out = self._publish_out, []
        by_topic: dict[str, list[Any]] = {}
        for topic, event in out:
            by_topic.setdefault(topic, []).append(event)
        for topic, events in by_topic.items():
            member_id = self._publisher_for(topic)
            if member_id is None:
                logger.warning(
                    "{}: {} event(s) on topic {!r} dropped: no live member to publish them",
                    self.name,
                    len(events),
                    topic,
                )
                continue
            peer = self._peer(member_id)
            conn = peer.conn
            if conn is None or conn.is_closed:
                conn = self.router.connected(member_id)
                if conn is not None:
                    self._attach(peer, conn)
            if conn is None or peer.publish:  # keep the order behind what waits
                peer.publish.append((topic, events))
                self._dial(peer)
            else:
                self._send_publish(conn, topic, events)

    def _publisher_for(self, topic: str) -> str | None:
        # An active member: one still joining may not hold every subscriber's
        # registration yet (it turns active after ClusterSettings.join_grace).
        if self._departed:
            self._departed &= self.view.live.keys()
        skip = {self.me, *self._departed}
        members = [m.member_id for m in self.view.all_accepting() if m.member_id not in skip]
        if not members:  # none active: a joining or draining one, rather than nothing
            members = [mid for mid in self.view.live if mid not in skip]
            if not members:
                return None
        return max(members, key=lambda mid: _rank(topic, mid))

    def _send_publish(self, conn: Connection, topic: str, events: list[Any]) -> None:
        def make(missed: int, type_name: str, run: Any) -> PublishMsg:
            return PublishMsg(topic, type_name, run)

        try:
            send_runs(conn, events, 0, make, self.name)
        except NodeUnreachable as e:
            logger.warning("{}: events on topic {!r} dropped: {}", self.name, topic, e)

    # -- closing ---------------------------------------------------------------------

    async def close(self) -> None:
        """Stop: no more registrations or renewals (the connections close with the router)."""
        self._closed = True
        tasks = [p.dialing for p in self._peers.values() if p.dialing is not None]
        tasks.extend(self._watchers)
        await cancel_and_wait(*tasks)
        self._peers.clear()
        self._by_conn.clear()
        if self.streams.uplink is self:
            self.streams.uplink = None


def _rank(topic: str, member_id: str) -> bytes:
    return hashlib.blake2b(f"{topic}\x00{member_id}".encode(), digest_size=8).digest()


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
