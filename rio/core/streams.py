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
        link = self.link
        if not log.link_id and link is not None:
            self._register(log, link, loop)
        log.nsubs += 1
        return Subscription(self, log, buffer)

    async def _subscribed(self, key: StreamKey, buffer: int) -> Subscription[Any]:
        return await self.subscribe(key, buffer)

    def _register(self, log: Log, link: StreamLink, loop: asyncio.AbstractEventLoop) -> None:
        """Register ``log`` with the processes where its stream may be published."""
        peers = link.peers(log.key)
        if not peers:
            return
        log.peers = peers
        log.awaiting = set(peers)
        log.link_id = next(self._ids)
        log.ready = loop.create_future()
        self._registered[log.link_id] = log
        for peer in peers:
            if link.reachable(peer):
                link.subscribe(peer, log.link_id, log.key)
            else:
                log.lost.add(peer)  # registered when it serves again

    def _leave(self, log: Log) -> None:
        log.nsubs -= 1
        if log.nsubs <= 0:
            self._unregister(log)
            if log.remote:  # still published to other processes: keep no events here
                log.buf = [None]
                log.mask = 0
            else:
                self._drop(log)

    def _unregister(self, log: Log) -> None:
        """No subscriber here any more: stop the events published elsewhere."""
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
            log.wake()
            if log.ready is not None and not log.ready.done():
                log.ready.set_result(None)
        self._logs.clear()
        self._registered.clear()

    def stats(self) -> tuple[int, int]:
        """``(streams, subscribers)``: logs kept here; subscriptions and processes subscribed."""
        subs = sum(log.nsubs + len(log.remote) for log in self._logs.values())
        return len(self._logs), subs

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
        if not log.remote and log.nsubs <= 0:
            self._drop(log)

    def forget_process(self, src: int) -> None:
        """Process ``src`` died: drop its subscriptions here."""
        for log in list(self._logs.values()):
            if log.remote.pop(src, None) is not None and not log.remote and log.nsubs <= 0:
                self._drop(log)

    def receive(self, link_id: int, events: list[Any], missed: int = 0) -> None:
        """Events published elsewhere for log ``link_id`` (unknown ids are stale: dropped)."""
        log = self._registered.get(link_id)
        if log is None:
            return
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

    def confirmed(self, link_id: int, src: int) -> None:
        """Process ``src`` registered log ``link_id``."""
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

    def peer_back(self, peer: int) -> None:
        """Process ``peer`` serves again: register there again the logs it lost."""
        link = self.link
        if link is None:
            return
        for log in list(self._registered.values()):
            if peer in log.lost:
                log.lost.discard(peer)
                link.subscribe(peer, log.link_id, log.key)
