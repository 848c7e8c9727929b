"""Baselines of this machine for the local runtime: path ``baseline``, between processes.

Each workload is a sequential round trip of a small msgpack message between this
process and one echo child, with plain blocking calls (no asyncio: these measure the
machine, not an event loop), so the ``workers`` path's figures can be read against
what two processes can do at all:

* ``pipe-seq``: a ``multiprocessing.Pipe`` (a socketpair) to a spawned child.
* ``shm-seq``: two :class:`~rio.local.ring.Ring` s in a ``memfd`` mapping, one each
  way; each side sleeps on its own eventfd when its ring is empty, and the other
  side rings that eventfd only when the sleeping flag is set.
* ``shm-spin-seq``: the same rings with both sides spinning: the upper bound.

Children are always ended (stop message, then kill after a grace period); the shared
memory is an anonymous ``memfd`` passed by descriptor, so nothing lands in /dev/shm.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import msgspec

from rio.bench.core import Measurement, workload
from rio.local.ring import Ring, RingReader, RingWriter, ring_size

__all__ = ["baseline_pipe_seq", "baseline_shm_seq", "baseline_shm_spin_seq", "shm_echo_main"]

perf = time.perf_counter
#: Data bytes of each ring in the shm workloads.
SHM_CAPACITY = 65536
#: How long a sleeper blocks before it re-checks its ring (the store-load race; see
#: :mod:`rio.local.ring`) and whether its peer still lives.
SLEEP_TIMEOUT_MS = 5
#: Empty polls (about 0.1 µs each) before a spinner yields its core.
SPIN_YIELD_EVERY = 1 << 10
#: Empty polls between liveness checks while spinning (a multiple of the above).
SPIN_CHECK_EVERY = 1 << 16
#: Seconds a child gets to exit after the stop message before it is killed.
GRACE_S = 5.0
#: The message that tells an echo child to exit.
STOP = b""


_ENCODER = msgspec.msgpack.Encoder()
_REQUESTS = msgspec.msgpack.Decoder(tuple[int, str, int])
_REPLIES = msgspec.msgpack.Decoder(tuple[int, int])


def _request(seq: int) -> bytes:
    """A small request: sequence number, method name, argument."""
    return _ENCODER.encode((seq, "incr", 1))


def _answer(value: int, raw: bytes) -> tuple[int, bytes]:
    """The child's work per request: decode it, add its argument, answer (seq, value)."""
    seq, _method, by = _REQUESTS.decode(raw)
    value += by
    return value, _ENCODER.encode((seq, value))


def _check_reply(raw: bytes, seq: int) -> None:
    reply = _REPLIES.decode(raw)
    if reply[0] != seq:
        raise RuntimeError(f"the echo child answered {reply!r} to request {seq}")


def _round_trips(n: int, call: Callable[[int], None]) -> Measurement:
    """Run ``call(seq)`` n times, timing every 8th like the in-process ``_seq``."""
    lat: list[float] = []
    append = lat.append
    start = perf()
    for i in range(n):
        if i & 7:
            call(i)
        else:
            t0 = perf()
            call(i)
            append(perf() - t0)
    return Measurement(n, perf() - start, lat)


# ---------------------------------------------------------------- pipe-seq


def _pipe_echo(conn: Connection) -> None:
    """The pipe child: answer every request until the stop message or EOF."""
    value = 0
    try:
        while (raw := conn.recv_bytes()) != STOP:
            value, reply = _answer(value, raw)
            conn.send_bytes(reply)
    except EOFError:
        pass
    finally:
        conn.close()


@workload("baseline", "pipe-seq", n=50_000, quick_n=5_000)
async def baseline_pipe_seq(n: int) -> Measurement:
    """A multiprocessing Pipe round trip of a small msgpack message to a spawned child."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_pipe_echo, args=(theirs,), name="rio-bench-pipe-echo", daemon=True)
    child.start()
    theirs.close()

    def call(seq: int) -> None:
        ours.send_bytes(_request(seq))
        _check_reply(ours.recv_bytes(), seq)

    try:
        call(-1)  # the child is up and imported: start the clock after this
        return _round_trips(n, call)
    finally:
        with contextlib.suppress(OSError):
            ours.send_bytes(STOP)
        child.join(GRACE_S)
        if child.is_alive():
            child.kill()
            child.join()
        ours.close()
        child.close()


# ---------------------------------------------------------------- shm-seq, shm-spin-seq


class _Endpoint:
    """One side of the ring pair: read one ring, write the other, doorbells both ways."""

    def __init__(
        self,
        mm: mmap.mmap,
        inbound: int,
        own_bell: int,
        peer_bell: int,
        alive: Callable[[], bool],
    ) -> None:
        size = ring_size(SHM_CAPACITY)
        self.rx_ring = Ring(mm, inbound * size, SHM_CAPACITY)
        self.tx_ring = Ring(mm, (1 - inbound) * size, SHM_CAPACITY)
        self.reader = RingReader(self.rx_ring)
        self.writer = RingWriter(self.tx_ring)
        self.own_bell = own_bell
        self.peer_bell = peer_bell
        self.alive = alive
        self.poller = select.poll()
        self.poller.register(own_bell, select.POLLIN)

    def send(self, data: bytes) -> None:
        """Write a message (waiting for room by spinning) and ring the peer if it sleeps."""
        ok = self.writer.send(data)
        spins = 0
        while not ok:
            spins += 1
            if not spins % SPIN_YIELD_EVERY:
                os.sched_yield()
                if not spins % SPIN_CHECK_EVERY and not self.alive():
                    raise ConnectionError("the echo peer is gone")
            ok = self.writer.flush()
        if self.tx_ring.consumer_sleeping:
            os.eventfd_write(self.peer_bell, 1)

    def recv_sleeping(self) -> list[bytes]:
        """Messages from the peer; when none, announce sleep, re-check, then block."""
        reader, ring = self.reader, self.rx_ring
        while True:
            if messages := reader.read():
                return messages
            ring.consumer_sleeping = True
            if messages := reader.read():  # what was published before the flag was seen
                ring.consumer_sleeping = False
                return messages
            if self.poller.poll(SLEEP_TIMEOUT_MS):
                try:  # noqa: SIM105 - on the wake-up path: suppress() costs more than try
                    os.eventfd_read(self.own_bell)
                except BlockingIOError:
                    pass
            elif not self.alive():
                raise ConnectionError("the echo peer is gone")
            ring.consumer_sleeping = False

    def recv_spinning(self) -> list[bytes]:
        """Messages from the peer, spinning until there are some."""
        read = self.reader.read
        spins = 0
        while not (messages := read()):
            spins += 1
            if not spins % SPIN_YIELD_EVERY:
                # Far longer than a round trip: the peer lost its core (a busy box),
                # so give ours up rather than burn the rest of the time slice.
                os.sched_yield()
                if not spins % SPIN_CHECK_EVERY and not self.alive():
                    raise ConnectionError("the echo peer is gone")
        return messages

    def close(self) -> None:
        """Release the ring views (so the mapping can close)."""
        self.rx_ring.close()
        self.tx_ring.close()


def shm_echo_main(argv: list[str] | None = None) -> None:
    """The shm child: ``MEMFD OWN_BELL PEER_BELL spin|sleep``; echo until the stop message."""
    memfd, own_bell, peer_bell, mode = argv if argv is not None else sys.argv[1:]
    parent = os.getppid()
    mm = mmap.mmap(int(memfd), 2 * ring_size(SHM_CAPACITY))
    end = _Endpoint(mm, 0, int(own_bell), int(peer_bell), lambda: os.getppid() == parent)
    recv = end.recv_spinning if mode == "spin" else end.recv_sleeping
    value = 0
    try:
        while True:
            for raw in recv():
                if raw == STOP:
                    return
                value, reply = _answer(value, raw)
                end.send(reply)
    except ConnectionError:
        return
    finally:
        end.close()
        mm.close()


def _shm_round_trips(n: int, spin: bool) -> Measurement:
    size = 2 * ring_size(SHM_CAPACITY)
    memfd = os.memfd_create("rio-bench-rings")  # anonymous: nothing in /dev/shm
    bells = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(2)]
    child_bell, parent_bell = bells
    mm: mmap.mmap | None = None
    end: _Endpoint | None = None
    child: subprocess.Popen[bytes] | None = None
    try:
        os.ftruncate(memfd, size)
        mm = mmap.mmap(memfd, size)  # zero-filled: two empty rings
        root = str(Path(__file__).resolve().parents[2])
        paths = [root, *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        code = "from rio.bench.local_baselines import shm_echo_main; shm_echo_main()"
        mode = "spin" if spin else "sleep"
        argv = [sys.executable, "-c", code, str(memfd), str(child_bell), str(parent_bell), mode]
        child = subprocess.Popen(argv, pass_fds=(memfd, *bells), env=env)
        proc = child
        end = _Endpoint(mm, 1, parent_bell, child_bell, lambda: proc.poll() is None)
        recv = end.recv_spinning if spin else end.recv_sleeping
        send = end.send

        def call(seq: int) -> None:
            send(_request(seq))
            (raw,) = recv()
            _check_reply(raw, seq)

        call(-1)  # the child is up and imported: start the clock after this
        return _round_trips(n, call)
    finally:
        if child is not None:
            if end is not None and child.poll() is None:
                with contextlib.suppress(ConnectionError):
                    end.send(STOP)
            try:
                child.wait(GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if end is not None:
            end.close()
        if mm is not None:
            mm.close()
        for fd in (memfd, *bells):
            os.close(fd)


@workload("baseline", "shm-seq", n=50_000, quick_n=5_000)
async def baseline_shm_seq(n: int) -> Measurement:
    """A shared-memory ring round trip to a child process, with eventfd wake-ups."""
    return _shm_round_trips(n, spin=False)


@workload("baseline", "shm-spin-seq", n=200_000, quick_n=20_000)
async def baseline_shm_spin_seq(n: int) -> Measurement:
    """A shared-memory ring round trip to a child process, both sides spinning."""
    return _shm_round_trips(n, spin=True)
