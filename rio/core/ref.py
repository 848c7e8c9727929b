"""References to actors: ``Counter.ref("a")`` and ``system.ref(Counter, "a")``.

A ref is a small value (type, id, optional timeout, optional system). Calling one of
its handler methods sends the message at once and returns an awaitable for the
answer, so ``f = ref.incr(1)`` already queues the call and ``await f`` collects it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from rio.core.context import _SYSTEM, current_system
from rio.core.errors import BadArguments, UnknownMethod
from rio.core.registry import ActorType, Handler, key_text_problem
from rio.core.streams import DEFAULT_BUFFER

if TYPE_CHECKING:
    from rio.core.streams import Subscription
    from rio.core.system import System

__all__ = ["Ref", "make_ref_class", "new_ref"]

A = TypeVar("A")


class Ref(Generic[A]):
    """A reference to one actor, by type and id. Cheap to create, hashable, comparable.

    Its methods are the actor's handlers: ``await ref.method(*args)``. Refs work the
    same from a script, from inside handlers and from threads (where they return
    ``concurrent.futures.Future``).

    Example::

        ref = Counter.ref("a")
        print(await ref.incr(1))
        print(await ref.with_timeout(0.5).get())
    """

    __slots__ = ("_rio_key", "_rio_system", "_rio_timeout", "_rio_type")

    _rio_type: ActorType
    _rio_key: tuple[str, str]
    _rio_timeout: float | None
    _rio_system: System | None

    @property
    def id(self) -> str:
        """The actor's id."""
        return self._rio_key[1]

    @property
    def type_name(self) -> str:
        """The actor's registered type name."""
        return self._rio_key[0]

    def with_timeout(self, seconds: float) -> Ref[A]:
        """A copy of this ref whose calls have ``seconds`` as their deadline."""
        if not seconds > 0:
            raise ValueError(f"timeout must be positive seconds, got {seconds!r}")
        return new_ref(self._rio_type, self._rio_key[1], self._rio_system, seconds)

    def subscribe(self, *, buffer: int = DEFAULT_BUFFER) -> Subscription[Any]:
        """Subscribe to this actor's own stream (what it publishes with ``self.publish``).

        The actor need not be active, and the subscription does not keep it active.
        Events published after this call reach the subscription in publishing order;
        ``await`` it first to be sure it is registered in the process hosting the
        actor. A subscriber more than ``buffer`` events behind skips the oldest and
        gets a :class:`rio.Lagged` notice saying how many it missed. Leaving the
        ``async for`` unsubscribes. From another thread it returns a confirmed
        subscription to iterate with a plain ``for``.

        Example::

            async for event in Table.ref("t1").subscribe():
                print(event)
        """
        from rio.core.system import streams_of

        system = self._rio_system or _SYSTEM.get() or current_system()
        return streams_of(system).subscribe(self._rio_key, buffer)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise UnknownMethod(self._rio_type.unknown_method_message(name))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ref) and other._rio_key == self._rio_key

    def __hash__(self) -> int:
        return hash(self._rio_key)

    def __repr__(self) -> str:
        return f"Ref({self._rio_key[0]}/{self._rio_key[1]})"

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("refs travel as msgspec values, never pickled")


def _make_method(handler: Handler) -> Any:
    def method(self: Ref[Any], *args: Any, **kwargs: Any) -> Any:
        system = self._rio_system or _SYSTEM.get() or current_system()
        return system.call(self._rio_key, handler, args, kwargs, self._rio_timeout)

    method.__name__ = handler.name
    method.__qualname__ = f"Ref[{handler.owner}].{handler.name}"
    method.__doc__ = handler.fn.__doc__
    return method


def make_ref_class(info: ActorType) -> type[Ref[Any]]:
    """Build the ref subclass whose methods are ``info``'s handlers."""
    ns: dict[str, Any] = {"__slots__": (), "__module__": __name__}
    for name, handler in info.handlers.items():
        ns[name] = _make_method(handler)
    return type(f"Ref[{info.name}]", (Ref,), ns)


def new_ref(
    info: ActorType,
    object_id: str | int,
    system: System | None,
    timeout: float | None = None,
) -> Ref[Any]:
    """Create a ref to ``(info, object_id)``."""
    if type(object_id) is not str:
        if (isinstance(object_id, int) and not isinstance(object_id, bool)) or isinstance(
            object_id, str
        ):
            object_id = str(object_id)
        else:
            raise BadArguments(
                f"actor ids are str (or int), got {type(object_id).__name__} "
                f"{object_id!r} for {info.name}"
            )
    if not object_id.isascii() or "\x00" in object_id:
        problem = key_text_problem(object_id)
        if problem is not None:
            raise BadArguments(f"actor id {object_id!r} of {info.name} is not allowed: {problem}")
    ref: Ref[Any] = object.__new__(info.ref_cls)
    ref._rio_type = info
    ref._rio_key = (info.name, object_id)
    ref._rio_timeout = timeout
    ref._rio_system = system
    return ref
