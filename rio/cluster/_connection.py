"""One authenticated connection between two nodes: the protocol object itself.

The hot paths are written for speed: the socket reads straight into one reusable
buffer (``asyncio.BufferedProtocol``); every complete frame of a read is decoded and
dispatched in one pass; replies resolve their waiters inline; messages queued during
a loop pass (a burst of calls, the replies to one read) are encoded into one batch
frame and written once, at the end of the pass (or sooner past ``coalesce_bytes``),
while a lone message goes out at once as a plain frame.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any, cast

import msgspec
from loguru import logger

from rio.cluster._auth import Handshake, HandshakeError
from rio.cluster._calls import Pending, Waiter
from rio.cluster._frames import (
    BATCH_HEAD,
    HEADER,
    HEADER_SIZE,
    Batch,
    Call,
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
    seal_batch,
)
from rio.cluster._options import ConnectionStatistics, TransportOptions
from rio.cluster._serving import CallHandler, Handler, Inbound, OnewayHandler
from rio.core.codec import ENCODE_ERRORS
from rio.core.errors import BadArguments, CallTimeout, NodeUnreachable, error_from_wire

__all__ = ["Connection", "format_address"]

_HANDSHAKE, _READY, _CLOSED = 0, 1, 2
#: Frames sent less than this many seconds after one that went out at once are a
#: burst: they gather until the end of the loop pass. A lone request (a round trip
#: apart from the last) goes out at once; a thousand in one pass go out in two writes.
_BURST_GAP = 20e-6
_clock = time.perf_counter
_encode_into = msgspec.msgpack.Encoder().encode_into
_HANDSHAKE_BUFFER = 256
#: Bytes of frames one loop pass handles from one connection (about 1,000 small
#: calls); the rest wait for the next pass, with reading paused meanwhile.
READ_BUDGET = 64 * 1024
_REQUEST, _ONEWAY, _PING, _PONG, _CALL = 1, 4, 5, 6, 7


class Connection(asyncio.BufferedProtocol):
    """One authenticated connection to another node; requests go both ways.

    Made by :func:`~rio.cluster.transport.connect` (dialing) or by a
    :class:`~rio.cluster.transport.Server` (accepting); either end may :meth:`request`,
    and serves the other's requests with its handler.

    Attributes:
        peer: how messages name the other node (the ``name`` given to ``connect``,
            else its ``host:port``).
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
        on_call: CallHandler | None = None,
    ) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._server_side = server_side
        self._options = options
        self.peer = peer
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        # The peer closed the connection during our handshake (a wrong secret...).
        self._refused = False
        # Small until the peer is authenticated: a stranger costs little memory.
        self._rx = RecvBuffer(_HANDSHAKE_BUFFER, options.max_frame_size)
        self._handshake = Handshake(secret, server_side=server_side)
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._state = _HANDSHAKE
        self._ready: asyncio.Future[None] = loop.create_future()
        self._lost: asyncio.Future[None] = loop.create_future()
        self._reason = ""
        # Outgoing frames of this loop pass, and backpressure.
        self._max_frame = options.max_frame_size
        self._coalesce = options.coalesce_bytes
        self._out = bytearray()
        self._gathering = False  # frames wait for the end of a read or a loop pass
        # While gathering, messages go into one batch frame: where it starts in _out
        # (-1: none open) and how many messages it holds.
        self._batch_at = -1
        self._batch_n = 0
        self._last_direct = 0.0  # when a frame last went out at once
        self._write_paused = False
        #: True while the connection is open and the peer keeps up with what is sent
        #: (an attribute, not a property: every call sent on the fast path reads it).
        self.writable = False
        self._writable: list[asyncio.Future[None]] = []
        # Requests we sent, and requests we serve.
        self._timeout = options.request_timeout
        self._next_id = 1  # of the next request
        self._pending = Pending(loop, peer, lambda: self._next_id)
        self._futures = self._pending.futures
        self._inbound = Inbound(self, handler, on_oneway, options.max_in_flight, on_call)
        # Reading stops while too many requests wait (Inbound) or while frames read
        # earlier wait for a later loop pass (see _read_frames).
        self._backlog = False
        self._reading_paused = False
        # Keep-alive: when the unanswered ping went out (None: nothing outstanding).
        self._ping_ids = itertools.count(1)
        self._ping_sent_at: float | None = None
        self._pong_owed: int | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._bytes_out = self._bytes_in = self._frames_in = 0

    def __repr__(self) -> str:
        state = ("handshake", "ready", "closed")[self._state]
        return f"<Connection {self.peer} {state} waiting={len(self._futures)}>"

    # -- the public surface ------------------------------------------------------------

    def request(self, body: Any, *, timeout: float | None = None) -> asyncio.Future[msgspec.Raw]:
        """Send a request; the returned future resolves to the reply body.

        ``body`` is a :class:`msgspec.Raw` (already-encoded msgpack, sent as is) or any
        value msgspec encodes (structs, builtins; ``bytes`` travel as msgpack bin).
        The request is on its way whether or not the future is awaited; while the peer
        reads slower than this end sends, it waits its turn inside the future.

        Example::

            raw = await conn.request(msgspec.Raw(encoded), timeout=1.0)
            value = decoder.decode(raw)

        Raises:
            rio.BadArguments: the body cannot be encoded or is over ``max_frame_size``,
                or the timeout is not > 0.

        The future fails with :class:`rio.CallTimeout` when ``timeout`` (default
        ``request_timeout``) passes first, with :class:`rio.NodeUnreachable` when the
        connection drops first, and with the handler's error (a :class:`rio.RioError`,
        or :class:`rio.RemoteError` for any other exception) when it raised.
        """
        if timeout is None:
            timeout = self._timeout
        elif not timeout > 0:
            raise BadArguments(f"request to node {self.peer}: timeout must be > 0, got {timeout!r}")
        deadline = self._loop.time() + timeout
        if self._write_paused or self._state != _READY:
            return self._loop.create_task(self._request_when_writable(body, deadline, timeout))
        req = self._next_id
        self._next_id = req + 1
        try:
            self._send((_REQUEST, req, body))
        except (FrameTooLarge, *ENCODE_ERRORS) as e:
            raise self._body_error("request", e) from e
        return self._pending.track(req, deadline, timeout)

    def call_into(
        self,
        type_name: str,
        object_id: str,
        method: str,
        chain: tuple[tuple[str, str], ...],
        args: msgspec.Raw | tuple[Any, ...],
        deadline: float,
        budget: float,
        waiter: Waiter,
    ) -> None:
        """Send a :class:`~rio.cluster._frames.Call` frame whose answer goes to ``waiter``.

        The fast form of :meth:`request` for the router's object calls, served by the
        peer's ``on_call``: no future and no callback scheduled; ``waiter`` decodes
        the answer itself. ``args`` are the values in parameter order (encoded here
        with the frame) or already encoded as ``msgspec.Raw``. Only while
        :attr:`writable` (check it first; :meth:`request` waits its turn instead). It
        fails with :class:`rio.CallTimeout` naming ``budget`` (> 0, and sent along) at
        ``deadline`` (loop time).

        Raises:
            rio.NodeUnreachable: the connection is not open.
            rio.BadArguments: the frame is over ``max_frame_size``.
            msgspec.EncodeError, TypeError, ValueError, OverflowError: an argument cannot
                be encoded (nothing was sent), for the caller to name it.
        """
        if self._state != _READY:
            raise NodeUnreachable(f"node {self.peer}: {self._reason or 'not connected'}")
        req = self._next_id
        self._next_id = req + 1
        try:
            self._send((_CALL, req, type_name, object_id, method, budget, chain, args))
        except FrameTooLarge as e:
            raise self._body_error("call", e) from e
        self._pending.track_into(req, deadline, budget, waiter)

    async def send_oneway(self, body: Any) -> None:
        """Send a message that wants no answer (waits while the peer reads slower).

        ``body`` is as for :meth:`request`; the peer's ``on_oneway`` takes one-way
        messages in the order they were sent.

        Raises:
            rio.NodeUnreachable: the connection is closed.
            rio.BadArguments: the body cannot be encoded or is over ``max_frame_size``.
        """
        if self._write_paused or self._state != _READY:
            await self.wait_writable()
        self._send_checked((_ONEWAY, body), "one-way message")

    def send_oneway_nowait(self, body: Any) -> None:
        """Send a one-way message now, even while the peer reads slower (see :attr:`writable`).

        For senders that must not wait: check :attr:`writable` first and drop (and
        count) what the peer cannot take, rather than queue without bound.

        Raises:
            rio.NodeUnreachable: the connection is not open.
            rio.BadArguments: the body cannot be encoded or is over ``max_frame_size``.
        """
        if self._state != _READY:
            raise NodeUnreachable(f"node {self.peer}: {self._reason or 'not connected'}")
        self._send_checked((_ONEWAY, body), "one-way message")

    async def wait_writable(self) -> None:
        """Wait until the peer has read enough of what was sent to take more.

        Raises:
            rio.NodeUnreachable: the connection is (or becomes) closed.
        """
        while True:
            if self._state != _READY:
                raise NodeUnreachable(f"node {self.peer}: {self._reason or 'not connected'}")
            if not self._write_paused:
                return
            waiter = self._loop.create_future()
            self._writable.append(waiter)
            await waiter

    async def close(self) -> None:
        """Close the connection: frames already queued go out first.

        Requests still waiting for a reply fail with :class:`rio.NodeUnreachable`. A
        peer that does not read what is queued gets ``ping_timeout`` seconds.
        """
        self._shutdown("closed by this node")
        if self._transport is None:  # never connected (its TLS handshake failed)
            if not self._lost.done():
                self._lost.set_result(None)
            return
        try:
            async with asyncio.timeout(self._options.ping_timeout):
                await asyncio.shield(self._lost)
        except TimeoutError:
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
            requests_waiting=len(self._futures),
            serving=self._inbound.serving,
            queued=len(self._inbound.queued),
            write_paused=self._write_paused,
            reading_paused=self._inbound.reading_paused,
            bytes_sent=self._bytes_out + len(self._out),
            bytes_received=self._bytes_in,
            frames_received=self._frames_in,
        )

    # -- asyncio protocol callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the handshake (asyncio calls this)."""
        t = self._transport = cast(asyncio.Transport, transport)
        if self._server_side:
            self.peer = self._pending.peer = format_address(t.get_extra_info("peername"))
        t.set_write_buffer_limits(self._options.write_buffer_high, self._options.write_buffer_low)
        self._handshake_timer = self._loop.call_later(
            self._options.handshake_timeout, self._handshake_timed_out
        )
        if opening := self._handshake.opening():
            self._write_raw(opening)

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
        """The peer closed its end: close ours too (asyncio calls this)."""

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail what waits on the connection (asyncio calls this)."""
        if self._state != _CLOSED:
            self._shutdown(self._lost_reason(exc))
        self._out = bytearray()
        self._batch_at = -1
        self._batch_n = 0
        if not self._lost.done():
            self._lost.set_result(None)
        if self._on_lost is not None:
            self._on_lost(self)

    def pause_writing(self) -> None:
        """The transport's buffer is over the high-water mark (asyncio calls this)."""
        self._write_paused = True
        self.writable = False

    def resume_writing(self) -> None:
        """The transport's buffer drained below the low-water mark (asyncio calls this)."""
        self._write_paused = False
        self.writable = self._state == _READY
        if self._state != _READY:
            return
        if self._pong_owed is not None:
            self._send((_PONG, self._pong_owed))
            self._pong_owed = None
        waiters, self._writable = self._writable, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
        if self._inbound.queued:
            self._inbound.start_queued()

    # -- the handshake -----------------------------------------------------------------

    def _read_handshake(self) -> None:
        hs = self._handshake
        try:
            reply = hs.feed(self._rx)
        except HandshakeError as e:
            self._refuse(str(e))
            return
        if reply:
            self._write_raw(reply)
        if hs.done:
            self._became_ready()
            if self._rx.pending():
                self._read_frames()

    def _write_raw(self, data: bytes) -> None:
        assert self._transport is not None
        self._bytes_out += len(data)
        self._transport.write(data)

    def _became_ready(self) -> None:
        self._state = _READY
        self.writable = not self._write_paused
        self._rx.resize(self._options.read_buffer_size)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._keepalive = self._loop.call_later(self._options.ping_interval, self._on_keepalive)
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
        # At most READ_BUDGET bytes of frames per loop pass: one peer's burst (a
        # flood, or a large backlog after a pause) must not hold up the loop for
        # seconds, or this node's probes go unanswered and it is declared dead.
        frames, error = self._rx.frames(READ_BUDGET)
        if frames:
            # Whatever the frames of one read make us send goes out in one write.
            gather = not self._gathering
            self._gathering = True
            try:
                self._dispatch(frames)
            finally:
                if gather:
                    self._gathering = False
                    self._write_out()
        if error is not None and self._state == _READY:
            self._protocol_error(error)
        elif not self._backlog and self._state == _READY and self._rx.ready():
            self._backlog = True
            self._update_reading()
            self._loop.call_soon(self._read_backlog)

    def _read_backlog(self) -> None:
        """Handle the frames a budgeted pass left, then read again when none remain."""
        self._backlog = False
        if self._state != _READY:
            return
        self._read_frames()
        self._update_reading()

    def _update_reading(self) -> None:
        """Pause or resume reading the socket, as the backlog and the inbound queue need."""
        paused = self._backlog or self._inbound.reading_paused
        t = self._transport
        if paused != self._reading_paused and t is not None and not t.is_closing():
            self._reading_paused = paused
            if paused:
                t.pause_reading()
            else:
                t.resume_reading()

    def protocol_error(self, reason: str) -> None:
        """Close the connection because the peer sent something unreadable (logged).

        For what a layer above finds in a frame that parsed (a one-way message that
        decodes as nothing it knows): the same end as a malformed frame.
        """
        if self._state != _CLOSED:
            self._protocol_error(reason)

    def _dispatch(self, frames: list[bytearray]) -> None:
        self._frames_in += len(frames)
        for frame in frames:
            try:
                first: Any = decode(frame)  # one of the frame structs
            except msgspec.DecodeError as e:
                self._protocol_error(describe_bad_frame(frame, e))
                return
            if not self._handle(first.msgs if type(first) is Batch else (first,)):
                return

    def _handle(self, msgs: list[Any] | tuple[Any, ...]) -> bool:
        """Act on the messages of one frame; False once the connection closed."""
        futures = self._futures
        inbound = self._inbound
        for msg in msgs:
            cls = type(msg)
            if cls is Reply:
                self._ping_sent_at = None  # it reads what we send: alive
                fut = futures.pop(msg.id, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg.body)
            elif cls is Call or cls is Request:
                inbound.take(msg)
            elif cls is Failure:
                self._ping_sent_at = None
                fut = futures.pop(msg.id, None)
                if fut is not None and not fut.done():
                    err = error_from_wire(msg.error)
                    # The peer's handler raised it: not a fault of this connection.
                    err.from_peer = True  # type: ignore[attr-defined]
                    fut.set_exception(err)
            elif cls is Oneway:
                inbound.take_oneway(msg.body)
            elif cls is Ping:
                if self._write_paused:  # one pong is owed, not one per ping
                    self._pong_owed = msg.id
                else:
                    self._send((_PONG, msg.id))
            else:  # Pong
                self._ping_sent_at = None
            if self._state != _READY:
                return False
        return True

    def _protocol_error(self, reason: str) -> None:
        logger.warning("cluster transport: closing the connection with {}: {}", self.peer, reason)
        self._shutdown(reason, abort=True)

    # -- writing frames ----------------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._gathering:
            self._batch(message)
        elif _clock() - self._last_direct >= _BURST_GAP:  # light traffic: out at once
            encode_frame(self._out, message, self._max_frame)
            self._write_out()
            self._last_direct = _clock()  # after the write: it may take a while
        else:  # a burst: the rest of this loop pass goes out batched, at its end
            self._batch(message)
            self._gathering = True
            self._loop.call_soon(self._flush)

    def _batch(self, message: tuple[Any, ...]) -> None:
        """Add ``message`` to the open batch frame (opening one); write past ``coalesce``."""
        out = self._out
        start = self._batch_at
        if start < 0:
            start = self._batch_at = len(out)
            out += BATCH_HEAD
        mark = len(out)
        try:
            _encode_into(message, out, -1)
        except BaseException:
            self._unbatch(start, mark)
            raise
        # One test for both limits: the message alone is never larger than its batch.
        if len(out) - start - HEADER_SIZE > self._max_frame:
            self._too_large_to_batch(start, mark)
        else:
            self._batch_n += 1
        if len(out) >= self._coalesce:
            self._write_out()

    def _unbatch(self, start: int, mark: int) -> None:
        """Take back what a message added from ``mark`` on (the batch too, if it was alone)."""
        out = self._out
        del out[mark:]
        if not self._batch_n:
            del out[start:]
            self._batch_at = -1

    def _too_large_to_batch(self, start: int, mark: int) -> None:
        """The message at ``out[mark:]`` makes its batch too large for one frame.

        Over ``max_frame_size`` alone, it is taken back (FrameTooLarge); else the batch
        goes without it, and it goes alone, as a plain frame.
        """
        out = self._out
        size = len(out) - mark
        if size > self._max_frame:
            self._unbatch(start, mark)
            raise FrameTooLarge(size, self._max_frame)
        body = out[mark:]
        del out[mark:]
        self._seal()
        out += HEADER.pack(size)
        out += body

    def _seal(self) -> None:
        if self._batch_at >= 0:
            seal_batch(self._out, self._batch_at, self._batch_n)
            self._batch_at = -1
            self._batch_n = 0

    def _send_checked(self, message: tuple[Any, ...], what: str) -> None:
        try:
            self._send(message)
        except (FrameTooLarge, *ENCODE_ERRORS) as e:
            raise self._body_error(what, e) from e

    def _body_error(self, what: str, e: Exception) -> BadArguments:
        if isinstance(e, FrameTooLarge):
            return BadArguments(
                f"{what} to node {self.peer}: the body is {e}; send less per message, or "
                "raise max_frame_size on every node"
            )
        return BadArguments(f"{what} to node {self.peer}: the body cannot be encoded: {e}")

    def _flush(self) -> None:
        self._gathering = False
        self._write_out()

    def _write_out(self) -> None:
        self._seal()
        out = self._out
        if out:
            # A fresh buffer each time: the transport may keep a reference to this one.
            self._out = bytearray()
            t = self._transport
            if t is not None and not t.is_closing():
                self._bytes_out += len(out)
                t.write(out)

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
        req = self._next_id
        self._next_id = req + 1
        self._send_checked((_REQUEST, req, body), "request")
        return await self._pending.track(req, deadline, budget)

    # -- keep-alive --------------------------------------------------------------------

    def _on_keepalive(self) -> None:
        self._keepalive = None
        if self._state != _READY:
            return
        opts = self._options
        now = self._loop.time()
        sent = self._ping_sent_at
        if sent is not None and self._reading_paused:
            # We stopped reading (too many of its requests wait here): its pong may be
            # sitting unread. Silence of our own making is no sign of a dead peer.
            sent = self._ping_sent_at = now
        if sent is None:
            self._ping_sent_at = now
            self._send((_PING, next(self._ping_ids)))
            delay = min(opts.ping_interval, opts.ping_timeout)
        elif now - sent >= opts.ping_timeout:
            reason = (
                f"no answer to a keep-alive ping within {opts.ping_timeout:.3g}s "
                "(the peer is gone, stuck, or not reading)"
            )
            logger.warning(
                "cluster transport: closing the connection with {}: {}", self.peer, reason
            )
            self._shutdown(reason, abort=True)
            return
        else:
            delay = min(opts.ping_interval, sent + opts.ping_timeout - now)
        self._keepalive = self._loop.call_later(delay, self._on_keepalive)

    # -- closing -----------------------------------------------------------------------

    def _lost_reason(self, exc: Exception | None) -> str:
        """Why the connection ended under us (logged when it means trouble)."""
        rx = self._rx
        if self._state == _READY:
            if rx.pending():
                reason = f"truncated frame: the connection ended after {rx.partial()}"
                logger.warning(
                    "cluster transport: closing the connection with {}: {}", self.peer, reason
                )
                return reason
            return f"the connection broke: {exc}" if exc is not None else "it closed the connection"
        if not self._server_side:
            self._refused = True
            if self._handshake.server_nonce:  # it read our proof, and hung up
                reason = (
                    "it closed the connection in the handshake, after our proof: the cluster "
                    "secrets differ (its log says so)"
                )
            else:
                reason = (
                    "it closed the connection in the handshake, before its challenge: the TLS "
                    "settings or rio versions differ, or it is not a rio node, or it was "
                    "stopping (its log says which)"
                )
            logger.warning("cluster transport: handshake with {} failed: {}", self.peer, reason)
            return reason
        reason = "it closed the connection during the handshake"
        if rx.pending() or self._handshake.server_nonce:  # a port probe says nothing
            logger.warning("cluster transport: refused {}: {}", self.peer, reason)
        return reason

    def _shutdown(self, reason: str, *, abort: bool = False) -> None:
        """Close the connection for ``reason`` and fail everything that waits on it."""
        if self._state == _CLOSED:
            return
        was_ready = self._state == _READY
        self._state = _CLOSED
        self.writable = False
        self._reason = reason
        for timer in (self._keepalive, self._handshake_timer):
            if timer is not None:
                timer.cancel()
        self._keepalive = self._handshake_timer = None
        peer = self.peer
        self._pending.fail_all(
            lambda req: NodeUnreachable(
                f"the connection to node {peer} closed ({reason}) before request {req} was "
                "answered; it may or may not have run"
            )
        )
        waiters, self._writable = self._writable, []
        for w in waiters:
            if not w.done():
                w.set_exception(NodeUnreachable(f"node {peer}: {reason}"))
        self._inbound.queued.clear()
        if not self._ready.done():
            if self._server_side:
                self._ready.cancel()
            else:
                refused = NodeUnreachable(f"cannot connect to node {peer}: {reason}")
                # The peer is up but turned us away: retrying will not help.
                refused.handshake_refused = self._refused  # type: ignore[attr-defined]
                self._ready.set_exception(refused)
        t = self._transport
        if t is not None:
            if abort or not was_ready:
                t.abort()
            else:
                self._write_out()
                t.close()


def format_address(addr: Any) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of a socket address."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)
