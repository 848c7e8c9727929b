"""Single-producer single-consumer byte rings in shared memory.

The local runtime gives every (producer, consumer) pair of processes one :class:`Ring`
inside a shared ``mmap`` (of a ``memfd``). Exactly one :class:`RingWriter` writes
whole messages into it and exactly one :class:`RingReader` takes them out, in order.
This module is pure and synchronous: no processes, no asyncio, no wake-ups. It only
keeps the two flags a wake-up protocol needs (:attr:`Ring.consumer_sleeping`,
:attr:`Ring.producer_waiting`); the caller owns the doorbells.

Example::

    import mmap, os
    from rio.local.ring import Ring, RingReader, RingWriter, ring_size

    fd = os.memfd_create("rio-rings")
    os.ftruncate(fd, ring_size(65536))
    buf = mmap.mmap(fd, ring_size(65536))
    ring = Ring(buf, 0, 65536)
    ring.reset()
    writer, reader = RingWriter(ring), RingReader(ring)
    writer.send(b"hello")
    assert reader.read() == [b"hello"]

Layout
------
A ring is ``HEADER_SIZE + capacity`` bytes starting at an 8-aligned offset (64-aligned
keeps each field on its own cache line; :func:`ring_size` is a multiple of 64, so
rings laid end to end stay aligned)::

    byte   0  u64 tail               written by the producer only
    byte  64  u64 head               written by the consumer only
    byte 128  u32 producer_waiting   written by the producer (consumer reads it)
    byte 192  u32 consumer_sleeping  written by the consumer (producer reads it)
    byte 256  data[capacity]

``head`` and ``tail`` are monotonically increasing u64 byte counters (a u64 does not
wrap in the life of a machine); a counter's position in ``data`` is
``counter & (capacity - 1)``. ``tail - head`` bytes are readable; the rest is free.

Frames
------
Every frame starts 8-aligned with a u32 payload length and a u32 kind (native byte
order), then the payload, then padding to the next multiple of 8. A message of at
most ``max_frame`` bytes is one ``WHOLE`` frame; a larger one is split into
``FIRST``, ``MIDDLE``... and ``LAST`` frames that the reader joins back. A frame
never straddles the end of ``data``: when the next frame does not fit before the end,
the writer puts a ``WRAP`` frame there (covering the rest) and continues at 0.
``max_frame`` is at most ``capacity // 2 - 8``, so a frame always fits once the
reader has caught up, and a message of any size (larger than the whole ring, too)
gets through as long as the reader keeps reading and the writer keeps flushing.

Memory ordering
---------------
There are no locks and no atomic instructions; correctness rests on x86-64's memory
model (TSO) and on how CPython performs these accesses:

* ``head`` and ``tail`` are read and written through a native-format ``"Q"`` cast
  of a memoryview: CPython packs and unpacks native items with an 8-byte ``memcpy``
  that compiles to one ``mov``, and an aligned 8-byte ``mov`` is atomic on x86-64,
  so the other side never sees half an index. (Explicit-order ``struct`` formats
  such as ``"<Q"`` go through CPython's generic byte-wise converters instead: never
  use them for the indices.)
* The producer writes the payload bytes (and the frame header) first and only then
  stores ``tail``. x86-64 does not reorder a store with earlier stores, so a
  consumer that sees the new ``tail`` also sees the bytes before it.
* The consumer loads ``tail``, then reads the payload, then stores ``head``. Loads
  are not reordered with other loads (so the payload read is not older than the
  ``tail`` load), and a store is not reordered with earlier loads (so the producer
  cannot overwrite bytes the consumer is still copying out).
* Between these Python statements lie many C function calls, so the compiler does
  not move one access across another either.

The one place where this does **not** hold: a store followed by a load of a
*different* location may be reordered (store buffering). The sleep handshake is
exactly that shape: the consumer stores ``consumer_sleeping = 1`` then loads
``tail``, while the producer stores ``tail`` then loads ``consumer_sleeping``; both
may read the old value, the producer skips the doorbell and the consumer sleeps on a
non-empty ring. Python has no fence to close that window, so the wake-up protocol
(in :mod:`rio.local.transport`, not here) sleeps with a timeout and re-checks the
ring when it expires. The same goes for ``producer_waiting``.
"""

from __future__ import annotations

import mmap
from collections import deque
from collections.abc import Iterable

__all__ = [
    "FRAME_HEADER",
    "HEADER_SIZE",
    "MIN_CAPACITY",
    "Ring",
    "RingCorrupted",
    "RingReader",
    "RingWriter",
    "ring_size",
]

#: Bytes of a ring's header: four 64-byte cache lines (tail, head, two flags).
HEADER_SIZE = 256
#: The smallest capacity a ring may have.
MIN_CAPACITY = 4096
#: Bytes of a frame header: u32 payload length + u32 kind.
FRAME_HEADER = 8

# Header fields, as item indices into the "Q" and "I" casts of the header.
_TAIL = 0  # byte 0
_HEAD = 8  # byte 64
_PRODUCER_WAITING = 32  # byte 128
_CONSUMER_SLEEPING = 48  # byte 192

# Frame kinds. A frame header read as one native u64 is ``length | kind << 32``.
_WHOLE = 1
_FIRST = 2
_MIDDLE = 3
_LAST = 4
_WRAP = 5
_KIND_NAMES = {_WHOLE: "WHOLE", _FIRST: "FIRST", _MIDDLE: "MIDDLE", _LAST: "LAST", _WRAP: "WRAP"}
_WHOLE_TAG = _WHOLE << 32
_LEN_MASK = 0xFFFF_FFFF


class RingCorrupted(RuntimeError):
    """A ring's bytes break the frame format: a bug, or a foreign write into the ring."""


def ring_size(capacity: int) -> int:
    """Bytes taken by a ring of ``capacity`` data bytes (header included).

    ``capacity`` must be a power of two, at least :data:`MIN_CAPACITY`.

    Example::

        ring_size(4096)  # 4352
    """
    if not isinstance(capacity, int) or capacity < MIN_CAPACITY or capacity & (capacity - 1):
        raise ValueError(
            f"ring capacity must be a power of two >= {MIN_CAPACITY}, got {capacity!r}"
        )
    return HEADER_SIZE + capacity


class Ring:
    """A view over one ring inside a shared buffer: ``buf[offset : offset + ring_size(capacity)]``.

    ``buf`` is a writable ``mmap`` (the fast path for readers) or any writable
    C-contiguous buffer given as a memoryview; ``offset`` must be a multiple of 8
    (of 64 to keep header fields on their own cache lines). A new mapping holds
    zeros, which is an empty ring; :meth:`reset` empties a used one. Call
    :meth:`close` before closing the ``mmap``: the views pin it.

    Example::

        ring = Ring(buf, ring_size(4096), 4096)  # the second ring in buf
        ring.consumer_sleeping = True
    """

    __slots__ = (
        "_data",
        "_data_u64",
        "_header",
        "_mmap",
        "_u32",
        "_u64",
        "_view",
        "capacity",
        "offset",
    )

    def __init__(self, buf: memoryview | mmap.mmap, offset: int, capacity: int) -> None:
        size = ring_size(capacity)
        view = memoryview(buf)
        nbytes = view.nbytes
        problem = ""
        if view.readonly:
            problem = "a ring needs a writable buffer"
        elif not view.c_contiguous:
            problem = "a ring needs a C-contiguous buffer"
        elif offset < 0 or offset % 8:
            problem = f"ring offset must be a non-negative multiple of 8, got {offset}"
        elif offset + size > nbytes:
            problem = (
                f"a ring of capacity {capacity} at offset {offset} needs {offset + size} "
                f"bytes, the buffer has {nbytes}"
            )
        if problem:
            view.release()
            raise ValueError(problem)
        if view.format != "B" or view.ndim != 1:
            flat = view.cast("B")
            view.release()
            view = flat
        #: Data bytes of the ring (a power of two).
        self.capacity = capacity
        #: Where the ring starts in the buffer.
        self.offset = offset
        self._mmap = buf if isinstance(buf, mmap.mmap) else None
        self._view = view
        self._header = view[offset : offset + HEADER_SIZE]
        self._u64 = self._header.cast("Q")
        self._u32 = self._header.cast("I")
        self._data = view[offset + HEADER_SIZE : offset + size]
        self._data_u64 = self._data.cast("Q")

    def reset(self) -> None:
        """Empty the ring: head = tail = 0, both flags 0.

        Only while neither side runs; make a new writer and reader afterwards (they
        cache the indices).
        """
        u64 = self._u64
        u64[_TAIL] = 0
        u64[_HEAD] = 0
        self._u32[_PRODUCER_WAITING] = 0
        self._u32[_CONSUMER_SLEEPING] = 0

    def close(self) -> None:
        """Release this ring's views of the buffer; the writer and reader stop working.

        Closing twice is harmless.
        """
        for v in (self._data_u64, self._data, self._u32, self._u64, self._header, self._view):
            v.release()
        self._mmap = None

    @property
    def head(self) -> int:
        """The consumer's counter: bytes taken out so far."""
        return int(self._u64[_HEAD])

    @property
    def tail(self) -> int:
        """The producer's counter: bytes published so far."""
        return int(self._u64[_TAIL])

    @property
    def consumer_sleeping(self) -> bool:
        """Set by the consumer before it blocks on its doorbell; the producer rings it then."""
        return bool(self._u32[_CONSUMER_SLEEPING])

    @consumer_sleeping.setter
    def consumer_sleeping(self, value: bool) -> None:
        self._u32[_CONSUMER_SLEEPING] = 1 if value else 0

    @property
    def producer_waiting(self) -> bool:
        """Set by the producer while it waits for space; the consumer rings it after reading."""
        return bool(self._u32[_PRODUCER_WAITING])

    @producer_waiting.setter
    def producer_waiting(self, value: bool) -> None:
        self._u32[_PRODUCER_WAITING] = 1 if value else 0

    def __repr__(self) -> str:
        try:
            state = (
                f"head={self.head} tail={self.tail} consumer_sleeping={self.consumer_sleeping} "
                f"producer_waiting={self.producer_waiting}"
            )
        except ValueError:  # the views were released
            state = "closed"
        return f"<Ring offset={self.offset} capacity={self.capacity} {state}>"


def _byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    """A flat byte view of any bytes-like object (a copy if it is not C-contiguous)."""
    view = memoryview(data)
    if view.c_contiguous:
        return view.cast("B") if view.format != "B" or view.ndim != 1 else view
    return memoryview(view.tobytes())


class RingWriter:
    """The producer side of a ring; exactly one per ring, used from one thread.

    :meth:`send` writes what fits now and keeps the rest pending in this process;
    :meth:`flush` writes more of it once the reader made room. ``max_frame`` bounds
    a frame's payload (default ``capacity // 4``, at most ``capacity // 2 - 8``);
    longer messages go in several frames.

    Example::

        writer = RingWriter(ring)
        if not writer.send(payload):
            ring.producer_waiting = True  # then sleep on the doorbell and flush() again
    """

    __slots__ = (
        "_cap",
        "_data",
        "_data_u64",
        "_fast_max",
        "_limit",
        "_mask",
        "_max",
        "_pending",
        "_pending_bytes",
        "_ring",
        "_tail",
        "_u64",
    )

    def __init__(self, ring: Ring, max_frame: int | None = None) -> None:
        cap = ring.capacity
        if max_frame is None:
            max_frame = cap // 4
        if not 1 <= max_frame <= cap // 2 - FRAME_HEADER:
            raise ValueError(
                f"max_frame must be between 1 and {cap // 2 - FRAME_HEADER} for a ring "
                f"of capacity {cap}, got {max_frame}"
            )
        self._ring = ring
        self._cap = cap
        self._mask = cap - 1
        self._max = max_frame
        # send()'s fast path takes messages up to this size: max_frame, or -1 while
        # something is pending (a new message must queue behind it).
        self._fast_max = max_frame
        self._data = ring._data
        self._data_u64 = ring._data_u64
        self._u64 = ring._u64
        self._tail: int = ring._u64[_TAIL]
        # head + capacity, from a cached head: the tail may grow up to it. Reloaded
        # from the ring only when a frame seems not to fit.
        self._limit: int = ring._u64[_HEAD] + cap
        self._pending: deque[list[memoryview | int]] = deque()  # [view, bytes written]
        self._pending_bytes = 0

    @property
    def ring(self) -> Ring:
        """The ring written to."""
        return self._ring

    @property
    def max_frame(self) -> int:
        """The largest payload of one frame."""
        return self._max

    @property
    def pending_bytes(self) -> int:
        """Payload bytes accepted by :meth:`send` but not in the ring yet.

        A pending empty message counts 0: the return value of :meth:`send` and
        :meth:`flush` is what says whether anything is pending.
        """
        return self._pending_bytes

    def send(self, data: bytes | bytearray | memoryview) -> bool:
        """Enqueue one message; True when it and everything before it is in the ring.

        On False the rest stays pending here (copied if it was mutable: the caller
        may reuse its buffer at once either way); call :meth:`flush` again after
        the reader made room.
        """
        n = len(data)
        # The hot path: bytes (or a bytearray, copied into the ring right here), nothing
        # pending, one WHOLE frame before the end of the ring.
        cls = data.__class__
        if (cls is bytes or cls is bytearray) and n <= self._fast_max:
            tail = self._tail
            size = (n + 15) & -8
            pos = tail & self._mask
            if pos + size <= self._cap and (
                tail + size <= self._limit or tail + size <= self._reload_limit()
            ):
                self._data_u64[pos >> 3] = n | _WHOLE_TAG
                self._data[pos + 8 : pos + 8 + n] = data
                self._tail = tail = tail + size
                self._u64[_TAIL] = tail  # publish: after the payload
                return True
        self._enqueue(data)
        return self._drain(False)

    def send_many(self, items: Iterable[bytes | bytearray | memoryview]) -> bool:
        """Enqueue several messages with one publish of ``tail``; like :meth:`send`."""
        fast_max = self._fast_max
        mask = self._mask
        cap = self._cap
        data_u64 = self._data_u64
        region = self._data
        tail = start = self._tail
        it = iter(items)
        for data in it:
            n = len(data)
            size = (n + 15) & -8
            pos = tail & mask
            if (
                data.__class__ is bytes
                and n <= fast_max
                and pos + size <= cap
                and (tail + size <= self._limit or tail + size <= self._reload_limit())
            ):
                data_u64[pos >> 3] = n | _WHOLE_TAG
                region[pos + 8 : pos + 8 + n] = data
                tail += size
                continue
            # Something to split, wrap or wait for: queue it and the rest, then drain.
            self._tail = tail
            self._enqueue(data)
            for rest in it:
                self._enqueue(rest)
            return self._drain(tail != start)
        if tail != start:
            self._tail = tail
            self._u64[_TAIL] = tail  # publish: after every frame of the batch
        return not self._pending

    def flush(self) -> bool:
        """Write pending frames that fit now; True when nothing remains pending."""
        return not self._pending or self._drain(False)

    def _reload_limit(self) -> int:
        self._limit = limit = self._u64[_HEAD] + self._cap
        return limit

    def _enqueue(self, data: bytes | bytearray | memoryview) -> None:
        # Keep a private copy of mutable data: the caller may reuse its buffer.
        view = memoryview(data if data.__class__ is bytes else _byte_view(data).tobytes())
        self._pending.append([view, 0])
        self._pending_bytes += len(view)
        self._fast_max = -1

    def _drain(self, dirty: bool) -> bool:
        """Write pending chunks while they fit; publish ``tail`` once if anything was written."""
        pending = self._pending
        cap = self._cap
        mask = self._mask
        max_frame = self._max
        data_u64 = self._data_u64
        region = self._data
        tail = self._tail
        limit = self._limit
        while pending:
            item = pending[0]
            view: memoryview = item[0]  # type: ignore[assignment]
            done: int = item[1]  # type: ignore[assignment]
            rest = len(view) - done
            if rest <= max_frame:
                n = rest
                kind = _WHOLE if done == 0 else _LAST
            else:
                n = max_frame
                kind = _FIRST if done == 0 else _MIDDLE
            size = (n + 15) & -8
            pos = tail & mask
            skip = cap - pos if pos + size > cap else 0
            if tail + skip + size > limit:
                limit = self._reload_limit()
                if tail + skip + size > limit:
                    break
            if skip:
                data_u64[pos >> 3] = (skip - FRAME_HEADER) | _WRAP << 32
                tail += skip
                pos = 0
            data_u64[pos >> 3] = n | kind << 32
            region[pos + 8 : pos + 8 + n] = view[done : done + n]
            tail += size
            self._pending_bytes -= n
            if kind in (_WHOLE, _LAST):
                pending.popleft()
            else:
                item[1] = done + n
            dirty = True
        if dirty:
            self._tail = tail
            self._u64[_TAIL] = tail  # publish: after every frame of the batch
        if pending:
            return False
        self._fast_max = max_frame
        return True


class RingReader:
    """The consumer side of a ring; exactly one per ring, used from one thread.

    Example::

        reader = RingReader(ring)
        for message in reader.read():
            handle(message)
    """

    __slots__ = ("_cap", "_consts", "_data", "_head", "_mask", "_partial", "_ring", "_u64")

    def __init__(self, ring: Ring) -> None:
        self._ring = ring
        self._cap = ring.capacity
        self._mask = ring.capacity - 1
        self._data = ring._data
        self._u64 = ring._u64
        self._head: int = ring._u64[_HEAD]
        self._partial: bytearray | None = None  # a chunked message being joined
        # Slicing the mmap itself yields bytes in one step; a memoryview slice needs
        # .tobytes() too. ``base + pos`` is where a frame's payload starts in either.
        mm = ring._mmap
        base = ring.offset + HEADER_SIZE + FRAME_HEADER if mm is not None else FRAME_HEADER
        self._consts = (self._mask, ring._data_u64, mm, base, ring._data)

    @property
    def ring(self) -> Ring:
        """The ring read from."""
        return self._ring

    def empty(self) -> bool:
        """True when the ring holds no unread bytes (nothing was published since the last read)."""
        return self._head == self._u64[_TAIL]

    def read(self, limit: int | None = None) -> list[bytes]:
        """Every complete message readable now (at most ``limit``), in order.

        Chunks of a long message are joined; a message whose last chunk is not in
        the ring yet is kept here and returned by a later call. ``head`` is
        published once, at the end.
        """
        if limit is None:
            left = -1
        elif limit > 0:
            left = limit
        else:
            raise ValueError(f"limit must be at least 1, got {limit}")
        head = self._head
        tail: int = self._u64[_TAIL]
        if head == tail:
            return []
        mask, data_u64, mm, base, region = self._consts
        partial = self._partial
        out: list[bytes] = []
        while head < tail:
            pos = head & mask
            word: int = data_u64[pos >> 3]
            n = word & _LEN_MASK
            size = (n + 15) & -8
            if word >> 32 == _WHOLE and partial is None and head + size <= tail:
                start = base + pos
                if mm is not None:
                    out.append(mm[start : start + n])
                else:
                    out.append(region[start : start + n].tobytes())
                head += size
                left -= 1
                if left:
                    continue
                break
            head, partial, done = self._slow_frame(word, head, tail, partial)
            self._partial = partial
            if done is not None:
                out.append(done)
                left -= 1
                if not left:
                    break
        self._head = head
        self._u64[_HEAD] = head  # publish: after the payloads were copied out
        return out

    def _slow_frame(
        self, word: int, head: int, tail: int, partial: bytearray | None
    ) -> tuple[int, bytearray | None, bytes | None]:
        """Handle a WRAP or chunk frame: the new head, partial message and a finished one."""
        kind = word >> 32
        n = word & _LEN_MASK
        pos = head & self._mask
        if kind == _WRAP:
            size = self._cap - pos
            if n != size - FRAME_HEADER or head + size > tail:
                raise self._corrupted(head, tail, word)
            return head + size, partial, None
        size = (n + 15) & -8
        if head + size > tail or pos + size > self._cap:
            raise self._corrupted(head, tail, word)
        chunk = self._data[pos + 8 : pos + 8 + n]
        if kind == _FIRST and partial is None:
            return head + size, bytearray(chunk), None
        if kind == _MIDDLE and partial is not None:
            partial += chunk
            return head + size, partial, None
        if kind == _LAST and partial is not None:
            partial += chunk
            return head + size, None, bytes(partial)
        raise self._corrupted(head, tail, word, partial is not None)

    def _corrupted(self, head: int, tail: int, word: int, joining: bool = False) -> RingCorrupted:
        kind = _KIND_NAMES.get(word >> 32, f"unknown kind {word >> 32}")
        state = "while joining a chunked message" if joining else "outside a chunked message"
        return RingCorrupted(
            f"bad frame at head={head} (tail={tail}, capacity={self._cap}): {kind} of "
            f"{word & _LEN_MASK} bytes {state}; the ring was written by something other "
            f"than its RingWriter, or reset while in use"
        )
