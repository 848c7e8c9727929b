"""The requests one end of a connection has sent and still waits on.

A :class:`Waiter` per request id (a future, or an object of the caller's that takes
the answer the moment it is read, with no future and no callback in between), and
one timer for every deadline (:class:`~rio.core.deadlines.RunDeadlines`: a request
sent in the same loop pass as the one before, with the same timeout, costs one
comparison, not a timer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import msgspec

from rio.core.deadlines import RunDeadlines
from rio.core.errors import CallTimeout

__all__ = ["Pending", "Waiter"]


class Waiter(Protocol):
    """What waits for one request's answer: an ``asyncio.Future`` has this shape.

    The connection calls :meth:`set_result` with the reply body, or
    :meth:`set_exception`, at most once, and only while :meth:`done` is False.
    """

    def done(self) -> bool:
        """True once the answer is no longer wanted (or already given)."""
        ...

    def set_result(self, result: msgspec.Raw, /) -> None:
        """Take the reply body."""
        ...

    def set_exception(self, exception: BaseException, /) -> None:
        """Take the failure (the peer's error, a timeout, the connection lost)."""
        ...


class Pending:
    """Waiters of the requests in flight to one peer, by id, with their deadlines.

    Args:
        loop: the connection's event loop.
        peer: how timeout messages name the peer.
        next_id: the id the connection's next request will get (ids go up by one).
    """

    __slots__ = ("_loop", "_runs", "futures", "peer")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, peer: str, next_id: Callable[[], int]
    ) -> None:
        self._loop = loop
        self.peer = peer
        self.futures: dict[int, Waiter] = {}
        self._runs = RunDeadlines(self.futures, next_id, self._expire)

    def track(self, req: int, deadline: float, budget: float) -> asyncio.Future[msgspec.Raw]:
        """The future of request ``req``, failed with CallTimeout at ``deadline``."""
        fut: asyncio.Future[msgspec.Raw] = self._loop.create_future()
        self.track_into(req, deadline, budget, fut)
        return fut

    def track_into(self, req: int, deadline: float, budget: float, waiter: Waiter) -> None:
        """Give the answer of request ``req`` to ``waiter``; CallTimeout at ``deadline``.

        Requests are tracked in id order, each once.
        """
        self.futures[req] = waiter
        runs = self._runs
        if deadline != runs.at:
            runs.start(self._loop, req, deadline, budget)

    def fail_all(self, make_error: Callable[[int], BaseException]) -> None:
        """Fail every request still waiting with ``make_error(id)``; stop the timer."""
        self._runs.clear()
        futures = list(self.futures.items())
        self.futures.clear()
        for req, fut in futures:
            if not fut.done():
                fut.set_exception(make_error(req))

    def _expire(self, req: int, budget: float) -> None:
        fut = self.futures.pop(req, None)
        if fut is not None and not fut.done():
            fut.set_exception(
                CallTimeout(
                    f"node {self.peer} did not answer request {req} within "
                    f"{budget:.3g}s; it may still run it"
                )
            )
