"""Helpers for the core tests: a probe that actors report to and tests wait on.

Actors under test reach the current probe with :func:`probe`; a test gets the same
object from the ``probe`` fixture. Everything a test waits for goes through it, so
no test sleeps to "let things happen". (Runtimes whose actors live in other
processes will need a cross-process probe behind this same interface.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import rio

#: What the ``make_app`` fixture returns: ``make_app(storage=..., **app_options)``.
AppFactory = Callable[..., rio.App]

_current: Probe | None = None


def probe() -> Probe:
    """The probe of the running test."""
    assert _current is not None, "no probe installed (the autouse `probe` fixture sets one)"
    return _current


class Probe:
    """Records named hits (from any thread) and opens named gates (loop thread)."""

    def __init__(self) -> None:
        # The loop (and its thread) of the first waiter; hits from other threads are
        # handed to it. Before anyone waits there is nobody to wake.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = -1
        self._lock = threading.Lock()
        self._log: list[tuple[str, tuple[Any, ...]]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._gates: dict[str, asyncio.Event] = {}

    # -- hits ------------------------------------------------------------------

    def hit(self, name: str, *data: Any) -> None:
        """Record that ``name`` happened, with optional data; wakes waiters."""
        with self._lock:
            self._log.append((name, data))
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._thread:
            self._wake()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def count(self, name: str) -> int:
        """How many times ``name`` was hit."""
        with self._lock:
            return sum(1 for n, _ in self._log if n == name)

    def data(self, name: str) -> list[Any]:
        """The data of each hit of ``name``: the single value, or a tuple for several."""
        with self._lock:
            return [d[0] if len(d) == 1 else d for n, d in self._log if n == name]

    def names(self) -> list[str]:
        """Every hit's name, in order."""
        with self._lock:
            return [n for n, _ in self._log]

    async def wait(self, name: str, count: int = 1, within: float = 2.0) -> None:
        """Return once ``name`` was hit ``count`` times; fail the test after ``within`` seconds."""
        loop = self._bind()
        try:
            async with asyncio.timeout(within):
                while self.count(name) < count:
                    fut = loop.create_future()
                    self._waiters.append(fut)
                    await fut
        except TimeoutError:
            raise AssertionError(
                f"probe: {name!r} hit {self.count(name)} time(s) within {within}s, "
                f"expected {count}; hits so far: {self.names()}"
            ) from None

    def _bind(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._thread = threading.get_ident()
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # -- gates -------------------------------------------------------------------

    def _gate(self, name: str) -> asyncio.Event:
        self._bind()
        gate = self._gates.get(name)
        if gate is None:
            gate = self._gates[name] = asyncio.Event()
        return gate

    async def gate(self, name: str) -> None:
        """Wait until the test opens gate ``name``."""
        await self._gate(name).wait()

    def open(self, name: str) -> None:
        """Open gate ``name``: every waiter, now and later, passes."""
        self._gate(name).set()


def install(p: Probe | None) -> None:
    """Make ``p`` the current probe (the fixture's job)."""
    global _current
    _current = p
