"""Background work owned by an activation: async tasks, blocking calls, threads.

Everything started here is stopped when its activation deactivates: tasks are
cancelled and awaited, blocking calls are awaited, threads are told to stop (their
event is set) and joined.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from loguru import logger

from rio.core.errors import SystemStopping

if TYPE_CHECKING:
    from rio.core.actor import Actor
    from rio.core.runtime import Runtime

__all__ = ["Background", "cancel_and_wait"]

#: Seconds between cancellations of a task that went on after being cancelled.
RECANCEL_EVERY = 0.1

R = TypeVar("R")


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel rio's own service ``tasks`` (refresh loops...) and wait until they end.

    A task that goes on after its cancellation is cancelled again, every
    :data:`RECANCEL_EVERY` seconds: a driver may have swallowed the first one (redis-py's
    ``asyncio.wait_for`` can, on Python 3.11), and a service loop would then run on, and
    this wait with it, for good. Their outcomes are not raised.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
    for t in tasks:
        if not t.cancelled():
            t.exception()  # retrieved: a task that failed before was logged by its owner


class _Thread:
    __slots__ = ("stop", "thread")

    def __init__(self, thread: threading.Thread, stop: threading.Event) -> None:
        self.thread = thread
        self.stop = stop


class Background:
    """Starts and stops the background work of a runtime's activations."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _jobs(self, act: Actor[Any]) -> set[Any]:
        if act._rio_status not in (0, 1, 2):  # NEW, ACTIVATING, ACTIVE
            raise SystemStopping(f"{act!r} is deactivating; it cannot start background work")
        jobs: set[Any] | None = act._rio_bg
        if jobs is None:
            jobs = act._rio_bg = set()
        return jobs

    def spawn(self, act: Actor[Any], coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start ``coro`` as a task owned by ``act`` (outside any turn)."""
        try:
            jobs = self._jobs(act)
        except SystemStopping:
            coro.close()
            raise
        task = self._rt._create_task(coro)
        jobs.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            jobs.discard(t)
            if not t.cancelled() and (exc := t.exception()) is not None:
                self._rt.background_failed(act, "background task", exc)

        task.add_done_callback(done)
        return task

    async def run_blocking(self, act: Actor[Any], fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn(*args)`` in the default executor, tracked until it returns."""
        jobs = self._jobs(act)
        fut = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        jobs.add(fut)
        try:
            return await asyncio.shield(fut)
        finally:
            jobs.discard(fut)

    def start_thread(
        self,
        act: Actor[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        name: str | None,
    ) -> threading.Event:
        """Start ``fn(stop, *args)`` in a daemon thread owned by ``act``."""
        jobs = self._jobs(act)
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        rt = self._rt

        def main() -> None:
            try:
                fn(stop, *args)
            except BaseException as e:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(rt.background_failed, act, "background thread", e)
            finally:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(jobs.discard, job)

        thread = threading.Thread(
            target=main, name=name or f"rio-{act._rio_key[0]}/{act._rio_key[1]}", daemon=True
        )
        job = _Thread(thread, stop)
        jobs.add(job)
        thread.start()
        return stop

    def cancel_all(self, act: Actor[Any]) -> None:
        """Cancel tasks and signal threads now, without waiting (a failed activation)."""
        for job in list(act._rio_bg or ()):
            if isinstance(job, _Thread):
                job.stop.set()
            elif isinstance(job, asyncio.Task):
                job.cancel()

    async def stop_all(self, act: Actor[Any]) -> None:
        """Stop everything ``act`` started and wait for it, up to the drain timeout."""
        jobs = act._rio_bg
        if not jobs:
            return
        waits: list[Any] = []
        loop = asyncio.get_running_loop()
        for job in list(jobs):
            if isinstance(job, _Thread):
                job.stop.set()
                waits.append(loop.run_in_executor(None, job.thread.join))
            elif isinstance(job, asyncio.Task):
                job.cancel()
                waits.append(job)
            else:
                waits.append(job)
        threads = [job.thread.name for job in jobs if isinstance(job, _Thread)]
        try:
            async with asyncio.timeout(self._rt.drain_timeout):
                everything = asyncio.gather(*waits, return_exceptions=True)
                if threads:
                    done, _ = await asyncio.wait(
                        [everything], timeout=min(1.0, self._rt.drain_timeout)
                    )
                    if not done:
                        logger.warning(
                            "{}: thread(s) {} of {!r} still run 1s after their stop event was "
                            "set; deactivation waits for them (up to {}s). A thread blocked on "
                            "a call to its own actor waits behind this deactivation: check the "
                            "stop event between calls, or wait on them with a timeout",
                            self._rt.name,
                            ", ".join(threads),
                            act,
                            self._rt.drain_timeout,
                        )
                await everything
        except TimeoutError:
            logger.warning(
                "{}: background work of {!r} did not stop within {}s",
                self._rt.name,
                act,
                self._rt.drain_timeout,
            )
        jobs.clear()
