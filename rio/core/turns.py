"""Pieces of a turn shared by the runtime's modules.

Activation states, the queued-message shape, resuming a turn that suspended in a
task, and the stand-in for ``asyncio.current_task()`` during a turn's eager step.
"""

from __future__ import annotations

import asyncio
import math
import types
from collections.abc import Coroutine, Generator
from typing import Any

from rio.core.registry import Handler

__all__ = [
    "ACTIVATING",
    "ACTIVE",
    "DEACTIVATING",
    "DEAD",
    "MAX_EAGER_DEPTH",
    "NEW",
    "NO_DEADLINE",
    "Key",
    "Message",
    "TurnTask",
    "chain_future",
    "current_task_table",
    "key_str",
    "run_resumed",
    "waiting",
]

NEW, ACTIVATING, ACTIVE, DEACTIVATING, DEAD = range(5)
#: Nested eager calls deeper than this are queued instead, bounding stack depth.
MAX_EAGER_DEPTH = 48
#: The deadline of a turn that has none of its own (a timer tick: the next tick waits
#: for it to finish); each call it makes gets the default timeout.
NO_DEADLINE = math.inf

Key = tuple[str, str]
# A queued message: handler (None for a deactivation request), args, kwargs, chain,
# deadline, caller future.
Message = tuple[
    Handler | None,
    tuple[Any, ...],
    dict[str, Any],
    tuple[Key, ...],
    float,
    "asyncio.Future[Any]",
]


def key_str(key: Key) -> str:
    """``Type/id``, as messages and chains show an actor."""
    return f"{key[0]}/{key[1]}"


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], first: Any) -> Generator[Any, Any, Any]:
    """Continue a coroutine whose first step already ran (it yielded ``first``)."""
    yielded = first
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as e:
            try:
                yielded = coro.throw(e)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def run_resumed(coro: Coroutine[Any, Any, Any], first: Any) -> Any:
    """A coroutine (for ``create_task``) continuing ``coro`` after its first step."""
    return await _resume(coro, first)


#: getrefcount() of a stand-in only _first_step's local refers to (plus the call's arg).
_UNSHARED = 2


def waiting(token: tuple[asyncio.Future[Any], Key, str, float]) -> bool:
    """Whether a deadline token's caller still waits."""
    return not token[0].done()


class TurnTask:
    """What ``asyncio.current_task()`` returns during a turn's eager first step.

    It forwards ``cancel``/``uncancel``/``cancelling`` to the task the turn continues
    in once it suspends, and remembers cancellations asked for before that. This is
    what ``asyncio.timeout()`` and ``asyncio.TaskGroup`` use of their current task.
    """

    __slots__ = ("_cancels", "_loop", "_real")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._real: asyncio.Task[Any] | None = None
        self._cancels: list[Any] = []

    def attach(self, task: asyncio.Task[Any]) -> None:
        """The turn continues in ``task`` from now on."""
        self._real = task
        for msg in self._cancels:
            task.cancel(msg)
        self._cancels.clear()

    def cancel(self, msg: Any = None) -> bool:
        """Cancel the turn's task (or remember to, once it exists)."""
        if self._real is not None:
            return self._real.cancel(msg)
        self._cancels.append(msg)
        return True

    def uncancel(self) -> int:
        """Undo one cancellation request; returns how many remain."""
        if self._real is not None:
            return self._real.uncancel()
        if self._cancels:
            self._cancels.pop()
        return len(self._cancels)

    def cancelling(self) -> int:
        """How many cancellation requests are pending."""
        if self._real is not None:
            return self._real.cancelling()
        return len(self._cancels)

    def done(self) -> bool:
        """A running turn is never done."""
        return self._real.done() if self._real is not None else False

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The turn's event loop."""
        return self._loop

    def get_name(self) -> str:
        """A name for debugging."""
        return "rio-turn"


def current_task_table(loop: asyncio.AbstractEventLoop) -> dict[Any, Any] | None:
    """The table behind ``asyncio.current_task()``, if writing to it works here."""
    table = getattr(asyncio.tasks, "_current_tasks", None)
    if not isinstance(table, dict):
        return None
    probe = object()
    before = table.get(loop)
    table[loop] = probe
    try:
        works = asyncio.current_task(loop) is probe
    finally:
        if before is None:
            table.pop(loop, None)
        else:
            table[loop] = before
    return table if works else None


def chain_future(inner: asyncio.Future[Any], outer: asyncio.Future[Any]) -> None:
    """Resolve ``outer`` like ``inner`` once ``inner`` is done (unless ``outer`` already is)."""

    def copy(f: asyncio.Future[Any]) -> None:
        if outer.done():
            if not f.cancelled():
                f.exception()
            return
        if f.cancelled():
            outer.cancel()
        elif (e := f.exception()) is not None:
            outer.set_exception(e)
        else:
            outer.set_result(f.result())

    inner.add_done_callback(copy)
