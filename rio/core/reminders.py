"""Durable reminders: named, periodic wake-ups of an object, kept in the state storage.

A reminder belongs to an object, not to an activation: it is a row in the state
storage engine (type, id, name, period, next due time), so it outlives the
activation, the process and the node that registered it. An actor registers one with
:meth:`rio.Actor.register_reminder` and gets each firing as a turn of
``receive_reminder(name)``, activated for it if need be.

Who fires them. A :class:`Reminders` poller reads the due reminders every
``reminder_poll`` seconds: in the in-process runtime (``workers=0``), in a worker
pool's driver, and in the main process of every cluster node. Any number of pollers
may share one storage: each firing is claimed with a compare-and-set on its due time
(:meth:`rio.storage.StateStorage.advance_reminder`), so exactly one poller takes it.

At least once. The claim moves the due time to the end of a *lease* (the call
timeout plus a little), then the firing is delivered as an ordinary call, routed like
any other (to the owning worker, or to the node the directory names). When the call
answers, the due time moves to the next period; when delivery fails (the object
could not activate, its worker or node died, the call timed out) it is retried soon,
with a growing backoff, but never later than the next regular firing; when the
poller itself dies mid-delivery, the lease runs out and another poller fires it. A
``receive_reminder`` that raises counts as delivered: the error is logged and the
reminder keeps its schedule. Firings missed while no poller ran are not replayed one
by one: the reminder fires once, then keeps its phase (the next due time is the
first ``due + k * period`` after now).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from rio.core.context import CALLER_DEADLINE, CURRENT_TURN
from rio.core.errors import (
    ActivationFailed,
    CallTimeout,
    NodeUnreachable,
    NoNodesAvailable,
    Overloaded,
    RemoteError,
    StorageUnavailable,
    SystemStopping,
    UnknownActorType,
    UnknownMethod,
    WorkerLost,
)
from rio.core.registry import lookup_type
from rio.storage.base import StoredReminder, to_ms

if TYPE_CHECKING:
    from rio.core.actor import Actor
    from rio.core.system import System
    from rio.storage.base import StateStorage

__all__ = [
    "DEFAULT_POLL",
    "REMINDER_METHOD",
    "Reminder",
    "Reminders",
    "list_reminders",
    "next_after",
    "register_reminder",
    "unregister_reminder",
]

#: Seconds between two reads of the due reminders, unless the app says otherwise.
DEFAULT_POLL = 1.0
#: The method name a reminder's delivery travels under (the actor's hook).
REMINDER_METHOD = "receive_reminder"
#: Longest reminder name, in UTF-8 bytes (every engine can key on it).
MAX_NAME_BYTES = 255
#: Shortest period: reminder times are kept to the millisecond.
MIN_PERIOD = 0.001
#: The most retries a failed delivery waits between attempts (seconds).
MAX_BACKOFF = 60.0
#: Seconds by which a deadline seen in another process may run ahead of this clock.
_CLOCK_SLACK = 0.05
#: Failures that mean a firing did not reach ``receive_reminder`` (tried again soon,
#: backing off). Anything else was raised by the handler, or by a call it made: the
#: firing happened, and the reminder keeps its schedule.
_UNDELIVERED = (
    WorkerLost,
    NodeUnreachable,
    NoNodesAvailable,
    SystemStopping,
    ActivationFailed,
    StorageUnavailable,
    Overloaded,  # refused before it ran: the mailbox (or a queue on the way) was full
)


class Reminder(msgspec.Struct, frozen=True):
    """A durable reminder of an object, as :meth:`rio.Actor.reminders` lists it.

    Example::

        for r in await self.reminders():
            print(r.name, r.period, r.next_due - time.time())
    """

    #: The name it was registered under (unique per object).
    name: str
    #: Seconds between firings.
    period: float
    #: When it is next due, in seconds since the epoch (``time.time()``). While a
    #: firing is being delivered this is the end of the delivery's lease.
    next_due: float


def _check(name: Any, period: Any, due: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a reminder name is a non-empty str, got {name!r}")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(
            f"reminder name {name[:40]!r}… is too long: at most {MAX_NAME_BYTES} bytes (UTF-8)"
        )
    if (
        isinstance(period, bool)
        or not isinstance(period, int | float)
        or not MIN_PERIOD <= period < math.inf
    ):
        raise ValueError(
            f"register_reminder: period must be seconds >= {MIN_PERIOD}, got {period!r}"
        )
    if due is not None and (
        isinstance(due, bool) or not isinstance(due, int | float) or not 0 <= due < math.inf
    ):
        raise ValueError(f"register_reminder: due must be seconds >= 0, got {due!r}")


async def register_reminder(
    storage: StateStorage,
    poller: Reminders | None,
    act: Actor[Any],
    name: str,
    period: float,
    due: float | None,
) -> Reminder:
    """Store reminder ``name`` of ``act`` (see :meth:`rio.Actor.register_reminder`)."""
    _check(name, period, due)
    type_name, object_id = act._rio_key
    if act._rio_type.reminder is None:  # it would only be told at every firing
        raise UnknownMethod(
            f"{type_name}/{object_id}: cannot register reminder {name!r}: {type_name} has "
            "no receive_reminder to fire it on; define "
            "`async def receive_reminder(self, name: str) -> None` on it"
        )
    next_due = time.time() + (period if due is None else due)
    await storage.upsert_reminder(type_name, object_id, name, float(period), next_due)
    if poller is not None:
        poller.wake(next_due)
    return Reminder(name, float(period), to_ms(next_due) / 1000)


async def unregister_reminder(storage: StateStorage, act: Actor[Any], name: str) -> bool:
    """Delete reminder ``name`` of ``act``; False when it had none by that name."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a reminder name is a non-empty str, got {name!r}")
    type_name, object_id = act._rio_key
    return await storage.delete_reminder(type_name, object_id, name)


async def list_reminders(storage: StateStorage, act: Actor[Any]) -> list[Reminder]:
    """The reminders of ``act``, by name."""
    rows = await storage.list_reminders(*act._rio_key)
    return [Reminder(r.name, r.period, r.next_due) for r in rows]


def next_after(due: float, period: float, now: float) -> float:
    """The first ``due + k * period`` (k >= 1) later than ``now``: missed firings are skipped."""
    nxt = due + period
    if nxt <= now:
        nxt = due + (math.floor((now - due) / period) + 1) * period
        while nxt <= now:  # floating-point slack
            nxt += period
    return nxt


class Reminders:
    """Fires the reminders kept in one storage, through one system's call routing.

    Args:
        storage: where the reminders are (open while the poller runs).
        system: routes each firing to its object (``system.call``).
        poll: seconds between reads of the due reminders.
        timeout: the deadline of each delivery call.
        name: a label for logs.
        batch: the most reminders read per poll, and the most deliveries in flight.
    """

    def __init__(
        self,
        storage: StateStorage,
        system: System,
        *,
        poll: float = DEFAULT_POLL,
        timeout: float = 30.0,
        name: str = "rio",
        batch: int = 512,
    ) -> None:
        if not poll > 0:
            raise ValueError(f"reminder_poll must be positive seconds, got {poll!r}")
        self.storage = storage
        self.system = system
        self.poll = float(poll)
        self.timeout = float(timeout)
        #: How long a claimed firing stays claimed: if this poller dies while
        #: delivering it, another one fires it once this has passed.
        self.lease = self.timeout + max(self.poll, 1.0)
        self.name = name
        self.batch = batch
        #: Firings delivered (answered, or raised in the handler) by this poller.
        self.delivered = 0
        self._task: asyncio.Task[None] | None = None
        self._halted: asyncio.Task[None] | None = None
        #: Set by halt(): the polling loop ends even if a storage driver swallowed
        #: the cancellation (redis-py's asyncio.wait_for does on Python 3.11).
        self._halting = False
        self._inflight: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._failures: dict[tuple[str, str, str], int] = {}
        self._wake = asyncio.Event()
        self._next_poll = 0.0
        self._wake_at = math.inf
        self._wake_handle: asyncio.TimerHandle | None = None
        self._warned: set[tuple[str, str]] = set()
        self._failing = False

    def start(self) -> None:
        """Start polling (in the running event loop)."""
        if self._task is None:
            self._halting = False
            # Outside every turn and deadline: each delivery is a call from outside,
            # as a script's, with this poller's own timeout.
            ctx = contextvars.copy_context()
            ctx.run(CURRENT_TURN.set, None)
            ctx.run(CALLER_DEADLINE.set, None)
            self._task = asyncio.get_running_loop().create_task(self._run(), context=ctx)

    def halt(self) -> None:
        """Stop polling at once (deliveries in flight go on); :meth:`stop` finishes."""
        task, self._task = self._task, None
        if task is not None:
            self._halting = True
            task.cancel()
            self._wake.set()
            self._halted = task

    async def stop(self, wait: float = 5.0) -> None:
        """Stop polling; wait up to ``wait`` seconds for deliveries in flight, cancel the rest.

        A cancelled delivery keeps its claim: it is fired again when its lease runs out.
        """
        self.halt()
        task, self._halted = self._halted, None
        if task is not None:
            await asyncio.wait([task], timeout=wait)
            if not task.done():  # stuck in a storage call that ignores cancellation
                logger.warning(
                    "{}: the reminder poller did not stop within {:g}s; left behind",
                    self.name,
                    wait,
                )
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None
        pending = list(self._inflight.values())
        if pending:
            _, late = await asyncio.wait(pending, timeout=wait)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._task is not None

    def wake(self, at: float) -> None:
        """A reminder was registered in this process, due at ``at``: poll by then."""
        if self._task is None or at >= self._next_poll or at >= self._wake_at:
            return
        if self._wake_handle is not None:
            self._wake_handle.cancel()
        self._wake_at = at
        loop = asyncio.get_running_loop()
        self._wake_handle = loop.call_later(max(at - time.time(), 0.0), self._wake.set)

    # -- polling -----------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._halting:
            try:
                await self.poll_once()
                if self._failing:
                    logger.info("{}: reading due reminders works again", self.name)
                    self._failing = False
            except Exception as e:  # StorageError, StorageUnavailable...
                if not self._failing:
                    logger.warning(
                        "{}: reading due reminders failed ({}: {}); retrying every {:g}s",
                        self.name,
                        type(e).__name__,
                        e,
                        self.poll,
                    )
                    self._failing = True
            self._next_poll = time.time() + self.poll
            if self._halting:
                return
            try:
                async with asyncio.timeout(self.poll):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            self._wake_at = math.inf
            if self._wake_handle is not None:
                self._wake_handle.cancel()
                self._wake_handle = None

    async def poll_once(self) -> int:
        """Read the due reminders and start delivering those no one else claims.

        Returns how many deliveries it started (claims are made in the deliveries).
        """
        room = self.batch - len(self._inflight)
        if room <= 0:
            return 0
        now = time.time()
        started = 0
        loop = asyncio.get_running_loop()
        for row in await self.storage.due_reminders(now, room):
            slot = (row.type_name, row.object_id, row.name)
            if slot in self._inflight:
                continue  # still delivering the previous firing
            task = loop.create_task(self._fire(row, now))
            self._inflight[slot] = task
            task.add_done_callback(partial(self._finished, slot))
            started += 1
        return started

    def _finished(self, slot: tuple[str, str, str], task: asyncio.Task[None]) -> None:
        if self._inflight.get(slot) is task:
            del self._inflight[slot]
        if not task.cancelled() and task.exception() is not None:  # a bug: say so
            logger.opt(exception=task.exception()).error(
                "{}: firing reminder {!r} of {}/{} failed", self.name, slot[2], *slot[:2]
            )

    async def _fire(self, row: StoredReminder, now: float) -> None:
        t, i, n = row.type_name, row.object_id, row.name
        lease = now + self.lease
        try:
            if not await self.storage.advance_reminder(t, i, n, row.next_due, lease):
                return  # another poller took this firing, or the reminder changed
        except Exception as e:
            logger.warning("{}: claiming reminder {!r} of {}/{} failed: {}", self.name, n, t, i, e)
            return
        nxt = await self._deliver(row)
        try:
            await self.storage.advance_reminder(t, i, n, lease, nxt)
        except Exception as e:
            logger.warning(
                "{}: rescheduling reminder {!r} of {}/{} failed ({}); it fires again when "
                "its claim runs out",
                self.name,
                n,
                t,
                i,
                e,
            )

    async def _deliver(self, row: StoredReminder) -> float:
        """Deliver one claimed firing; returns when the reminder is due next."""
        t, i, n = row.type_name, row.object_id, row.name
        slot = (t, i, n)
        try:
            info = lookup_type(t)
        except UnknownActorType:
            self._warn_once(
                t, "unknown", f"reminder {n!r} of {t}/{i}: no actor type {t!r} is known here"
            )
            return next_after(row.next_due, row.period, time.time())
        if info.reminder is None:
            self._warn_once(
                t,
                "no handler",
                f"reminder {n!r} of {t}/{i} fired, but {t} has no receive_reminder(self, name) "
                "handler; the reminder is kept (unregister it, or add the handler)",
            )
            return next_after(row.next_due, row.period, time.time())
        deadline = time.monotonic() + self.timeout
        try:
            await self.system.call((t, i), info.reminder, (n,), {}, self.timeout)
        except _UNDELIVERED as e:  # it did not reach the handler: again, soon
            return self._undelivered(row, slot, e)
        except CallTimeout as e:
            # This firing's own deadline (seen by whichever hop noticed it first): it
            # may not have run at all, so again, soon. Earlier, it was a call the
            # handler made that timed out: the firing happened.
            own = str(e).startswith(f"{t}/{i}.{REMINDER_METHOD}(")
            if own or time.monotonic() >= deadline - _CLOCK_SLACK:
                return self._undelivered(row, slot, e)
            self._handler_raised(row, slot, e)
        except Exception as e:  # the handler ran and raised (its own error or a rio one)
            self._handler_raised(row, slot, e)
        else:
            self.delivered += 1
            self._failures.pop(slot, None)
        return next_after(row.next_due, row.period, time.time())

    def _handler_raised(
        self, row: StoredReminder, slot: tuple[str, str, str], e: Exception
    ) -> None:
        """Count a firing whose handler raised: logged, and the schedule is kept."""
        self.delivered += 1
        self._failures.pop(slot, None)
        cause = e.__cause__ if isinstance(e, RemoteError) and e.__cause__ is not None else e
        logger.opt(exception=cause).error(
            "{}: receive_reminder({!r}) of {}/{} raised {}: {}; the reminder keeps its schedule",
            self.name,
            row.name,
            row.type_name,
            row.object_id,
            type(e).__name__,
            e,
        )

    def _undelivered(self, row: StoredReminder, slot: tuple[str, str, str], e: Exception) -> float:
        """Count a failed delivery; when to try again (backing off, within the schedule)."""
        failures = self._failures.get(slot, 0) + 1
        self._failures[slot] = failures
        if len(self._failures) > 10 * self.batch:  # forget the oldest
            self._failures.pop(next(iter(self._failures)))
        now = time.time()
        backoff = min(self.poll * 2.0 ** min(failures, 16), MAX_BACKOFF)
        retry = min(now + backoff, next_after(row.next_due, row.period, now))
        # Told on the 1st, 2nd, 4th, 8th... failure in a row: a reminder that cannot
        # be delivered for long does not flood the log.
        log = logger.warning if failures & (failures - 1) == 0 else logger.debug
        log(
            "{}: delivering reminder {!r} to {}/{} failed ({}: {}; {} time(s) in a row); "
            "retrying in {:.2f}s",
            self.name,
            row.name,
            row.type_name,
            row.object_id,
            type(e).__name__,
            e,
            failures,
            retry - now,
        )
        return retry

    def _warn_once(self, type_name: str, what: str, message: str) -> None:
        if (type_name, what) in self._warned:
            return
        self._warned.add((type_name, what))
        logger.warning("{}: {}", self.name, message)
