"""The box's message fabric: shared-memory rings between processes, eventfd doorbells.

Every process of a pool (index 0 is the driver, 1..N the workers) has a ring to every
other process, all in one ``mmap`` of a ``memfd``: anonymous memory passed to the
workers as a file descriptor, so nothing is ever named in ``/dev/shm`` and nothing can
leak, whatever kills whom.

Batches. The first message a process sends in a pass of its event loop is written at
once (a lone call waits for nothing); what it sends to the same peer during the rest
of the pass travels as one ring frame (a msgpack array of messages, see
:mod:`rio.local.protocol`), written when the pass ends, when the batch reaches
``flush_bytes``, or right after the hub handled inbound messages (the replies to
them). So the ring write, the doorbell decision and the decode call are paid per
batch, not per message.

Wake-ups. Each process has an eventfd doorbell. After handling messages a
:class:`Hub` keeps polling its inbound rings for a short spin window (busy links make
no system call per message; once it has idled a while, an empty poll yields the core
with ``sched_yield``, so a spinning process does not starve a busy one when there are
more processes than cores); then it marks its inbound rings "consumer sleeping",
checks them once more and sleeps on the doorbell. A producer rings the doorbell only
when the ring says its consumer sleeps, once per batch. Python has no memory fence,
so that handshake can (rarely) miss on x86's store buffer: a sleeping hub therefore
also wakes on a timer and re-checks (see :mod:`rio.local.ring`).
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import time
from collections.abc import Callable
from typing import Any

import msgspec
from loguru import logger

from rio.local.protocol import BATCH_HEADER, Message, new_batch
from rio.local.ring import Ring, RingCorrupted, RingReader, RingWriter, ring_size

__all__ = ["Fabric", "Hub"]

#: Default bytes of each ring's data area.
DEFAULT_CAPACITY = 1 << 20
#: Default size at which a batch is written before its loop pass ends.
DEFAULT_FLUSH_BYTES = 2048

_encode_into = msgspec.msgpack.Encoder().encode_into
_decode_batch = msgspec.msgpack.Decoder(list[Message]).decode


class Fabric:
    """The shared rings of a box: one per ordered pair of ``nprocs`` processes.

    Args:
        nprocs: processes in the pool, the driver included.
        capacity: bytes per ring (a power of two).
        fd: an inherited memfd to attach to; None creates a new one.
    """

    def __init__(self, nprocs: int, capacity: int = DEFAULT_CAPACITY, fd: int | None = None):
        self.nprocs = nprocs
        self.capacity = capacity
        self._stride = ring_size(capacity)
        size = self._stride * nprocs * nprocs
        if fd is None:
            fd = os.memfd_create("rio-fabric", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
            self.owner = True
        else:
            self.owner = False
        self.fd = fd
        self._mm = mmap.mmap(fd, size)
        self._rings: dict[tuple[int, int], Ring] = {}

    def ring(self, src: int, dst: int) -> Ring:
        """The ring that ``src`` writes and ``dst`` reads."""
        r = self._rings.get((src, dst))
        if r is None:
            offset = (src * self.nprocs + dst) * self._stride
            r = self._rings[(src, dst)] = Ring(self._mm, offset, self.capacity)
        return r

    def reset_all(self) -> None:
        """Zero every ring (before any process uses them)."""
        for src in range(self.nprocs):
            for dst in range(self.nprocs):
                if src != dst:
                    self.ring(src, dst).reset()

    def close(self) -> None:
        """Unmap and close the memfd."""
        for r in self._rings.values():
            r.close()
        self._rings.clear()
        with contextlib.suppress(BufferError):
            self._mm.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


class Hub:
    """One process's end of the fabric.

    Reads its inbound rings and hands each batch to ``on_messages(src, messages)``;
    :meth:`send` adds a message to the batch for a peer. The first message of a loop
    pass is written at once; the ones after it go into the peer's ring as one frame,
    with at most one doorbell, when the pass ends (or at once when the batch reaches
    ``flush_bytes``): a process that sends many messages to a peer in one pass
    (pipelined calls, a fan-out, the replies to a ring full of calls) pays one ring
    write and one wake-up for all of them, and the peer decodes them in one call
    (see :mod:`rio.local.protocol`). Replies made while handling inbound messages
    are flushed as soon as those messages are handled, without waiting for the
    pass to end.

    Args:
        fabric: the shared rings.
        me: this process's index.
        doorbells: the eventfd of every process, by index.
        on_messages: called with every decoded batch, in order per sender; it must
            handle each message's failure itself (one bad message must not cost the
            rest of its batch).
        spin: seconds to keep polling after the last message before sleeping.
        recheck: seconds a sleeping hub waits before re-checking its rings anyway.
        flush_bytes: a batch this large is written at once, not at the end of the pass.
        yield_after: seconds of idle spinning after which each empty poll yields the
            core (a round trip's short wait never does).
        on_corrupt: called with a peer's index when the ring from it is found
            corrupted (after which it is no longer read): the owner ends that link,
            by restarting the peer or itself.
    """

    def __init__(
        self,
        fabric: Fabric,
        me: int,
        doorbells: list[int],
        on_messages: Callable[[int, list[Message]], None],
        *,
        spin: float = 0.0002,
        recheck: float = 0.02,
        flush_bytes: int = DEFAULT_FLUSH_BYTES,
        yield_after: float = 0.00005,
        on_corrupt: Callable[[int], None] | None = None,
    ) -> None:
        self.fabric = fabric
        self.me = me
        self.doorbells = doorbells
        self.on_messages = on_messages
        self.on_corrupt = on_corrupt
        self.spin = spin
        self.recheck = recheck
        self.flush_bytes = flush_bytes
        self.yield_after = yield_after
        peers = [p for p in range(fabric.nprocs) if p != me]
        self._writers: dict[int, RingWriter] = {p: RingWriter(fabric.ring(me, p)) for p in peers}
        self._readers: list[tuple[int, RingReader]] = [
            (p, RingReader(fabric.ring(p, me))) for p in peers
        ]
        # The batch being built for each peer (by index; our own slot stays empty),
        # how many messages it holds, and the peers whose batch may be non-empty.
        self._bufs: list[bytearray] = [new_batch() for _ in range(fabric.nprocs)]
        self._counts: list[int] = [0] * fabric.nprocs
        self._dirty: list[int] = []
        self._flush_scheduled = False
        self._blocked: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poll_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this hub serves (set by :meth:`start`)."""
        assert self._loop is not None, "Hub.start() has not run"
        return self._loop

    def start(self) -> None:
        """Start reading (call in the process's event loop)."""
        loop = self._loop = asyncio.get_running_loop()
        loop.add_reader(self.doorbells[self.me], self._on_doorbell)
        self._last = time.perf_counter()
        self._schedule_poll()

    def close(self) -> None:
        """Write what is batched, then stop reading; the fabric is closed by its owner."""
        if not self._closed:
            self._flush_all()
        self._closed = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.doorbells[self.me])
        if self._timer is not None:
            self._timer.cancel()

    # -- sending -----------------------------------------------------------------------

    def send(self, dst: int, msg: Any) -> int:
        """Add ``msg`` (a protocol struct or its tuple) to the batch for process ``dst``.

        It arrives whole and in order. Returns its size, encoded. A value that cannot
        be encoded raises here (``TypeError``, ``msgspec.EncodeError``,
        ``OverflowError``...) and leaves the batch as it was.
        """
        buf = self._bufs[dst]
        mark = len(buf)
        try:
            _encode_into(msg, buf, -1)
        except BaseException:
            del buf[mark:]
            raise
        size = len(buf) - mark
        # What _added() does, inlined: this is the hot path of every message.
        count = self._counts[dst] = self._counts[dst] + 1
        if count == 1:
            self._dirty.append(dst)
            if not self._flush_scheduled:
                self._start_pass(dst)
                return size
        if len(buf) >= self.flush_bytes:
            self._flush(dst)
        return size

    def send_encoded(self, dst: int, data: bytes) -> None:
        """Like :meth:`send`, for one message already encoded (with ``protocol.encode``)."""
        buf = self._bufs[dst]
        buf += data
        self._added(dst, buf)

    def _added(self, dst: int, buf: bytearray) -> None:
        count = self._counts[dst] = self._counts[dst] + 1
        if count == 1:
            self._dirty.append(dst)
            if not self._flush_scheduled:
                self._start_pass(dst)
                return
        if len(buf) >= self.flush_bytes:
            self._flush(dst)

    def _start_pass(self, dst: int) -> None:
        """Write the first message of a loop pass at once, alone: a lone call waits for nothing.

        What follows in the same pass is batched until the pass ends.
        """
        self._flush_scheduled = True
        assert self._loop is not None
        self._loop.call_soon(self._flush_soon)
        self._flush(dst)

    def flush(self) -> None:
        """Write every batch now (they are written at the end of the loop pass anyway)."""
        self._flush_all()

    def pending_bytes(self, dst: int) -> int:
        """Bytes queued for ``dst`` that did not fit in its ring yet."""
        return self._writers[dst].pending_bytes

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        if self._dirty and not self._closed:
            self._flush_all()

    def _flush_all(self) -> None:
        dirty, self._dirty = self._dirty, []
        for dst in dirty:
            self._flush(dst)

    def _flush(self, dst: int) -> None:
        """Write the batch for ``dst`` as one frame; ring its doorbell if it sleeps."""
        count = self._counts[dst]
        if not count:
            return
        buf = self._bufs[dst]
        buf[1:5] = count.to_bytes(4, "big")  # seal: the message count
        self._counts[dst] = 0
        writer = self._writers[dst]
        ok = writer.send(buf)  # copies buf (into the ring, or aside when it must wait)
        del buf[5:]
        ring = writer.ring
        if not ok:
            self._blocked.add(dst)
            ring.producer_waiting = True
            if writer.flush():  # the reader freed space meanwhile
                self._blocked.discard(dst)
                ring.producer_waiting = False
        if ring.consumer_sleeping:
            self._ring(dst)

    def _ring(self, dst: int) -> None:
        with contextlib.suppress(OSError):
            os.eventfd_write(self.doorbells[dst], 1)

    # -- receiving ---------------------------------------------------------------------

    def _schedule_poll(self) -> None:
        if not self._poll_scheduled and not self._closed:
            self._poll_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._poll)

    def _on_doorbell(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.eventfd_read(self.doorbells[self.me])
        self._wake()

    def _wake(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, reader in self._readers:
            reader.ring.consumer_sleeping = False
        self._schedule_poll()

    def _poll(self) -> None:
        self._poll_scheduled = False
        if self._closed:
            return
        got = False
        on_messages = self.on_messages
        readers = self._readers
        for src, reader in readers:
            if self._readers is not readers:
                # A message just handled reset a dead peer's rings (reset_peer): the
                # readers left in this pass may be stale, and a stale reader must not
                # publish its old head into a zeroed ring. The next pass reads afresh.
                self._schedule_poll()
                break
            if reader.empty():
                continue
            try:
                frames = reader.read()
            except RingCorrupted as e:
                self._corrupted(src, e)
                continue
            ring = reader.ring
            if ring.producer_waiting:
                ring.producer_waiting = False
                self._ring(src)
            got = True
            for frame in frames:
                try:
                    msgs = _decode_batch(frame)
                except msgspec.DecodeError as e:
                    logger.error(
                        "process {}: unreadable batch of {} bytes from process {}: {}",
                        self.me,
                        len(frame),
                        src,
                        e,
                    )
                    continue
                try:
                    on_messages(src, msgs)
                except Exception:  # the owner isolates messages; this is the last resort
                    logger.opt(exception=True).error(
                        "process {}: handling messages from process {} failed", self.me, src
                    )
        if self._dirty:  # the answers to what was just handled go out now, as one batch each
            self._flush_all()
        if self._blocked:
            self._flush_blocked()
        # perf_counter, not loop.time(): uvloop's clock ticks in milliseconds.
        now = time.perf_counter()
        if got:
            self._last = now
        if now - self._last < self.spin or self._blocked:
            if now - self._last > self.yield_after:
                os.sched_yield()  # a long idle spin: let a process waiting for this core run
            self._schedule_poll()
        else:
            self._sleep()

    def _corrupted(self, src: int, e: RingCorrupted) -> None:
        """The ring from ``src`` cannot be read any more: stop reading it, and say so."""
        self._readers = [(p, r) for p, r in self._readers if p != src]
        logger.critical("process {}: the ring from process {} is corrupted: {}", self.me, src, e)
        if self.on_corrupt is not None:
            self.on_corrupt(src)

    def _flush_blocked(self) -> None:
        for dst in list(self._blocked):
            writer = self._writers[dst]
            if writer.flush():
                self._blocked.discard(dst)
                writer.ring.producer_waiting = False
            if writer.ring.consumer_sleeping:
                self._ring(dst)

    def _sleep(self) -> None:
        for _, reader in self._readers:
            reader.ring.consumer_sleeping = True
        if any(not reader.empty() for _, reader in self._readers):
            self._wake()
            return
        assert self._loop is not None
        self._timer = self._loop.call_later(self.recheck, self._wake)

    # -- failures ----------------------------------------------------------------------

    def reset_peer(self, peer: int) -> None:
        """Forget everything in flight with a dead ``peer``: zero both rings with it.

        Only call once ``peer`` is dead and before its replacement starts.
        """
        out = self.fabric.ring(self.me, peer)
        inn = self.fabric.ring(peer, self.me)
        out.reset()
        inn.reset()
        self._writers[peer] = RingWriter(out)
        # A fresh reader (the ring from a peer found corrupted was dropped: read again).
        readers = [(p, r) for p, r in self._readers if p != peer]
        self._readers = sorted([*readers, (peer, RingReader(inn))], key=lambda pr: pr[0])
        self._blocked.discard(peer)
        del self._bufs[peer][len(BATCH_HEADER) :]
        self._counts[peer] = 0
