"""The peer's requests that one connection serves: handler calls, limits, answers.

A handler may answer with a plain value, a future, or a coroutine. Only a coroutine
(or another awaitable) costs a task; a future that is already done (an eager call
that finished) is answered at once. At most ``max_in_flight`` requests are handled at
once; later ones wait in arrival order, and so do all of them while the peer is not
reading its replies (the connection's writes are paused): a peer that does not read
gets no more answers, and once as many again wait, it is not read either.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import traceback
import types
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from rio.cluster._frames import Call, FrameTooLarge, Request
from rio.core.codec import ENCODE_ERRORS, PLAIN_TYPES
from rio.core.errors import RemoteError, RioError, error_to_wire, qualified_name

if TYPE_CHECKING:
    from rio.cluster._connection import Connection

__all__ = ["CallHandler", "Handler", "Inbound", "OnewayHandler"]

#: ``handle(conn, body)`` answers one request: with the reply (any msgpack value, or
#: ``msgspec.Raw``), or an awaitable of it (a coroutine runs as a task; a future is
#: awaited without one).
Handler = Callable[["Connection", msgspec.Raw], Awaitable[Any] | Any]
#: ``on_call(conn, call)`` answers one :class:`~rio.cluster._frames.Call` frame, as a
#: ``Handler`` answers a request.
CallHandler = Callable[["Connection", Call], Awaitable[Any] | Any]
#: ``on_oneway(conn, body)`` takes one one-way message, called in arrival order (a
#: coroutine it returns runs as a task).
OnewayHandler = Callable[["Connection", msgspec.Raw], object]

_REPLY, _FAILURE = 2, 3
_Coroutine = types.CoroutineType
_CANCELLED = ("asyncio.CancelledError", "the handler was cancelled")


class Inbound:
    """The requests and one-way messages a connection receives, and their answers.

    Args:
        conn: the connection (answers go out through it).
        handler: serves requests; None answers each with an error saying so.
        on_oneway: takes one-way messages; None drops them (logged at debug level).
        limit: requests handled at once (``max_in_flight``).
        on_call: serves :class:`~rio.cluster._frames.Call` frames; None answers each
            with an error saying so.
    """

    __slots__ = (
        "_conn",
        "_handler",
        "_keys",
        "_limit",
        "_on_call",
        "_on_oneway",
        "queued",
        "reading_paused",
        "serving",
        "tasks",
    )

    def __init__(
        self,
        conn: Connection,
        handler: Handler | None,
        on_oneway: OnewayHandler | None,
        limit: int,
        on_call: CallHandler | None = None,
    ) -> None:
        self._conn = conn
        self._handler = handler
        self._on_call = on_call
        self._on_oneway = on_oneway
        self._limit = limit
        self.serving = 0
        self.queued: deque[Request | Call] = deque()
        self.reading_paused = False
        self._keys = itertools.count()
        #: Handler and one-way tasks still running, by a key of their own.
        self.tasks: dict[int, asyncio.Future[Any]] = {}

    def take(self, msg: Request | Call) -> None:
        """Serve ``msg`` now if there is room, else queue it."""
        if self.serving < self._limit and not self._conn._write_paused:
            self._start(msg)
            return
        self.queued.append(msg)
        if len(self.queued) >= self._limit and not self.reading_paused:
            self.reading_paused = True
            self._conn._update_reading()

    def start_queued(self) -> None:
        """Start waiting requests while there is room; read again once half have."""
        queued = self.queued
        conn = self._conn
        if conn.is_closed:
            return
        while queued and self.serving < self._limit and not conn._write_paused:
            self._start(queued.popleft())
        if self.reading_paused and len(queued) <= self._limit // 2:
            self.reading_paused = False
            conn._update_reading()

    def take_oneway(self, body: msgspec.Raw) -> None:
        """Hand a one-way message to ``on_oneway``."""
        if self._on_oneway is None:
            logger.debug(
                "cluster transport: {} sent a one-way message; none expected", self._conn.peer
            )
            return
        try:
            result = self._on_oneway(self._conn, body)
            if inspect.isawaitable(result):
                key = next(self._keys)
                task = asyncio.ensure_future(result)
                self.tasks[key] = task
                task.add_done_callback(partial(self._oneway_done, key))
        except Exception as e:
            self._oneway_failed(e)

    def _oneway_done(self, key: int, task: asyncio.Future[Any]) -> None:
        del self.tasks[key]
        if not task.cancelled() and isinstance(e := task.exception(), Exception):
            self._oneway_failed(e)

    def _oneway_failed(self, e: Exception) -> None:
        logger.opt(exception=e).error(
            "cluster transport: the one-way handler failed on a message from {}", self._conn.peer
        )

    def _start(self, msg: Request | Call) -> None:
        try:
            if msg.__class__ is Call:
                on_call = self._on_call
                if on_call is None:
                    raise RioError(self._serves_none("calls", "on_call"))
                result = on_call(self._conn, msg)
            else:
                handler = self._handler
                if handler is None:
                    raise RioError(self._serves_none("requests", "handler"))
                result = handler(self._conn, msg.body)  # type: ignore[union-attr]
        except (Exception, asyncio.CancelledError) as e:  # a handler cancelled at once too
            self._answer_error(msg.id, e)
            return
        if isinstance(result, asyncio.Future):  # no task needed
            if result.done():  # an eager call that finished already
                self._answer_future(msg.id, result)
            else:
                self.serving += 1
                result.add_done_callback(partial(self._future_done, msg.id))
        elif type(result) is _Coroutine or (
            type(result) not in PLAIN_TYPES and hasattr(type(result), "__await__")
        ):
            self.serving += 1
            key = next(self._keys)
            task = asyncio.ensure_future(result)
            self.tasks[key] = task
            task.add_done_callback(partial(self._task_done, key, msg.id))
        else:  # a plain value
            self._answer(msg.id, result)

    def _serves_none(self, what: str, param: str) -> str:
        if self._conn._server_side:
            return f"this node serves no {what} (its serve() was given no {param})"
        return (
            f"the node that dialed {self._conn.peer} serves no {what} on that connection "
            f"(its connect() was given no {param})"
        )

    def _task_done(self, key: int, req_id: int, task: asyncio.Future[Any]) -> None:
        del self.tasks[key]
        self._future_done(req_id, task)

    def _future_done(self, req_id: int, fut: asyncio.Future[Any]) -> None:
        self._answer_future(req_id, fut)
        self.serving -= 1
        if self.queued:
            self.start_queued()

    def _answer_future(self, req_id: int, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            self._answer_error(req_id, RemoteError(*_CANCELLED))
        elif (e := fut.exception()) is not None:
            self._answer_error(req_id, e)
        else:
            self._answer(req_id, fut.result())

    def _answer(self, req_id: int, value: Any) -> None:
        conn = self._conn
        if conn.is_closed:
            return
        try:
            conn._send((_REPLY, req_id, value))
        except FrameTooLarge as e:
            why = f"the reply to request {req_id} is {e}"
            self._answer_error(req_id, RemoteError("rio.cluster.FrameTooLarge", why))
        except ENCODE_ERRORS as e:
            why = f"the reply to request {req_id} cannot be encoded: {e}"
            self._answer_error(req_id, RemoteError(qualified_name(type(e)), why))

    def _answer_error(self, req_id: int, exc: BaseException) -> None:
        conn = self._conn
        if conn.is_closed:
            return
        if not isinstance(exc, RioError):
            tb = "".join(traceback.format_exception(exc))
            exc = RemoteError(qualified_name(type(exc)), str(exc), tb)
        try:
            conn._send((_FAILURE, req_id, error_to_wire(exc)))
        except (FrameTooLarge, *ENCODE_ERRORS):  # a giant message or traceback: cut it
            short = [qualified_name(type(exc)), str(exc)[:1000], ""]
            conn._send((_FAILURE, req_id, {"kind": "RemoteError", "args": short}))
