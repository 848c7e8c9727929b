"""Context that travels with a call: the running system, the current turn, deadlines."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rio.core.errors import NoSystemRunning

if TYPE_CHECKING:
    from rio.core.system import System

__all__ = ["CURRENT_TURN", "current_system", "set_default_system", "timeout"]

#: Inside a turn: ``(activation, chain, deadline)``; the chain is a tuple of actor
#: keys from the outermost caller to the current actor. None outside any turn.
CURRENT_TURN: contextvars.ContextVar[tuple[Any, tuple[Any, ...], float] | None] = (
    contextvars.ContextVar("rio_turn", default=None)
)
#: A deadline set by :func:`timeout` for calls made outside a turn.
CALLER_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "rio_deadline", default=None
)
#: The system that refs without one of their own use; set while a system runs.
_SYSTEM: contextvars.ContextVar[System | None] = contextvars.ContextVar("rio_system", default=None)
_default_system: System | None = None


def set_default_system(system: System | None) -> None:
    """Make ``system`` the one refs use when no other is in context."""
    global _default_system
    _default_system = system


def system_token(system: System) -> contextvars.Token[System | None]:
    """Bind ``system`` in the current context (several systems in one process)."""
    return _SYSTEM.set(system)


def reset_system(token: contextvars.Token[System | None]) -> None:
    """Undo :func:`system_token`."""
    _SYSTEM.reset(token)


def current_system() -> System:
    """The system refs in this context talk to.

    Raises:
        NoSystemRunning: no system was started in this process.
    """
    system = _SYSTEM.get() or _default_system
    if system is None:
        raise NoSystemRunning(
            "no rio system is running in this process: start one with "
            "`async with app:` or `app.run()` before calling actors"
        )
    return system


def fresh_deadline(now: float, timeout: float | None, default: float) -> float:
    """The deadline of a call made outside any turn.

    Its own (``timeout`` or ``default`` from ``now``), or an enclosing :func:`timeout`'s
    when that is sooner.
    """
    deadline = now + (timeout or default)
    outer = CALLER_DEADLINE.get()
    return outer if outer is not None and outer < deadline else deadline


@contextmanager
def timeout(seconds: float) -> Iterator[None]:
    """Give every call made inside the block one shared deadline, ``seconds`` from now.

    Inside a handler the tighter of this and the turn's own deadline wins.

    Example::

        with rio.timeout(2.0):
            await a.step()
            await b.step()   # both must finish within 2 s in all
    """
    import asyncio

    if seconds <= 0:
        raise ValueError(f"timeout must be positive, got {seconds}")
    deadline = asyncio.get_running_loop().time() + seconds
    outer = CALLER_DEADLINE.get()
    if outer is not None:
        deadline = min(deadline, outer)
    token = CALLER_DEADLINE.set(deadline)
    try:
        yield
    finally:
        CALLER_DEADLINE.reset(token)
