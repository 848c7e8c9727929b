"""Says so when something blocks a process's event loop, and where.

A handler that calls ``time.sleep``, a synchronous driver or long CPU work stops every
other actor of its process: their calls time out, and nothing said why. A
:class:`LoopWatchdog` has the loop stamp the time every :data:`TICK` seconds; a
daemon thread checks the stamp, and once it is more than :data:`BLOCKED_AFTER`
seconds old logs a warning with the frame the loop's thread is running (the blocking
code), then one more line when the loop runs again.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback

from loguru import logger

__all__ = ["BLOCKED_AFTER", "TICK", "LoopWatchdog"]

#: Seconds between the loop's stamps (and the thread's checks).
TICK = 1.0
#: Seconds without a stamp after which the loop counts as blocked.
BLOCKED_AFTER = 5.0


class LoopWatchdog:
    """Watches the running event loop from a daemon thread; ``name`` labels the logs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._stamp = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread = 0

    def start(self) -> None:
        """Start watching the running loop (from its thread)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stamp = time.monotonic()
        self._tick()
        self._thread = threading.Thread(
            target=self._watch, name=f"rio-watchdog-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (idempotent)."""
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self._stamp = time.monotonic()
        assert self._loop is not None
        self._handle = self._loop.call_later(TICK, self._tick)

    def _watch(self) -> None:
        blocked_since: float | None = None
        while not self._stop.wait(TICK):
            stamp = self._stamp
            late = time.monotonic() - stamp
            if late > BLOCKED_AFTER + TICK:
                if blocked_since != stamp:
                    blocked_since = stamp
                    logger.warning(
                        "{}: the event loop has been blocked for {:.1f}s, so every actor "
                        "of this process waits (a handler doing blocking work: time.sleep, "
                        "a synchronous driver, long CPU work? Use await self.run_blocking"
                        "(fn) for it); it is running:\n{}",
                        self.name,
                        late - TICK,
                        self._where(),
                    )
            elif blocked_since is not None and stamp != blocked_since:
                logger.warning(
                    "{}: the event loop runs again after being blocked for {:.1f}s",
                    self.name,
                    stamp - blocked_since - TICK,
                )
                blocked_since = None

    def _where(self) -> str:
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return "  (its frame is not available)"
        return "".join(traceback.format_stack(frame, limit=6)).rstrip()
