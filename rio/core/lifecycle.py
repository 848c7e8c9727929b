"""The activation lifecycle, a mixin of :class:`rio.core.runtime.Runtime`.

Activation is part of an object's first turn: state load, ``__init__``,
``on_activate``. A failure discards the activation and fails whatever waited on it.
Deactivation is a queued request that the mailbox pump processes: hooks run,
background work stops, state is saved when the type asks, and calls that arrived
meanwhile go to a fresh activation, in order. Idle sweeping, state writes and
background work belong here too.
"""

from __future__ import annotations

import asyncio
from _thread import get_ident
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from loguru import logger

from rio.core.actor import Actor
from rio.core.codec import ENCODE_ERRORS, encode_state
from rio.core.context import CURRENT_TURN
from rio.core.errors import (
    ActivationFailed,
    RegistrationError,
    StateConflict,
    StateEncodeError,
    UnknownActorType,
)
from rio.core.ref import Ref
from rio.core.registry import ActorType, Handler, lookup_type
from rio.core.system import key_of
from rio.core.turns import ACTIVATING, ACTIVE, DEAD, NEW, Key, Message, key_str

if TYPE_CHECKING:
    import threading

    from rio.core.background import Background
    from rio.core.system import System
    from rio.core.timers import Timers
    from rio.storage.base import StateStorage

__all__ = ["Lifecycle", "PlacementHook"]

R = TypeVar("R")


class PlacementHook(Protocol):
    """How a cluster node keeps its directory in step with the activations it hosts."""

    async def claim(self, key: Key) -> None:
        """Claim ``key`` for this node before it activates; raise Redirect if placed elsewhere."""

    def released(self, key: Key) -> None:
        """``key``'s activation is gone: release its placement (may be batched)."""


class Lifecycle:
    """Activation, deactivation, idle sweeping, state and background work."""

    if TYPE_CHECKING:  # provided by Runtime
        name: str
        storage: StateStorage
        default_timeout: float
        drain_timeout: float
        background: Background
        timers: Timers
        system: System
        placement: PlacementHook | None
        _acts: dict[Key, Actor[Any]]
        _loop: asyncio.AbstractEventLoop | None
        _thread_id: int
        _stopping: bool
        _stop_problems: list[str]
        _hosted: set[str] | None
        _idle_ttl: dict[str, float | None]
        _deact_waiters: dict[Key, list[asyncio.Future[None]]]
        _deact_tasks: set[asyncio.Task[None]]
        _saving: dict[Key, asyncio.Future[None]]
        _sync_turn: tuple[Actor[Any], tuple[Key, ...], float] | None
        _live_turns: set[int]
        _sweep_wake: asyncio.Event
        _sweep_period: float

        def _loop_(self) -> asyncio.AbstractEventLoop: ...
        def _start_drain(self, act: Actor[Any]) -> None: ...
        def _create_task(self, coro: Coroutine[Any, Any, R]) -> asyncio.Task[R]: ...

    def _new_activation(self, key: Key, type_name: str) -> Actor[Any]:
        if self._hosted is not None and type_name not in self._hosted:
            raise UnknownActorType(
                f"{self.name} does not host actor type {type_name!r} "
                f"(hosted: {', '.join(sorted(self._hosted)) or 'none'}); "
                "add it to App(actors=[...])"
            )
        info = lookup_type(type_name)
        act: Actor[Any] = info.cls.__new__(info.cls)
        act.id = key[1]
        act._rio_key = key
        act._rio_system = self  # type: ignore[assignment]  # self is a Runtime
        act._rio_busy = 0
        act._rio_queue = None
        act._rio_status = NEW
        act._rio_deact = False
        act._rio_draining = False
        act._rio_bg = None
        act._rio_timers = None
        act._rio_version = 0
        act._rio_last = 0.0
        self._acts[key] = act
        ttl = self._ttl(info)
        if ttl is not None and ttl / 4 < self._sweep_period:
            self._sweep_wake.set()
        return act

    async def _activate_then(
        self, act: Actor[Any], handler: Handler, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        turn = self._sync_turn or CURRENT_TURN.get()
        assert turn is not None
        await self._activate(act, turn[1], turn[2])
        return await handler.fn(act, *args, **kwargs)

    async def _activate(self, act: Actor[Any], chain: tuple[Key, ...], deadline: float) -> None:
        act._rio_status = ACTIVATING
        info: ActorType = act._rio_type
        where = key_str(act._rio_key)
        placement = self.placement
        if placement is not None:  # a cluster node: claim the object in the directory first
            try:
                await placement.claim(act._rio_key)
            except BaseException as e:  # Redirect (placed elsewhere), a store error...
                self._discard(act, e)
                raise
        step = "__init__"
        try:
            if info.cls.__init__ is not object.__init__:
                act.__init__()  # type: ignore[misc]
            step = "loading state"
            if info.state_type is not None:
                stored = await self.storage.load(info.name, act.id, info.state_type)
                if stored is None:
                    act.state = info.state_type()
                    act._rio_version = 0
                else:
                    act.state = stored.value
                    act._rio_version = stored.version
            step = "on_activate"
            if info.has_on_activate:
                await act.on_activate()
        except Exception as e:
            err = ActivationFailed(
                f"activating {where} failed in {step}: {type(e).__name__}: {e}"
                + ("" if step != "loading state" else f" (storage {self.storage.url})")
            )
            err.__cause__ = e
            self._discard(act, err)
            raise err from e
        act._rio_status = ACTIVE

    def _discard(self, act: Actor[Any], err: BaseException) -> None:
        """Drop an activation at once, failing whatever waits on it."""
        act._rio_status = DEAD
        key = act._rio_key
        if self._acts.get(key) is act:
            del self._acts[key]
            if self.placement is not None:
                self.placement.released(key)
        self.timers.cancel_all(act)
        self.background.cancel_all(act)
        queue, act._rio_queue = act._rio_queue, None
        for msg in queue or ():
            if not msg[5].done():
                if msg[0] is None:
                    msg[5].set_result(None)
                else:
                    msg[5].set_exception(err)
        for w in self._deact_waiters.pop(key, ()):
            if not w.done():
                w.set_result(None)

    def _request_deactivation(self, act: Actor[Any], *, front: bool) -> asyncio.Future[None]:
        loop = self._loop_()
        fut: asyncio.Future[None] = loop.create_future()
        if act._rio_status == DEAD:
            fut.set_result(None)
            return fut
        self._deact_waiters.setdefault(act._rio_key, []).append(fut)
        queue = act._rio_queue
        if queue is None:
            queue = act._rio_queue = deque()
        msg: Message = (None, (), {}, (), 0.0, loop.create_future())
        if front:
            queue.appendleft(msg)
        else:
            queue.append(msg)
        if not act._rio_busy and not act._rio_draining:
            self._start_drain(act)
        return fut

    async def deactivate(
        self, actor: type[Actor[Any]] | str | Ref[Any], object_id: Any = None
    ) -> bool:
        """Deactivate one actor after its current turn (an operator's call).

        Returns False when it was not active. Example::

            await system.deactivate(Counter, "a")
        """
        return await self.deactivate_key(key_of(actor, object_id))

    async def deactivate_key(self, key: Key) -> bool:
        """:meth:`deactivate` by ``(type name, id)``."""
        act = self._acts.get(key)
        if act is None:
            return False
        await self._request_deactivation(act, front=True)
        return True

    async def _deactivate_now(self, act: Actor[Any], was_active: bool) -> None:
        info: ActorType = act._rio_type
        key = act._rio_key
        act._rio_busy += 1
        self.timers.cancel_all(act)
        try:
            if was_active and info.has_on_deactivate:
                turn = (act, (key,), self._loop_().time() + self.default_timeout)
                token = CURRENT_TURN.set(turn)
                self._live_turns.add(id(turn))  # the hook runs as a turn of its own
                try:
                    await act.on_deactivate()
                except Exception as e:
                    logger.opt(exception=e).error(
                        "{}: on_deactivate of {} raised {}", self.name, key_str(key), e
                    )
                finally:
                    self._live_turns.discard(id(turn))
                    CURRENT_TURN.reset(token)
            await self.background.stop_all(act)
            if was_active and info.save_on_deactivate and info.state_type is not None:
                try:
                    await self.save_state(act)
                except Exception as e:
                    logger.opt(exception=e).error(
                        "{}: saving {} on deactivation failed: {}", self.name, key_str(key), e
                    )
                    if self._stopping:  # its state is lost with this process
                        self._stop_problems.append(
                            f"saving {key_str(key)} on deactivation failed: {e}"
                        )
        finally:
            act._rio_busy -= 1
            act._rio_status = DEAD
            if self._acts.get(key) is act:
                del self._acts[key]
                if self.placement is not None:
                    self.placement.released(key)
            for w in self._deact_waiters.pop(key, ()):
                if not w.done():
                    w.set_result(None)
            self._rehome(act)

    def _rehome(self, act: Actor[Any]) -> None:
        """Hand messages that arrived during deactivation to a fresh activation."""
        queue, act._rio_queue = act._rio_queue, None
        pending = [m for m in queue or () if m[0] is not None and not m[5].done()]
        if not pending:
            return
        fresh = self._acts.get(act._rio_key) or self._new_activation(
            act._rio_key, act._rio_type.name
        )
        fresh._rio_queue = deque(pending)
        if not fresh._rio_busy and not fresh._rio_draining:
            self._start_drain(fresh)

    async def _sweep_idle(self) -> None:
        loop = self._loop_()
        while True:
            ttls = [self._ttl(a._rio_type) for a in self._acts.values()]
            finite = [t for t in ttls if t is not None]
            period = min(max(min(finite, default=60.0) / 4, 0.01), 30.0)
            self._sweep_period = period
            self._sweep_wake.clear()
            try:
                async with asyncio.timeout(period):
                    await self._sweep_wake.wait()
            except TimeoutError:
                pass
            now = loop.time()
            for act in list(self._acts.values()):
                ttl = self._ttl(act._rio_type)
                if (
                    ttl is not None
                    and act._rio_status == ACTIVE
                    and not act._rio_busy
                    and not act._rio_queue
                    and not act._rio_draining
                    and now - act._rio_last >= ttl
                    and not _kept_alive(act)
                ):
                    act._rio_deact = True
                    self._start_drain(act)

    def _ttl(self, info: ActorType) -> float | None:
        return self._idle_ttl.get(info.name, info.idle_ttl)

    # -- state -----------------------------------------------------------------------

    async def save_state(self, act: Actor[Any]) -> None:
        """Write an activation's state with its version (see :meth:`Actor.save`)."""
        info: ActorType = act._rio_type
        if info.state_type is None:
            raise RegistrationError(f"{info.name} declares no state type; nothing to save")
        key = act._rio_key
        while (pending := self._saving.get(key)) is not None:
            await asyncio.shield(pending)
        done: asyncio.Future[None] = self._loop_().create_future()
        self._saving[key] = done
        try:
            act._rio_version = await self.storage.save(
                info.name, act.id, act.state, info.state_type, act._rio_version
            )
        except StateConflict:
            self.deactivate_soon(act)
            raise
        except ENCODE_ERRORS as e:
            if isinstance(e, StateEncodeError):  # the engine's own check named the field
                raise
            raise unencodable_state(info.name, act.id, act.state, e) from e
        finally:
            del self._saving[key]
            done.set_result(None)

    async def clear_state(self, act: Actor[Any]) -> None:
        """Delete an activation's stored state and reset it to the default."""
        info: ActorType = act._rio_type
        if info.state_type is None:
            raise RegistrationError(f"{info.name} declares no state type; nothing to clear")
        try:
            await self.storage.delete(info.name, act.id, act._rio_version)
        except StateConflict:
            self.deactivate_soon(act)
            raise
        act.state = info.state_type()
        act._rio_version = 0

    # -- background work (delegated) -------------------------------------------------

    def spawn_for(self, act: Actor[Any], coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """See :meth:`Actor.spawn`."""
        return self.background.spawn(act, coro)

    async def run_blocking_for(self, act: Actor[Any], fn: Callable[..., R], *args: Any) -> R:
        """See :meth:`Actor.run_blocking`."""
        return await self.background.run_blocking(act, fn, *args)

    def start_thread_for(
        self, act: Actor[Any], fn: Callable[..., Any], args: tuple[Any, ...], name: str | None
    ) -> threading.Event:
        """See :meth:`Actor.start_thread`."""
        return self.background.start_thread(act, fn, args, name)

    def deactivate_soon(self, act: Actor[Any]) -> None:
        """Deactivate ``act`` after its current turn, or at once when it is idle."""
        if get_ident() != self._thread_id:
            self._loop_().call_soon_threadsafe(self.deactivate_soon, act)
            return
        act._rio_deact = True
        if act._rio_status == ACTIVE and not act._rio_busy and not act._rio_draining:
            self._start_drain(act)

    def background_failed(self, act: Actor[Any], what: str, exc: BaseException) -> None:
        """Log a failed background job and deactivate its activation."""
        logger.opt(exception=exc).error(
            "{}: {} of {} failed: {}: {}; deactivating it",
            self.name,
            what,
            key_str(act._rio_key),
            type(exc).__name__,
            exc,
        )
        if act._rio_status in (ACTIVATING, ACTIVE):
            self.deactivate_soon(act)


def _kept_alive(act: Actor[Any]) -> bool:
    """Whether ``act`` holds a timer started with ``keep_alive=True`` (not cancelled)."""
    timers = act._rio_timers
    return timers is not None and any(t.keep_alive for t in timers.values())


def unencodable_state(type_name: str, object_id: str, state: Any, e: Exception) -> Exception:
    """``e`` from a save, as a :class:`StateEncodeError` naming the field, if encoding failed.

    Encodes each field of ``state`` on its own to find the one that cannot be stored
    (only on this error path). When the state encodes after all, ``e`` came from
    elsewhere and is returned as it was.
    """
    try:
        encode_state(state)
    except ENCODE_ERRORS:
        pass
    else:
        return e
    fields = getattr(type(state), "__struct_fields__", ())
    bad = ""
    for name in fields:
        try:
            encode_state(getattr(state, name))
        except ENCODE_ERRORS:
            bad = f" field {name!r}"
            break
    return StateEncodeError(
        f"{type_name}/{object_id}: the state cannot be saved:{bad} holds a value that "
        f"cannot be stored ({e}); keep only msgspec-encodable values in state "
        "(nothing was written)"
    )
