"""rio's errors: one tree, every class names a situation.

::

    RioError                      base of everything rio raises
    ├── ConfigError               a setting, URL or config file is wrong
    ├── RegistrationError         an actor class cannot be registered as written
    ├── NoSystemRunning           a ref was used while no rio system runs
    ├── UnknownActorType          a call names a type this app does not host
    ├── UnknownMethod             a call names a method the type has no handler for
    ├── BadArguments              a call's arguments do not match the handler's annotations
    ├── CallTimeout               a call's deadline passed before its answer came
    ├── Deadlock                  a call would close a cycle among non-reentrant actors
    ├── ActivationFailed          loading state or a lifecycle hook failed
    ├── RemoteError               a handler raised; carries remote type, message, traceback
    ├── SystemStopping            the system is shutting down and takes no new calls
    ├── WorkerLost                the worker process hosting the call died
    ├── NodeUnreachable           the node hosting the call cannot be reached
    ├── NoNodesAvailable          no cluster member can take the call
    ├── Overloaded                a queue the call would wait in is full (backpressure)
    └── StorageError              a storage engine failed
        ├── StorageUnavailable    the engine's server cannot be reached
        ├── StateConflict         a write named a stale version (optimistic concurrency)
        ├── StateDecodeError      a stored state no longer decodes into the declared type
        └── StateEncodeError      a state holds a value that cannot be stored

Errors cross processes and nodes intact: :func:`error_to_wire` and
:func:`error_from_wire` turn any of them into a plain dict and back.
"""

from __future__ import annotations

import traceback
from typing import Any, ClassVar

from rio.core.modules import MAIN_MODULES, same_class, travel_name

__all__ = [
    "ActivationFailed",
    "BadArguments",
    "CallTimeout",
    "ConfigError",
    "Deadlock",
    "NoNodesAvailable",
    "NoSystemRunning",
    "NodeUnreachable",
    "Overloaded",
    "RegistrationError",
    "RemoteError",
    "RioError",
    "StateConflict",
    "StateDecodeError",
    "StateEncodeError",
    "StorageError",
    "StorageUnavailable",
    "SystemStopping",
    "UnknownActorType",
    "UnknownMethod",
    "WorkerLost",
    "error_from_wire",
    "error_to_wire",
]


class RioError(Exception):
    """Base class of every error rio raises.

    Example::

        try:
            await Counter.ref("a").incr(1)
        except rio.RioError as e:
            print("rio said:", e)
    """

    _registry: ClassVar[dict[str, type[RioError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        RioError._registry[cls.__name__] = cls

    @property
    def message(self) -> str:
        """The error's message text."""
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:  # pragma: no cover - pickling is not a wire
        return (type(self), self.args)


RioError._registry["RioError"] = RioError  # the base crosses the wire as itself too


class ConfigError(RioError, ValueError):
    """A setting, storage URL or config file is wrong; the message says which and how to fix it."""


class RegistrationError(RioError, TypeError):
    """An actor class cannot be registered as written (name, reserved method, state type)."""


class NoSystemRunning(RioError, RuntimeError):
    """A ref was called while no rio system is running in this process.

    Start one with ``async with app:`` or ``app.run()``.
    """


class UnknownActorType(RioError, LookupError):
    """A call or ref names an actor type that is not registered in this app."""


class UnknownMethod(RioError, AttributeError):
    """A call names a method that the actor type has no handler for."""


class BadArguments(RioError, TypeError):
    """A call's arguments do not match the handler's signature or annotations."""


class CallTimeout(RioError, TimeoutError):
    """A call's deadline passed before its answer arrived.

    The handler may still run to completion; only the caller stopped waiting.
    """

    @classmethod
    def unanswered(cls, target: str, method: str, budget: float, where: str = "") -> CallTimeout:
        """The error for a call to ``target.method()`` whose ``budget`` seconds ran out."""
        return cls(
            f"{target}.{method}() did not answer within {budget:.3g}s{where}; the handler "
            "may still be running. Raise the deadline with ref.with_timeout(seconds) or "
            "rio.timeout(seconds)"
        )


class Deadlock(RioError):
    """A call would close a cycle among non-reentrant actors (A→B→A, or A→A).

    ``chain`` lists the actors of the cycle in call order, as ``"Type/id"`` strings.
    Mark the called actor or method reentrant, or restructure the calls.
    """

    def __init__(self, message: str, chain: list[str] | None = None) -> None:
        super().__init__(message, chain or [])
        self.chain: list[str] = list(chain or [])

    def __str__(self) -> str:
        return self.message


class ActivationFailed(RioError):
    """An actor could not be activated: loading its state or a lifecycle hook failed.

    The object is not left half-alive: the next call tries a fresh activation.
    """


class RemoteError(RioError):
    """A handler raised an exception; this carries it to the caller.

    Attributes:
        remote_type: qualified name of the exception class raised in the handler,
            e.g. ``"bank.InsufficientFunds"``.
        remote_message: ``str()`` of that exception.
        remote_traceback: the formatted traceback text from where it was raised.

    Within one process the original exception is also this error's ``__cause__``.
    """

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str = "") -> None:
        super().__init__(remote_type, remote_message, remote_traceback)
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.remote_message}"

    def is_a(self, exc_type: type[BaseException]) -> bool:
        """True when the remote exception's class is ``exc_type`` (matched by qualified name).

        Example::

            except rio.RemoteError as e:
                if e.is_a(InsufficientFunds): ...
        """
        return same_class(self.remote_type, qualified_name(exc_type))


class SystemStopping(RioError, RuntimeError):
    """The system is draining or stopped and takes no new calls."""


class WorkerLost(RioError):
    """The worker process that hosted the call died before answering."""


class NodeUnreachable(RioError, ConnectionError):
    """The cluster node that hosts the call cannot be reached."""


class NoNodesAvailable(RioError, ConnectionError):
    """No cluster member is alive (or hosts the type) to take the call."""


class Overloaded(RioError):
    """A queue the call would wait in is full; the call was refused and never ran.

    rio bounds what waits on a caller's behalf (``App(max_queued=...)``): an
    activation's mailbox, the calls a process holds back while an object in another
    worker has as many of its calls in flight as it may take, and the calls a
    cluster router is still placing or connecting. A program that keeps fewer calls
    outstanding never meets this error; one that keeps starting calls without
    awaiting them does. Retry later, or await the calls already made.
    """


class StorageError(RioError):
    """A storage engine failed; the message names the engine and the operation."""


class StorageUnavailable(StorageError, ConnectionError):
    """The storage engine's server cannot be reached (URL shown with its password masked)."""


class StateConflict(StorageError):
    """A state write named a version that is no longer current.

    Another writer (a stale activation, another process) saved first. Nothing was
    overwritten; reload and retry, or let the activation be discarded.
    """


class StateDecodeError(StorageError):
    """A stored state no longer decodes into the actor's declared state type.

    The message names the type, id and the offending field. The stored value is left
    untouched; it is never silently replaced by the default.
    """


class StateEncodeError(StorageError, TypeError):
    """A state holds a value msgspec cannot encode, so it cannot be saved.

    The message names the type, id and the offending field. Nothing was written; the
    stored state is the last one saved.
    """


def qualified_name(exc_type: type[BaseException]) -> str:
    """``module.QualName`` of an exception class, builtins without a module."""
    module = travel_name(exc_type.__module__)  # a script or `rio run` file: by its stem
    if module in ("builtins", *MAIN_MODULES):
        return exc_type.__qualname__
    return f"{module}.{exc_type.__qualname__}"


def error_to_wire(exc: BaseException, _depth: int = 0) -> dict[str, Any]:
    """Encode an exception as a plain dict that msgpack can carry.

    rio's own errors keep their class; anything else becomes a :class:`RemoteError`.
    The ``__cause__`` chain travels too (a few links deep).
    """
    out: dict[str, Any]
    if isinstance(exc, RemoteError):
        out = {
            "kind": "RemoteError",
            "args": [exc.remote_type, exc.remote_message, exc.remote_traceback],
        }
    elif isinstance(exc, RioError):
        out = {"kind": type(exc).__name__, "args": [_plain(a) for a in exc.args]}
    else:
        tb = "".join(traceback.format_exception(exc)) if exc.__traceback__ else ""
        out = {"kind": "RemoteError", "args": [qualified_name(type(exc)), str(exc), tb]}
    cause = exc.__cause__
    # A RemoteTraceback is this error's own traceback text, which travels in its args.
    if cause is not None and not isinstance(cause, RemoteTraceback) and _depth < 4:
        out["cause"] = error_to_wire(cause, _depth + 1)
    return out


def error_from_wire(data: dict[str, Any]) -> RioError:
    """Rebuild an error encoded by :func:`error_to_wire`, its cause chain included."""
    cls = RioError._registry.get(str(data.get("kind")), RemoteError)
    args = list(data.get("args") or [])
    try:
        err = cls(*args)
    except TypeError:
        err = RemoteError(str(data.get("kind")), " ".join(map(str, args)))
    cause = data.get("cause")
    if isinstance(cause, dict):
        inner = error_from_wire(cause)
        if (
            isinstance(err, RemoteError)
            and isinstance(inner, RemoteError)
            and inner.args == err.args
        ):
            # The handler's exception and its wrapper: shown once.
            err.__cause__ = inner.__cause__
        else:
            err.__cause__ = inner
    if isinstance(err, RemoteError) and err.remote_traceback and err.__cause__ is None:
        # Printed as the cause, like concurrent.futures does: the frames where it was raised.
        err.__cause__ = RemoteTraceback(err.remote_traceback)
    return err


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in another process, shown as a cause."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return '\n"""\n' + self.text.rstrip("\n") + '\n"""'


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


# Shown as users write them (``rio.BadArguments``), in tracebacks and reprs alike.
for _cls in RioError._registry.values():
    if _cls.__module__ == __name__ and _cls.__name__ in __all__:
        _cls.__module__ = "rio"
