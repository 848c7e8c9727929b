"""Pub/sub: an object's own stream and named topics, with bounded subscriber buffers.

An actor publishes on its own stream (``self.publish(event)``) or on a named topic
(``self.publish(event, topic="news")``); anyone subscribes with
``async for event in ref.subscribe()`` or ``system.subscribe("news")``.

Each process keeps one :class:`Streams`: the log of each stream with subscribers
(see :mod:`rio.core.subscription`: one ring of events per stream and process, read
by every subscription there with a cursor of its own; one that falls behind is
told what it missed, the publisher never waits for anyone).

A subscription is registered where the events are published, so a publisher
knows its subscribers without asking anyone: an object's stream is published in
the process hosting the object, so a process subscribing to it registers there; a
topic may be published from any process, so a process subscribing to a topic
registers with every other process (and the publishers' processes send it their
events directly, each in its own order). A process registers once per stream,
however many subscribers it has; the events it receives go to its own log, which
its subscribers share. A :class:`StreamLink` (the worker pool provides one) carries
registrations and events between processes. Nothing is kept for a stream without
subscribers anywhere: publishing to it costs one dict lookup. Subscriptions belong
to the stream, not to an activation: subscribing neither needs nor keeps the
object active.

In a cluster, a :class:`StreamUplink` carries the same registrations to the other
nodes (see :mod:`rio.cluster.streams`): a process with subscribers to a stream
registers it with every other node, and each node feeds the events published there
to a :class:`StreamRelay` per subscribing process, which sends them on. Events that
arrive from another node enter the log through :meth:`Streams.receive_from_node`,
and never reach the relays: only what is published on a node leaves it.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
from _thread import get_ident
from typing import Any

from rio.core.errors import SystemStopping
from rio.core.subscription import (
    DEFAULT_BUFFER,
    TOPIC,
    Lagged,
    Log,
    StreamKey,
    Subscription,
    stream_name,
)

__all__ = [
    "DEFAULT_BUFFER",
    "TOPIC",
    "Lagged",
    "StreamKey",
    "StreamLink",
    "StreamRelay",
    "StreamUplink",
    "Streams",
    "Subscription",
    "stream_name",
]


class StreamLink(abc.ABC):
    """How one process's streams reach the other processes.

    :class:`Streams` calls it; it calls back :meth:`Streams.add_remote`,
    :meth:`Streams.remove_remote`, :meth:`Streams.receive`, :meth:`Streams.confirmed`,
    :meth:`Streams.peer_lost` and :meth:`Streams.peer_back`.
    """

    @abc.abstractmethod
    def peers(self, key: StreamKey) -> tuple[int, ...]:
        """The other processes where ``key`` may be published (to register with)."""

    @abc.abstractmethod
    def reachable(self, peer: int) -> bool:
        """Whether process ``peer`` serves now (else :meth:`Streams.peer_back` renews)."""

    @abc.abstractmethod
    def subscribe(self, peer: int, link_id: int, key: StreamKey) -> None:
        """Ask ``peer`` to send ``key``'s events published there here, tagged ``link_id``."""

    @abc.abstractmethod
    def unsubscribe(self, peer: int, link_id: int, key: StreamKey) -> None:
        """Tell ``peer`` to stop sending ``key``'s events tagged ``link_id``."""

    @abc.abstractmethod
    def deliver(self, dst: int, link_id: int, event: Any) -> None:
        """Send one event to the log ``link_id`` in process ``dst`` (batched)."""


class StreamRelay(abc.ABC):
    """Takes one stream's events published on this node, for a subscriber on another.

    Attached with :meth:`Streams.add_relay`, it gets every event published in this
    process or received from the other processes of this box, never events that
    came from other nodes. It must not block: it queues and sends later.
    """

    __slots__ = ()

    @abc.abstractmethod
    def push(self, event: Any) -> None:
        """One event published here."""

    @abc.abstractmethod
    def push_many(self, events: list[Any], missed: int) -> None:
        """Events from another process of this box, after ``missed`` dropped ones."""

    @abc.abstractmethod
    def dropped(self, missed: int, lost: bool = False) -> None:
        """``missed`` events were dropped on their way here.

        ``lost``: a publishing process died, so an unknown number may be missing.
        """


class StreamUplink(abc.ABC):
    """How one process's subscribers get the events published on other cluster nodes.

    :class:`Streams` calls it when a stream gets its first subscriber here and when
    it loses its last; it calls back :meth:`Streams.confirmed` (with a member id)
    and :meth:`Streams.receive_from_node`.
    """

    @abc.abstractmethod
    def register(self, key: StreamKey, link_id: int) -> tuple[str, ...]:
        """Ask the other nodes for ``key``'s events, tagged ``link_id``.

        Returns the member ids asked; each confirms later (never during this call)
        through :meth:`Streams.confirmed`.
        """

    @abc.abstractmethod
    def unregister(self, key: StreamKey, link_id: int) -> None:
        """Tell the other nodes to stop sending ``key``'s events tagged ``link_id``."""


class Streams:
    """The streams of one process: their logs, subscribers and registrations.

    Args:
        name: a label for logs and messages.
        timeout: seconds a subscription waits for other processes to confirm it.
    """

    def __init__(self, name: str, timeout: float = 30.0) -> None:
        self.name = name
        self.timeout = timeout
        #: Routes to other processes; None: every stream is kept here.
        self.link: StreamLink | None = None
        #: Routes to other cluster nodes; None: not in a cluster.
        self.uplink: StreamUplink | None = None
        self._logs: dict[StreamKey, Log] = {}
        #: Logs registered with other processes, by link id.
        self._registered: dict[int, Log] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = -1
        self._closed = False

    def start(self) -> None:
        """Serve from the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._thread_id = get_ident()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (the system stops)."""
        return self._closed

    def _loop_(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            raise SystemStopping(f"{self.name} has not been started")
        return loop

    # -- publishing ------------------------------------------------------------------

    def publish(self, key: StreamKey, event: Any) -> None:
        """Publish ``event`` on ``key`` from this process (any thread; never blocks)."""
        log = self._logs.get(key)
        if log is None:
            return
        if get_ident() != self._thread_id:
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self.publish, key, event)
            return
        log.buf[log.head & log.mask] = event
        log.head += 1
        if log.waiters:
            log.wake()
        if log.remote:
            deliver = self.link.deliver  # type: ignore[union-attr]  # remote implies a link
            for dst, link_id in log.remote.items():
                deliver(dst, link_id, event)
        if log.relays:
            for relay in log.relays:
                relay.push(event)

    def publish_topic(self, topic: str, event: Any) -> None:
        """Publish ``event`` on the named topic from this process."""
        self.publish((TOPIC, topic), event)

    # -- subscribing -----------------------------------------------------------------

    def subscribe(self, key: StreamKey, buffer: int = DEFAULT_BUFFER) -> Subscription[Any]:
        """A new subscription to ``key`` (from another thread: confirmed, blocking).

        Raises:
            ValueError: ``buffer`` is not a positive int.
            SystemStopping: the system is not running.
        """
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"buffer must be a positive number of events, got {buffer!r}")
        loop = self._loop_()
        if self._closed:
            raise SystemStopping(f"{self.name} is stopping: no new subscriptions")
        if get_ident() != self._thread_id:  # a thread: subscribe in the loop, confirmed
            return asyncio.run_coroutine_threadsafe(self._subscribed(key, buffer), loop).result()
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = Log(key, buffer)
        else:
            log.grow(buffer)
        if self.link is not None or self.uplink is not None:
            self._register(log, loop, cluster=True)
        log.nsubs += 1
        return Subscription(self, log, buffer)

    async def _subscribed(self, key: StreamKey, buffer: int) -> Subscription[Any]:
        return await self.subscribe(key, buffer)

    def _register(self, log: Log, loop: asyncio.AbstractEventLoop, *, cluster: bool) -> None:
        """Register ``log`` where its stream may be published.

        That is the other processes of this box (once), and with ``cluster`` the
        other nodes (once).
        """
        awaiting: list[int | str] = []
        if not log.link_id:
            log.link_id = next(self._ids)
            self._registered[log.link_id] = log
            link = self.link
            if link is not None:
                peers = link.peers(log.key)
                log.peers = peers
                awaiting.extend(peers)
                for peer in peers:
                    if link.reachable(peer):
                        link.subscribe(peer, log.link_id, log.key)
                    else:
                        log.lost.add(peer)  # registered when it serves again
        uplink = self.uplink
        if cluster and not log.uplinked and uplink is not None:
            log.uplinked = True
            awaiting.extend(uplink.register(log.key, log.link_id))
        if awaiting:
            log.awaiting.update(awaiting)
            if log.ready is None or log.ready.done():
                log.ready = loop.create_future()

    def _leave(self, log: Log) -> None:
        log.nsubs -= 1
        if log.nsubs > 0:
            return
        if log.uplinked:
            self._unlink(log)
        if log.relays:  # still relayed to other nodes: keep no events here
            log.buf = [None]
            log.mask = 0
            return
        self._unregister(log)
        if log.remote:  # still published to other processes: keep no events here
            log.buf = [None]
            log.mask = 0
        else:
            self._drop(log)

    def _unlink(self, log: Log) -> None:
        """No subscriber here any more: stop the events published on other nodes."""
        log.uplinked = False
        uplink = self.uplink
        if uplink is not None and not self._closed:
            uplink.unregister(log.key, log.link_id)
        log.awaiting = {w for w in log.awaiting if isinstance(w, int)}
        if not log.awaiting and log.ready is not None and not log.ready.done():
            log.ready.set_result(None)

    def _unregister(self, log: Log) -> None:
        """No subscriber or relay here any more: stop the events published elsewhere."""
        if log.uplinked:
            self._unlink(log)
        if log.link_id and self._registered.pop(log.link_id, None) is log:
            link = self.link
            if not self._closed and link is not None:
                for peer in log.peers:
                    if peer not in log.lost:
                        link.unsubscribe(peer, log.link_id, log.key)
            if log.ready is not None and not log.ready.done():
                log.ready.cancel()
        log.link_id = 0
        log.peers = ()
        log.awaiting = set()
        log.lost = set()
        log.ready = None

    def _drop(self, log: Log) -> None:
        if self._logs.get(log.key) is log:
            del self._logs[log.key]
        log.buf = [None]  # the events go now, not when the last subscription object does
        log.mask = 0
        log.head = 0

    def close(self) -> None:
        """End every subscription here (the system stops); pending events are still read."""
        self._closed = True
        for log in list(self._logs.values()):
            log.closed = True
            log.remote.clear()
            log.relays.clear()
            log.uplinked = False
            log.wake()
            if log.ready is not None and not log.ready.done():
                log.ready.set_result(None)
        self._logs.clear()
        self._registered.clear()

    def stats(self) -> tuple[int, int]:
        """``(streams, subscribers)``: logs kept here; subscriptions and processes subscribed."""
        subs = sum(log.nsubs + len(log.remote) for log in self._logs.values())
        return len(self._logs), subs

    def relay_count(self) -> int:
        """Relays attached here (subscribers on other nodes, per stream)."""
        return sum(len(log.relays) for log in self._logs.values())

    # -- relays: this node's events for subscribers on other nodes ---------------------

    def add_relay(self, key: StreamKey, relay: StreamRelay) -> asyncio.Future[None] | None:
        """Feed ``relay`` the events of ``key`` published on this node from now on.

        Returns a future done once the other processes of this box registered the
        stream (None when there is nothing to wait for).

        Raises:
            SystemStopping: the system is stopping.
        """
        loop = self._loop_()
        if self._closed:
            raise SystemStopping(f"{self.name} is stopping: no new subscriptions")
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = Log(key, 1)
        log.relays.append(relay)
        if self.link is not None:
            self._register(log, loop, cluster=False)
        ready = log.ready
        return ready if ready is not None and not ready.done() else None

    def remove_relay(self, key: StreamKey, relay: StreamRelay) -> None:
        """Detach ``relay`` (its subscriber left); the log goes with its last user."""
        log = self._logs.get(key)
        if log is None or relay not in log.relays:
            return
        log.relays.remove(relay)
        if log.relays or log.nsubs > 0:
            return
        self._unregister(log)
        self._drop_if_unused(log)

    # -- called by the link with what other processes send ----------------------------

    def add_remote(self, key: StreamKey, src: int, link_id: int) -> None:
        """Process ``src`` subscribes its log ``link_id`` to ``key``'s events published here."""
        if self._closed:
            return
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = Log(key, 1)
        log.remote[src] = link_id

    def remove_remote(self, key: StreamKey, src: int, link_id: int) -> None:
        """Process ``src`` unsubscribes its log ``link_id`` from ``key`` here."""
        log = self._logs.get(key)
        if log is None or log.remote.get(src) != link_id:
            return
        del log.remote[src]
        self._drop_if_unused(log)

    def forget_process(self, src: int) -> None:
        """Process ``src`` died: drop its subscriptions here."""
        for log in list(self._logs.values()):
            if log.remote.pop(src, None) is not None:
                self._drop_if_unused(log)

    def _drop_if_unused(self, log: Log) -> None:
        """Drop ``log`` once no subscriber, relay to other nodes or other process uses it."""
        if log.nsubs <= 0 and not log.relays and not log.remote:
            self._drop(log)

    def receive(self, link_id: int, events: list[Any], missed: int = 0) -> None:
        """Events published elsewhere for log ``link_id`` (unknown ids are stale: dropped)."""
        log = self._registered.get(link_id)
        if log is None:
            return
        self._append(log, events, missed)
        if log.relays:
            for relay in log.relays:
                relay.push_many(events, missed)

    def receive_from_node(
        self, link_id: int, events: list[Any], missed: int = 0, *, lost: bool = False
    ) -> None:
        """Events published on another cluster node, for the subscribers of log ``link_id``.

        They go to the subscribers here, not to relays (see :class:`StreamUplink`).

        ``missed`` events were dropped on the way (a :class:`Lagged` notice takes
        their place); ``lost``: events from that node may be missing (a
        ``Lagged(0, "lost")`` notice). Unknown ids are stale: dropped.
        """
        log = self._registered.get(link_id)
        if log is None or not log.uplinked:
            return
        if lost:
            log.append(Lagged(0, "lost"))
        self._append(log, events, missed)

    @staticmethod
    def _append(log: Log, events: list[Any], missed: int) -> None:
        buf, mask, head = log.buf, log.mask, log.head
        if missed:
            buf[head & mask] = Lagged(missed)
            head += 1
        for event in events:
            buf[head & mask] = event
            head += 1
        log.head = head
        if log.waiters:
            log.wake()

    def confirmed(self, link_id: int, src: int | str) -> None:
        """Process ``src`` (or cluster member ``src``) registered log ``link_id``."""
        log = self._registered.get(link_id)
        if log is None:
            return
        log.awaiting.discard(src)
        if not log.awaiting and log.ready is not None and not log.ready.done():
            log.ready.set_result(None)

    def peer_lost(self, peer: int) -> None:
        """Process ``peer`` died: logs registered there get a ``Lagged(0, "lost")`` notice."""
        for log in self._registered.values():
            if peer in log.peers and peer not in log.lost:
                log.lost.add(peer)
                log.append(Lagged(0, "lost"))
                for relay in log.relays:
                    relay.dropped(0, lost=True)

    def peer_back(self, peer: int) -> None:
        """Process ``peer`` serves again: register there again the logs it lost."""
        link = self.link
        if link is None:
            return
        for log in list(self._registered.values()):
            if peer in log.lost:
                log.lost.discard(peer)
                link.subscribe(peer, log.link_id, log.key)
