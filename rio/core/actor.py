"""The :class:`Actor` base class that users subclass, and the ``reentrant`` marker."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, get_args, get_origin

import msgspec

from rio.core.errors import RegistrationError, UnknownActorType
from rio.core.registry import RESERVED, ActorType, Handler, key_text_problem, register

if TYPE_CHECKING:
    from rio.core.ref import Ref
    from rio.core.reminders import Reminder
    from rio.core.runtime import Runtime
    from rio.core.system import System
    from rio.core.timers import Timer, TimerCallback

__all__ = ["DEFAULT_IDLE_TTL", "Actor", "reentrant"]

S = TypeVar("S")
A = TypeVar("A", bound="Actor[Any]")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

#: Idle activations are deactivated after this many seconds unless the type says otherwise.
DEFAULT_IDLE_TTL = 600.0
_UNSET: Any = object()


def reentrant(fn: F) -> F:
    """Mark one handler reentrant: its calls may interleave with other turns at ``await``.

    Example::

        class Room(rio.Actor):
            @rio.reentrant
            async def peek(self) -> int: ...
    """
    fn._rio_reentrant = True  # type: ignore[attr-defined]
    return fn


class Actor(Generic[S]):
    """Base class of virtual actors. Subclass it; public ``async def`` methods are handlers.

    An actor is addressed by its type and a string id, is activated on its first
    message, handles one message at a time, and is deactivated when idle. Declare a
    state type as the generic argument; it is loaded on activation and written by
    :meth:`save`.

    Class options (keywords in the class statement):
        name: the type name used in storage and on the wire (default: class name).
        idle_ttl: seconds idle before deactivation (default 600; ``None`` never).
        reentrant: let every handler interleave at ``await`` (default False).
        save_on_deactivate: save the state when deactivated (default False).

    Example::

        class CounterState(msgspec.Struct):
            value: int = 0

        class Counter(rio.Actor[CounterState], idle_ttl=60):
            async def incr(self, by: int) -> int:
                self.state.value += by
                await self.save()
                return self.state.value

        total = await Counter.ref("a").incr(1)
    """

    __slots__ = {  # noqa: RUF023 - a dict: its values document the public slots
        "id": "This actor's id (a str).",
        "state": "This actor's state, loaded on activation; assign to replace it.",
        "__dict__": "",
        "_rio_bg": "",
        "_rio_busy": "",
        "_rio_deact": "",
        "_rio_draining": "",
        "_rio_key": "",
        "_rio_last": "",
        "_rio_queue": "",
        "_rio_status": "",
        "_rio_system": "",
        "_rio_timers": "",
        "_rio_version": "",
    }

    id: str
    state: S
    # Per-activation bookkeeping kept by the runtime (slots: no dict, little memory).
    _rio_bg: set[Any] | None
    _rio_busy: int
    _rio_deact: bool
    _rio_draining: bool
    _rio_key: tuple[str, str]
    _rio_last: float
    _rio_queue: deque[Any] | None
    _rio_status: int
    _rio_system: Runtime
    _rio_timers: dict[Any, Timer] | None
    _rio_version: int

    _rio_type: ClassVar[ActorType]

    # No __getattr__ here: a class with one gets no specialized attribute access, and
    # the runtime reads an activation's _rio_* slots on every call (12% of an
    # in-process call's instructions). The helpful errors live on ``state`` instead
    # (see _State below): what an actor made directly (Type()), or a type that
    # declares no state type, reads first.

    def __init_subclass__(
        cls,
        *,
        name: str | None = None,
        idle_ttl: float | None = _UNSET,
        reentrant: bool | None = None,
        save_on_deactivate: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:  # object.__init_subclass__ would only say it "takes no keyword arguments"
            raise RegistrationError(
                f"{cls.__qualname__}: unknown class keyword(s) {', '.join(sorted(kwargs))}; "
                "an actor class takes name=, idle_ttl=, reentrant= and save_on_deactivate="
            )
        super().__init_subclass__()
        parent = next(
            (b.__dict__["_rio_type"] for b in cls.__mro__[1:] if "_rio_type" in b.__dict__),
            None,
        )
        type_name = name or cls.__name__
        if not type_name or "/" in type_name or key_text_problem(type_name):
            raise RegistrationError(
                f"actor type name {type_name!r} of {cls.__qualname__} is not allowed: "
                "it must be non-empty valid Unicode text, with no '/' and no NUL character"
            )
        state_type = _state_type_of(cls)
        if state_type is None and parent is not None:
            state_type = parent.state_type
        if state_type is not None:
            _check_state_type(cls, state_type)
        if idle_ttl is _UNSET:
            idle_ttl = parent.idle_ttl if parent else DEFAULT_IDLE_TTL
        if idle_ttl is not None and (
            isinstance(idle_ttl, bool) or not isinstance(idle_ttl, int | float) or idle_ttl <= 0
        ):
            raise RegistrationError(
                f"{cls.__qualname__}: idle_ttl must be positive seconds or None, got {idle_ttl!r}"
            )
        init = cls.__init__
        if init is not object.__init__:
            required = [
                p.name
                for p in list(inspect.signature(init).parameters.values())[1:]
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]
            if required:
                raise RegistrationError(
                    f"{cls.__qualname__}.__init__ takes required arguments "
                    f"({', '.join(required)}); rio creates actors with no arguments: "
                    "set fields in on_activate or give them defaults"
                )
        handlers: dict[str, Handler] = {}
        for attr in dir(cls):
            if attr.startswith("_"):
                continue
            fn = inspect.getattr_static(cls, attr)
            if isinstance(fn, staticmethod | classmethod) or not inspect.iscoroutinefunction(fn):
                continue
            if attr in RESERVED:
                if attr in _HOOKS:
                    continue
                if getattr(Actor, attr, None) is not fn:
                    raise RegistrationError(
                        f"{cls.__qualname__}.{attr} clashes with rio's own {attr!r}; "
                        "rename the handler"
                    )
                continue
            handlers[attr] = Handler(
                owner=type_name,
                name=attr,
                fn=fn,
                reentrant=bool(getattr(fn, "_rio_reentrant", False)),
            )
        reminder = _reminder_handler(cls, type_name)
        class_reentrant = (
            reentrant if reentrant is not None else (parent.reentrant if parent else False)
        )
        info = ActorType(
            name=type_name,
            cls=cls,
            state_type=state_type,
            handlers=handlers,
            reentrant=class_reentrant,
            idle_ttl=idle_ttl,
            save_on_deactivate=bool(
                save_on_deactivate
                if save_on_deactivate is not None
                else (parent.save_on_deactivate if parent else False)
            ),
            has_on_activate=cls.on_activate is not Actor.on_activate,
            has_on_deactivate=cls.on_deactivate is not Actor.on_deactivate,
            reminder=reminder,
        )
        from rio.core.ref import make_ref_class

        info.ref_cls = make_ref_class(info)
        cls._rio_type = info
        register(info)

    # -- public API for handler code ---------------------------------------------

    @classmethod
    def ref(cls: type[A], object_id: str | int) -> Ref[A]:
        """A reference to the actor of this type with id ``object_id``.

        The actor need not exist: it is activated by its first message.

        Example::

            total = await Counter.ref("a").incr(1)
        """
        from rio.core.ref import new_ref

        try:
            info = cls._rio_type
        except AttributeError:  # rio.Actor itself (its subclasses all have a type)
            raise UnknownActorType(
                f"{cls.__qualname__}.ref(): rio.Actor has no actors of its own; call ref "
                "on one of your actor classes (a subclass of rio.Actor)"
            ) from None
        return new_ref(info, object_id, None)

    @property
    def system(self) -> System:
        """The system this activation belongs to (refs made from it route through it)."""
        return self._rio_system.system

    async def save(self) -> None:
        """Write the state to storage; returns once it is stored.

        Raises:
            StateConflict: another activation or process wrote this object's state since
                it was loaded. This activation is stale and is deactivated after the
                current turn; the next call loads the newer state.
        """
        await self._rio_system.save_state(self)

    async def clear_state(self) -> None:
        """Delete the stored state and reset :attr:`state` to the type's default."""
        await self._rio_system.clear_state(self)

    def deactivate(self) -> None:
        """Deactivate this actor once the current turn ends (rio-rs' self shutdown).

        Messages that arrive meanwhile are delivered to a fresh activation. Called
        outside a turn (a background task or thread), it deactivates as soon as the
        actor is idle.
        """
        self._rio_system.deactivate_soon(self)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a background task owned by this activation.

        It is cancelled (and awaited) when the actor deactivates. Calls it makes to
        this actor's own ref are ordinary turns. If it fails, the error is logged and
        the activation is deactivated.
        """
        return self._rio_system.spawn_for(self, coro)

    async def run_blocking(self, fn: Callable[..., R], *args: Any) -> R:
        """Run a blocking function in a thread and await its result.

        Deactivation waits for it to finish.
        """
        return await self._rio_system.run_blocking_for(self, fn, *args)

    def start_thread(
        self, fn: Callable[..., Any], *args: Any, name: str | None = None
    ) -> threading.Event:
        """Start ``fn(stop_event, *args)`` in a thread owned by this activation.

        On deactivation the returned event is set and the thread is joined, so a
        blocking loop should check ``stop_event.is_set()``. Refs called from the
        thread return ``concurrent.futures.Future`` objects.
        """
        return self._rio_system.start_thread_for(self, fn, args, name)

    def start_timer(
        self,
        callback: TimerCallback,
        interval: float | None,
        *,
        due: float | None = None,
        name: str | None = None,
        keep_alive: bool = False,
    ) -> Timer:
        """Call ``callback()`` every ``interval`` seconds, each time as a turn of this actor.

        A tick is an ordinary turn: it waits for the turn in progress, never overlaps
        a handler (unless the type is reentrant), and may call other actors. The next
        tick is due ``interval`` seconds after the previous one finished. If
        ``callback`` raises, the error is logged and the timer keeps going. The timer
        is cancelled when the actor deactivates, and its ticks do not keep an idle
        actor alive unless ``keep_alive`` is True.

        Args:
            callback: a coroutine function or a plain function, called with no
                arguments (a bound method such as ``self.tick``, or a ``partial``).
            interval: seconds between ticks; None fires once, after ``due``.
            due: seconds until the first tick (default: ``interval``).
            name: starting a timer with the name of a running one replaces it.
            keep_alive: count ticks as activity, so the idle TTL never passes.

        Returns:
            the :class:`rio.Timer`; ``timer.cancel()`` stops it.

        Example::

            async def on_activate(self) -> None:
                self.start_timer(self.heartbeat, 5.0, name="heartbeat")
        """
        return self._rio_system.timers.start(self, callback, interval, due, name, keep_alive)

    async def register_reminder(
        self, name: str, period: float, *, due: float | None = None
    ) -> Reminder:
        """Register (or replace) the durable reminder ``name`` of this object.

        Unlike a timer, a reminder is kept in the state storage: it fires every
        ``period`` seconds whether the object is active or not (it is activated to
        receive it), across restarts, and after the process or node that registered
        it died. Each firing is a turn of ``receive_reminder(name)``, delivered at
        least once per period; define that handler on the actor type. A firing is
        late by up to the app's ``reminder_poll`` (default 1 s). Registering a name
        again replaces its period and due time. It may be called from any turn or
        hook (``on_deactivate`` too) and from background tasks.

        Args:
            name: unique per object, at most 255 bytes of UTF-8.
            period: seconds between firings (at least 0.001).
            due: seconds until the first firing (default: ``period``).

        Returns:
            the stored :class:`rio.Reminder`.

        Example::

            class Invoice(rio.Actor[InvoiceState]):
                async def issue(self) -> None:
                    await self.register_reminder("overdue", 24 * 3600)

                async def receive_reminder(self, name: str) -> None:
                    if name == "overdue":
                        await Mailer.ref("billing").nag(self.id)
        """
        from rio.core.reminders import register_reminder

        rt = self._rio_system
        return await register_reminder(rt.storage, rt.reminder_poller, self, name, period, due)

    async def unregister_reminder(self, name: str) -> bool:
        """Cancel this object's reminder ``name``; False when it had none by that name.

        A firing already being delivered still arrives.
        """
        from rio.core.reminders import unregister_reminder

        return await unregister_reminder(self._rio_system.storage, self, name)

    async def reminders(self) -> list[Reminder]:
        """List this object's durable reminders, sorted by name."""
        from rio.core.reminders import list_reminders

        return await list_reminders(self._rio_system.storage, self)

    def publish(self, event: Any, *, topic: str | None = None) -> None:
        """Publish ``event`` on this actor's own stream, or on the named ``topic``.

        Subscribers (``ref.subscribe()`` for this actor's stream,
        ``system.subscribe(topic)`` for a topic) get it in publishing order. It never
        blocks: a subscriber that falls behind loses the oldest events and is told
        how many (:class:`rio.Lagged`). With no subscribers it costs next to
        nothing. Events reaching other processes must be msgspec-encodable (a
        ``Struct`` or builtins); inside one process they are passed by reference,
        so treat them as immutable. Callable from background tasks and threads.

        Example::

            self.publish(PlayerJoined(name))            # on Table/<id>'s own stream
            self.publish(Score(self.id, 3), topic="scores")
        """
        streams = self._rio_system.streams
        if topic is None:
            streams.publish(self._rio_key, event)
        elif topic and isinstance(topic, str):
            streams.publish_topic(topic, event)
        else:
            raise ValueError(f"a topic is a non-empty str, got {topic!r}")

    # -- lifecycle hooks -----------------------------------------------------------

    async def on_activate(self) -> None:
        """Called after the state is loaded, before the first message. Override it.

        An exception here fails the activation: the caller gets
        :class:`rio.ActivationFailed` and the object is not left half-alive.
        """

    async def on_deactivate(self) -> None:
        """Called before the actor is deactivated (idle, self, operator, shutdown).

        Background tasks are still running when it is called; they are stopped after.
        """

    async def receive_reminder(self, name: str) -> None:
        """Called, as a turn, each time one of this object's reminders fires. Override it.

        ``name`` is the reminder's name. The object is activated for it if need be.
        An exception is logged and the reminder keeps its schedule. A type without
        this handler gets no firings (they are logged once and the reminder is kept).
        Mark it ``@rio.reentrant`` to let firings interleave with other turns.
        """

    def __repr__(self) -> str:
        ident = getattr(self, "id", "?")
        return f"<{self._rio_type.name}/{ident}>"


#: Reserved names that subclasses override as hooks (never handlers).
_HOOKS = frozenset({"on_activate", "on_deactivate", "receive_reminder"})


async def _receive_reminder(act: Actor[Any], name: str) -> None:
    """The body of a reminder's turn (its annotations type the wire arguments)."""
    await act.receive_reminder(name)


def _reminder_handler(cls: type[Actor[Any]], type_name: str) -> Handler | None:
    """The handler a reminder's firing is delivered through, or None without one."""
    fn = inspect.getattr_static(cls, "receive_reminder")
    if fn is Actor.__dict__.get("receive_reminder"):
        return None
    if not inspect.iscoroutinefunction(fn):
        raise RegistrationError(
            f"{cls.__qualname__}.receive_reminder must be an `async def "
            "receive_reminder(self, name: str) -> None`"
        )
    return Handler(
        owner=type_name,
        name="receive_reminder",
        fn=_receive_reminder,
        reentrant=bool(getattr(fn, "_rio_reentrant", False)),
    )


def _state_type_of(cls: type) -> Any | None:
    for base in getattr(cls, "__orig_bases__", ()):
        origin = get_origin(base)
        if isinstance(origin, type) and issubclass(origin, Actor):
            args = get_args(base)
            if args and not isinstance(args[0], TypeVar) and args[0] not in (Any, None, type(None)):
                return args[0]
    return None


def _check_state_type(cls: type, state_type: Any) -> None:
    try:
        default = state_type()
    except Exception as e:
        raise RegistrationError(
            f"{cls.__qualname__}: state type {getattr(state_type, '__qualname__', state_type)} "
            f"must build a default with no arguments (give every field a default): {e}"
        ) from e
    try:
        msgspec.msgpack.encode(default)
    except (TypeError, msgspec.EncodeError) as e:
        raise RegistrationError(
            f"{cls.__qualname__}: state type {state_type!r} cannot be encoded by msgspec: {e}"
        ) from e


#: The ``state`` slot of every actor (a member descriptor), reached through _State.
_STATE_SLOT: Any = Actor.__dict__["state"]
_get_state = _STATE_SLOT.__get__
_set_state = _STATE_SLOT.__set__


class _State:
    """``Actor.state``: the slot, and an error that says why when it is not set.

    Not set means the type declares no state type, or the actor was made directly
    (``Type()``) rather than activated by rio.
    """

    __slots__ = ()

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        try:
            return _get_state(obj, owner)
        except AttributeError:
            raise _no_state(obj) from None

    def __set__(self, obj: Any, value: Any) -> None:
        _set_state(obj, value)

    def __delete__(self, obj: Any) -> None:
        _STATE_SLOT.__delete__(obj)


def _no_state(obj: Any) -> AttributeError:
    cls = type(obj).__name__
    try:
        object.__getattribute__(obj, "_rio_key")
    except AttributeError:
        why = (
            f"{cls}.state: this {cls} was made directly ({cls}()), not activated by rio, "
            f"so it has no state; reach actors through refs: await {cls}.ref(id).method(...)"
        )
    else:
        if type(obj)._rio_type.state_type is not None:
            why = (
                f"{cls}.state is not set: it is loaded after __init__ and before "
                "on_activate (read it from on_activate on), or it was deleted"
            )
        else:
            why = (
                f"{cls}.state: {cls} declares no state type; declare one as "
                f"class {cls}(rio.Actor[MyState]) with a msgspec.Struct MyState"
            )
    return AttributeError(why, name="state", obj=obj)


Actor.state = _State()  # type: ignore[misc]  # over the slot, which it reaches
