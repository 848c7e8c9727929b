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

The *source* log of a stream is kept where it is published: in the process hosting
the object, or at the topic's home. A process with subscribers to a stream kept
elsewhere keeps a *replica* log, fed by the source through a :class:`StreamLink`
(the worker pool provides one); it subscribes there once, however many local
subscribers it has. Nothing at all is kept for a stream without subscribers:
publishing to it costs one dict lookup. Subscriptions belong to the stream, not to
an activation: subscribing neither needs nor keeps the object active.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
from _thread import get_ident
from collections.abc import AsyncGenerator, AsyncIterator, Generator
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
            buffer behind; ``"lost"``: the worker keeping the stream died, so events
            in flight may be lost; the subscription was renewed with its replacement.

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
    """How one process's streams reach the processes keeping other streams.

    :class:`Streams` calls it; it calls back :meth:`Streams.add_remote`,
    :meth:`Streams.remove_remote`, :meth:`Streams.receive`, :meth:`Streams.confirmed`
    and :meth:`Streams.publish` with what other processes send.
    """

    @abc.abstractmethod
    def owner(self, key: StreamKey) -> int | None:
        """The process keeping the source of ``key``; None when it is this one."""

    @abc.abstractmethod
    def reachable(self, owner: int) -> bool:
        """Whether process ``owner`` serves now (else :meth:`Streams.owner_back` renews)."""

    @abc.abstractmethod
    def subscribe(self, owner: int, link_id: int, key: StreamKey) -> None:
        """Ask ``owner`` to send ``key``'s events here, tagged ``link_id``."""

    @abc.abstractmethod
    def unsubscribe(self, owner: int, link_id: int, key: StreamKey) -> None:
        """Tell ``owner`` to stop sending ``key``'s events tagged ``link_id``."""

    @abc.abstractmethod
    def deliver(self, dst: int, link_id: int, event: Any) -> None:
        """Send one event to the replica ``link_id`` in process ``dst`` (batched)."""

    @abc.abstractmethod
    def forward(self, owner: int, key: StreamKey, event: Any) -> None:
        """Publish ``event`` on ``key``, whose source ``owner`` keeps (batched)."""


class _Log:
    """The latest events of one stream in this process, read by cursors.

    ``buf`` is a ring of ``mask + 1`` slots (a power of two, at least the largest
    buffer of the subscribers); the event numbered ``seq`` is in ``buf[seq & mask]``
    while ``head - seq <= mask + 1``.
    """

    __slots__ = (
        "buf",
        "closed",
        "head",
        "key",
        "link_id",
        "lost",
        "mask",
        "nsubs",
        "owner",
        "ready",
        "remote",
        "waiters",
    )

    def __init__(self, key: StreamKey, cap: int, owner: int | None) -> None:
        size = _pow2(cap)
        self.key = key
        self.buf: list[Any] = [None] * size
        self.mask = size - 1
        self.head = 0
        self.waiters: list[asyncio.Future[None]] = []
        self.nsubs = 0
        #: Source side: process -> the link id its replica has for this stream.
        self.remote: dict[int, int] = {}
        #: Replica side: the process keeping the source, our link id, confirmation.
        self.owner = owner
        self.link_id = 0
        self.ready: asyncio.Future[None] | None = None
        self.lost = False
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
        return min(self._log.head - self._cursor, self._buffer)

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
                raise CallTimeout(
                    f"subscribing to {stream_name(self._log.key)} was not confirmed within "
                    f"{timeout:g}s (process {self._log.owner})"
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
    """The streams of one process: source logs, replica logs and their subscribers.

    Args:
        name: a label for logs and messages.
        timeout: seconds a subscription waits for the source process to confirm it.
    """

    def __init__(self, name: str, timeout: float = 30.0) -> None:
        self.name = name
        self.timeout = timeout
        #: Routes to other processes; None: every stream is kept here.
        self.link: StreamLink | None = None
        self._logs: dict[StreamKey, _Log] = {}
        self._replicas: dict[int, _Log] = {}
        self._homes: dict[str, int | None] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = -1
        self._closed = False

    def start(self) -> None:
        """Serve from the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._thread_id = get_ident()
        self._closed = False

    def _loop_(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            raise SystemStopping(f"{self.name} has not been started")
        return loop

    # -- publishing ------------------------------------------------------------------

    def publish(self, key: StreamKey, event: Any) -> None:
        """Append ``event`` to the stream ``key`` kept here (any thread; never blocks)."""
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
        """Publish ``event`` on the named topic, wherever its home is."""
        key = (TOPIC, topic)
        link = self.link
        if link is not None:
            try:
                home = self._homes[topic]
            except KeyError:
                home = self._homes[topic] = link.owner(key)
            if home is not None:
                if get_ident() != self._thread_id:
                    self._loop_().call_soon_threadsafe(link.forward, home, key, event)
                else:
                    link.forward(home, key, event)
                return
        self.publish(key, event)

    # -- subscribing -----------------------------------------------------------------

    def subscribe(self, key: StreamKey, buffer: int = DEFAULT_BUFFER) -> Subscription[Any]:
        """A new subscription to ``key`` (call in the event loop's thread).

        Raises:
            ValueError: ``buffer`` is not a positive int.
            SystemStopping: the system is not running.
        """
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"buffer must be a positive number of events, got {buffer!r}")
        loop = self._loop_()
        if self._closed:
            raise SystemStopping(f"{self.name} is stopping: no new subscriptions")
        if get_ident() != self._thread_id:
            raise RuntimeError(
                f"subscribe to {stream_name(key)} from the event loop's thread; "
                "a thread can consume events that a task forwards to it"
            )
        log = self._logs.get(key)
        if log is None:
            link = self.link
            owner = None if link is None else link.owner(key)
            log = self._logs[key] = _Log(key, buffer, owner)
            if owner is not None:
                assert link is not None
                log.link_id = next(self._ids)
                log.ready = loop.create_future()
                self._replicas[log.link_id] = log
                if link.reachable(owner):
                    link.subscribe(owner, log.link_id, key)
                else:
                    log.lost = True  # subscribed when the owner serves again
        else:
            log.grow(buffer)
        log.nsubs += 1
        return Subscription(self, log, buffer)

    def _leave(self, log: _Log) -> None:
        log.nsubs -= 1
        if log.nsubs <= 0 and not log.remote:
            self._drop(log)

    def _drop(self, log: _Log) -> None:
        if self._logs.get(log.key) is log:
            del self._logs[log.key]
        log.buf = [None]  # the events go now, not when the last subscription object does
        log.mask = 0
        log.head = 0
        if log.owner is not None and self._replicas.pop(log.link_id, None) is log:
            if not log.lost and not self._closed and self.link is not None:
                self.link.unsubscribe(log.owner, log.link_id, log.key)
            if log.ready is not None and not log.ready.done():
                log.ready.cancel()

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
        self._replicas.clear()

    def stats(self) -> tuple[int, int]:
        """``(streams, subscribers)``: logs kept here; subscriptions and subscribed processes."""
        subs = sum(log.nsubs + len(log.remote) for log in self._logs.values())
        return len(self._logs), subs

    # -- called by the link with what other processes send ----------------------------

    def add_remote(self, key: StreamKey, src: int, link_id: int) -> None:
        """Process ``src`` subscribes to ``key`` (kept here) as replica ``link_id``."""
        if self._closed:
            return
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = _Log(key, 1, None)
        log.remote[src] = link_id

    def remove_remote(self, key: StreamKey, src: int, link_id: int) -> None:
        """Process ``src`` unsubscribes its replica ``link_id`` of ``key``."""
        log = self._logs.get(key)
        if log is None or log.remote.get(src) != link_id:
            return
        del log.remote[src]
        if not log.remote and log.nsubs <= 0:
            self._drop(log)

    def forget_process(self, src: int) -> None:
        """Process ``src`` died: drop its subscriptions to sources kept here."""
        for log in list(self._logs.values()):
            if log.remote.pop(src, None) is not None and not log.remote and log.nsubs <= 0:
                self._drop(log)

    def receive(self, link_id: int, events: list[Any], missed: int = 0) -> None:
        """Events from the source of replica ``link_id`` (unknown ids are stale: dropped)."""
        log = self._replicas.get(link_id)
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

    def confirmed(self, link_id: int) -> None:
        """The source of replica ``link_id`` registered it."""
        log = self._replicas.get(link_id)
        if log is not None and log.ready is not None and not log.ready.done():
            log.ready.set_result(None)

    def owner_lost(self, owner: int) -> None:
        """Process ``owner`` died: its replicas here get a ``Lagged(0, "lost")`` notice."""
        for log in self._replicas.values():
            if log.owner == owner and not log.lost:
                log.lost = True
                log.append(Lagged(0, "lost"))

    def owner_back(self, owner: int) -> None:
        """Process ``owner`` serves again: renew the replicas it lost."""
        link = self.link
        if link is None:
            return
        for log in list(self._replicas.values()):
            if log.owner == owner and log.lost:
                log.lost = False
                link.subscribe(owner, log.link_id, log.key)
