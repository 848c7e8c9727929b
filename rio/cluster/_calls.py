"""The requests one end of a connection has sent and still waits on.

A :class:`Waiter` per request id (a future, or an object of the caller's that takes
the answer the moment it is read, with no future and no callback in between), and
one timer for every deadline: a heap of ``(deadline, id, budget)`` whose answered
entries are skipped when they surface (and compacted away when they pile up), so a
request costs a heap push, not a timer.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from typing import Protocol

import msgspec

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
    """Futures of the requests in flight to one peer, by id, with their deadlines.

    Args:
        loop: the connection's event loop.
        peer: how timeout messages name the peer.
    """

    __slots__ = ("_heap", "_loop", "_timer", "_timer_at", "futures", "peer")

    def __init__(self, loop: asyncio.AbstractEventLoop, peer: str) -> None:
        self._loop = loop
        self.peer = peer
        self.futures: dict[int, Waiter] = {}
        self._heap: list[tuple[float, int, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def track(self, req: int, deadline: float, budget: float) -> asyncio.Future[msgspec.Raw]:
        """The future of request ``req``, failed with CallTimeout at ``deadline``."""
        fut: asyncio.Future[msgspec.Raw] = self._loop.create_future()
        self.track_into(req, deadline, budget, fut)
        return fut

    def track_into(self, req: int, deadline: float, budget: float, waiter: Waiter) -> None:
        """Give the answer of request ``req`` to ``waiter``; CallTimeout at ``deadline``."""
        futures = self.futures
        futures[req] = waiter
        heap = self._heap
        heapq.heappush(heap, (deadline, req, budget))
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        if len(heap) > 2 * len(futures) + 1024:
            self._heap = [e for e in heap if e[1] in futures]
            heapq.heapify(self._heap)

    def fail_all(self, make_error: Callable[[int], BaseException]) -> None:
        """Fail every request still waiting with ``make_error(id)``; stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()
        futures = list(self.futures.items())
        self.futures.clear()
        for req, fut in futures:
            if not fut.done():
                fut.set_exception(make_error(req))

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self._loop.time()
        heap, futures = self._heap, self.futures
        while heap and heap[0][0] <= now:
            _, req, budget = heapq.heappop(heap)
            fut = futures.pop(req, None)
            if fut is not None and not fut.done():
                fut.set_exception(
                    CallTimeout(
                        f"node {self.peer} did not answer request {req} within "
                        f"{budget:.3g}s; it may still run it"
                    )
                )
        if heap:
            self._arm(heap[0][0])
