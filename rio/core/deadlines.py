"""Many deadlines, one timer.

A timer per waiting call costs a timer handle and an event-loop heap entry each
(microseconds on the hot path). :class:`Deadlines` keeps one heap of
``(when, seq, token)`` and one loop timer for its earliest entry. Entries whose call
was answered are not removed when answered; they are skipped when they surface, and
swept out whenever the heap has doubled since the last sweep, so memory stays
proportional to the calls actually waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

__all__ = ["Deadlines"]


class Deadlines:
    """Calls ``on_expire(token)`` for every token whose deadline passes while live.

    Args:
        on_expire: called with the token of each live entry whose time has come.
        is_live: whether a token still waits (answered ones are skipped and swept).
    """

    def __init__(self, on_expire: Callable[[Any], None], is_live: Callable[[Any], bool]) -> None:
        self._on_expire = on_expire
        self._is_live = is_live
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._sweep_at = 1024

    def add(self, loop: asyncio.AbstractEventLoop, when: float, token: Any) -> None:
        """Watch ``token`` until ``when`` (loop time)."""
        heap = self._heap
        heapq.heappush(heap, (when, next(self._seq), token))
        if self._timer is None or when < self._timer_at:
            self._arm(loop, when)
        if len(heap) > self._sweep_at:
            self._sweep()

    def clear(self) -> None:
        """Forget everything and stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()

    def __len__(self) -> int:
        return len(self._heap)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            token = heapq.heappop(heap)[2]
            if self._is_live(token):
                self._on_expire(token)
        if heap:
            self._arm(loop, heap[0][0])

    def _sweep(self) -> None:
        live = self._is_live
        self._heap = [e for e in self._heap if live(e[2])]
        heapq.heapify(self._heap)
        self._sweep_at = max(1024, 2 * len(self._heap))
