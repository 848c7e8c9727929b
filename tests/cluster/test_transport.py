"""The node-to-node transport, over real sockets on 127.0.0.1, on asyncio and on uvloop.

Each test is written once as a coroutine and run on both event loops (the ``run``
fixture). Adversarial peers are raw asyncio streams speaking (or not) the handshake.
No test sleeps where it can wait for an event instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec
import pytest
import uvloop
from cluster.tls import self_signed

import rio
from rio.cluster import _auth, _connection
from rio.cluster._frames import HEADER, Call, RecvBuffer, encode_frame
from rio.cluster.transport import Connection, Server, TransportOptions, connect, serve

SECRET = "the-cluster-secret"
HOST = "127.0.0.1"
TEST_TIMEOUT = 10.0

Run = Callable[[Coroutine[Any, Any, Any]], Any]
_any = msgspec.msgpack.Decoder()
_encode = msgspec.msgpack.encode


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Run a test coroutine to completion on the event loop under test."""
    factory = asyncio.new_event_loop if request.param == "asyncio" else uvloop.new_event_loop

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        async def bounded() -> Any:
            async with asyncio.timeout(TEST_TIMEOUT):
                return await coro

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(bounded())

    return run


# ------------------------------------------------------------------ helpers


async def echo(conn: Connection, body: msgspec.Raw) -> Any:
    """Answer with the request body itself."""
    return body


@contextlib.asynccontextmanager
async def node(handler: Any = echo, **kw: Any) -> AsyncIterator[Server]:
    server = await serve(handler, secret=kw.pop("secret", SECRET), **kw)
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def client(port: int, **kw: Any) -> AsyncIterator[Connection]:
    conn = await connect(HOST, port, secret=kw.pop("secret", SECRET), **kw)
    try:
        yield conn
    finally:
        await conn.close()


async def still_serves(server: Server, *others: Connection) -> None:
    """The server answers a new client, and every connection given, as before."""
    async with client(server.port) as fresh:
        for conn in (fresh, *others):
            assert _any.decode(await conn.request(["still", "here"])) == ["still", "here"]


async def raw_peer(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare TCP connection to the server, nothing sent yet."""
    return await asyncio.open_connection(HOST, port)


async def authenticated_raw_peer(
    port: int,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare TCP connection that has passed the handshake honestly."""
    reader, writer = await raw_peer(port)
    key = SECRET.encode()
    mine = _auth.new_nonce()
    writer.write(_auth.hello(mine))
    theirs = _auth.check_hello(await reader.readexactly(_auth.HELLO_SIZE))
    writer.write(_auth.proof(key, "client", mine, theirs))
    assert _auth.verify(key, "server", mine, theirs, await reader.readexactly(_auth.PROOF_SIZE))
    return reader, writer


async def rest_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server still sends until it closes (EOF or reset)."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def logged(logs: list[str], *parts: str) -> list[str]:
    return [line for line in logs if all(p in line for p in parts)]


# ------------------------------------------------------------------ requests


def test_request_reply_values_structs_and_raw(run: Run) -> None:
    class Point(msgspec.Struct):
        x: int
        y: int

    async def main() -> None:
        async with node() as server, client(server.port) as conn:
            assert _any.decode(await conn.request({"a": [1, 2.5, "x", None]})) == {
                "a": [1, 2.5, "x", None]
            }
            raw = await conn.request(Point(1, 2))
            assert msgspec.msgpack.decode(raw, type=Point) == Point(1, 2)
            pre = msgspec.Raw(_encode(("incr", 1)))
            assert bytes(await conn.request(pre)) == bytes(pre)
            assert _any.decode(await conn.request(b"\x00\xff")) == b"\x00\xff"
            stats = conn.statistics()
            assert stats.requests_waiting == 0
            assert stats.frames_received == 4
            assert stats.peer == f"{HOST}:{server.port}"

    run(main())


def test_handler_errors_reach_the_caller_typed(run: Run) -> None:
    async def handle(conn: Connection, body: msgspec.Raw) -> Any:
        what = _any.decode(body)
        if what == "rio":
            raise rio.UnknownMethod("Counter has no method 'nope'")
        if what == "plain":
            raise KeyError("missing")
        if what == "unencodable":
            return object()
        return what

    async def main() -> None:
        async with node(handle) as server, client(server.port) as conn:
            with pytest.raises(rio.UnknownMethod, match="no method 'nope'"):
                await conn.request("rio")
            with pytest.raises(rio.RemoteError) as info:
                await conn.request("plain")
            assert info.value.remote_type == "KeyError"
            assert "raise KeyError" in info.value.remote_traceback
            with pytest.raises(rio.RemoteError, match="cannot be encoded"):
                await conn.request("unencodable")
            assert _any.decode(await conn.request("fine")) == "fine"

    run(main())


def test_handlers_may_answer_with_a_value_or_a_future(run: Run) -> None:
    async def main() -> None:
        later: list[asyncio.Future[Any]] = []
        asked = asyncio.Event()

        def handle(conn: Connection, body: msgspec.Raw) -> Any:
            what = _any.decode(body)
            fut = asyncio.get_running_loop().create_future()
            if what == "value":
                return "plain"
            if what == "done":
                fut.set_result("already")
            elif what == "failed":
                fut.set_exception(rio.Deadlock("A/1 -> B/2 -> A/1", ["A/1", "B/2", "A/1"]))
            elif what == "cancelled":
                fut.cancel()
            else:
                later.append(fut)
                asked.set()
            return fut

        async with node(handle) as server, client(server.port) as conn:
            assert _any.decode(await conn.request("value")) == "plain"
            assert _any.decode(await conn.request("done")) == "already"
            with pytest.raises(rio.Deadlock) as info:
                await conn.request("failed")
            assert info.value.chain == ["A/1", "B/2", "A/1"]
            with pytest.raises(rio.RemoteError, match="the handler was cancelled"):
                await conn.request("cancelled")
            pending = conn.request("later")
            await asked.wait()
            assert server.connections[0].statistics().serving == 1
            later[0].set_result("in time")
            assert _any.decode(await pending) == "in time"
            assert server.connections[0].statistics().serving == 0

    run(main())


def test_writes_gather_under_load_and_go_at_once_when_light(run: Run) -> None:
    async def main() -> None:
        async with node() as server, client(server.port) as conn:
            alone = conn.request("alone")
            assert not conn._out  # light traffic: written at once
            burst = [conn.request(i) for i in range(100)]
            assert len(conn._out) > 90 * 4  # a burst waits for the end of the loop pass
            sent = conn.statistics().bytes_sent
            await asyncio.gather(alone, *burst)
            assert not conn._out
            assert conn.statistics().bytes_sent == sent  # nothing was held back
            await conn.request("a round trip later")
            again = conn.request("alone again")
            assert not conn._out
            assert _any.decode(await again) == "alone again"

    run(main())


def test_thousand_requests_in_flight_answered_out_of_order(run: Run) -> None:
    n = 1000

    async def main() -> None:
        gates: dict[int, asyncio.Future[None]] = {}
        all_started = asyncio.Event()

        async def handle(conn: Connection, body: msgspec.Raw) -> int:
            i = _any.decode(body)
            gates[i] = asyncio.get_running_loop().create_future()
            if len(gates) == n:
                all_started.set()
            await gates[i]
            return int(i) * 10

        async with node(handle) as server, client(server.port) as conn:
            order: list[int] = []
            futs = [conn.request(i) for i in range(n)]
            for i, f in enumerate(futs):
                f.add_done_callback(lambda _, i=i: order.append(i))
            await all_started.wait()
            assert server.connections[0].statistics().serving == n
            for i in reversed(range(n)):
                gates[i].set_result(None)
            replies = [_any.decode(await f) for f in futs]
            assert replies == [i * 10 for i in range(n)]  # each matched to its own request
            assert order == list(reversed(range(n)))  # and they came back last-first

    run(main())


def test_frames_up_to_the_size_limit_and_refused_over_it(run: Run) -> None:
    limit = 1 << 20
    opts = TransportOptions(max_frame_size=limit, read_buffer_size=4096)

    async def handle(conn: Connection, body: msgspec.Raw) -> Any:
        size = _any.decode(body)
        return bytes(size) if isinstance(size, int) else body

    async def main() -> None:
        async with node(handle, options=opts) as server, client(server.port, options=opts) as conn:
            near = b"\x07" * (limit - 16)  # the frame: 3 bytes of array, 5 of bin header
            assert _any.decode(await conn.request(near)) == near
            with pytest.raises(rio.BadArguments, match="over max_frame_size"):
                conn.request(b"x" * limit)
            with pytest.raises(
                rio.RemoteError, match=r"reply to request 3 is \d+ bytes is over max_frame_size"
            ):
                await conn.request(limit)
            assert _any.decode(await conn.request(limit - 16)) == bytes(limit - 16)
            await still_serves(server, conn)

    run(main())


def test_request_timeout_then_late_reply_is_dropped(run: Run) -> None:
    async def main() -> None:
        release = asyncio.Event()
        answered = asyncio.Event()

        async def handle(conn: Connection, body: msgspec.Raw) -> Any:
            if _any.decode(body) == "slow":
                await release.wait()
                answered.set()
            return body

        async with node(handle) as server, client(server.port, name="node-b") as conn:
            with pytest.raises(
                rio.CallTimeout, match=r"node node-b did not answer request 1 within 0.05s"
            ):
                await conn.request("slow", timeout=0.05)
            release.set()
            await answered.wait()
            assert _any.decode(await conn.request("after")) == "after"
            assert conn.statistics().requests_waiting == 0

    run(main())


def test_requests_go_both_ways_on_one_connection(run: Run) -> None:
    async def server_side(conn: Connection, body: msgspec.Raw) -> Any:
        # Ask the dialing node something back before answering it.
        back = _any.decode(await conn.request(["double", _any.decode(body)]))
        return back + 1

    async def client_side(conn: Connection, body: msgspec.Raw) -> Any:
        _, x = _any.decode(body)
        return x * 2

    async def main() -> None:
        async with node(server_side) as server, client(server.port, handler=client_side) as conn:
            assert [
                _any.decode(r) for r in await asyncio.gather(*(conn.request(i) for i in range(5)))
            ] == [
                1,
                3,
                5,
                7,
                9,
            ]

    run(main())


def test_a_burst_travels_in_batch_frames_answered_in_order(run: Run) -> None:
    async def main() -> None:
        async with node() as server, client(server.port) as conn:
            futs = [conn.request(["n", i]) for i in range(2000)]  # one loop pass
            assert [_any.decode(await f) for f in futs] == [["n", i] for i in range(2000)]
            [served] = server.connections
            frames = served.statistics().frames_received
            assert frames < 2000 // 10, frames  # batches, not a frame per request
            # A batch frame of requests from a raw peer is served like its messages.
            reader, writer = await authenticated_raw_peer(server.port)
            writer.write(frame(_encode([8, [[1, 1, "a"], [1, 2, "b"], [5, 9]]])))
            got: list[Any] = []
            while len(got) < 3:  # plain frames or batches, as the answers come
                (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
                msg = _any.decode(await reader.readexactly(size))
                got.extend(msg[1] if msg[0] == 8 else [msg])
            assert sorted(got) == [[2, 1, "a"], [2, 2, "b"], [6, 9]]
            writer.close()
            await still_serves(server, conn)

    run(main())


def test_a_burst_keeps_every_frame_under_max_frame_size(run: Run) -> None:
    # Small frames, and no write before the pass ends: a message that would take the
    # batch over the limit goes alone; one over the limit by itself is refused.
    opts = TransportOptions(max_frame_size=2000, coalesce_bytes=1 << 20)

    async def main() -> None:
        async with node(options=opts) as server, client(server.port, options=opts) as conn:
            bodies = ["s" * 300] * 5 + ["b" * 1980] + ["s" * 300] * 3
            futs = [conn.request(b) for b in bodies]
            with pytest.raises(rio.BadArguments, match="over max_frame_size"):
                conn.request("x" * 2100)
            assert [_any.decode(await f) for f in futs] == bodies
            await still_serves(server, conn)

    run(main())


def test_a_body_that_cannot_be_encoded_in_a_burst_leaves_the_others_whole(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]
    monkeypatch.setattr(_connection, "_clock", lambda: now[0])  # bursts, on command

    async def main() -> None:
        async with node() as server, client(server.port) as conn:
            futs = []
            for i in range(300):  # one loop pass: the first goes at once, the rest batched
                if i % 3 == 1:
                    with pytest.raises(rio.BadArguments, match="cannot be encoded"):
                        conn.request(object())
                else:
                    futs.append((i, conn.request(i)))
            assert [_any.decode(await f) for _, f in futs] == [i for i, _ in futs]
            # The bad one starts a burst, and the next goes out at once, alone.
            await asyncio.sleep(0)  # the batch above is written
            now[0] += 1.0
            first = conn.request("first")  # light traffic: at once
            with pytest.raises(rio.BadArguments, match="cannot be encoded"):
                conn.request(object())  # right after it: would start a burst
            now[0] += 1.0
            alone = conn.request("alone")  # light traffic again: at once, alone
            async with asyncio.timeout(5):
                assert [_any.decode(await f) for f in (first, alone)] == ["first", "alone"]
            await still_serves(server, conn)

    run(main())


def test_call_frames_reach_on_call_and_are_refused_without_it(run: Run) -> None:
    seen: list[tuple[str, str, str, float, Any, Any]] = []

    def on_call(conn: Connection, call: Call) -> Any:
        seen.append(
            (call.type_name, call.object_id, call.method, call.budget, call.chain, call.args)
        )
        if call.method == "boom":
            raise ValueError("no such luck")
        return ["ran", _any.decode(call.args)]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with node(on_call=on_call) as server, client(server.port) as conn:
            futs = [loop.create_future() for _ in range(3)]
            deadline = loop.time() + 5
            conn.call_into("T", "a", "m", (), (1, "x"), deadline, 5.0, futs[0])
            conn.call_into("T", "b", "m", (("U", "u"), ("T", "b")), (), deadline, 4.0, futs[1])
            conn.call_into("T", "c", "boom", (), (), deadline, 5.0, futs[2])
            assert _any.decode(await futs[0]) == ["ran", [1, "x"]]
            assert _any.decode(await futs[1]) == ["ran", []]
            with pytest.raises(rio.RemoteError, match="no such luck"):
                await futs[2]
            assert seen[0][:5] == ("T", "a", "m", 5.0, ())
            assert seen[1][4] == (("U", "u"), ("T", "b"))
            with pytest.raises(TypeError):  # nothing is sent: the router names the argument
                conn.call_into("T", "a", "m", (), (object(),), deadline, 5.0, futs[0])
            await still_serves(server, conn)
        async with node() as server, client(server.port) as conn:  # no on_call
            fut = loop.create_future()
            conn.call_into("T", "a", "m", (), (), loop.time() + 5, 5.0, fut)
            with pytest.raises(rio.RioError, match=r"serves no calls .*given no on_call"):
                await fut
            await still_serves(server, conn)

    run(main())


def test_a_dialing_node_without_handler_refuses_requests_clearly(run: Run) -> None:
    async def handle(conn: Connection, body: msgspec.Raw) -> Any:
        return await conn.request("hello?")

    async def main() -> None:
        async with node(handle) as server, client(server.port) as conn:
            with pytest.raises(
                rio.RioError,
                match=r"dialed 127\.0\.0\.1:\d+ serves no requests .*given no handler",
            ):
                await conn.request("x")

    run(main())


def test_oneway_messages_arrive_in_order(run: Run) -> None:
    async def main() -> None:
        got: list[int] = []

        def on_oneway(conn: Connection, body: msgspec.Raw) -> None:
            got.append(_any.decode(body))

        async with node(on_oneway=on_oneway) as server, client(server.port) as conn:
            for i in range(200):
                await conn.send_oneway(i)
            await conn.request("sync")  # after the one-way messages in the same stream
            assert got == list(range(200))

    run(main())


def test_a_failing_oneway_handler_is_logged_and_the_connection_goes_on(
    run: Run, logs: list[str]
) -> None:
    async def main() -> None:
        async def later(body: msgspec.Raw) -> None:
            raise RuntimeError(f"async {_any.decode(body)}")

        def on_oneway(conn: Connection, body: msgspec.Raw) -> Any:
            if _any.decode(body) == "sync":
                raise ValueError("sync")
            return later(body)

        async with node(on_oneway=on_oneway) as server, client(server.port) as conn:
            await conn.send_oneway("sync")
            await conn.send_oneway("task")
            await conn.request("sync point")
            await asyncio.gather(
                *server.connections[0]._inbound.tasks.values(), return_exceptions=True
            )
            assert _any.decode(await conn.request("still")) == "still"
        failed = logged(logs, "ERROR", "the one-way handler failed on a message from 127.0.0.1:")
        assert len(failed) == 2

    run(main())


def test_handlers_beyond_max_in_flight_wait_their_turn(run: Run) -> None:
    limit = 4

    async def main() -> None:
        go = asyncio.Event()
        all_started = asyncio.Event()
        started = 0

        async def handle(conn: Connection, body: msgspec.Raw) -> Any:
            nonlocal started
            started += 1
            if started == limit:
                all_started.set()
            await go.wait()
            return body

        marker = asyncio.Event()
        opts = TransportOptions(max_in_flight=limit)
        async with (
            node(handle, options=opts, on_oneway=lambda c, b: marker.set()) as server,
            client(server.port) as conn,
        ):
            futs = [conn.request(i) for i in range(50)]
            await conn.send_oneway("after the requests")
            await marker.wait()  # one-way messages are taken in order: all 50 have arrived
            await all_started.wait()
            stats = server.connections[0].statistics()
            assert (stats.serving, stats.queued, started) == (limit, 46, limit)
            go.set()
            assert [_any.decode(await f) for f in futs] == list(range(50))

    run(main())


def test_a_burst_read_at_once_is_handled_over_several_loop_passes(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Requests that arrive in one read are not all handled in one callback: the loop
    # gets a turn after every READ_BUDGET bytes of frames (another peer's probe waits
    # for it; a flood used to stall a node until its peers declared it dead), and
    # every request is still answered, in order. A small budget makes any read big.
    monkeypatch.setattr(_connection, "READ_BUDGET", 1024)  # about 14 of these frames
    n = 3_000

    async def main() -> None:
        loop = asyncio.get_running_loop()
        handled = 0
        seen_between: list[int] = []

        def handle(conn: Connection, body: msgspec.Raw) -> Any:
            nonlocal handled
            handled += 1
            if handled == 1:  # runs once the loop gets a turn
                loop.call_soon(lambda: seen_between.append(handled))
            return body

        async with node(handle) as server:
            reader, writer = await authenticated_raw_peer(server.port)
            payload = "x" * 60
            writer.write(b"".join(frame(_encode([1, i, payload])) for i in range(n)))
            replies = RecvBuffer(1 << 16, 1 << 20)
            got: list[Any] = []
            while len(got) < n:
                view = replies.get_buffer()
                data = await reader.read(len(view))
                assert data, "the node closed the connection"
                view[: len(data)] = data
                replies.end += len(data)
                frames, error = replies.frames()
                assert error is None
                for f in frames:
                    msg = _any.decode(f)
                    got.extend(msg[1] if msg[0] == 8 else [msg])  # batches of replies
            writer.close()
        assert [(kind, req) for kind, req, _ in got] == [(2, i) for i in range(n)]
        assert seen_between
        assert seen_between[0] <= 20

    run(main())


# ------------------------------------------------------------------ connections that end


def test_dropped_connection_fails_pending_requests_naming_the_peer(run: Run) -> None:
    async def main() -> None:
        arrived = asyncio.Event()

        async def handle(conn: Connection, body: msgspec.Raw) -> Any:
            arrived.set()
            await asyncio.Event().wait()  # never answers; cancelled when the server closes

        async with node(handle) as server, client(server.port, name="node-b") as conn:
            futs = [conn.request(i) for i in range(3)]
            await arrived.wait()
            await server.connections[0].close()
            for i, f in enumerate(futs, 1):
                with pytest.raises(rio.NodeUnreachable) as info:
                    await f
                assert str(info.value) == (
                    f"the connection to node node-b closed (it closed the connection) before "
                    f"request {i} was answered; it may or may not have run"
                )
            with pytest.raises(rio.NodeUnreachable, match="node node-b: it closed the connection"):
                await conn.request("again")
            with pytest.raises(rio.NodeUnreachable):
                await conn.send_oneway("again")
            assert conn.is_closed
            assert conn.close_reason == "it closed the connection"

    run(main())


def test_server_close_fails_its_clients_pending_requests(run: Run) -> None:
    async def main() -> None:
        arrived = asyncio.Event()

        async def handle(conn: Connection, body: msgspec.Raw) -> Any:
            arrived.set()
            await asyncio.Event().wait()

        server = await serve(handle, secret=SECRET)
        conn = await connect(HOST, server.port, secret=SECRET)
        fut = conn.request("x")
        await arrived.wait()
        await server.close()
        with pytest.raises(rio.NodeUnreachable, match="before request 1 was answered"):
            await fut
        await conn.wait_closed()
        with pytest.raises(rio.NodeUnreachable, match=r"cannot connect to node 127\.0\.0\.1:\d+: "):
            await connect(HOST, server.port, secret=SECRET)

    run(main())


def test_keepalive_finds_a_peer_that_stopped_reading(run: Run, logs: list[str]) -> None:
    opts = TransportOptions(ping_interval=0.05, ping_timeout=0.3)

    async def main() -> None:
        async with node() as server, client(server.port, options=opts, name="node-b") as conn:
            assert _any.decode(await conn.request("alive")) == "alive"
            # The peer's process is still there, its socket open, but it reads no more.
            transport = server.connections[0]._transport
            assert transport is not None
            transport.pause_reading()
            with pytest.raises(
                rio.NodeUnreachable, match=r"no answer to a keep-alive ping within 0\.3s"
            ):
                await conn.request("anyone?")
            assert logged(logs, "WARNING", "closing the connection with node-b", "keep-alive")

    run(main())


def test_keepalive_spares_a_peer_whose_requests_this_end_stopped_reading(run: Run) -> None:
    # A node that stops reading a client because too many of its requests wait
    # (max_in_flight) cannot read the client's pong either: it used to close that
    # connection after ping_timeout, losing the answers of everything in flight.
    # Both ends ping (as cluster nodes do); the caller is kept alive by the answers
    # that do come, one every 50 ms, while the node reads nothing for 2 s.
    opts = TransportOptions(max_in_flight=1, ping_interval=0.1, ping_timeout=0.6)

    async def main() -> None:
        async def slow(conn: Connection, body: msgspec.Raw) -> Any:
            await asyncio.sleep(0.05)
            return body

        async with (
            node(slow, options=opts) as server,
            client(server.port, options=opts) as conn,
        ):
            futs = [conn.request(i) for i in range(40)]  # 2 s of work, one at a time
            assert [_any.decode(await f) for f in futs] == list(range(40))
            assert not conn.is_closed
            assert not server.connections[0].is_closed

    run(main())


def test_keepalive_keeps_a_quiet_healthy_connection(run: Run) -> None:
    opts = TransportOptions(ping_interval=0.01, ping_timeout=0.1)

    async def main() -> None:
        async with node(options=opts) as server, client(server.port, options=opts) as conn:
            before = conn.statistics().frames_received
            await asyncio.sleep(0.4)  # four ping timeouts: time itself is what is tested
            assert conn.statistics().frames_received >= before + 10  # pings and pongs
            assert not conn.is_closed
            assert _any.decode(await conn.request("still")) == "still"

    run(main())


# ------------------------------------------------------------------ authentication


def test_wrong_secret_is_refused_and_logged_on_both_sides(run: Run, logs: list[str]) -> None:
    async def main() -> None:
        async with node() as server, client(server.port) as good:
            with pytest.raises(rio.NodeUnreachable) as info:
                await connect(HOST, server.port, secret="not-the-secret")
            assert "cluster secrets differ" in str(info.value)
            assert logged(logs, "WARNING", "refused 127.0.0.1:", "failed authentication")
            assert logged(logs, "WARNING", f"handshake with 127.0.0.1:{server.port} failed")
            await still_serves(server, good)

    run(main())


def test_a_server_that_cannot_prove_the_secret_is_refused(run: Run, logs: list[str]) -> None:
    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Speaks the protocol, accepts any proof, but holds another secret.
        try:
            theirs = _auth.check_hello(await reader.readexactly(_auth.HELLO_SIZE))
            mine = _auth.new_nonce()
            writer.write(_auth.hello(mine))
            await reader.readexactly(_auth.PROOF_SIZE)
            writer.write(_auth.proof(b"other", "server", theirs, mine))
            await rest_until_closed(reader)
        finally:
            writer.close()

    async def main() -> None:
        fake = await asyncio.start_server(impostor, HOST, 0)
        port = fake.sockets[0].getsockname()[1]
        async with fake:
            with pytest.raises(rio.NodeUnreachable, match="could not prove it holds"):
                await connect(HOST, port, secret=SECRET, name="impostor")
        assert logged(logs, "WARNING", "handshake with impostor failed", "could not prove")

    run(main())


def test_a_peer_that_hangs_up_before_its_challenge_is_not_called_a_secret_mismatch(
    run: Run, logs: list[str]
) -> None:
    # A TLS node dialed in plain TCP, another rio version, no rio node at all, or a
    # node killed while we dial: it never read our proof, so the secrets are not the
    # reason (it is still passed over, as a node that refuses us).
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(_auth.HELLO_SIZE)
        writer.close()

    async def main() -> None:
        fake = await asyncio.start_server(hang_up, HOST, 0)
        port = fake.sockets[0].getsockname()[1]
        async with fake:
            with pytest.raises(rio.NodeUnreachable) as info:
                await connect(HOST, port, secret=SECRET, name="gone")
        message = str(info.value)
        assert (
            "in the handshake, before its challenge: the TLS settings or rio versions differ"
            in message
        )
        assert "secrets" not in message
        assert logged(logs, "WARNING", "handshake with gone failed", "before its challenge")

    run(main())


def test_the_secret_never_crosses_the_wire(run: Run) -> None:
    async def main() -> None:
        seen = bytearray()

        async def tap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # A relay that records both directions.
            up_r, up_w = await asyncio.open_connection(HOST, server.port)

            async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                try:
                    while data := await src.read(65536):
                        seen.extend(data)
                        dst.write(data)
                finally:
                    dst.close()

            await asyncio.gather(pump(reader, up_w), pump(up_r, writer), return_exceptions=True)

        async with node() as server:
            relay = await asyncio.start_server(tap, HOST, 0)
            async with relay, client(relay.sockets[0].getsockname()[1]) as conn:
                assert _any.decode(await conn.request("hi")) == "hi"
        assert seen.startswith(_auth.MAGIC)
        assert SECRET.encode() not in seen

    run(main())


def test_empty_secret_and_bad_options_are_config_errors(run: Run) -> None:
    with pytest.raises(rio.ConfigError, match="cluster secret is empty"):
        _auth.secret_bytes("")
    with pytest.raises(rio.ConfigError, match="must be str or bytes"):
        _auth.secret_bytes(123)  # type: ignore[arg-type]
    with pytest.raises(rio.ConfigError, match="max_frame_size must be a whole number >= 1"):
        TransportOptions(max_frame_size=0)
    with pytest.raises(rio.ConfigError, match="ping_timeout must be seconds > 0"):
        TransportOptions(ping_timeout=-1)
    with pytest.raises(rio.ConfigError, match="write_buffer_low <= write_buffer_high"):
        TransportOptions(write_buffer_low=10, write_buffer_high=5)

    async def main() -> None:
        with pytest.raises(rio.ConfigError, match="cluster secret is empty"):
            await serve(echo, secret=b"")
        async with node() as server, client(server.port) as conn:
            with pytest.raises(rio.BadArguments, match="timeout must be > 0"):
                conn.request("x", timeout=0)
            with pytest.raises(rio.ConfigError, match="cannot listen"):
                await serve(echo, secret=SECRET, port=server.port)

    run(main())


def test_a_stranger_costs_little_memory_until_authenticated(run: Run, logs: list[str]) -> None:
    opts = TransportOptions(handshake_timeout=0.3)

    async def main() -> None:
        async with node(options=opts) as server, client(server.port) as good:
            assert len(good._rx._buf) == opts.read_buffer_size  # full size once trusted
            reader, writer = await raw_peer(server.port)
            # After the hello, not a proof yet; read as a frame, it would announce 10 MB.
            writer.write(_auth.hello(_auth.new_nonce()) + HEADER.pack(10_000_000) + b"x" * 20)
            await reader.readexactly(_auth.HELLO_SIZE)
            [stranger] = [c for c in server._all if c not in server.connections]
            for _ in range(1000):  # no event to wait on: until the server has read it
                if stranger.statistics().bytes_received == _auth.HELLO_SIZE + 24:
                    break
                await asyncio.sleep(0.001)
            assert stranger.statistics().bytes_received == _auth.HELLO_SIZE + 24
            assert len(stranger._rx._buf) <= 256
            assert await rest_until_closed(reader) == b""  # and nothing more
            writer.close()
            assert logged(logs, "refused", "no complete handshake within 0.3s")

    run(main())


# ------------------------------------------------------------------ bad input


def test_garbage_bytes_are_refused_before_the_handshake(run: Run, logs: list[str]) -> None:
    async def main() -> None:
        async with node() as server, client(server.port) as good:
            reader, writer = await raw_peer(server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await rest_until_closed(reader) == b""  # not even a nonce
            writer.close()
            assert logged(
                logs,
                "refused 127.0.0.1:",
                "not a rio cluster node (it sent b'GET / HTTP/1.1\\r\\n' where",
            )
            await still_serves(server, good)

    run(main())


def test_another_protocol_version_is_refused(run: Run, logs: list[str]) -> None:
    async def main() -> None:
        async with node() as server:
            reader, writer = await raw_peer(server.port)
            writer.write(_auth.MAGIC + bytes([99]) + _auth.new_nonce())
            assert await rest_until_closed(reader) == b""
            writer.close()
            assert logged(
                logs, "refused", f"cluster protocol version 99, this node {_auth.VERSION}"
            )
            await still_serves(server)

    run(main())


def test_a_silent_peer_is_dropped_after_the_handshake_timeout(run: Run, logs: list[str]) -> None:
    opts = TransportOptions(handshake_timeout=0.1)

    async def main() -> None:
        async with node(options=opts) as server:
            reader, writer = await raw_peer(server.port)
            assert await rest_until_closed(reader) == b""
            writer.close()
            assert logged(logs, "refused", "no complete handshake within 0.1s")

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await rest_until_closed(reader)
            finally:
                writer.close()

        mute = await asyncio.start_server(silent, HOST, 0)
        async with mute:
            port = mute.sockets[0].getsockname()[1]
            with pytest.raises(rio.NodeUnreachable, match=r"no complete handshake within 0\.1s"):
                await connect(HOST, port, secret=SECRET, options=opts)

    run(main())


@pytest.mark.parametrize(
    ("sent", "reason"),
    [
        pytest.param(
            b"\xff\xff\xff\xff" + b"x" * 64,
            "frame of 4294967295 bytes is over max_frame_size (16777216)",
            id="huge-length-prefix",
        ),
        pytest.param(frame(_encode([99, 1, 2])), "unknown message kind 99", id="unknown-kind"),
        pytest.param(frame(b"\xc1\x00"), "malformed frame (2 bytes, not msgpack", id="not-msgpack"),
        pytest.param(
            frame(_encode([1, "one", 2])),
            "malformed frame (7 bytes): Expected `int`, got `str` - at `$[1]`",
            id="bad-shape",
        ),
        pytest.param(frame(b""), "malformed frame (0 bytes, not msgpack", id="empty"),
        pytest.param(
            frame(_encode([7, 1, "T", "a", "m", "soon", [], [1]])),
            "Expected `float`, got `str` - at `$[5]`",
            id="call-bad-budget",
        ),
        pytest.param(
            frame(_encode([8, [[1, 3, "ok"], [1, "three", "ok"]]])),
            "Expected `int`, got `str` - at `$[1][1][1]`",
            id="batch-with-a-bad-message",
        ),
        pytest.param(
            frame(_encode([7, 1, "T", "a"])),
            "malformed frame (7 bytes): Expected `array` of at least length 8, got 4",
            id="call-truncated",
        ),
    ],
)
def test_bad_frames_close_that_connection_only(
    run: Run, logs: list[str], sent: bytes, reason: str
) -> None:
    async def main() -> None:
        async with node() as server, client(server.port) as good:
            reader, writer = await authenticated_raw_peer(server.port)
            writer.write(frame(_encode([1, 7, "ok"])))  # a good request is answered
            reply = frame(_encode([2, 7, "ok"]))
            assert await reader.readexactly(len(reply)) == reply
            writer.write(sent)
            assert await rest_until_closed(reader) == b""
            writer.close()
            assert logged(logs, "WARNING", "closing the connection with 127.0.0.1:", reason)
            await still_serves(server, good)

    run(main())


def test_a_truncated_frame_is_logged_and_closes_the_connection(run: Run, logs: list[str]) -> None:
    async def main() -> None:
        async with node() as server, client(server.port) as good:
            reader, writer = await authenticated_raw_peer(server.port)
            writer.write(HEADER.pack(100) + b"0123456789")
            writer.write_eof()
            assert await rest_until_closed(reader) == b""
            writer.close()
            # The server logs when its side of the connection is gone.
            while not logged(logs, "truncated frame"):
                await still_serves(server, good)
            assert logged(
                logs,
                "WARNING",
                "closing the connection with 127.0.0.1:",
                "truncated frame: the connection ended after 10 of the 100 bytes of a frame",
            )

    run(main())


# ------------------------------------------------------------------ backpressure


def test_a_sender_waits_while_the_peer_does_not_read(run: Run) -> None:
    opts = TransportOptions(write_buffer_high=64 * 1024, write_buffer_low=16 * 1024)
    chunk = b"z" * 65536

    async def main() -> None:
        got = 0

        def on_oneway(conn: Connection, body: msgspec.Raw) -> None:
            nonlocal got
            got += 1

        async with node(on_oneway=on_oneway) as server, client(server.port, options=opts) as conn:
            assert _any.decode(await conn.request("hi")) == "hi"
            peer = server.connections[0]._transport
            assert peer is not None
            peer.pause_reading()
            sent = 0
            # Fill the kernel's socket buffers and then ours, until a send has to wait.
            while True:
                send = asyncio.ensure_future(conn.send_oneway(chunk))
                await asyncio.sleep(0)
                if not send.done():
                    break
                await send
                sent += 1
                assert sent < 10_000, "the sender never had to wait"
            assert conn.statistics().write_paused
            blocked = conn.request("queued behind")
            too_late = conn.request("in a hurry", timeout=0.05)
            await asyncio.sleep(0)
            assert not blocked.done()
            with pytest.raises(rio.CallTimeout, match=r"did not take a request within 0\.05s"):
                await too_late
            transport = conn._transport
            assert transport is not None
            assert transport.get_write_buffer_size() <= opts.write_buffer_high + 2 * len(chunk)
            peer.resume_reading()
            await send
            assert _any.decode(await blocked) == "queued behind"
            assert got == sent + 1

    run(main())


# ------------------------------------------------------------------ TLS


def test_tls_with_a_self_signed_certificate(run: Run, tmp_path: Path, logs: list[str]) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    opts = TransportOptions(handshake_timeout=2.0)

    async def main() -> None:
        async with node(ssl=server_ctx, options=opts) as server:
            async with client(server.port, ssl=client_ctx) as conn:
                assert _any.decode(await conn.request(["over", "tls"])) == ["over", "tls"]
                assert conn._transport is not None
                assert conn._transport.get_extra_info("ssl_object") is not None
            untrusting = ssl.create_default_context()  # does not know our certificate
            with pytest.raises(
                rio.NodeUnreachable, match=r"TLS failed: .*CERTIFICATE_VERIFY_FAILED"
            ):
                await connect(HOST, server.port, secret=SECRET, ssl=untrusting, options=opts)
            with pytest.raises(
                rio.NodeUnreachable,
                match="before its challenge: the TLS settings or rio versions differ",
            ):
                await connect(HOST, server.port, secret=SECRET, options=opts)  # no TLS
            await still_serves_tls(server, client_ctx)
        async with node() as plain:
            with pytest.raises(rio.NodeUnreachable, match=r"TLS handshake \(is TLS on at both"):
                await connect(HOST, plain.port, secret=SECRET, ssl=client_ctx, options=opts)
            assert logged(logs, "refused", "that is TLS: use TLS on both ends or on neither")

    async def still_serves_tls(server: Server, ctx: ssl.SSLContext) -> None:
        async with client(server.port, ssl=ctx) as conn:
            assert _any.decode(await conn.request("again")) == "again"

    run(main())


# ------------------------------------------------------------------ the receive buffer


def test_recv_buffer_cuts_frames_across_any_chunking() -> None:
    rng = random.Random(7)
    bodies = [bytes([i % 251]) * rng.choice([0, 1, 5, 100, 3000, 70_000]) for i in range(300)]
    stream = b"".join(frame(b) for b in bodies)
    rx = RecvBuffer(4096, 1 << 20)
    got: list[bytes] = []
    pos = 0
    while pos < len(stream):
        room = rx.get_buffer()
        assert len(room) > 0
        n = min(len(room), rng.choice([1, 3, 4, 7, 1000, 65536]), len(stream) - pos)
        room[:n] = stream[pos : pos + n]
        room.release()
        rx.end += n
        pos += n
        frames, error = rx.frames()
        assert error is None
        got.extend(bytes(f) for f in frames)
    assert got == bodies
    assert rx.pending() == 0
    assert len(rx.get_buffer()) == 4096  # shrunk back after the large frames


def test_encode_frame_refuses_oversize_and_leaves_the_buffer_as_it_was() -> None:
    out = bytearray(b"before")
    encode_frame(out, (4, b"abc"), 100)
    assert out == b"before" + frame(_encode([4, b"abc"]))
    snapshot = bytes(out)
    with pytest.raises(ValueError, match="over max_frame_size"):
        encode_frame(out, (4, b"x" * 200), 100)
    with pytest.raises(TypeError):
        encode_frame(out, (4, object()), 100)
    assert out == snapshot


def test_a_peer_that_never_reads_its_replies_gets_bounded_memory(run: Run) -> None:
    limit = 8
    opts = TransportOptions(
        max_in_flight=limit, write_buffer_high=64 * 1024, write_buffer_low=16 * 1024
    )
    body = b"r" * 16384

    async def main() -> None:
        async with node(options=opts) as server:
            _, writer = await authenticated_raw_peer(server.port)
            [flooder] = server.connections
            try:
                await flood(server, flooder, writer)
            finally:
                writer.transport.abort()

    async def flood(server: Server, flooder: Connection, writer: asyncio.StreamWriter) -> None:
        async with client(server.port) as good:
            request = frame(_encode([1, 1, body]))
            for _ in range(2000):  # 32 MiB of requests, and not one reply read
                writer.write(request)
            for _ in range(1000):  # no event to wait on: the server just stops reading
                stats = flooder.statistics()
                if stats.reading_paused and stats.write_paused and not stats.serving:
                    break
                await asyncio.sleep(0.005)
            stats = flooder.statistics()
            assert stats.write_paused
            assert stats.reading_paused
            # Requests wait rather than be answered into a full buffer; the bound is
            # soft by at most the frames of one read.
            assert limit // 2 < stats.queued <= limit + opts.read_buffer_size // len(body)
            transport = flooder._transport
            assert transport is not None
            # Over the high-water mark by at most the replies of the requests
            # already being served when writing paused (max_in_flight of them).
            bound = opts.write_buffer_high + opts.coalesce_bytes + (limit + 2) * len(request)
            assert transport.get_write_buffer_size() <= bound
            await still_serves(server, good)

    run(main())
