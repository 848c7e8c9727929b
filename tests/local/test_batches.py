"""Batches on the fabric: many messages per ring frame, decoded in one call.

The protocol level (a batch is one msgpack array), the ring writer taking a reused
bytearray, and the hubs themselves: random message sizes (larger than a frame and
than the ring, too), random batch sizes (where the event loop gets to run between
sends), several senders into one receiver; nothing lost, nothing duplicated, order
kept per sender, contents checksummed.
"""

from __future__ import annotations

import asyncio
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rio.local.protocol import (
    BATCH_HEADER,
    Call,
    Down,
    Drain,
    Exit,
    Message,
    Ready,
    Reply,
    call_tuple,
    decode_batch,
    encode,
    encode_into,
    new_batch,
    reply_tuple,
    seal,
)
from rio.local.ring import Ring, RingReader, RingWriter, ring_size
from rio.local.transport import Fabric, Hub

CAP = 4096  # the smallest ring: a frame carries at most 1 KiB, so big batches are chunked


def payload(seq: int, size: int) -> bytes:
    """Content that differs per message: a seed pattern from the sequence number."""
    seed = zlib.crc32(seq.to_bytes(8, "little")).to_bytes(4, "little") + seq.to_bytes(8, "little")
    return (seed * (size // 8 + 1))[:size]


# -- protocol ----------------------------------------------------------------------------

texts = st.text(max_size=20)
calls = st.builds(
    call_tuple,
    st.integers(0, 2**63 - 1),
    texts,
    texts,
    texts,
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.tuples(texts, texts), max_size=3).map(tuple),
    st.lists(st.one_of(st.integers(-(2**63), 2**63 - 1), texts, st.binary(max_size=3000))).map(
        tuple
    ),
)
replies = st.builds(
    reply_tuple,
    st.integers(0, 2**63 - 1),
    st.booleans(),
    st.one_of(st.none(), st.integers(0, 9), texts, st.binary(max_size=5000)),
)
controls = st.sampled_from(
    [Exit(), Drain(), Down(2, 3, 4, "was killed by SIGKILL"), Ready(1, 1, 99, ["a problem"])]
)
messages = st.one_of(calls, replies, controls)


def same(sent: Any, got: Message) -> bool:
    """Whether a decoded message is the one sent (a tuple stands for its struct)."""
    if not isinstance(sent, tuple):
        return bool(sent == got)
    if sent[0] == 1:
        assert isinstance(got, Call)
        fields = (got.req, got.type_name, got.object_id, got.method, got.deadline, got.chain)
        return fields == sent[1:7] and msgspec.msgpack.decode(got.args) == list(sent[7])
    assert isinstance(got, Reply)
    return (got.req, got.ok) == sent[1:3] and msgspec.msgpack.decode(got.value) == sent[3]


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, max_size=40))
def test_a_batch_decodes_to_its_messages_in_order(batch: list[Any]) -> None:
    buf = new_batch()
    for msg in batch:
        encode_into(msg, buf)
    seal(buf, len(batch))
    got = decode_batch(bytes(buf))
    assert len(got) == len(batch)
    assert all(same(s, g) for s, g in zip(batch, got, strict=True))


def test_a_message_that_cannot_be_encoded_leaves_the_batch_as_it_was() -> None:
    buf = new_batch()
    encode_into(Exit(), buf)
    before = bytes(buf)
    for bad in (reply_tuple(1, True, object()), reply_tuple(2, True, [1, 2, 1 << 70])):
        with pytest.raises((TypeError, OverflowError)):
            encode_into(bad, buf)
        assert bytes(buf) == before
    seal(buf, 1)
    assert decode_batch(bytes(buf)) == [Exit()]


def test_an_encoded_message_joins_a_batch_as_is() -> None:
    buf = new_batch()
    buf += encode(Drain())
    encode_into(reply_tuple(7, True, 42), buf)
    seal(buf, 2)
    assert bytes(buf[: len(BATCH_HEADER)]) == b"\xdd\x00\x00\x00\x02"
    assert decode_batch(bytes(buf)) == [Drain(), Reply(7, True, msgspec.Raw(b"*"))]


def test_garbage_is_refused_not_misread() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_batch(b"\xdd\x00\x00\x00\x02\x91\x09")  # says 2 messages, holds 1
    with pytest.raises(msgspec.DecodeError):
        decode_batch(b"\x93\x63\x01\x02")  # an unknown message tag


# -- the ring takes a reused bytearray -------------------------------------------------


def test_a_bytearray_is_copied_on_the_fast_path_and_when_it_must_wait() -> None:
    buf = bytearray(ring_size(CAP))
    ring = Ring(memoryview(buf), 0, CAP)
    try:
        writer, reader = RingWriter(ring), RingReader(ring)
        data = bytearray(b"first")
        assert writer.send(data)  # the fast path: straight into the ring
        data[:] = b"XXXXX"
        big = bytearray(payload(1, 3 * CAP))  # larger than the ring: most of it waits
        assert not writer.send(big)
        big[:] = bytes(len(big))  # the caller reuses its buffer at once
        got = reader.read()
        while writer.pending_bytes:
            writer.flush()
            got += reader.read()
        assert got == [b"first", payload(1, 3 * CAP)]
    finally:
        ring.close()


# -- hubs ------------------------------------------------------------------------------


@contextmanager
def hubs(nprocs: int, flush_bytes: int) -> Iterator[tuple[list[Hub], dict[int, list[Reply]]]]:
    """``nprocs`` hubs over one fabric in this event loop; what each one received, by sender."""
    fabric = Fabric(nprocs, CAP)
    fabric.reset_all()
    bells = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(nprocs)]
    received: dict[int, list[Reply]] = {}

    def receiver(me: int) -> Any:
        def on_messages(src: int, msgs: list[Message]) -> None:
            assert me == 0
            for m in msgs:
                assert isinstance(m, Reply)
                received.setdefault(src, []).append(m)

        return on_messages

    made = [
        Hub(fabric, i, bells, receiver(i), spin=0.0005, recheck=0.002, flush_bytes=flush_bytes)
        for i in range(nprocs)
    ]
    for hub in made:
        hub.start()
    try:
        yield made, received
    finally:
        for hub in made:
            hub.close()
        fabric.close()
        for fd in bells:
            os.close(fd)


async def settle(until: Any) -> None:
    """Let the hubs work until ``until()`` holds (10 s at most)."""
    async with asyncio.timeout(10.0):
        while not until():  # noqa: ASYNC110 - polling the hubs' progress is the point
            await asyncio.sleep(0.001)


def check_stream(got: list[Reply], sizes: list[int], sender: int) -> None:
    assert [m.req for m in got] == list(range(len(sizes)))  # none lost, none twice, in order
    for m, size in zip(got, sizes, strict=True):
        assert msgspec.msgpack.decode(m.value) == payload(sender << 32 | m.req, size)


sizes = st.one_of(st.integers(0, 200), st.integers(0, 3 * CAP))
# A script per sender: message sizes, and after which messages the loop runs (a pass ends).
scripts = st.lists(st.tuples(sizes, st.booleans()), min_size=1, max_size=60)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    per_sender=st.lists(scripts, min_size=1, max_size=3),
    flush_bytes=st.sampled_from([1, 100, 1024, 8192, 1 << 20]),
)
def test_hubs_deliver_every_message_once_in_order_per_sender(
    per_sender: list[list[tuple[int, bool]]], flush_bytes: int
) -> None:
    async def run() -> None:
        nprocs = len(per_sender) + 1
        with hubs(nprocs, flush_bytes) as (made, received):
            senders = []
            for index, script in enumerate(per_sender, start=1):

                async def send(hub: Hub, script: list[tuple[int, bool]], me: int) -> None:
                    for req, (size, end_pass) in enumerate(script):
                        hub.send(0, reply_tuple(req, True, payload(me << 32 | req, size)))
                        if end_pass:
                            await asyncio.sleep(0)

                senders.append(send(made[index], script, index))
            await asyncio.gather(*senders)
            expected = {i: [s for s, _ in script] for i, script in enumerate(per_sender, 1)}
            await settle(
                lambda: all(len(received.get(i, [])) == len(e) for i, e in expected.items())
            )
            await asyncio.sleep(0.01)  # nothing more arrives
            for i, e in expected.items():
                check_stream(received[i], e, i)
            assert all(made[i].pending_bytes(0) == 0 for i in expected)

    asyncio.run(run())


async def test_many_messages_in_one_pass_become_few_frames() -> None:
    with hubs(2, 8192) as (made, received):
        frames: list[int] = []
        handle = made[0].on_messages

        def on_messages(src: int, msgs: list[Message]) -> None:
            frames.append(len(msgs))  # one call per frame
            handle(src, msgs)

        made[0].on_messages = on_messages
        for req in range(1000):
            made[1].send(0, reply_tuple(req, True, payload(1 << 32 | req, 10)))
        await settle(lambda: len(received.get(1, [])) == 1000)
        check_stream(received[1], [10] * 1000, 1)
        # The first message alone, then one frame per 8 KiB (under 40 bytes a message).
        assert frames[0] == 1
        assert 2 <= len(frames) <= 2 + 40_000 // 8192


async def test_an_unencodable_message_raises_at_send_and_the_rest_still_arrive() -> None:
    with hubs(2, 8192) as (made, received):
        made[1].send(0, reply_tuple(0, True, payload(1 << 32, 5)))
        made[1].send(0, reply_tuple(1, True, payload(1 << 32 | 1, 5)))
        with pytest.raises(TypeError):
            made[1].send(0, reply_tuple(99, True, object()))
        made[1].send(0, reply_tuple(2, True, payload(1 << 32 | 2, 5)))
        await settle(lambda: len(received.get(1, [])) == 3)
        check_stream(received[1], [5, 5, 5], 1)


async def test_a_garbled_frame_is_dropped_and_the_hub_keeps_reading() -> None:
    with hubs(2, 8192) as (made, received):
        made[1]._writers[0].send(b"\xdd\x00\x00\x00\x05garbage")
        made[1].send(0, reply_tuple(0, True, payload(1 << 32, 3)))
        await settle(lambda: len(received.get(1, [])) == 1)
        check_stream(received[1], [3], 1)


async def test_reset_peer_forgets_what_was_batched_for_it() -> None:
    with hubs(2, 1 << 20) as (made, received):
        made[1].send(0, reply_tuple(0, True, payload(1 << 32, 3)))  # the first goes at once
        await settle(lambda: len(received.get(1, [])) == 1)
        made[0].close()  # process 0 "dies"
        made[1].send(0, reply_tuple(1, True, b"first of a pass"))
        made[1].send(0, reply_tuple(2, True, b"batched until the pass ends"))
        made[1].reset_peer(0)
        await asyncio.sleep(0.01)  # the pass ends: nothing is left to write
        ring = made[1].fabric.ring(1, 0)
        assert ring.head == ring.tail == 0
        assert made[1].pending_bytes(0) == 0
        check_stream(received[1], [3], 1)
