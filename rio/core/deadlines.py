"""Many deadlines, one timer.

A timer per waiting call costs a timer handle and an event-loop heap entry each
(microseconds on the hot path). :class:`Deadlines` keeps its entries in two
places and one loop timer for the earliest of them:

* a FIFO (a deque of ``(when, token)``) for deadlines that come in order, which
  is nearly all of them: calls made one after another with the same timeout have
  non-decreasing deadlines, and appending costs less than a heap push;
* a heap of ``(when, seq, token)`` for the others (a shorter timeout after a
  longer one).

Entries whose call was answered are not removed when answered; they are skipped
when they surface, and swept out whenever a structure has doubled since its last
sweep, so memory stays proportional to the calls actually waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Container
from typing import Any

__all__ = ["Deadlines", "RunDeadlines"]

_MIN_SWEEP = 1024


class Deadlines:
    """Calls ``on_expire(token)`` for every token whose deadline passes while live.

    Args:
        on_expire: called with the token of each live entry whose time has come.
        is_live: whether a token still waits (answered ones are skipped and swept).

    Example::

        deadlines = Deadlines(expire, pending.__contains__)
        deadlines.add(loop, loop.time() + 30.0, req)
    """

    __slots__ = (
        "_fifo",
        "_fifo_sweep_at",
        "_heap",
        "_heap_sweep_at",
        "_is_live",
        "_last",
        "_on_expire",
        "_seq",
        "_timer",
        "_timer_at",
    )

    def __init__(self, on_expire: Callable[[Any], None], is_live: Callable[[Any], bool]) -> None:
        self._on_expire = on_expire
        self._is_live = is_live
        self._fifo: deque[tuple[float, Any]] = deque()
        self._last = float("-inf")  # the newest deadline in the FIFO (or ever put there)
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._fifo_sweep_at = _MIN_SWEEP
        self._heap_sweep_at = _MIN_SWEEP

    def add(self, loop: asyncio.AbstractEventLoop, when: float, token: Any) -> None:
        """Watch ``token`` until ``when`` (loop time)."""
        if when >= self._last:
            self._last = when
            fifo = self._fifo
            fifo.append((when, token))
            if len(fifo) > self._fifo_sweep_at:
                self._sweep_fifo()
        else:
            heap = self._heap
            heapq.heappush(heap, (when, next(self._seq), token))
            if len(heap) > self._heap_sweep_at:
                self._sweep_heap()
        if self._timer is None or when < self._timer_at:
            self._arm(loop, when)

    def sweep(self) -> None:
        """Drop every entry that is no longer live now (it happens by itself as they pile up)."""
        self._sweep_heap()
        live = self._is_live
        self._fifo = fifo = deque(e for e in self._fifo if live(e[1]))
        if not fifo:
            self._last = float("-inf")
        self._fifo_sweep_at = max(_MIN_SWEEP, 2 * len(fifo))

    def clear(self) -> None:
        """Forget everything and stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()
        self._fifo.clear()
        self._last = float("-inf")

    def __len__(self) -> int:
        return len(self._fifo) + len(self._heap)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        live = self._is_live
        expire = self._on_expire
        fifo = self._fifo
        while fifo and fifo[0][0] <= now:
            token = fifo.popleft()[1]
            if live(token):
                expire(token)
        heap = self._heap
        while heap and heap[0][0] <= now:
            token = heapq.heappop(heap)[2]
            if live(token):
                expire(token)
        if not fifo:
            self._last = float("-inf")
        if fifo or heap:
            if not heap:
                nxt = fifo[0][0]
            elif not fifo:
                nxt = heap[0][0]
            else:
                nxt = min(fifo[0][0], heap[0][0])
            if self._timer is None or nxt < self._timer_at:
                self._arm(loop, nxt)

    def _sweep_fifo(self) -> None:
        # Answered entries are mostly the oldest: drop them from the front first,
        # and filter the whole FIFO only when a long-waiting entry holds them back.
        live = self._is_live
        fifo = self._fifo
        while fifo and not live(fifo[0][1]):
            fifo.popleft()
        if len(fifo) > self._fifo_sweep_at // 2:
            self._fifo = fifo = deque(e for e in fifo if live(e[1]))
        if not fifo:
            self._last = float("-inf")
        self._fifo_sweep_at = max(_MIN_SWEEP, 2 * len(fifo))

    def _sweep_heap(self) -> None:
        live = self._is_live
        self._heap = [e for e in self._heap if live(e[2])]
        heapq.heapify(self._heap)
        self._heap_sweep_at = max(_MIN_SWEEP, 2 * len(self._heap))


_NO_RUN = float("nan")  # equal to no deadline
_OPEN = -1  # the last request of the run: requests still join it


class RunDeadlines:
    """Deadlines of requests numbered in send order, watched per *run*.

    A run is the requests sent one after another with the same deadline: those of
    one loop pass with one timeout (uvloop's clock is per pass). It is just
    ``[first, last]`` of their ids, one :class:`Deadlines` entry for all of them, so
    a request that joins the current run costs its sender one comparison, and an
    answered one costs no memory::

        if deadline != runs.at:
            runs.start(loop, req, deadline, budget)

    Args:
        waiting: the ids still waiting for an answer (answered ones are skipped).
        next_id: the id the next request will get (the open run ends before it).
        expire: called with each waiting id of a run whose deadline passed, and the
            budget the run started with.
    """

    __slots__ = ("_deadlines", "_expire", "_next_id", "_run", "_waiting", "at")

    def __init__(
        self,
        waiting: Container[int],
        next_id: Callable[[], int],
        expire: Callable[[int, float], None],
    ) -> None:
        self._waiting = waiting
        self._next_id = next_id
        self._expire = expire
        self._deadlines = Deadlines(self._expire_run, self._run_live)
        #: The deadline of the open run (NaN, equal to nothing, when there is none).
        self.at = _NO_RUN
        self._run: list[Any] = [0, 0, 0.0]  # first, last (or _OPEN), budget

    def start(
        self, loop: asyncio.AbstractEventLoop, req: int, deadline: float, budget: float
    ) -> None:
        """Open a new run with request ``req`` (the current one ends before it)."""
        run = self._run
        if run[1] == _OPEN:
            run[1] = req - 1
        self.at = deadline
        self._run = run = [req, _OPEN, budget]
        self._deadlines.add(loop, deadline, run)

    def clear(self) -> None:
        """Forget every run and stop the timer."""
        self._deadlines.clear()
        self.at = _NO_RUN
        self._run = [0, 0, 0.0]

    def __len__(self) -> int:
        """How many runs are watched (answered ones are swept out as they pile up)."""
        return len(self._deadlines)

    def _run_live(self, run: list[Any]) -> bool:
        """True if a request of ``run`` still waits; skips its answered first ones for good."""
        first, last = run[0], run[1]
        if last == _OPEN:
            last = self._next_id() - 1
        waiting = self._waiting
        while first <= last and first not in waiting:
            first += 1
        run[0] = first
        return bool(first <= last)

    def _expire_run(self, run: list[Any]) -> None:
        first, last, budget = run
        if last == _OPEN:  # its deadline passed: later requests need a run of their own
            last = run[1] = self._next_id() - 1
            self.at = _NO_RUN
        waiting = self._waiting
        for req in range(first, last + 1):
            if req in waiting:
                self._expire(req, budget)
