"""Timers of an activation: a callback that runs as a turn, once or every ``interval``.

A tick is a turn like a call's: it starts at once when the activation is idle,
otherwise it waits in the mailbox behind the turns already there, so it never
overlaps a handler of a non-reentrant actor. The next tick is scheduled ``interval``
seconds after the previous one *finished*, so ticks never pile up behind a slow
callback. A callback that raises is logged and the timer keeps going. Every timer of
an activation is cancelled when it starts deactivating (before ``on_deactivate``);
a queued tick is dropped, never handed to the next activation. Ticks do not count as
activity for the idle TTL unless the timer was started with ``keep_alive=True``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from itertools import count
from threading import get_ident
from typing import TYPE_CHECKING, Any

from loguru import logger

from rio.core.errors import RemoteError, SystemStopping
from rio.core.registry import Handler
from rio.core.turns import ACTIVATING, ACTIVE, NEW, NO_DEADLINE, key_str

if TYPE_CHECKING:
    from rio.core.actor import Actor
    from rio.core.runtime import Runtime

__all__ = ["Timer", "Timers"]

TimerCallback = Callable[[], Awaitable[Any] | None]
_anonymous = count(1)


class Timer:
    """A timer of one activation, made by :meth:`rio.Actor.start_timer`.

    Example::

        class Table(rio.Actor):
            async def on_activate(self) -> None:
                self.clock = self.start_timer(self.tick, 1.0, name="clock")

            async def tick(self) -> None:
                self.publish(Tick(...))

            async def stop_clock(self) -> None:
                self.clock.cancel()
    """

    __slots__ = (
        "_act",
        "_cancelled",
        "_handle",
        "_handler",
        "_pending",
        "_slot",
        "_timers",
        "callback",
        "due",
        "failures",
        "interval",
        "keep_alive",
        "name",
        "ticks",
    )

    def __init__(
        self,
        timers: Timers,
        act: Actor[Any],
        callback: TimerCallback,
        interval: float | None,
        due: float,
        name: str | None,
        keep_alive: bool,
    ) -> None:
        #: The name given to :meth:`rio.Actor.start_timer` (None: anonymous).
        self.name = name
        #: Seconds between the end of one tick and the start of the next; None: once.
        self.interval = interval
        #: Seconds from the start until the first tick.
        self.due = due
        #: Whether ticks count as activity for the idle TTL.
        self.keep_alive = keep_alive
        #: The function each tick calls (a coroutine function or a plain one).
        self.callback = callback
        #: How many ticks have finished (raising or not).
        self.ticks = 0
        #: How many ticks in a row raised (0 after one that did not).
        self.failures = 0
        self._timers = timers
        self._act = act
        self._slot: Any = name if name is not None else ("anonymous", next(_anonymous))
        self._handler = Handler(
            owner=act._rio_type.name,
            name=f"<timer {name or getattr(callback, '__name__', '?')}>",
            fn=_tick,
            reentrant=False,
        )
        self._handle: asyncio.TimerHandle | None = None
        self._pending: asyncio.Future[Any] | None = None
        self._cancelled = False

    @property
    def active(self) -> bool:
        """True until cancelled, deactivated, or (a one-shot timer) fired."""
        return not self._cancelled

    def cancel(self) -> None:
        """Stop the timer; a tick waiting in the mailbox is dropped. Idempotent.

        A tick already running finishes. Callable from any thread.
        """
        if self._cancelled:
            return
        rt = self._timers._rt
        if get_ident() != rt._thread_id:
            rt._loop_().call_soon_threadsafe(self.cancel)
            return
        self._cancelled = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.cancel()  # a queued tick: the pump and re-homing skip done messages
        timers = self._act._rio_timers
        if timers is not None and timers.get(self._slot) is self:
            del timers[self._slot]

    def __repr__(self) -> str:
        label = repr(self.name) if self.name is not None else "(anonymous)"
        every = "once" if self.interval is None else f"every {self.interval:g}s"
        state = "active" if self.active else "stopped"
        return f"<Timer {label} of {self._act!r}, {every}, {state}>"


async def _tick(act: Actor[Any], timer: Timer) -> None:
    """The body of a tick's turn."""
    result = timer.callback()
    if inspect.isawaitable(result):
        await result


class Timers:
    """Starts, fires and stops the timers of a runtime's activations."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def start(
        self,
        act: Actor[Any],
        callback: TimerCallback,
        interval: float | None,
        due: float | None,
        name: str | None,
        keep_alive: bool,
    ) -> Timer:
        """See :meth:`rio.Actor.start_timer`."""
        if not callable(callback):
            raise TypeError(f"start_timer: callback must be callable, got {callback!r}")
        if interval is not None and (isinstance(interval, bool) or not interval > 0):
            raise ValueError(
                f"start_timer: interval must be positive seconds or None, got {interval!r}"
            )
        if due is None:
            if interval is None:
                raise ValueError("start_timer: a one-shot timer (interval=None) needs due=seconds")
            due = interval
        elif isinstance(due, bool) or not due >= 0:
            raise ValueError(f"start_timer: due must be seconds >= 0, got {due!r}")
        if act._rio_status not in (NEW, ACTIVATING, ACTIVE):
            raise SystemStopping(f"{act!r} is deactivating; it cannot start a timer")
        timer = Timer(self, act, callback, interval, float(due), name, keep_alive)
        rt = self._rt
        if get_ident() != rt._thread_id:
            rt._loop_().call_soon_threadsafe(self._register, timer)
        else:
            self._register(timer)
        return timer

    def _register(self, timer: Timer) -> None:
        if timer._cancelled:
            return
        act = timer._act
        if act._rio_status not in (NEW, ACTIVATING, ACTIVE):
            timer._cancelled = True
            return
        timers = act._rio_timers
        if timers is None:
            timers = act._rio_timers = {}
        old = timers.get(timer._slot)
        if old is not None:
            old.cancel()  # a timer of the same name is replaced
        timers[timer._slot] = timer
        self._arm(timer, timer.due)

    def _arm(self, timer: Timer, delay: float) -> None:
        rt = self._rt
        loop = rt._loop_()
        assert rt._ctx is not None
        timer._handle = loop.call_at(loop.time() + delay, self._due, timer, context=rt._ctx.copy())

    def cancel_all(self, act: Actor[Any]) -> None:
        """Cancel every timer of ``act`` (it deactivates or failed to activate)."""
        timers = act._rio_timers
        if timers:
            for timer in list(timers.values()):
                timer.cancel()

    def _due(self, timer: Timer) -> None:
        """Start a tick's turn, or queue it behind the activation's mailbox."""
        timer._handle = None
        act = timer._act
        status = act._rio_status
        if timer._cancelled or status not in (ACTIVATING, ACTIVE):
            return
        rt = self._rt
        loop = rt._loop_()
        now = loop.time()
        if timer.keep_alive:
            act._rio_last = now
        handler = timer._handler
        # No deadline of its own: the next tick is armed when this one has finished,
        # however long it takes (the calls it makes each get the default timeout).
        deadline = NO_DEADLINE
        chain = (act._rio_key,)
        if status == ACTIVE and not act._rio_draining and not act._rio_deact:
            if not act._rio_busy and not act._rio_queue:
                act._rio_busy = 1
                coro = _tick(act, timer)
                turn = (act, chain, deadline)
                self._started(timer, rt._first_step(act, handler, coro, turn, rt._sync_turn, now))
                return
            if act._rio_type.reentrant:
                fut = rt._run_eager(act, handler, (timer,), {}, chain, deadline, now=now)
                self._started(timer, fut)
                return
        fut = loop.create_future()
        queue = act._rio_queue
        if queue is None:
            queue = act._rio_queue = deque()
        queue.append((handler, (timer,), {}, (), deadline, fut))
        if not act._rio_busy and not act._rio_draining:
            rt._start_drain(act)
        self._started(timer, fut)

    def _started(self, timer: Timer, fut: asyncio.Future[Any]) -> None:
        if fut.done():
            self._ran(timer, fut)
        else:
            timer._pending = fut
            fut.add_done_callback(partial(self._ran, timer))

    def _ran(self, timer: Timer, fut: asyncio.Future[Any]) -> None:
        """A tick finished: report its failure, schedule the next one."""
        if timer._pending is fut:
            timer._pending = None
        if fut.cancelled():
            return
        timer.ticks += 1
        exc = fut.exception()
        act = timer._act
        if exc is not None and not isinstance(exc, SystemStopping):
            timer.failures = n = timer.failures + 1
            if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th... failure in a row
                cause = exc.__cause__ if isinstance(exc, RemoteError) and exc.__cause__ else exc
                # The traceback once: a timer failing every tick must not flood the log.
                logger.opt(exception=cause if n == 1 else None).error(
                    "{}: timer {} of {} raised {}: {}{}; the timer keeps running",
                    self._rt.name,
                    timer.name or getattr(timer.callback, "__qualname__", "?"),
                    key_str(act._rio_key),
                    type(cause).__name__,
                    cause,
                    "" if n == 1 else f" ({n} ticks in a row; said on the 1st, 2nd, 4th...)",
                )
        elif exc is None:
            timer.failures = 0
        if timer._cancelled:
            return
        if timer.interval is None or act._rio_status not in (ACTIVATING, ACTIVE):
            timer.cancel()  # a one-shot timer is done; so is one whose activation is going
            return
        self._arm(timer, timer.interval)
