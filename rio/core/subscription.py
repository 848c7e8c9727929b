"""A subscription and the log of events it reads, with its lag notices.

The events of a stream kept in one process live in a :class:`Log`: a ring of the
latest events that every subscription in the process reads with a cursor of its
own, so an event is stored once however many subscribe, and publishing is a store
into a list. A subscription more than its ``buffer`` behind skips the oldest events
and yields a :class:`Lagged` notice saying how many it missed. :mod:`rio.core.streams`
keeps the logs of a process and registers them with other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from _thread import get_ident
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from rio.core.errors import CallTimeout

if TYPE_CHECKING:
    from rio.core.streams import StreamRelay, Streams

__all__ = [
    "DEFAULT_BUFFER",
    "TOPIC",
    "Lagged",
    "Log",
    "StreamKey",
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
        reason: ``"slow"``: this subscriber (or its process, or the connection from
            the node publishing) fell more than its buffer behind; ``"lost"``: a
            worker or cluster node where the stream is published died or could not
            be reached, so events in flight from it may be lost; the subscription
            was renewed with its replacement (or with the node, once it answers).

    Example::

        async for event in table.subscribe():
            if isinstance(event, rio.Lagged):
                print(f"missed {event.missed} events")
                continue
            show(event)
    """

    missed: int
    reason: str = "slow"


class Log:
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
        "relays",
        "remote",
        "uplinked",
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
        #: Subscribers on other cluster nodes, fed what this node publishes.
        self.relays: list[StreamRelay] = []
        #: The processes this log registered with (for its local subscribers and
        #: relays), under ``link_id``; those that died since.
        self.peers = peers
        self.link_id = 0
        self.lost: set[int] = set()
        #: Registered with the other cluster nodes too (for its local subscribers).
        self.uplinked = False
        #: Processes (ints) and cluster members (member ids) yet to confirm.
        self.awaiting: set[int | str] = set(peers)
        self.ready: asyncio.Future[None] | None = None
        self.closed = False

    def grow(self, cap: int) -> None:
        """Keep at least ``cap`` events (a bigger ring, the buffered events moved over)."""
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
        """Add one event (or notice) and wake the subscriptions waiting for one."""
        self.buf[self.head & self.mask] = item
        self.head += 1
        if self.waiters:
            self.wake()

    def wake(self) -> None:
        """Wake every subscription waiting for an event."""
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

    def __init__(self, hub: Streams, log: Log, buffer: int) -> None:
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
                waiting = ", ".join(
                    f"process {w}" if isinstance(w, int) else f"member {w}"
                    for w in sorted(self._log.awaiting, key=str)
                )
                raise CallTimeout(
                    f"subscribing to {stream_name(self._log.key)} was not confirmed within "
                    f"{timeout:g}s (by {waiting})"
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
