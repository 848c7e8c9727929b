"""Waiting in tests for facts that settle by messages, with nothing to await directly."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["eventually"]


async def eventually(check: Callable[[], Any], within: float = 5.0, what: str = "") -> None:
    """Wait until ``check()`` is truthy, awaited if awaitable; fail after ``within`` s.

    ``check`` may be a ref's method: its call is a future, awaited each round.

    For facts that settle by messages between processes (an unsubscription reaching
    its owner), where there is nothing to wait on directly.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not within {within}s: {what or check}")
        await asyncio.sleep(0.01)
