"""Node-to-node connections: authenticated, pipelined, length-framed msgpack over TCP.

Example::

    async def handle(conn: Connection, body: msgspec.Raw) -> Any:
        method, arg = decoder.decode(body)
        return arg + 1                             # any msgpack value, or msgspec.Raw

    server = await serve(handle, secret="s3cret")  # 127.0.0.1, an ephemeral port
    conn = await connect("127.0.0.1", server.port, secret="s3cret")
    raw = await conn.request(("incr", 1), timeout=2.0)   # -> msgspec.Raw of 2

How it behaves:

* **Authenticated.** Every connection opens with a mutual HMAC challenge over the
  cluster secret (see :mod:`rio.cluster._auth`); a peer that fails it gets nothing and
  is logged. TLS is one ``ssl.SSLContext`` away on both ends.
* **Pipelined.** A connection carries any number of requests at once, both ways;
  replies are matched by request id and may come in any order. Each request has a
  deadline (:class:`rio.CallTimeout`); when the connection drops, every request still
  waiting fails with :class:`rio.NodeUnreachable` naming the peer.
* **Coalesced, bounded writes.** Frames queued during one event-loop pass go out in
  one write. When the peer reads slower than we write, the transport's buffer fills
  up to a high-water mark and senders wait (:meth:`Connection.wait_writable`).
* **Keep-alive.** Each end pings the other; a peer that answers neither pings nor
  requests within ``ping_timeout`` is declared dead and its connection closed.
* **Refuses bad input, keeps serving.** A malformed, oversized or truncated frame, or
  one of an unknown kind, closes that one connection with a logged reason.
* **No pickle.** Frames are msgspec tagged arrays; bodies are msgpack.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import ssl as _ssl
import traceback
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import msgspec
from loguru import logger

from rio.cluster import _auth
from rio.cluster._frames import (
    Failure,
    FrameTooLarge,
    Oneway,
    Ping,
    RecvBuffer,
    Reply,
    Request,
    decode,
    describe_bad_frame,
    encode_frame,
)
from rio.core.errors import (
    BadArguments,
    CallTimeout,
    ConfigError,
    NodeUnreachable,
    RemoteError,
    RioError,
    error_from_wire,
    error_to_wire,
    qualified_name,
)

__all__ = [
    "Connection",
    "ConnectionStatistics",
    "Handler",
    "OnewayHandler",
    "Server",
    "TransportOptions",
    "connect",
    "serve",
]

#: ``async def handle(conn, body) -> reply``: answers one request (a value or Raw).
Handler = Callable[["Connection", msgspec.Raw], Awaitable[Any]]
#: ``def on_oneway(conn, body)``: takes one one-way message, called in arrival order.
OnewayHandler = Callable[["Connection", msgspec.Raw], object]

_HANDSHAKE, _READY, _CLOSED = 0, 1, 2
_REQUEST, _REPLY, _FAILURE, _ONEWAY, _PING, _PONG = 1, 2, 3, 4, 5, 6
_MiB = 1 << 20


@dataclass(frozen=True, kw_only=True, slots=True)
class TransportOptions:
    """Settings of a connection; each end applies its own.

    Example::

        TransportOptions(ping_interval=1.0, ping_timeout=3.0)

    Attributes:
        max_frame_size: largest frame body in bytes, either way (16 MiB). A bigger
            incoming length prefix closes the connection before anything is allocated
            for it; a bigger outgoing message fails with :class:`rio.BadArguments`.
        request_timeout: seconds a request waits for its reply when the caller gives
            no timeout (30).
        ping_interval: seconds between keep-alive pings (5).
        ping_timeout: seconds without an answer to a ping (or any reply) after which
            the peer is declared dead and the connection closed (10).
        handshake_timeout: seconds to complete TLS and the secret handshake (5).
        connect_timeout: seconds to establish the TCP connection (5).
        max_in_flight: requests from the peer handled at once on one connection
            (10,000). More wait in arrival order; when as many again wait, the
            connection stops reading until half of them have started.
        write_buffer_high: bytes buffered for the peer above which senders wait (1 MiB).
        write_buffer_low: bytes below which they go on again (256 KiB).
        coalesce_bytes: bytes gathered within one loop pass before they are written
            without waiting for the end of the pass (256 KiB).
        read_buffer_size: steady size of the receive buffer (256 KiB); it grows for
            one larger frame at a time, then shrinks back.
    """

    max_frame_size: int = 16 * _MiB
    request_timeout: float = 30.0
    ping_interval: float = 5.0
    ping_timeout: float = 10.0
    handshake_timeout: float = 5.0
    connect_timeout: float = 5.0
    max_in_flight: int = 10_000
    write_buffer_high: int = _MiB
    write_buffer_low: int = _MiB // 4
    coalesce_bytes: int = _MiB // 4
    read_buffer_size: int = _MiB // 4

    def __post_init__(self) -> None:
        for field in ("max_frame_size", "max_in_flight", "read_buffer_size", "coalesce_bytes"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"TransportOptions.{field} must be a whole number >= 1, got {value!r}"
                )
        for field in (
            "request_timeout",
            "ping_interval",
            "ping_timeout",
            "handshake_timeout",
            "connect_timeout",
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"TransportOptions.{field} must be seconds > 0, got {value!r}")
        if not 0 <= self.write_buffer_low <= self.write_buffer_high:
            raise ConfigError(
                "TransportOptions: need 0 <= write_buffer_low <= write_buffer_high, got "
                f"{self.write_buffer_low} and {self.write_buffer_high}"
            )


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """A snapshot of one connection (see :meth:`Connection.statistics`)."""

    peer: str
    requests_waiting: int
    serving: int
    queued: int
    write_paused: bool
    bytes_sent: int
    bytes_received: int
    frames_received: int


class Connection(asyncio.BufferedProtocol):
    """One authenticated connection to another node; requests go both ways.

    Made by :func:`connect` (dialing) or by a :class:`Server` (accepting); either end
    may :meth:`request` and serve requests with its handler.

    Attributes:
        peer: the other node's name for messages (the ``name`` given to
            :func:`connect`, else its ``host:port``).
    """

    def __init__(
        self,
        *,
        secret: bytes,
        server_side: bool,
        options: TransportOptions,
        handler: Handler | None = None,
        on_oneway: OnewayHandler | None = None,
        peer: str = "?",
        on_ready: Callable[[Connection], object] | None = None,
        on_lost: Callable[[Connection], object] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._secret = secret
        self._server_side = server_side
        self._options = options
        self._handler = handler
        self._on_oneway = on_oneway
        self.peer = peer
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._rx = RecvBuffer(options.read_buffer_size, options.max_frame_size)
        self._state = _HANDSHAKE
        self._step: Callable[[], bool] = self._no_step
        self._client_nonce = b""
        self._server_nonce = b""
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._reason: str | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        # Outgoing frames of this loop pass, and backpressure.
        self._max_frame = options.max_frame_size
        self._coalesce = options.coalesce_bytes
        self._out = bytearray()
        self._flush_scheduled = False
        self._write_paused = False
        self._writable: list[asyncio.Future[None]] = []
        # Requests we sent: one timer for all deadlines, a heap of (deadline, id, budget).
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[msgspec.Raw]] = {}
        self._deadlines: list[tuple[float, int, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # Requests we serve.
        self._serving = 0
        self._queued: deque[Request] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reading_paused = False
        # Keep-alive: when the unanswered ping went out (None: nothing outstanding).
        self._ping_ids = itertools.count(1)
        self._ping_sent_at: float | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._bytes_out = 0
        self._bytes_in = 0
        self._frames_in = 0

    def __repr__(self) -> str:
        state = ("handshake", "ready", "closed")[self._state]
        return f"<Connection {self.peer} {state} waiting={len(self._pending)}>"

    # -- the public surface ------------------------------------------------------------

    def request(self, body: Any, *, timeout: float | None = None) -> asyncio.Future[msgspec.Raw]:
        """Send a request; the returned future resolves to the reply body.

        ``body`` is a :class:`msgspec.Raw` (already-encoded msgpack, sent as is) or any
        value msgspec encodes (structs, builtins; ``bytes`` travel as msgpack bin).
        The request is on its way whether or not the future is awaited.

        Example::

            raw = await conn.request(msgspec.Raw(encoded), timeout=1.0)
            value = decoder.decode(raw)

        Raises:
            rio.BadArguments: the body cannot be encoded or is over ``max_frame_size``.

        The future fails with :class:`rio.CallTimeout` when ``timeout`` (default
        ``request_timeout``) passes first, with :class:`rio.NodeUnreachable` when the
        connection drops first, and with the handler's error (a :class:`rio.RioError`,
        or :class:`rio.RemoteError` for any other exception) when it raised.
        """
        loop = self._loop
        if timeout is None:
            timeout = self._options.request_timeout
        elif not timeout > 0:
            raise BadArguments(f"request to node {self.peer}: timeout must be > 0, got {timeout!r}")
        deadline = loop.time() + timeout
        if self._write_paused or self._state != _READY:
            return loop.create_task(self._request_when_writable(body, deadline, timeout))
        return self._request(body, deadline, timeout)

    async def send_oneway(self, body: Any) -> None:
        """Send a message that wants no answer (waits while the peer reads slower).

        ``body`` is as for :meth:`request`; the peer's ``on_oneway`` gets one-way
        messages in the order they were sent.

        Raises:
            rio.NodeUnreachable: the connection is closed.
            rio.BadArguments: the body cannot be encoded or is over ``max_frame_size``.
        """
        if self._write_paused or self._state != _READY:
            await self.wait_writable()
        self._send_checked((_ONEWAY, body), "one-way message")

    async def wait_writable(self) -> None:
        """Wait until the peer has read enough of what was sent to take more.

        Raises:
            rio.NodeUnreachable: the connection is (or becomes) closed.
        """
        while True:
            if self._state != _READY:
                raise self._unreachable("the connection is closed")
            if not self._write_paused:
                return
            waiter = self._loop.create_future()
            self._writable.append(waiter)
            await waiter

    async def close(self) -> None:
        """Close the connection: frames already queued go out first.

        Requests still waiting for a reply fail with :class:`rio.NodeUnreachable`.
        A peer that does not read what is queued gets ``ping_timeout`` seconds.
        """
        self._shutdown("closed by this node")
        if self._transport is None:  # never connected (a TLS handshake that failed)
            if not self._lost.done():
                self._lost.set_result(None)
            return
        try:
            async with asyncio.timeout(self._options.ping_timeout):
                await asyncio.shield(self._lost)
        except TimeoutError:
            if self._transport is not None:
                self._transport.abort()
            await self._lost

    async def wait_closed(self) -> None:
        """Wait until the connection is closed (by either end, or found dead)."""
        await asyncio.shield(self._lost)

    @property
    def is_closed(self) -> bool:
        """True once the connection is closed or closing."""
        return self._state == _CLOSED

    @property
    def close_reason(self) -> str | None:
        """Why the connection closed, or None while it is open."""
        return self._reason if self._state == _CLOSED else None

    def statistics(self) -> ConnectionStatistics:
        """A snapshot of this connection's counters."""
        return ConnectionStatistics(
            peer=self.peer,
            requests_waiting=len(self._pending),
            serving=self._serving,
            queued=len(self._queued),
            write_paused=self._write_paused,
            bytes_sent=self._bytes_out + len(self._out),
            bytes_received=self._bytes_in,
            frames_received=self._frames_in,
        )

    # -- asyncio protocol callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the handshake (asyncio calls this)."""
        t = cast(asyncio.Transport, transport)
        self._transport = t
        if self._server_side:
            self.peer = _format_address(t.get_extra_info("peername"))
        t.set_write_buffer_limits(self._options.write_buffer_high, self._options.write_buffer_low)
        self._handshake_timer = self._loop.call_later(
            self._options.handshake_timeout, self._handshake_timed_out
        )
        if self._server_side:
            self._step = self._server_hello
        else:
            self._client_nonce = _auth.new_nonce()
            t.write(_auth.hello(self._client_nonce))
            self._step = self._client_hello

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the next read lands (asyncio calls this)."""
        return self._rx.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        """Take ``nbytes`` just read (asyncio calls this)."""
        self._rx.end += nbytes
        self._bytes_in += nbytes
        if self._state == _READY:
            self._read_frames()
        elif self._state == _HANDSHAKE:
            self._read_handshake()

    def eof_received(self) -> None:
        """The peer closed its end; close ours (asyncio calls this)."""

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail what waits on the connection (asyncio calls this)."""
        if self._state != _CLOSED:
            rx = self._rx
            if self._state == _READY and rx.pending():
                reason = f"truncated frame: the connection ended after {rx.partial()}"
                logger.warning(
                    "cluster transport: closing the connection with {}: {}", self.peer, reason
                )
            elif self._state == _HANDSHAKE and not self._server_side:
                reason = (
                    "it closed the connection during the handshake: the cluster secrets "
                    "differ, or the rio versions do, or it is not a rio node (its log says which)"
                )
                logger.warning("cluster transport: handshake with {} failed: {}", self.peer, reason)
            elif self._state == _HANDSHAKE:
                reason = "it closed the connection during the handshake"
                if rx.pending() or self._server_nonce:
                    logger.warning("cluster transport: refused {}: {}", self.peer, reason)
            elif exc is not None:
                reason = f"the connection broke: {exc}"
            else:
                reason = "it closed the connection"
            self._shutdown(reason)
        if self._out:
            self._out = bytearray()
        if not self._lost.done():
            self._lost.set_result(None)
        if self._on_lost is not None:
            self._on_lost(self)

    def pause_writing(self) -> None:
        """The transport's buffer is over the high-water mark (asyncio calls this)."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """The transport's buffer drained below the low-water mark (asyncio calls this)."""
        self._write_paused = False
        waiters, self._writable = self._writable, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    # -- the handshake -----------------------------------------------------------------

    def _read_handshake(self) -> None:
        try:
            while self._state == _HANDSHAKE and self._step():
                pass
        except _auth.HandshakeError as e:
            self._refuse(str(e))
            return
        if self._state == _READY and self._rx.pending():
            self._read_frames()

    def _no_step(self) -> bool:  # pragma: no cover - replaced in connection_made
        return False

    def _server_hello(self) -> bool:
        _auth.check_magic_prefix(self._rx.peek(16))
        data = self._rx.take(_auth.HELLO_SIZE)
        if data is None:
            return False
        self._client_nonce = _auth.check_hello(data)
        self._server_nonce = _auth.new_nonce()
        self._write_raw(_auth.hello(self._server_nonce))
        self._step = self._server_proof
        return True

    def _server_proof(self) -> bool:
        data = self._rx.take(_auth.PROOF_SIZE)
        if data is None:
            return False
        if not _auth.verify(self._secret, "client", self._client_nonce, self._server_nonce, data):
            raise _auth.HandshakeError(
                "it failed authentication: its proof does not match this node's cluster "
                "secret (the secrets differ)"
            )
        self._write_raw(_auth.proof(self._secret, "server", self._client_nonce, self._server_nonce))
        self._became_ready()
        return True

    def _client_hello(self) -> bool:
        _auth.check_magic_prefix(self._rx.peek(16))
        data = self._rx.take(_auth.HELLO_SIZE)
        if data is None:
            return False
        self._server_nonce = _auth.check_hello(data)
        self._write_raw(_auth.proof(self._secret, "client", self._client_nonce, self._server_nonce))
        self._step = self._client_proof
        return True

    def _client_proof(self) -> bool:
        data = self._rx.take(_auth.PROOF_SIZE)
        if data is None:
            return False
        if not _auth.verify(self._secret, "server", self._client_nonce, self._server_nonce, data):
            raise _auth.HandshakeError(
                "it failed authentication: it could not prove it holds this node's cluster "
                "secret (the secrets differ)"
            )
        self._became_ready()
        return True

    def _write_raw(self, data: bytes) -> None:
        if self._transport is not None:
            self._bytes_out += len(data)
            self._transport.write(data)

    def _became_ready(self) -> None:
        self._state = _READY
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._arm_keepalive(self._options.ping_interval)
        if not self._ready.done():
            self._ready.set_result(None)
        if self._on_ready is not None:
            self._on_ready(self)

    def _handshake_timed_out(self) -> None:
        self._handshake_timer = None
        if self._state == _HANDSHAKE:
            self._refuse(f"no complete handshake within {self._options.handshake_timeout:.3g}s")

    def _refuse(self, reason: str) -> None:
        if self._server_side:
            logger.warning("cluster transport: refused {}: {}", self.peer, reason)
        else:
            logger.warning("cluster transport: handshake with {} failed: {}", self.peer, reason)
        self._shutdown(reason, abort=True)

    # -- reading frames ----------------------------------------------------------------

    def _read_frames(self) -> None:
        frames, error = self._rx.frames()
        if frames:
            self._frames_in += len(frames)
            pending = self._pending
            for frame in frames:
                try:
                    msg = decode(frame)
                except msgspec.DecodeError as e:
                    self._protocol_error(describe_bad_frame(frame, e))
                    return
                cls = type(msg)
                if cls is Reply:
                    self._ping_sent_at = None  # it reads what we send: alive
                    fut = pending.pop(msg.id, None)  # type: ignore[union-attr]
                    if fut is not None and not fut.done():
                        fut.set_result(msg.body)  # type: ignore[union-attr]
                elif cls is Request:
                    if self._serving < self._options.max_in_flight:
                        self._start(msg)  # type: ignore[arg-type]
                    else:
                        self._queue(msg)  # type: ignore[arg-type]
                elif cls is Failure:
                    self._ping_sent_at = None
                    fut = pending.pop(msg.id, None)  # type: ignore[union-attr]
                    if fut is not None and not fut.done():
                        fut.set_exception(error_from_wire(msg.error))  # type: ignore[union-attr]
                elif cls is Oneway:
                    self._take_oneway(msg.body)  # type: ignore[union-attr]
                elif cls is Ping:
                    self._send((_PONG, msg.id))  # type: ignore[union-attr]
                else:  # Pong
                    self._ping_sent_at = None
                if self._state != _READY:
                    return
        if error is not None:
            self._protocol_error(error)

    def _protocol_error(self, reason: str) -> None:
        logger.warning("cluster transport: closing the connection with {}: {}", self.peer, reason)
        self._shutdown(reason, abort=True)

    def _take_oneway(self, body: msgspec.Raw) -> None:
        if self._on_oneway is None:
            logger.debug("cluster transport: {} sent a one-way message; none expected", self.peer)
            return
        try:
            result = self._on_oneway(self, body)
            if asyncio.iscoroutine(result):
                task = self._loop.create_task(result)
                self._tasks.add(task)
                task.add_done_callback(self._oneway_done)
        except Exception as e:
            logger.opt(exception=e).error(
                "cluster transport: the one-way handler failed on a message from {}", self.peer
            )

    def _oneway_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            logger.opt(exception=e).error(
                "cluster transport: the one-way handler failed on a message from {}", self.peer
            )

    # -- serving requests --------------------------------------------------------------

    def _queue(self, msg: Request) -> None:
        self._queued.append(msg)
        if len(self._queued) >= self._options.max_in_flight and not self._reading_paused:
            self._reading_paused = True
            if self._transport is not None:
                self._transport.pause_reading()

    def _start(self, msg: Request) -> None:
        handler = self._handler
        if handler is None:
            self._answer_error(
                msg.id, RioError(f"node {self.peer} takes no requests on this connection")
            )
            return
        try:
            result = handler(self, msg.body)
        except Exception as e:
            self._answer_error(msg.id, e)
            return
        self._serving += 1
        if isinstance(result, asyncio.Future):
            result.add_done_callback(partial(self._future_done, msg.id))
        else:
            task = self._loop.create_task(self._serve(msg.id, result))
            self._tasks.add(task)

    async def _serve(self, req_id: int, awaitable: Awaitable[Any]) -> None:
        try:
            value = await awaitable
        except asyncio.CancelledError:
            if self._state == _READY:
                self._answer_error(
                    req_id, RemoteError("asyncio.CancelledError", "the handler was cancelled")
                )
            raise
        except Exception as e:
            self._answer_error(req_id, e)
        else:
            self._answer(req_id, value)
        finally:
            self._tasks.discard(asyncio.current_task())
            self._served()

    def _future_done(self, req_id: int, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            self._answer_error(
                req_id, RemoteError("asyncio.CancelledError", "the handler was cancelled")
            )
        elif (e := fut.exception()) is not None:
            self._answer_error(req_id, e)
        else:
            self._answer(req_id, fut.result())
        self._served()

    def _served(self) -> None:
        self._serving -= 1
        queued = self._queued
        if not queued or self._state != _READY:
            return
        limit = self._options.max_in_flight
        while queued and self._serving < limit:
            self._start(queued.popleft())
        if self._reading_paused and len(queued) <= limit // 2 and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()

    def _answer(self, req_id: int, value: Any) -> None:
        if self._state != _READY:
            return
        try:
            self._send((_REPLY, req_id, value))
        except FrameTooLarge as e:
            self._answer_error(
                req_id,
                RemoteError("rio.cluster.FrameTooLarge", f"the reply to request {req_id} is {e}"),
            )
        except (msgspec.EncodeError, TypeError, ValueError, OverflowError) as e:
            self._answer_error(
                req_id,
                RemoteError(
                    qualified_name(type(e)), f"the reply to request {req_id} cannot be encoded: {e}"
                ),
            )

    def _answer_error(self, req_id: int, exc: BaseException) -> None:
        if self._state != _READY:
            return
        if not isinstance(exc, RioError):
            tb = "".join(traceback.format_exception(exc))
            exc = RemoteError(qualified_name(type(exc)), str(exc), tb)
        try:
            self._send((_FAILURE, req_id, error_to_wire(exc)))
        except (FrameTooLarge, msgspec.EncodeError, TypeError, ValueError):
            wire = {"kind": "RemoteError", "args": [qualified_name(type(exc)), str(exc)[:1000], ""]}
            self._send((_FAILURE, req_id, wire))

    # -- writing frames ----------------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        out = self._out
        encode_frame(out, message, self._max_frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        elif len(out) >= self._coalesce:
            self._write_out()

    def _send_checked(self, message: tuple[Any, ...], what: str) -> None:
        try:
            self._send(message)
        except FrameTooLarge as e:
            raise BadArguments(
                f"{what} to node {self.peer}: the body is {e}; send less per message, or "
                "raise max_frame_size on every node"
            ) from None
        except (msgspec.EncodeError, TypeError, ValueError, OverflowError) as e:
            raise BadArguments(
                f"{what} to node {self.peer}: the body cannot be encoded: {e}"
            ) from e

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._write_out()

    def _write_out(self) -> None:
        out = self._out
        if out:
            # A fresh buffer each time: the transport may keep a reference to this one.
            self._out = bytearray()
            t = self._transport
            if t is not None and not t.is_closing():
                self._bytes_out += len(out)
                t.write(out)

    # -- requests we sent --------------------------------------------------------------

    def _request(self, body: Any, deadline: float, timeout: float) -> asyncio.Future[msgspec.Raw]:
        req = next(self._ids)
        self._send_checked((_REQUEST, req, body), "request")
        fut: asyncio.Future[msgspec.Raw] = self._loop.create_future()
        self._pending[req] = fut
        heap = self._deadlines
        heapq.heappush(heap, (deadline, req, timeout))
        if self._timer is None or deadline < self._timer_at:
            self._arm_timer(deadline)
        if len(heap) > 2 * len(self._pending) + 1024:
            self._deadlines = [e for e in heap if e[1] in self._pending]
            heapq.heapify(self._deadlines)
        return fut

    async def _request_when_writable(
        self, body: Any, deadline: float, budget: float
    ) -> msgspec.Raw:
        try:
            async with asyncio.timeout_at(deadline):
                await self.wait_writable()
        except TimeoutError:
            raise CallTimeout(
                f"node {self.peer} did not take a request within {budget:.3g}s: it reads "
                "slower than this node sends"
            ) from None
        return await self._request(body, deadline, budget)

    def _arm_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self._loop.time()
        heap, pending = self._deadlines, self._pending
        while heap and heap[0][0] <= now:
            _, req, timeout = heapq.heappop(heap)
            fut = pending.pop(req, None)
            if fut is not None and not fut.done():
                fut.set_exception(
                    CallTimeout(
                        f"node {self.peer} did not answer request {req} within "
                        f"{timeout:.3g}s; it may still run it"
                    )
                )
        if heap:
            self._arm_timer(heap[0][0])

    # -- keep-alive --------------------------------------------------------------------

    def _arm_keepalive(self, delay: float) -> None:
        self._keepalive = self._loop.call_later(delay, self._on_keepalive)

    def _on_keepalive(self) -> None:
        self._keepalive = None
        if self._state != _READY:
            return
        opts = self._options
        now = self._loop.time()
        sent = self._ping_sent_at
        if sent is None:
            self._ping_sent_at = now
            self._send((_PING, next(self._ping_ids)))
            self._arm_keepalive(min(opts.ping_interval, opts.ping_timeout))
        elif now - sent >= opts.ping_timeout:
            reason = (
                f"no answer to a keep-alive ping within {opts.ping_timeout:.3g}s "
                "(the peer is gone, stuck, or not reading)"
            )
            logger.warning(
                "cluster transport: closing the connection with {}: {}", self.peer, reason
            )
            self._shutdown(reason, abort=True)
        else:
            self._arm_keepalive(min(opts.ping_interval, sent + opts.ping_timeout - now))

    # -- closing -----------------------------------------------------------------------

    def _unreachable(self, reason: str) -> NodeUnreachable:
        return NodeUnreachable(f"node {self.peer}: {self._reason or reason}")

    def _shutdown(self, reason: str, *, abort: bool = False) -> None:
        """Close the connection for ``reason`` and fail everything that waits on it."""
        if self._state == _CLOSED:
            return
        was_ready = self._state == _READY
        self._state = _CLOSED
        self._reason = reason
        for timer in (self._timer, self._keepalive, self._handshake_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._keepalive = self._handshake_timer = None
        self._deadlines.clear()
        pending, self._pending = self._pending, {}
        for req, fut in pending.items():
            if not fut.done():
                fut.set_exception(
                    NodeUnreachable(
                        f"the connection to node {self.peer} closed ({reason}) before request "
                        f"{req} was answered; it may or may not have run"
                    )
                )
        waiters, self._writable = self._writable, []
        for w in waiters:
            if not w.done():
                w.set_exception(self._unreachable(reason))
        self._queued.clear()
        if not self._ready.done():
            if self._server_side:
                self._ready.cancel()
            else:
                self._ready.set_exception(
                    NodeUnreachable(f"cannot connect to node {self.peer}: {reason}")
                )
        t = self._transport
        if t is not None:
            if abort or not was_ready:
                t.abort()
            else:
                self._write_out()
                t.close()


def _format_address(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)


class Server:
    """A listening cluster port: authenticates peers and serves their requests.

    Made by :func:`serve`; use ``async with`` or :meth:`close`.

    Example::

        async with await serve(handle, secret=secret) as server:
            print("listening on", server.address)
    """

    def __init__(
        self,
        secret: bytes,
        handler: Handler | None,
        on_oneway: OnewayHandler | None,
        options: TransportOptions,
    ) -> None:
        self._secret = secret
        self._handler = handler
        self._on_oneway = on_oneway
        self.options = options
        self._server: asyncio.Server | None = None
        self._address = ("", 0)
        # Weak: a connection whose TLS handshake fails is made but never connected.
        self._all: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._ready: set[Connection] = set()
        self._closing = False

    def _make_connection(self) -> Connection:
        conn = Connection(
            secret=self._secret,
            server_side=True,
            options=self.options,
            handler=self._handler,
            on_oneway=self._on_oneway,
            on_ready=self._ready.add,
            on_lost=self._forget,
        )
        self._all.add(conn)
        return conn

    def _forget(self, conn: Connection) -> None:
        self._all.discard(conn)
        self._ready.discard(conn)

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` this server listens on (the real port when 0 was asked)."""
        return self._address

    @property
    def port(self) -> int:
        """The port this server listens on."""
        return self.address[1]

    @property
    def connections(self) -> list[Connection]:
        """The authenticated connections open now."""
        return list(self._ready)

    async def close(self) -> None:
        """Stop listening, close every connection, cancel the handlers still running."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        conns = list(self._all)
        for c in conns:  # first, so that cancelled handlers answer nothing
            c._shutdown("this node is closing its cluster port")
        tasks = [t for c in conns for t in c._tasks]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*(c.close() for c in conns), *tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve(
    handler: Handler | None,
    *,
    secret: str | bytes,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl: _ssl.SSLContext | None = None,
    on_oneway: OnewayHandler | None = None,
    options: TransportOptions | None = None,
) -> Server:
    """Listen for cluster peers on ``host:port`` (loopback and an ephemeral port by default).

    Args:
        handler: ``async def handle(conn, body) -> reply`` for every request; it may
            also return a future. Many run at once on one connection; each reply goes
            back as soon as it is ready. Its exception reaches the caller as the error.
        secret: the cluster secret, the same on every node.
        host: the address to bind; ``"0.0.0.0"`` or a public address opens the port
            to the network (use TLS there).
        port: the port; 0 picks a free one (see :attr:`Server.address`).
        ssl: a server-side ``ssl.SSLContext`` for TLS; None for plain TCP.
        on_oneway: ``def on_oneway(conn, body)`` for one-way messages, called in
            arrival order (a coroutine it returns runs as a task).
        options: connection settings (see :class:`TransportOptions`).

    Raises:
        rio.ConfigError: the secret is empty, or the address cannot be bound.
    """
    opts = options or TransportOptions()
    server = Server(_auth.secret_bytes(secret), handler, on_oneway, opts)
    loop = asyncio.get_running_loop()
    try:
        server._server = await loop.create_server(
            server._make_connection,
            host,
            port,
            ssl=ssl,
            ssl_handshake_timeout=opts.handshake_timeout if ssl is not None else None,
        )
    except OSError as e:
        raise ConfigError(f"cannot listen for cluster peers on {host}:{port}: {e}") from e
    sockname = server._server.sockets[0].getsockname()
    server._address = (str(sockname[0]), int(sockname[1]))
    logger.debug("cluster transport: listening on {}", _format_address(server.address))
    return server


async def connect(
    host: str,
    port: int,
    *,
    secret: str | bytes,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    handler: Handler | None = None,
    on_oneway: OnewayHandler | None = None,
    name: str | None = None,
    options: TransportOptions | None = None,
) -> Connection:
    """Open an authenticated connection to the node listening on ``host:port``.

    Args:
        host: the node's address.
        port: the node's cluster port.
        secret: the cluster secret, the same on every node.
        ssl: a client-side ``ssl.SSLContext`` for TLS; None for plain TCP.
        server_hostname: the name the server's certificate must carry (default: host).
        handler: serves requests the peer sends back on this connection (as for
            :func:`serve`); None refuses them.
        on_oneway: takes one-way messages from the peer.
        name: how errors and log lines name the peer (default ``host:port``).
        options: connection settings (see :class:`TransportOptions`).

    Raises:
        rio.NodeUnreachable: the node cannot be reached, or the handshake failed (the
            message says why: a refused connection, a timeout, TLS, or the secret).
        rio.ConfigError: the secret is empty.
    """
    opts = options or TransportOptions()
    key = _auth.secret_bytes(secret)
    peer = name or _format_address((host, port))
    conn = Connection(
        secret=key, server_side=False, options=opts, handler=handler, on_oneway=on_oneway, peer=peer
    )
    loop = asyncio.get_running_loop()
    tls: dict[str, Any] = {}
    if ssl is not None:
        tls = {
            "ssl": ssl,
            "server_hostname": server_hostname,
            "ssl_handshake_timeout": opts.handshake_timeout,
        }
    try:
        async with asyncio.timeout(opts.connect_timeout + (opts.handshake_timeout if ssl else 0)):
            await loop.create_connection(lambda: conn, host, port, **tls)
    except TimeoutError:
        raise NodeUnreachable(
            f"cannot connect to node {peer}: no connection within {opts.connect_timeout:.3g}s"
        ) from None
    except _ssl.SSLError as e:
        raise NodeUnreachable(f"cannot connect to node {peer}: TLS failed: {e}") from e
    except OSError as e:
        raise NodeUnreachable(f"cannot connect to node {peer}: {e.strerror or e}") from e
    try:
        await conn._ready
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            conn._shutdown("connect() was cancelled", abort=True)
        raise
    return conn
