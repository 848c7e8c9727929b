"""The shared-memory SPSC ring: framing, wrap-around, chunking, flags, real processes."""

from __future__ import annotations

import mmap
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rio.local.ring import (
    FRAME_HEADER,
    HEADER_SIZE,
    MIN_CAPACITY,
    Ring,
    RingCorrupted,
    RingReader,
    RingWriter,
    ring_size,
)

CAP = 4096
CANARY = 0xA5


def payload(seq: int, size: int) -> bytes:
    """Content that differs per message: a seed pattern from the sequence number."""
    seed = zlib.crc32(seq.to_bytes(8, "little")).to_bytes(4, "little") + seq.to_bytes(4, "little")
    return (seed * (size // 8 + 1))[:size]


class Buffer:
    """A backing buffer with canary bytes around the ring, on an mmap or a bytearray."""

    def __init__(self, kind: str, offset: int, capacity: int = CAP, start: int = 0) -> None:
        self.offset = offset
        self.size = offset + ring_size(capacity) + 64
        self.mm: mmap.mmap | None = None
        if kind == "mmap":
            self.mm = mmap.mmap(-1, self.size)
            self.mm.write(bytes([CANARY]) * self.size)
            self.backing: mmap.mmap | memoryview = self.mm
        else:
            self.backing = memoryview(bytearray([CANARY]) * self.size)
        self.ring = Ring(self.backing, offset, capacity)
        self.ring.reset()  # the data bytes keep their canary garbage: readers must not care
        struct.pack_into("Q", self.backing, offset, start)  # tail
        struct.pack_into("Q", self.backing, offset + 64, start)  # head
        self.end = offset + ring_size(capacity)

    def canaries_intact(self) -> bool:
        raw = bytes(self.backing[: self.offset]) + bytes(self.backing[self.end :])
        return raw == bytes([CANARY]) * len(raw)

    def close(self) -> None:
        self.ring.close()
        if self.mm is not None:
            self.mm.close()


@pytest.fixture
def ring() -> Iterator[Ring]:
    buf = Buffer("mmap", 0)
    yield buf.ring
    buf.close()


def drain(writer: RingWriter, reader: RingReader, into: list[bytes]) -> None:
    """Flush and read until nothing is pending; every round makes progress."""
    for _ in range(10_000):
        done = writer.flush()
        into.extend(reader.read())
        if done and reader.empty():
            return
    raise AssertionError("the ring made no progress")


# ---------------------------------------------------------------- property tests

sizes = st.one_of(
    st.integers(0, 64),
    st.integers(0, 3 * CAP),
    st.sampled_from(
        [0, 1, 7, 8, 9, 1016, 1023, 1024, 1025, 2039, 2040, 2041, CAP - 8, CAP, CAP + 1]
    ),
)
ops = st.one_of(
    st.tuples(st.just("send"), sizes),
    st.tuples(st.just("send_many"), st.lists(sizes, max_size=8)),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("read"), st.one_of(st.none(), st.integers(1, 4))),
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=st.lists(ops, max_size=60),
    kind=st.sampled_from(["mmap", "bytes"]),
    offset=st.sampled_from([0, 8, 64, 4352]),
    max_frame=st.sampled_from([None, 8, 13, 100, 1024, CAP // 2 - FRAME_HEADER]),
    start=st.one_of(st.just(0), st.integers(0, 2**56).map(lambda i: i * 8)),
)
def test_random_interleaving_keeps_every_message_once_in_order(
    script: list[tuple[str, object]],
    kind: str,
    offset: int,
    max_frame: int | None,
    start: int,
) -> None:
    """Counters may start anywhere (a ring used for a long time): positions are index & mask."""
    buf = Buffer(kind, offset, start=start)
    try:
        writer = RingWriter(buf.ring, max_frame)
        reader = RingReader(buf.ring)
        sent: list[bytes] = []
        got: list[bytes] = []

        def check_send(ok: bool) -> None:
            if ok:
                assert writer.pending_bytes == 0
            if writer.pending_bytes:
                assert not ok

        for op, arg in script:
            if op == "send":
                assert isinstance(arg, int)
                sent.append(payload(len(sent), arg))
                check_send(writer.send(sent[-1]))
            elif op == "send_many":
                assert isinstance(arg, list)
                batch = [payload(len(sent) + i, n) for i, n in enumerate(arg)]
                sent.extend(batch)
                check_send(writer.send_many(batch))
            elif op == "flush":
                check_send(writer.flush())
            else:
                assert arg is None or isinstance(arg, int)
                out = reader.read(arg)
                if arg is not None:
                    assert len(out) <= arg
                got.extend(out)
                assert got == sent[: len(got)]
            ring = buf.ring
            assert 0 <= ring.tail - ring.head <= CAP
        drain(writer, reader, got)
        assert got == sent
        assert writer.pending_bytes == 0
        assert buf.ring.head == buf.ring.tail >= start
        assert buf.canaries_intact()
    finally:
        buf.close()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 3 * CAP), min_size=1, max_size=20))
def test_writes_survive_a_new_writer_and_reader_on_the_same_ring(lengths: list[int]) -> None:
    """Indices live in shared memory: a fresh writer/reader pair resumes where they were."""
    buf = Buffer("mmap", 0)
    try:
        sent = [payload(i, n) for i, n in enumerate(lengths)]
        got: list[bytes] = []
        for message in sent:
            writer = RingWriter(buf.ring)
            writer.send(message)
            drain(writer, RingReader(buf.ring), got)
        assert got == sent
    finally:
        buf.close()


# ---------------------------------------------------------------- examples


def test_small_message_round_trip(ring: Ring) -> None:
    writer, reader = RingWriter(ring), RingReader(ring)
    assert reader.empty()
    assert reader.read() == []
    assert writer.send(b"hello")
    assert not reader.empty()
    assert reader.read() == [b"hello"]
    assert reader.empty()
    assert ring.tail == ring.head == FRAME_HEADER + 8  # 5 bytes padded to 8


def test_empty_messages_take_one_frame_header(ring: Ring) -> None:
    writer, reader = RingWriter(ring), RingReader(ring)
    assert writer.send_many([b"", b"", bytearray()])
    assert reader.read() == [b"", b"", b""]
    assert ring.tail == 3 * FRAME_HEADER


def test_a_full_ring_keeps_the_rest_pending_until_read(ring: Ring) -> None:
    writer, reader = RingWriter(ring), RingReader(ring)
    message = bytes(100)
    fitted = 0
    while writer.send(message):
        fitted += 1
    assert fitted == CAP // 112
    assert writer.pending_bytes == 100
    assert not writer.flush()
    got = reader.read(limit=2)
    assert len(got) == 2
    assert writer.flush()
    got += reader.read()
    assert got == [message] * (fitted + 1)


def test_message_larger_than_the_ring_arrives_whole(ring: Ring) -> None:
    writer, reader = RingWriter(ring), RingReader(ring)
    big = os.urandom(10 * CAP + 123)
    assert writer.send(b"before") is True
    assert writer.send(big) is False
    assert writer.send(b"after") is False
    assert writer.pending_bytes == len(big) - writer.max_frame * 3 + len(b"after")
    got: list[bytes] = []
    rounds = 0
    while len(got) < 3:
        got += reader.read()
        writer.flush()
        rounds += 1
    assert got == [b"before", big, b"after"]
    assert rounds > 10  # it really went through the ring in pieces
    assert writer.pending_bytes == 0


def test_mutable_payload_is_copied_when_it_has_to_wait(ring: Ring) -> None:
    writer, reader = RingWriter(ring), RingReader(ring)
    buffer = bytearray(b"x" * (2 * CAP))
    assert not writer.send(buffer)
    buffer[:] = b"y" * len(buffer)
    got: list[bytes] = []
    drain(writer, reader, got)
    assert got == [b"x" * (2 * CAP)]


def test_memoryview_payloads_of_any_format(ring: Ring) -> None:
    writer, reader = RingWriter(ring), RingReader(ring)
    words = memoryview(bytearray(struct.pack("4I", 1, 2, 3, 4))).cast("I")
    strided = memoryview(b"abcdef")[::2]
    assert writer.send(words)
    assert writer.send(strided)
    assert writer.send_many([words, strided])
    assert reader.read() == [struct.pack("4I", 1, 2, 3, 4), b"ace"] * 2


def test_a_ring_over_a_memoryview_of_another_format() -> None:
    backing = bytearray(ring_size(CAP))
    words = memoryview(backing).cast("Q")
    ring = Ring(words, 0, CAP)
    writer, reader = RingWriter(ring), RingReader(ring)
    assert writer.send(b"over words")
    assert reader.read() == [b"over words"]
    ring.close()
    words.release()
    backing.extend(b"!")  # no view pins the bytearray any more


def test_reader_limit(ring: Ring) -> None:
    writer, reader = RingWriter(ring), RingReader(ring)
    writer.send_many([b"a", b"b", b"c"])
    assert reader.read(limit=1) == [b"a"]
    assert reader.read(limit=5) == [b"b", b"c"]
    with pytest.raises(ValueError, match="at least 1"):
        reader.read(limit=0)


def test_reset_empties_the_ring_and_clears_the_flags(ring: Ring) -> None:
    writer = RingWriter(ring)
    writer.send_many([b"x" * 50] * 10)
    ring.consumer_sleeping = True
    ring.producer_waiting = True
    assert ring.tail > 0
    ring.reset()
    assert (ring.head, ring.tail) == (0, 0)
    assert not ring.consumer_sleeping
    assert not ring.producer_waiting
    reader = RingReader(ring)
    assert reader.empty()
    assert reader.read() == []


def test_flags_round_trip_through_shared_memory() -> None:
    mm = mmap.mmap(-1, ring_size(CAP))
    a, b = Ring(mm, 0, CAP), Ring(mm, 0, CAP)  # two views of one ring, as two processes
    try:
        assert not b.consumer_sleeping
        assert not b.producer_waiting
        a.consumer_sleeping = True
        assert b.consumer_sleeping
        assert not b.producer_waiting
        a.producer_waiting = True
        assert b.producer_waiting
        a.consumer_sleeping = False
        assert not b.consumer_sleeping
        assert b.producer_waiting
        # Each field on its own 64-byte cache line: tail, head, producer_waiting, consumer_sleeping.
        RingWriter(a).send(b"abc")
        assert struct.unpack_from("Q", mm, 0)[0] == 16
        assert struct.unpack_from("I", mm, 128)[0] == 1
        assert struct.unpack_from("I", mm, 192)[0] == 0
        RingReader(b).read()
        assert struct.unpack_from("Q", mm, 64)[0] == 16
        assert repr(b) == (
            "<Ring offset=0 capacity=4096 head=16 tail=16 consumer_sleeping=False "
            "producer_waiting=True>"
        )
        b.close()
        assert repr(b) == "<Ring offset=0 capacity=4096 closed>"
    finally:
        a.close()
        b.close()  # closing twice is harmless
        mm.close()


def test_rings_laid_end_to_end_do_not_touch_each_other() -> None:
    mm = mmap.mmap(-1, 3 * ring_size(CAP))
    rings = [Ring(mm, i * ring_size(CAP), CAP) for i in range(3)]
    try:
        writers = [RingWriter(r) for r in rings]
        readers = [RingReader(r) for r in rings]
        for round_ in range(200):
            for i, w in enumerate(writers):
                w.send(payload(round_ * 3 + i, 700))
            for i, r in enumerate(readers):
                assert r.read() == [payload(round_ * 3 + i, 700)]
    finally:
        for r in rings:
            r.close()
        mm.close()


def test_sizes_and_arguments_are_checked() -> None:
    assert HEADER_SIZE == 256
    assert ring_size(MIN_CAPACITY) == HEADER_SIZE + MIN_CAPACITY
    for bad in (0, 2048, 4095, 4097, 6144):
        with pytest.raises(ValueError, match="power of two >= 4096"):
            ring_size(bad)
    mm = mmap.mmap(-1, ring_size(CAP))
    try:
        with pytest.raises(ValueError, match="multiple of 8"):
            Ring(mm, 4, CAP)
        with pytest.raises(ValueError, match="needs 8448 bytes"):
            Ring(mm, 0, 8192)
        with pytest.raises(ValueError, match="writable"):
            Ring(memoryview(bytes(ring_size(CAP))), 0, CAP)
        ring = Ring(mm, 0, CAP)
        with pytest.raises(ValueError, match="between 1 and 2040"):
            RingWriter(ring, max_frame=2041)
        with pytest.raises(ValueError, match="between 1 and 2040"):
            RingWriter(ring, max_frame=0)
        assert RingWriter(ring).max_frame == CAP // 4
        ring.close()
    finally:
        mm.close()


def test_garbage_in_the_ring_is_reported_not_misread() -> None:
    mm = mmap.mmap(-1, ring_size(CAP))
    ring = Ring(mm, 0, CAP)
    try:
        writer, reader = RingWriter(ring), RingReader(ring)
        writer.send(b"12345678")
        # Overwrite the frame header: a LAST chunk with no FIRST before it.
        struct.pack_into("II", mm, HEADER_SIZE, 8, 4)
        with pytest.raises(RingCorrupted, match="LAST of 8 bytes outside a chunked message"):
            reader.read()
        struct.pack_into("II", mm, HEADER_SIZE, 5000, 1)  # a length past the published tail
        with pytest.raises(RingCorrupted, match="WHOLE of 5000 bytes"):
            reader.read()
        struct.pack_into("II", mm, HEADER_SIZE, 8, 99)
        with pytest.raises(RingCorrupted, match="unknown kind 99"):
            reader.read()
        struct.pack_into("II", mm, HEADER_SIZE, 8, 1)  # repaired: read as usual
        assert reader.read() == [b"12345678"]
    finally:
        ring.close()
        mm.close()


# ---------------------------------------------------------------- real processes

PRODUCER = r"""
import mmap, os, struct, sys, time, zlib
from rio.local.ring import Ring, RingWriter

where, offset, capacity, sender, count = sys.argv[1:6]
fd = int(where) if where.isdigit() else os.open(where, os.O_RDWR)
offset, capacity, sender, count = int(offset), int(capacity), int(sender), int(count)
mm = mmap.mmap(fd, 0)
writer = RingWriter(Ring(mm, offset, capacity))
deadline = time.monotonic() + 20
for seq in range(count):
    # mostly small messages, now and then one larger than the whole ring
    size = 4 * capacity + seq if seq % 97 == 5 else (seq * 37) % 300
    body = os.urandom(size)
    message = struct.pack("<III", sender, seq, zlib.crc32(body)) + body
    if not writer.send(message):
        while not writer.flush():
            if time.monotonic() > deadline:
                sys.exit("producer %d stuck at message %d" % (sender, seq))
            os.sched_yield()
"""


@pytest.mark.slow
def test_several_producer_processes_into_one_consumer() -> None:
    producers, count, capacity = 3, 1500, 8192
    fd = os.memfd_create("rio-test-rings")
    os.ftruncate(fd, producers * ring_size(capacity))
    mm = mmap.mmap(fd, producers * ring_size(capacity))
    rings = [Ring(mm, i * ring_size(capacity), capacity) for i in range(producers)]
    readers = [RingReader(r) for r in rings]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2]), env.get("PYTHONPATH", "")])
    children: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(producers):
            # Producer 0 re-opens the memfd through /proc (what a spawned child can do);
            # the others inherit the descriptor itself.
            where = f"/proc/{os.getpid()}/fd/{fd}" if i == 0 else str(fd)
            argv = [sys.executable, "-c", PRODUCER, where, str(i * ring_size(capacity))]
            argv += [str(capacity), str(i), str(count)]
            pass_fds = () if i == 0 else (fd,)
            children.append(subprocess.Popen(argv, pass_fds=pass_fds, env=env))
        next_seq = [0] * producers
        deadline = time.monotonic() + 30
        while sum(next_seq) < producers * count:
            assert time.monotonic() < deadline, f"messages so far: {next_seq}"
            quiet = True
            for reader in readers:
                for message in reader.read():
                    quiet = False
                    sender, seq, crc = struct.unpack_from("<III", message)
                    assert seq == next_seq[sender], (sender, seq, next_seq)
                    assert zlib.crc32(message[12:]) == crc
                    next_seq[sender] += 1
            if quiet:
                failed = [c.returncode for c in children if c.poll() not in (None, 0)]
                assert not failed, f"a producer failed: {failed}"
                os.sched_yield()
        assert next_seq == [count] * producers
        assert [c.wait(timeout=10) for c in children] == [0] * producers
        assert all(r.empty() for r in readers)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
        for ring in rings:
            ring.close()
        mm.close()
        os.close(fd)


def _children() -> set[int]:
    """Our live child processes, the multiprocessing resource tracker aside."""
    found = set()
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"resource_tracker" not in cmdline:
                found.add(int(pid))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pipe-seq", "shm-seq", "shm-spin-seq"])
async def test_process_baselines_round_trip_and_leave_no_child(name: str) -> None:
    from rio.bench import local_baselines

    fn = {
        "pipe-seq": local_baselines.baseline_pipe_seq,
        "shm-seq": local_baselines.baseline_shm_seq,
        "shm-spin-seq": local_baselines.baseline_shm_spin_seq,
    }[name]
    before = _children()
    m = await fn(300)
    assert m.n == 300
    assert len(m.latencies) == 300 // 8 + 1
    assert m.seconds > 0
    assert _children() <= before
