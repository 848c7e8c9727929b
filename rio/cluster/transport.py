"""Node-to-node connections: authenticated, pipelined, length-framed msgpack over TCP.

Example::

    def handle(conn: Connection, body: msgspec.Raw) -> Any:
        method, arg = decoder.decode(body)
        return arg + 1        # a msgpack value or msgspec.Raw, or a future/coroutine of one

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
* **Coalesced, bounded writes.** What the frames of one read make a node send (the
  answers of plain and future handlers, pongs) goes out in one write; so do frames
  sent in a burst within one event-loop pass; a lone frame goes out at once. When the
  peer reads slower than we write, the transport's buffer fills up to a high-water
  mark, senders wait (:meth:`Connection.wait_writable`) and the peer's requests wait
  unanswered; when enough of those wait, the connection stops reading.
* **Keep-alive.** Each end pings the other; a peer that answers neither pings nor
  requests within ``ping_timeout`` is declared dead and its connection closed.
* **Refuses bad input, keeps serving.** A malformed, oversized or truncated frame, or
  one of an unknown kind, closes that one connection with a logged reason.
* **No pickle.** Frames are msgspec tagged arrays; bodies are msgpack.
* **Loopback unless told.** :func:`serve` binds 127.0.0.1 (port 0: an ephemeral one)
  unless given another host.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as _ssl
import weakref
from typing import Any

from loguru import logger

from rio.cluster import _auth
from rio.cluster._connection import Connection, format_address
from rio.cluster._options import ConnectionStatistics, TransportOptions
from rio.cluster._serving import CallHandler, Handler, OnewayHandler
from rio.core.errors import ConfigError, NodeUnreachable

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
        on_call: CallHandler | None = None,
    ) -> None:
        self._secret = secret
        self._handler = handler
        self._on_oneway = on_oneway
        self._on_call = on_call
        self.options = options
        self._server: asyncio.Server | None = None
        self._address = ("", 0)
        # Weak: a connection whose TLS handshake fails is made but never connected.
        self._all: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._ready: dict[Connection, None] = {}  # a set that keeps arrival order
        self._closing = False

    def _make_connection(self) -> Connection:
        conn = Connection(
            secret=self._secret,
            server_side=True,
            options=self.options,
            handler=self._handler,
            on_oneway=self._on_oneway,
            on_call=self._on_call,
            on_ready=self._add_ready,
            on_lost=self._forget,
        )
        self._all.add(conn)
        return conn

    def _add_ready(self, conn: Connection) -> None:
        self._ready[conn] = None

    def _forget(self, conn: Connection) -> None:
        self._all.discard(conn)
        self._ready.pop(conn, None)

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
        """The authenticated connections open now, oldest first."""
        return list(self._ready)

    async def close(self) -> None:
        """Stop listening, close every connection, cancel the handlers still running.

        Requests the peers still wait on fail there with :class:`rio.NodeUnreachable`;
        a peer that does not read what is queued for it gets ``ping_timeout`` seconds.
        """
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        conns = list(self._all)
        for c in conns:  # first, so that cancelled handlers answer nothing
            c._shutdown("this node is closing its cluster port")
        tasks = [t for c in conns for t in c._inbound.tasks.values()]
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
    on_call: CallHandler | None = None,
) -> Server:
    """Listen for cluster peers on ``host:port`` (loopback and an ephemeral port by default).

    Args:
        handler: ``handle(conn, body)`` answers every request with the reply (a
            msgpack value or ``msgspec.Raw``), a future of it, or is an ``async def``
            (a task per request; values and futures need none). Many run at once on
            one connection; each reply goes back as soon as it is ready. An exception
            reaches the caller as the error. None refuses every request.
        secret: the cluster secret, the same on every node.
        host: the address to bind; ``"0.0.0.0"`` or a public address opens the port
            to the network (use TLS there).
        port: the port; 0 picks a free one (see :attr:`Server.address`).
        ssl: a server-side ``ssl.SSLContext`` for TLS; None for plain TCP.
        on_oneway: ``def on_oneway(conn, body)`` for one-way messages, called in
            arrival order (a coroutine it returns runs as a task).
        options: connection settings (see :class:`TransportOptions`).
        on_call: ``def on_call(conn, call)`` answers ``Call`` frames (a node's object
            calls) as ``handler`` answers requests. None refuses them.

    Raises:
        rio.ConfigError: the secret is empty, or the address cannot be bound.
    """
    opts = options or TransportOptions()
    server = Server(_auth.secret_bytes(secret), handler, on_oneway, opts, on_call)
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
    logger.debug("cluster transport: listening on {}", format_address(server.address))
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
    peer = name or format_address((host, port))
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
        hint = ""
        if ssl is not None and not isinstance(e, ConnectionRefusedError):
            hint = " during the TLS handshake (is TLS on at both ends?)"
        raise NodeUnreachable(f"cannot connect to node {peer}: {e.strerror or e}{hint}") from e
    try:
        await conn._ready
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            conn._shutdown("connect() was cancelled", abort=True)
        raise
    return conn
