"""The in-process runtime: activations, mailboxes, turns, deadlines, deactivation.

How a call runs. ``ref.incr(1)`` reaches :meth:`Runtime.call`, which finds (or
creates) the activation. When the activation is idle and its mailbox empty, the
handler starts *eagerly*, in the caller's own stack: a handler that finishes without
suspending costs no task, no queue and no event-loop round trip. When it suspends,
the rest of the turn continues in one task. When the activation is busy, the call is
appended to its mailbox (a deque) and one drain task per busy activation runs the
queued turns in arrival order. Every waiting caller has a deadline; a call
cycle among non-reentrant actors is refused at once with :class:`Deadlock`.

This module knows nothing of worker processes or the cluster: they wrap a
:class:`Runtime` and route calls to it through :meth:`Runtime.call`.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import traceback
from _thread import get_ident
from collections import deque
from collections.abc import Coroutine
from contextvars import copy_context
from functools import partial
from sys import getrefcount
from typing import Any, Literal, TypeVar, overload

import msgspec
from loguru import logger

from rio.core.actor import Actor
from rio.core.background import Background
from rio.core.codec import PLAIN_TYPES
from rio.core.context import CALLER_DEADLINE, CURRENT_TURN, fresh_deadline
from rio.core.deadlines import Deadlines
from rio.core.errors import (
    CallTimeout,
    ConfigError,
    Deadlock,
    Overloaded,
    RemoteError,
    RioError,
    SystemStopping,
    UnknownActorType,
    qualified_name,
)
from rio.core.lifecycle import Lifecycle, PlacementHook
from rio.core.ref import Ref, new_ref
from rio.core.registry import Handler, actor_type, lookup_type
from rio.core.reminders import Reminders
from rio.core.streams import Streams
from rio.core.system import System
from rio.core.timers import Timers
from rio.core.turns import (
    _UNSHARED,
    ACTIVATING,
    ACTIVE,
    DEACTIVATING,
    MAX_EAGER_DEPTH,
    NEW,
    NO_DEADLINE,
    Key,
    TurnTask,
    chain_future,
    current_task_table,
    key_str,
    run_resumed,
    waiting,
)
from rio.core.watchdog import LoopWatchdog
from rio.storage.base import StateStorage

__all__ = ["Runtime", "RuntimeStats"]

R = TypeVar("R")

#: Default of ``max_queued``: calls that may wait in one queue (an activation's
#: mailbox, the calls held for one worker process) before more are refused with
#: :class:`rio.Overloaded`.
MAX_QUEUED = 100_000


def check_max_queued(value: object) -> int:
    """``value`` as a ``max_queued`` setting (a whole number >= 1), else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"max_queued must be a whole number >= 1, got {value!r}")
    return value


class RuntimeStats(msgspec.Struct, frozen=True):
    """An immutable snapshot of a runtime's activity."""

    activations: int
    by_type: dict[str, int]
    queued: int
    #: Pub/sub streams with subscribers kept here (sources and replicas).
    streams: int = 0
    #: Subscriptions here, plus other processes subscribed to streams kept here.
    subscribers: int = 0


class Runtime(Lifecycle, System):
    """Hosts activations in this process and runs their turns.

    Args:
        storage: where actor state lives (opened by :meth:`start`).
        types: names of the actor types hosted here; None hosts every registered type.
        default_timeout: seconds a call may take when the caller sets no deadline.
        drain_timeout: seconds :meth:`stop` waits for turns and hooks to finish.
        idle_ttl: per-type overrides of the class's ``idle_ttl`` (seconds or None).
        name: a label for logs and messages.
        reminder_poll: fire the durable reminders of ``storage`` from here, reading
            the due ones every this many seconds; None (default) leaves them to
            another process (a pool's driver) or to the cluster node.
        max_queued: calls one activation's mailbox holds; a call beyond them is
            refused at once with :class:`rio.Overloaded`.
    """

    def __init__(
        self,
        storage: StateStorage,
        *,
        types: set[str] | None = None,
        default_timeout: float = 30.0,
        drain_timeout: float = 30.0,
        idle_ttl: dict[str, float | None] | None = None,
        name: str = "rio",
        reminder_poll: float | None = None,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        if not default_timeout > 0:
            raise ValueError(f"default_timeout must be positive, got {default_timeout}")
        self.storage = storage
        self.name = name
        self.default_timeout = float(default_timeout)
        self.drain_timeout = float(drain_timeout)
        self._hosted = types
        self._idle_ttl = dict(idle_ttl or {})
        self.max_queued = max_queued
        self._acts: dict[Key, Actor[Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = -1
        self._stopping = False
        self._stop_problems: list[str] = []
        self._started = False
        self._closed = False
        #: The system refs made here route through (a worker pool sets itself).
        self.system: System = self
        self._deact_waiters: dict[Key, list[asyncio.Future[None]]] = {}
        self._saving: dict[Key, asyncio.Future[None]] = {}
        self._turn_tasks: set[asyncio.Task[Any]] = set()
        #: ids of the records of turns that continue in a task (a task the turn
        #: creates inherits the record; it stands for no turn once the turn ended).
        self._live_turns: set[int] = set()
        self._deact_tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        # The sweeper's current sleep; an activation whose TTL needs a shorter one wakes it.
        self._sweep_period = 0.0
        self._sweep_wake = asyncio.Event()
        self._ctx: contextvars.Context | None = None
        # The turn whose first step runs synchronously right now (an eager start).
        # Cheaper than setting the context variable for every call; a turn that
        # suspends gets the context variable set in its continuation task instead.
        self._sync_turn: tuple[Actor[Any], tuple[Key, ...], float] | None = None
        # asyncio's current-task table (see _current_task_table); a private dict
        # stands in where writing asyncio's has no effect, so the code path is one.
        self._current_tasks: dict[Any, Any] = {}
        self._stand_in: TurnTask | None = None
        self._deadlines = Deadlines(self._expire, waiting)
        self.background = Background(self)
        #: Set by a cluster node: claims objects before activation, releases after.
        self.placement: PlacementHook | None = None
        self.timers = Timers(self)
        self.streams = Streams(name, self.default_timeout)
        self._reminder_poll = reminder_poll
        #: The poller firing reminders from this process, if one runs here (a
        #: reminder registered here wakes it when due before its next poll).
        self.reminder_poller: Reminders | None = None
        self._watchdog = LoopWatchdog(name)

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Open storage and start the idle sweeper. Call from the loop that will serve."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._current_tasks = current_task_table(self._loop) or {}
        await self.storage.open()
        self.streams.start()
        self._watchdog.start()
        self._started = True
        ctx = contextvars.copy_context()
        ctx.run(CURRENT_TURN.set, None)
        ctx.run(CALLER_DEADLINE.set, None)
        self._ctx = ctx
        self._sweeper = self._create_task(self._sweep_idle())
        if self._reminder_poll is not None:
            poller = Reminders(
                self.storage,
                self.system,
                poll=self._reminder_poll,
                timeout=self.default_timeout,
                name=self.name,
            )
            self.reminder_poller = poller
            poller.start()

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._started and not self._stopping

    def stop_problems(self) -> list[str]:
        """See :meth:`rio.System.stop_problems`."""
        return list(self._stop_problems)

    async def stop(self) -> None:
        """Drain (see :meth:`drain`), then close storage."""
        if not self._started or self._closed:
            return
        await self.drain()
        await self.close()

    async def drain(self) -> None:
        """Finish queued turns, run deactivation hooks, save; leaves storage open.

        New calls from outside any turn are refused with :class:`SystemStopping`
        from the moment this starts; calls made by running turns still work (and
        may re-activate objects, which a second drain deactivates again).
        """
        if not self._started:
            return
        self._stopping = True
        poller = self.reminder_poller
        if poller is not None:
            poller.halt()  # no new firings; those in flight land during the drain
        loop = self._loop_()
        deadline = loop.time() + self.drain_timeout
        while self._acts and loop.time() < deadline:
            waits = [self._request_deactivation(a, front=False) for a in list(self._acts.values())]
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.gather(*waits, return_exceptions=True)
            except TimeoutError:
                break
        if self._acts:
            stuck = ", ".join(key_str(k) for k in list(self._acts)[:10])
            logger.warning(
                "{}: drain timeout ({}s) passed with {} activation(s) busy ({}); cancelling",
                self.name,
                self.drain_timeout,
                len(self._acts),
                stuck,
            )
            self._stop_problems.append(
                f"drain timeout ({self.drain_timeout:g}s) passed with {len(self._acts)} "
                f"activation(s) busy ({stuck}): cancelled"
            )
            stuck_tasks = [*self._turn_tasks, *self._deact_tasks]
            for task in stuck_tasks:
                task.cancel()
            # Wait for them to unwind, so no hook or save runs after storage closes.
            await asyncio.gather(*stuck_tasks, return_exceptions=True)
            for act in list(self._acts.values()):
                self._discard(act, SystemStopping(f"{self.name} stopped before this call ran"))
        if poller is not None:  # their turns ran: reschedule them (storage is still open)
            await poller.stop(max(deadline - loop.time(), 1.0))

    async def close(self) -> None:
        """Stop the idle sweeper and close storage (after :meth:`drain`)."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._watchdog.stop()
        if self.reminder_poller is not None:
            await self.reminder_poller.stop(0.0)
        self.streams.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        self._deadlines.clear()
        await self.storage.close()

    # -- calls ---------------------------------------------------------------------

    def ref(self, actor: type[Actor[Any]] | str, object_id: str | int) -> Ref[Any]:
        """A ref bound to this runtime's system; ``actor`` is a class or a type name."""
        info = lookup_type(actor) if isinstance(actor, str) else actor_type(actor)
        return new_ref(info, object_id, self.system)

    def call(
        self,
        key: Key,
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """Send one call; returns an awaitable for its answer.

        Raises at once (no awaitable) for bad arguments, a refused deadlock, or a
        stopping system.
        """
        if get_ident() != self._thread_id:
            return self._call_threadsafe(key, handler, args, kwargs, timeout)
        args, kwargs = handler.check(args, kwargs)
        chain, deadline, now = self.call_context(key, handler, timeout)
        return self.deliver(key, handler, args, kwargs, chain, deadline, now)

    def call_context(
        self, key: Key, handler: Handler, timeout: float | None
    ) -> tuple[tuple[Key, ...], float, float]:
        """The chain (ending with ``key``), deadline and current time for a new call.

        Inside a turn the chain and deadline are the turn's; outside, a fresh chain
        and ``timeout`` (or the default, or an enclosing :func:`rio.timeout`).

        Raises:
            Deadlock: ``key`` is already in the chain and is not reentrant.
            SystemStopping: a call from outside any turn while stopping.
        """
        loop = self._loop
        assert loop is not None
        now = loop.time()
        turn = self._sync_turn
        if turn is None:
            turn = CURRENT_TURN.get()
            if turn is not None and id(turn) not in self._live_turns:
                turn = None  # a task the turn created, still running after it ended
        if turn is None:
            if self._stopping:
                raise SystemStopping(
                    f"{self.name} is stopping: call to {key_str(key)}.{handler.name}() refused"
                )
            return (key,), fresh_deadline(now, timeout, self.default_timeout), now
        chain = turn[1]
        deadline = turn[2]
        if timeout is not None and now + timeout < deadline:
            deadline = now + timeout
        elif deadline == NO_DEADLINE:  # a timer tick: each call it makes has its own
            deadline = now + self.default_timeout
        outer = CALLER_DEADLINE.get()
        if outer is not None and outer < deadline:
            deadline = outer
        if key in chain and not (handler.reentrant or self._reentrant_type(key)):
            raise self._deadlock(chain, key, handler)
        return (*chain, key), deadline, now

    @overload
    def deliver(
        self,
        key: Key,
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chain: tuple[Key, ...],
        deadline: float,
        now: float,
        plain: Literal[False] = False,
    ) -> asyncio.Future[Any]: ...

    @overload
    def deliver(
        self,
        key: Key,
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chain: tuple[Key, ...],
        deadline: float,
        now: float,
        plain: bool,
    ) -> Any: ...

    def deliver(
        self,
        key: Key,
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chain: tuple[Key, ...],
        deadline: float,
        now: float,
        plain: bool = False,
    ) -> Any:
        """Hand a checked call to the activation of ``key`` hosted here; a future of its answer.

        ``chain`` ends with ``key``. Used by :meth:`call` and by transports bringing
        calls from other processes. With ``plain`` (for transports, which answer a
        value at once), a turn that finishes right here returns its value itself,
        not a future (an awaitable value, a future or a coroutine returned by
        mistake, still comes inside one: nothing outside the turn may run it).
        """
        loop = self._loop
        assert loop is not None
        if now >= deadline:  # its caller is told CallTimeout: it must not run either
            raise CallTimeout(f"{key_str(key)}.{handler.name}(): deadline already passed")
        prev = self._sync_turn
        act = self._acts.get(key)
        if act is None:
            act = self._new_activation(key, handler.owner)
        act._rio_last = now
        status = act._rio_status
        if len(chain) <= MAX_EAGER_DEPTH:
            if status == ACTIVE:
                # Idle, nothing queued and no drain pending (a drain may be about to
                # deactivate it): run the turn right here, in the caller's stack.
                if (
                    not act._rio_busy
                    and not act._rio_queue
                    and not act._rio_draining
                    and not act._rio_deact
                ):
                    act._rio_busy = 1
                    coro = handler.fn(act, *args, **kwargs) if kwargs else handler.fn(act, *args)
                    return self._first_step(
                        act, handler, coro, (act, chain, deadline), prev, now, plain
                    )
                if (handler.reentrant or act._rio_type.reentrant) and not act._rio_draining:
                    return self._run_eager(act, handler, args, kwargs, chain, deadline, now=now)
            elif status == NEW and not act._rio_queue and not act._rio_draining:
                # A fresh activation; one that inherited calls queued during its
                # predecessor's deactivation runs those first (below, in order).
                return self._run_eager(
                    act, handler, args, kwargs, chain, deadline, activate=True, now=now
                )
        queue = act._rio_queue
        if queue is None:
            queue = act._rio_queue = deque()
        elif len(queue) >= self.max_queued:
            raise Overloaded(
                f"{key_str(key)}.{handler.name}() refused: {len(queue)} calls already wait "
                f"in its mailbox (max_queued={self.max_queued}); it serves calls slower "
                "than they come. Await the calls already made before starting more"
            )
        chain = chain[:-1]
        fut = loop.create_future()
        self._deadlines.add(loop, deadline, (fut, key, handler.name, deadline - now))
        queue.append((handler, args, kwargs, chain, deadline, fut))
        if not act._rio_busy and not act._rio_draining:
            self._start_drain(act)
        return fut

    def _call_threadsafe(
        self,
        key: Key,
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        loop = self._loop
        if loop is None or loop.is_closed():
            raise SystemStopping(f"{self.name} is not running")
        return self.call_from_thread(loop, key, handler, args, kwargs, timeout)

    def _reentrant_type(self, key: Key) -> bool:
        # From the registry, not an activation: the actor may live in another process.
        try:
            return lookup_type(key[0]).reentrant
        except UnknownActorType:
            return False

    def _deadlock(self, chain: tuple[Key, ...], key: Key, handler: Handler) -> Deadlock:
        start = chain.index(key)
        cycle = [key_str(k) for k in chain[start:]] + [key_str(key)]
        return Deadlock(
            f"call cycle among non-reentrant actors: {' -> '.join(cycle)} "
            f"(calling {handler.name}()); {key_str(key)} is still in a turn waiting on "
            "this chain. Mark the type (reentrant=True) or the handler (@rio.reentrant) "
            "reentrant, or break the cycle",
            cycle,
        )

    def _expire(self, token: tuple[asyncio.Future[Any], Key, str, float]) -> None:
        fut, key, method, budget = token
        if not fut.done():
            fut.set_exception(CallTimeout.unanswered(key_str(key), method, budget))

    # -- turns ---------------------------------------------------------------------

    def _run_eager(
        self,
        act: Actor[Any],
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chain: tuple[Key, ...],
        deadline: float,
        activate: bool = False,
        now: float | None = None,
    ) -> asyncio.Future[Any]:
        """Start a turn in the caller's stack; the general form of the path in :meth:`call`."""
        loop = self._loop
        assert loop is not None
        act._rio_busy += 1
        if activate:
            coro = self._activate_then(act, handler, args, kwargs)
        else:
            coro = handler.fn(act, *args, **kwargs)
        started = loop.time() if now is None else now
        return self._first_step(  # type: ignore[no-any-return]  # not plain: a future
            act, handler, coro, (act, chain, deadline), self._sync_turn, started
        )

    def _first_step(
        self,
        act: Actor[Any],
        handler: Handler,
        coro: Coroutine[Any, Any, Any],
        turn: tuple[Actor[Any], tuple[Key, ...], float],
        prev: tuple[Actor[Any], tuple[Key, ...], float] | None,
        started: float,
        plain: bool = False,
    ) -> Any:
        """Run a turn's first step right here, in a context of its own.

        While it runs, ``asyncio.current_task()`` answers a :class:`TurnTask` standing
        for the turn (not the caller's task), so ``asyncio.timeout()`` or a
        ``TaskGroup`` in the handler bind to the turn. A turn that finishes here costs
        no task; one that suspends continues in a task that the stand-in forwards to.
        """
        loop = self._loop
        assert loop is not None
        self._sync_turn = turn
        ctx = copy_context()
        # A stand-in nobody kept from the last turn is reused: no allocation per call.
        stand_in = self._stand_in
        if stand_in is None:
            stand_in = TurnTask(loop)
        else:
            self._stand_in = None
        current = self._current_tasks
        caller = current.get(loop)
        current[loop] = stand_in
        try:
            first = ctx.run(coro.send, None)
        except StopIteration as stop:
            if caller is None:
                del current[loop]
            else:
                current[loop] = caller
            self._sync_turn = prev
            if getrefcount(stand_in) <= _UNSHARED:
                self._stand_in = stand_in
            act._rio_busy -= 1
            if act._rio_deact or act._rio_queue:
                self._turn_finished_slow(act)
            value = stop.value
            if plain and (type(value) in PLAIN_TYPES or not hasattr(type(value), "__await__")):
                return value  # see deliver(plain=True)
            fut = loop.create_future()
            fut.set_result(value)
            return fut
        except BaseException as e:
            if caller is None:
                del current[loop]
            else:
                current[loop] = caller
            self._sync_turn = prev
            return self._eager_failed(act, handler, e)
        if caller is None:
            del current[loop]
        else:
            current[loop] = caller
        return self._eager_suspended(act, handler, coro, first, turn, prev, started, ctx, stand_in)

    def _eager_failed(
        self, act: Actor[Any], handler: Handler, e: BaseException
    ) -> asyncio.Future[Any]:
        self._turn_finished(act)
        if isinstance(e, asyncio.CancelledError):  # the handler's own: never the caller's
            e = self._cancelled(act, handler)
        elif not isinstance(e, Exception):
            raise e
        fut = self._loop_().create_future()
        fut.set_exception(self._wrap(act, handler, e))
        return fut

    def _eager_suspended(
        self,
        act: Actor[Any],
        handler: Handler,
        coro: Coroutine[Any, Any, Any],
        first: Any,
        turn: tuple[Actor[Any], tuple[Key, ...], float],
        prev: tuple[Actor[Any], tuple[Key, ...], float] | None,
        started: float,
        ctx: contextvars.Context,
        stand_in: TurnTask,
    ) -> asyncio.Future[Any]:
        """Continue a turn that awaited something in a task, and give the caller a future.

        The task runs in the context the first step ran in (so a contextvar token set
        before the first ``await`` resets after it), with the turn set in it.
        """
        self._sync_turn = prev
        loop = self._loop_()
        ctx.run(CURRENT_TURN.set, turn)
        self._live_turns.add(id(turn))
        task = loop.create_task(run_resumed(coro, first), context=ctx)
        stand_in.attach(task)
        deadline = turn[2]
        self._turn_tasks.add(task)
        fut = loop.create_future()
        if deadline != NO_DEADLINE:
            budget = deadline - started
            self._deadlines.add(loop, deadline, (fut, act._rio_key, handler.name, budget))
        task.add_done_callback(partial(self._eager_done, act, handler, fut, id(turn)))
        return fut

    def _eager_done(
        self,
        act: Actor[Any],
        handler: Handler,
        fut: asyncio.Future[Any],
        turn_id: int,
        task: asyncio.Task[Any],
    ) -> None:
        self._turn_tasks.discard(task)
        self._live_turns.discard(turn_id)
        self._turn_finished(act)
        if task.cancelled():
            if not fut.done():
                fut.set_exception(self._cancelled(act, handler))
            return
        exc = task.exception()
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(self._wrap(act, handler, exc))
        else:
            fut.set_result(task.result())

    def _cancelled(self, act: Actor[Any], handler: Handler) -> RioError:
        if self._stopping:
            return SystemStopping(f"{act!r}.{handler.name}() was cancelled by shutdown")
        return RemoteError(
            "asyncio.CancelledError",
            f"{act!r}.{handler.name}() was cancelled: the handler raised CancelledError, "
            "or something cancelled its turn",
        )

    def _turn_finished(self, act: Actor[Any]) -> None:
        act._rio_busy -= 1
        act._rio_last = self._loop_().time()  # idle from now on, not from its arrival
        self._turn_finished_slow(act)

    def _turn_finished_slow(self, act: Actor[Any]) -> None:
        if not act._rio_busy and (act._rio_deact or act._rio_queue) and not act._rio_draining:
            self._start_drain(act)

    def _wrap(self, act: Actor[Any], handler: Handler | None, e: BaseException) -> BaseException:
        if isinstance(e, RioError):
            return e
        tb = "".join(traceback.format_exception(e))
        err = RemoteError(qualified_name(type(e)), str(e), tb)
        err.__cause__ = e
        return err

    def _create_task(self, coro: Coroutine[Any, Any, R]) -> asyncio.Task[R]:
        loop = self._loop
        assert loop is not None
        assert self._ctx is not None
        return loop.create_task(coro, context=self._ctx.copy())

    def _start_drain(self, act: Actor[Any]) -> None:
        """Schedule :meth:`_pump`; until it runs, new calls queue behind the mailbox."""
        act._rio_draining = True
        assert self._ctx is not None
        self._loop_().call_soon(self._pump, act, context=self._ctx.copy())

    def _pump(self, act: Actor[Any]) -> None:
        """Start queued turns of one activation in arrival order.

        Each turn starts like an eager call, in a context of its own. Turns that finish
        at once are followed by the next; when one suspends, pumping stops and that
        turn's completion schedules the next pump. A pending deactivation runs as a task.
        """
        key = act._rio_key
        try:
            while not act._rio_busy:
                if act._rio_deact:
                    status = act._rio_status
                    if status in (NEW, ACTIVATING, ACTIVE):
                        # From here on calls queue; they reach a fresh activation.
                        act._rio_status = DEACTIVATING
                        task = self._create_task(self._deactivate_now(act, status == ACTIVE))
                        self._deact_tasks.add(task)
                        task.add_done_callback(self._deact_tasks.discard)
                        return
                    act._rio_deact = False
                queue = act._rio_queue
                if not queue:
                    return
                handler, args, kwargs, chain, deadline, fut = queue.popleft()
                if handler is None:
                    act._rio_deact = True
                    continue
                if fut.done():
                    continue
                status = act._rio_status
                if status not in (NEW, ACTIVE):
                    fut.set_exception(SystemStopping(f"{act!r} is gone"))
                    continue
                inner = self._run_eager(
                    act, handler, args, kwargs, (*chain, key), deadline, activate=status == NEW
                )
                chain_future(inner, fut)
        finally:
            act._rio_draining = False

    # -- introspection -----------------------------------------------------------------

    def stats(self) -> RuntimeStats:
        """A snapshot: activations (total and by type), queued messages, streams."""
        by_type: dict[str, int] = {}
        queued = 0
        for (tname, _), act in self._acts.items():
            by_type[tname] = by_type.get(tname, 0) + 1
            queued += len(act._rio_queue or ())
        streams, subscribers = self.streams.stats()
        return RuntimeStats(len(self._acts), by_type, queued, streams, subscribers)

    def is_active(self, actor: type[Actor[Any]] | str, object_id: str | int) -> bool:
        """True when ``(actor, object_id)`` has a live activation here."""
        name = actor if isinstance(actor, str) else actor_type(actor).name
        act = self._acts.get((name, str(object_id)))
        return act is not None and act._rio_status in (ACTIVATING, ACTIVE)

    def _loop_(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            raise SystemStopping(f"{self.name} has not been started")
        return loop
