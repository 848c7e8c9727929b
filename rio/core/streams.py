"""Pub/sub: an object's own stream and named topics, with bounded subscriber buffers.

An actor publishes on its own stream (``self.publish(event)``) or on a named topic
(``self.publish(event, topic="news")``); anyone subscribes with
``async for event in ref.subscribe()`` or ``system.subscribe("news")``.

Each process keeps one :class:`Streams`. The events of a stream live in a *log*: a
ring of the latest events that every subscriber in the process reads with a cursor
of its own, so an event is kept once however many subscribe, and publishing is a
store into a list. A subscriber more than its ``buffer`` behind skips the oldest
events and is handed a :class:`Lagged` notice saying how many it missed; the
publisher never waits for anyone.

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
import contextlib
import itertools
from _thread import get_ident
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import Any, Generic, TypeVar

import msgspec

from rio.core.errors import CallTimeout, SystemStopping

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

E = TypeVar("E")

#: Events a subscriber may fall behind by before the oldest are dropped for it.
DEFAULT_BUFFER = 1024
#: The type name of a topic's stream key, ``(TOPIC, name)``; no actor type can have it.
TOPIC = "/"

#: ``(actor type name, id)`` of an object's stream, ``(TOPIC, name)`` of a topic.
StreamKey = tuple[str, str]


def stream_name(key: StreamKey) -> str:
    """``Type/id`` for an object's stream, ``topic 'name'`` for a topic."""
    return f"topic {key[1]!r}" if key[0] == TOPIC else f"{key[0]}/{key[1]}"


class Lagged(msgspec.Struct, frozen=True):
    """A notice in a subscription: events were dropped before they reached you.

    A subscription yields it in place of the events it lost, then goes on with the
    next ones; it never ends because it fell behind.

    Attributes:
        missed: how many events were dropped; 0 when unknown (``reason="lost"``).
        reason: ``"slow"``: this subscriber (or its process) fell more than its
            buffer behind; ``"lost"``: a worker where the stream is published died,
            so events in flight from it may be lost; the subscription was renewed
            with its replacement.

    Example::

        async for event in table.subscribe():
            if isinstance(event, rio.Lagged):
                print(f"missed {event.missed} events")
                continue
            show(event)
    """

    missed: int
    reason: str = "slow"


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


class _Log:
    """The latest events of one stream in this process, read by cursors.

    ``buf`` is a ring of ``mask + 1`` slots (a power of two, at least the largest
    buffer of the subscribers); the event numbered ``seq`` is in ``buf[seq & mask]``
    while ``head - seq <= mask + 1``.
    """

    __slots__ = (
        "awaiting",
        "buf",
        "closed",
        "head",
        "key",
        "link_id",
        "lost",
        "mask",
        "nsubs",
        "peers",
        "ready",
        "remote",
        "waiters",
    )

    def __init__(self, key: StreamKey, cap: int, peers: tuple[int, ...] = ()) -> None:
        size = _pow2(cap)
        self.key = key
        self.buf: list[Any] = [None] * size
        self.mask = size - 1
        self.head = 0
        self.waiters: list[asyncio.Future[None]] = []
        self.nsubs = 0
        #: Processes subscribed to events published here -> their log's link id.
        self.remote: dict[int, int] = {}
        #: The processes this log registered with (for its local subscribers), under
        #: ``link_id``; those that have not confirmed yet; those that died since.
        self.peers = peers
        self.link_id = 0
        self.awaiting: set[int] = set(peers)
        self.lost: set[int] = set()
        self.ready: asyncio.Future[None] | None = None
        self.closed = False

    def grow(self, cap: int) -> None:
        size = _pow2(cap)
        old, mask = self.buf, self.mask
        if size <= mask + 1:
            return
        buf: list[Any] = [None] * size
        new_mask = size - 1
        for seq in range(max(0, self.head - mask - 1), self.head):
            buf[seq & new_mask] = old[seq & mask]
        self.buf, self.mask = buf, new_mask

    def append(self, item: Any) -> None:
        self.buf[self.head & self.mask] = item
        self.head += 1
        if self.waiters:
            self.wake()

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


_END: Any = object()


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class Subscription(Generic[E]):
    """A subscription to one stream: an async iterator of its events.

    Made by ``ref.subscribe()`` (an object's own stream) or ``system.subscribe(topic)``.
    It sees events published after it was made, in each publisher's order. Besides
    events it yields :class:`Lagged` notices where events were dropped because it fell
    more than ``buffer`` events behind; it ends (the ``async for`` finishes) when
    :meth:`close` is called or the system stops.

    ``await`` it to be sure it is registered with the process keeping the stream
    (events published after that reach it; without the ``await``, events published
    in another process right after subscribing may be missed). Leaving an
    ``async for`` over ``ref.subscribe()``, :meth:`close`, ``async with`` or
    dropping the last reference unsubscribes and frees its buffer.

    Example::

        async with Table.ref("t1").subscribe(buffer=100) as sub:
            async for event in sub:
                if isinstance(event, rio.Lagged):
                    continue
                print(event)
    """

    __slots__ = ("__weakref__", "_buffer", "_closed", "_cursor", "_hub", "_log", "_waiter")

    def __init__(self, hub: Streams, log: _Log, buffer: int) -> None:
        self._hub = hub
        self._log = log
        self._buffer = buffer
        self._cursor = log.head
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    @property
    def key(self) -> StreamKey:
        """``(type name, id)`` of the object whose stream this is, or ``("/", topic)``."""
        return self._log.key

    @property
    def buffer(self) -> int:
        """How many events this subscriber may fall behind before the oldest are dropped."""
        return self._buffer

    @property
    def closed(self) -> bool:
        """True once closed (by :meth:`close` or the system stopping)."""
        return self._closed or self._log.closed

    def pending(self) -> int:
        """How many events (up to ``buffer``) wait to be read."""
        return max(0, min(self._log.head - self._cursor, self._buffer))

    def __aiter__(self) -> AsyncIterator[E | Lagged]:
        return self._events()

    async def _events(self) -> AsyncGenerator[E | Lagged, None]:
        # An async generator: resuming one costs less than a coroutine per event.
        log = self._log
        buffer = self._buffer
        while True:
            cursor = self._cursor
            head = log.head
            if head > cursor:
                if self._closed:
                    return
                if head - cursor > buffer:
                    self._cursor = head - buffer
                    yield Lagged(head - cursor - buffer)
                    continue
                buf, mask = log.buf, log.mask
                while True:  # what is buffered, until a lag or the log grows
                    item: E | Lagged = buf[cursor & mask]
                    cursor += 1
                    self._cursor = cursor
                    yield item
                    if self._closed:
                        return
                    head = log.head
                    if head == cursor or head - cursor > buffer or buf is not log.buf:
                        break
                continue
            if self._closed or log.closed:
                return
            await self._wait()

    def __iter__(self) -> Iterator[E | Lagged]:
        """Iterate from a thread other than the event loop's: each step blocks.

        Example (in a thread started with ``self.start_thread``)::

            for event in Table.ref("t1").subscribe():
                render(event)
        """
        hub = self._hub
        loop = hub._loop_()
        if get_ident() == hub._thread_id:
            raise RuntimeError("in the event loop's thread, iterate with `async for`")
        while True:
            step = asyncio.run_coroutine_threadsafe(self._next_or_end(), loop)
            item = step.result()
            if item is _END:
                return
            yield item

    async def _next_or_end(self) -> Any:
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            return _END

    async def __anext__(self) -> E | Lagged:
        log = self._log
        while True:
            cursor = self._cursor
            behind = log.head - cursor
            if behind > 0:
                if self._closed:
                    raise StopAsyncIteration
                if behind > self._buffer:
                    self._cursor = log.head - self._buffer
                    return Lagged(behind - self._buffer)
                self._cursor = cursor + 1
                item: E | Lagged = log.buf[cursor & log.mask]
                return item
            if self._closed or log.closed:
                raise StopAsyncIteration
            await self._wait()

    async def _wait(self) -> None:
        fut = self._hub._loop_().create_future()
        self._log.waiters.append(fut)
        self._waiter = fut
        try:
            await fut
        finally:
            self._waiter = None

    def __await__(self) -> Generator[Any, None, Subscription[E]]:
        return self._confirm().__await__()

    async def _confirm(self) -> Subscription[E]:
        ready = self._log.ready
        if ready is not None and not ready.done():
            timeout = self._hub.timeout
            done, _ = await asyncio.wait({ready}, timeout=timeout)
            if not done:
                waiting = ", ".join(map(str, sorted(self._log.awaiting)))
                raise CallTimeout(
                    f"subscribing to {stream_name(self._log.key)} was not confirmed within "
                    f"{timeout:g}s (by process {waiting})"
                )
        return self

    async def __aenter__(self) -> Subscription[E]:
        return await self._confirm()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Unsubscribe: the iteration ends and the buffer is freed. Idempotent."""
        if self._closed:
            return
        hub = self._hub
        if get_ident() != hub._thread_id:
            loop = hub._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self.close)
            return
        self._closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        hub._leave(self._log)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to free
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.pending()} pending"
        return f"<Subscription to {stream_name(self._log.key)}: {state}>"


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
        self._logs: dict[StreamKey, _Log] = {}
        #: Logs registered with other processes, by link id.
        self._registered: dict[int, _Log] = {}
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
            log = self._logs[key] = _Log(key, buffer)
        else:
            log.grow(buffer)
        link = self.link
        if not log.link_id and link is not None:
            self._register(log, link, loop)
        log.nsubs += 1
        return Subscription(self, log, buffer)

    async def _subscribed(self, key: StreamKey, buffer: int) -> Subscription[Any]:
        return await self.subscribe(key, buffer)

    def _register(self, log: _Log, link: StreamLink, loop: asyncio.AbstractEventLoop) -> None:
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

    def _leave(self, log: _Log) -> None:
        log.nsubs -= 1
        if log.nsubs <= 0:
            self._unregister(log)
            if log.remote:  # still published to other processes: keep no events here
                log.buf = [None]
                log.mask = 0
            else:
                self._drop(log)

    def _unregister(self, log: _Log) -> None:
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

    def _drop(self, log: _Log) -> None:
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
            log = self._logs[key] = _Log(key, 1)
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
