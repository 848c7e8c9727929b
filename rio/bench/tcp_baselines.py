"""Baselines of this machine for the cluster runtime: TCP round trips to a child process.

The same small msgpack request as the other baselines (sequence number, method name,
argument) goes to an echo server in a spawned child process on 127.0.0.1, which adds
the argument to a counter and answers ``(seq, value)``. The client runs in the
workload's own event loop (uvloop), the server in the child's (uvloop too):

* path ``baseline``, ``tcp-seq``, ``tcp-pipelined`` and ``tcp-batched``: a bare
  ``asyncio.Protocol`` on both ends, u32 length prefix plus msgpack, every reply
  decoded and checked against its request. ``tcp-seq`` awaits one request at a
  time. ``tcp-pipelined`` is what a plain awaited call is measured against: 1,000
  requests made one by one, each its own future matched to its reply by id, the
  frames of one loop pass sent in one write, then all awaited. ``tcp-batched`` is
  the ceiling of a batch API: 1,000 requests encoded and written together and their
  replies collected with a single future, no per-request future and no lookup.
* path ``cluster``, ``transport-seq`` and ``transport-pipelined``: the same exchange
  through :mod:`rio.cluster.transport` (authenticated connection, request ids,
  futures and deadlines, keep-alive, a handler answering with a plain value), so its
  overhead over the bare protocol reads straight off the two pairs of rows.

Children are always ended: closing their stdin stops them, and one that does not
exit within a grace period is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from rio.bench.core import Measurement, workload

__all__ = [
    "baseline_tcp_batched",
    "baseline_tcp_pipelined",
    "baseline_tcp_seq",
    "cluster_transport_pipelined",
    "cluster_transport_seq",
    "echo_main",
]

perf = time.perf_counter
PIPELINE_BATCH = 1000
#: Seconds a child gets to exit after its control pipe closes before it is killed.
GRACE_S = 5.0
#: Seconds the parent waits for a child to report its port.
START_TIMEOUT_S = 30.0
BENCH_SECRET = "rio-bench-secret"

_HEADER = struct.Struct(">I")
_ENCODER = msgspec.msgpack.Encoder()
_REQUESTS = msgspec.msgpack.Decoder(tuple[int, str, int])
_REPLIES = msgspec.msgpack.Decoder(tuple[int, int])


def _request(seq: int) -> bytes:
    return _ENCODER.encode((seq, "incr", 1))


def _check(reply: tuple[int, int], seq: int) -> None:
    if reply[0] != seq:
        raise RuntimeError(f"the echo child answered {reply!r} to request {seq}")


# ---------------------------------------------------------------- the bare protocol


def _cut(buf: bytearray) -> tuple[list[bytes], int]:
    """The complete frames at the start of ``buf``, and how many bytes they took."""
    frames: list[bytes] = []
    pos, n = 0, len(buf)
    unpack = _HEADER.unpack_from
    while n - pos >= 4:
        (size,) = unpack(buf, pos)
        if n - pos - 4 < size:
            break
        frames.append(bytes(buf[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    return frames, pos


def _frame(body: bytes) -> bytes:
    return _HEADER.pack(len(body)) + body


class _Framed(asyncio.Protocol):
    """A bare protocol end: u32-length frames in, cut from what was read so far."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def _frames(self, data: bytes) -> list[bytes]:
        """Add ``data`` to what was read; the frames now complete."""
        self.buf += data
        frames, used = _cut(self.buf)
        del self.buf[:used]
        return frames


class _BareServer(_Framed):
    """The child's bare echo: every read's answers go out in one write."""

    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    def data_received(self, data: bytes) -> None:
        out: list[bytes] = []
        for raw in self._frames(data):
            seq, _method, by = _REQUESTS.decode(raw)
            self.value += by
            out.append(_frame(_ENCODER.encode((seq, self.value))))
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


class _BareClient(_Framed):
    """The bare client: a future per awaited reply count."""

    def __init__(self) -> None:
        super().__init__()
        self.replies: list[bytes] = []
        self.want = 0
        self.waiter: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        self.replies += self._frames(data)
        if self.waiter is not None and len(self.replies) >= self.want:
            self.waiter.set_result(None)
            self.waiter = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None:
            self.waiter.set_exception(ConnectionError(f"the echo child hung up: {exc}"))

    async def exchange(self, requests: list[bytes]) -> list[bytes]:
        """Send ``requests`` in one write; return their replies."""
        assert self.transport is not None
        self.replies = []
        self.want = len(requests)
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(b"".join(_frame(r) for r in requests))
        await self.waiter
        return self.replies


class _AwaitingClient(_Framed):
    """The bare client of plain awaited requests: a future per request, matched by id.

    The frames made in one loop pass go out in one write at its end.
    """

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.pending: dict[int, asyncio.Future[int]] = {}
        self.flushing = False
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        pop = self.pending.pop
        for raw in self._frames(data):
            seq, value = _REPLIES.decode(raw)
            fut = pop(seq, None)
            if fut is None:
                self._fail(RuntimeError(f"the echo child answered {seq}, which nobody asked"))
                return
            fut.set_result(value)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"the echo child hung up: {exc}"))

    def _fail(self, error: Exception) -> None:
        for fut in self.pending.values():
            fut.set_exception(error)
        self.pending.clear()

    def request(self, seq: int) -> asyncio.Future[int]:
        """Send request ``seq`` (at the end of this loop pass); the future of its answer."""
        fut = self.loop.create_future()
        self.pending[seq] = fut
        body = _request(seq)
        self.out += _HEADER.pack(len(body))
        self.out += body
        if not self.flushing:
            self.flushing = True
            self.loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self.flushing = False
        out, self.out = self.out, bytearray()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)


# ---------------------------------------------------------------- the child


async def _serve_child(kind: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)  # EOF (or anything) on stdin: stop
    server: Any
    if kind == "bare":
        server = await loop.create_server(_BareServer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    else:
        from rio.cluster.transport import Connection, serve

        value = 0

        def handle(conn: Connection, body: msgspec.Raw) -> tuple[int, int]:
            # The bare echo's work, answered at once: a handler that returns a value
            # (or an already-finished future) costs no task; ``async def`` costs one.
            nonlocal value
            seq, _method, by = _REQUESTS.decode(body)
            value += by
            return seq, value

        server = await serve(handle, secret=BENCH_SECRET)
        port = server.port
    print(port, flush=True)
    await stop.wait()
    loop.remove_reader(sys.stdin.fileno())
    if kind == "bare":
        server.close()
    else:
        await server.close()


def echo_main(argv: list[str] | None = None) -> None:
    """The child process: ``bare|transport``; print the port, serve until stdin closes."""
    from loguru import logger

    from rio.app import run

    (kind,) = argv if argv is not None else sys.argv[1:]
    logger.remove()  # the parent's terminal is no place for the child's debug lines
    run(_serve_child(kind))


@contextlib.asynccontextmanager
async def _child(kind: str) -> AsyncIterator[int]:
    """A child process serving ``kind`` on 127.0.0.1; yields its port."""
    root = str(Path(__file__).resolve().parents[2])
    paths = [root, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    code = "from rio.bench.tcp_baselines import echo_main; echo_main()"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        kind,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            line = await proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the {kind} echo child did not start (it said {line!r})")
        yield int(line)
    finally:
        proc.stdin.close()  # EOF on the child's stdin: it stops
        try:
            async with asyncio.timeout(GRACE_S):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


# ---------------------------------------------------------------- measuring


async def _seq(n: int, call: Callable[[int], Awaitable[None]]) -> Measurement:
    """Await ``call(seq)`` n times, timing every 8th (like the in-process ``_seq``)."""
    await call(-1)  # connected and warm: start the clock after this
    lat: list[float] = []
    append = lat.append
    start = perf()
    for i in range(n):
        if i & 7:
            await call(i)
        else:
            t0 = perf()
            await call(i)
            append(perf() - t0)
    return Measurement(n, perf() - start, lat)


async def _pipelined(n: int, batch: Callable[[int, int], Awaitable[None]]) -> Measurement:
    """Run ``batch(first_seq, count)`` for batches of 1,000; time each batch."""
    await batch(-1, 1)
    lat: list[float] = []
    done = 0
    start = perf()
    while done < n:
        b = min(PIPELINE_BATCH, n - done)
        t0 = perf()
        await batch(done, b)
        lat.append(perf() - t0)
        done += b
    return Measurement(n, perf() - start, lat)


@contextlib.asynccontextmanager
async def _bare_client(protocol: Callable[[], Any] = _BareClient) -> Any:
    async with _child("bare") as port:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_connection(protocol, "127.0.0.1", port)
        try:
            yield proto
        finally:
            transport.close()


@workload("baseline", "tcp-seq", n=50_000, quick_n=5_000)
async def baseline_tcp_seq(n: int) -> Measurement:
    """A bare asyncio TCP round trip (u32 length + msgpack) to an echo child process."""
    async with _bare_client() as proto:

        async def call(seq: int) -> None:
            (reply,) = await proto.exchange([_request(seq)])
            _check(_REPLIES.decode(reply), seq)

        return await _seq(n, call)


@workload("baseline", "tcp-pipelined", n=300_000, quick_n=50_000)
async def baseline_tcp_pipelined(n: int) -> Measurement:
    """Bare asyncio TCP to an echo child: 1,000 awaited requests in flight, a future each."""
    async with _bare_client(_AwaitingClient) as proto:

        async def batch(first: int, count: int) -> None:
            futs = [proto.request(first + i) for i in range(count)]
            for fut in futs:
                await fut

        return await _pipelined(n, batch)


@workload("baseline", "tcp-batched", n=500_000, quick_n=50_000)
async def baseline_tcp_batched(n: int) -> Measurement:
    """Bare asyncio TCP to an echo child, 1,000 requests per write and one future for all."""
    async with _bare_client() as proto:

        async def batch(first: int, count: int) -> None:
            replies = await proto.exchange([_request(first + i) for i in range(count)])
            # Every reply is decoded and matched to its request, as any client must.
            for i, reply in enumerate(replies):
                _check(_REPLIES.decode(reply), first + i)

        return await _pipelined(n, batch)


@contextlib.asynccontextmanager
async def _transport_client() -> Any:
    from rio.cluster.transport import connect

    async with _child("transport") as port:
        conn = await connect("127.0.0.1", port, secret=BENCH_SECRET)
        try:
            yield conn
        finally:
            await conn.close()


@workload("cluster", "transport-seq", n=50_000, quick_n=5_000)
async def cluster_transport_seq(n: int) -> Measurement:
    """A rio.cluster.transport request to an echo child process, awaited one at a time."""
    async with _transport_client() as conn:

        async def call(seq: int) -> None:
            raw = await conn.request(msgspec.Raw(_request(seq)))
            _check(_REPLIES.decode(raw), seq)

        return await _seq(n, call)


@workload("cluster", "transport-pipelined", n=500_000, quick_n=50_000)
async def cluster_transport_pipelined(n: int) -> Measurement:
    """rio.cluster.transport requests to an echo child, 1,000 in flight, then awaited."""
    async with _transport_client() as conn:

        async def batch(first: int, count: int) -> None:
            futs = [conn.request(msgspec.Raw(_request(first + i))) for i in range(count)]
            for i, f in enumerate(futs):
                _check(_REPLIES.decode(await f), first + i)

        return await _pipelined(n, batch)
