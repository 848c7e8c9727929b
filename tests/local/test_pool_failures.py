"""Failures that must not take a worker pool down (regressions from review)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from loguru import logger

import rio
from rio.local.pool import PoolSystem

pytestmark = pytest.mark.slow


class PfBig(rio.Actor):
    async def huge(self) -> int:
        return 2**70  # msgspec cannot encode an int over 64 bits

    async def take(self, n: int) -> int:
        return 1

    async def ok(self) -> str:
        return "ok"


class PfRoom(rio.Actor, reentrant=True):
    async def enter(self, guest: str) -> int:
        return await PfGuest.ref(guest).greet(self.id)

    async def peek(self) -> int:
        return 42


class PfGuest(rio.Actor):
    async def greet(self, room: str) -> int:
        return await PfRoom.ref(room).peek()


class PfQuitter(rio.Actor):
    async def start_quitting(self) -> int:
        self.spawn(self._quit_later())
        return os.getpid()

    async def _quit_later(self) -> None:
        await asyncio.sleep(0)
        self.deactivate()  # outside any turn: must still take effect

    async def on_deactivate(self) -> None:
        await PfProbe.ref("log").note(f"quit {self.id}")


class PfProbe(rio.Actor, idle_ttl=None):
    def __init__(self) -> None:
        self.notes: list[str] = []

    async def note(self, text: str) -> None:
        self.notes.append(text)

    async def seen(self) -> list[str]:
        return self.notes


def _pool(workers: int = 2) -> rio.App:
    return rio.App("pool-failures", storage="memory://", workers=workers, drain_timeout=5)


async def test_an_unencodable_answer_is_an_error_and_the_worker_serves_on() -> None:
    async with _pool():
        with pytest.raises(rio.RemoteError, match="cannot cross processes"):
            await PfBig.ref("b").huge()
        with pytest.raises(rio.BadArguments, match="argument 'n' cannot cross processes"):
            PfBig.ref("b").take(2**70)
        assert await PfBig.ref("b").ok() == "ok"


@pytest.mark.parametrize("workers", [0, 2])
async def test_a_reentrant_type_takes_callbacks_across_workers(workers: int) -> None:
    async with _pool(workers) as system:
        room, guest = "r", "g0"
        if isinstance(system, PoolSystem):  # put the guest on the other worker
            guest = next(
                f"g{i}"
                for i in range(100)
                if system.owner(("PfGuest", f"g{i}")) != system.owner(("PfRoom", room))
            )
        assert await PfRoom.ref(room).enter(guest) == 42


@pytest.mark.parametrize("workers", [0, 2])
async def test_deactivate_from_a_background_task_takes_effect(workers: int) -> None:
    async with _pool(workers):
        await PfQuitter.ref("q").start_quitting()
        deadline = time.monotonic() + 5
        while "quit q" not in await PfProbe.ref("log").seen():
            assert time.monotonic() < deadline, "the actor never deactivated"
            await asyncio.sleep(0.01)


async def test_stop_while_a_worker_restarts_is_clean() -> None:
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING")
    try:
        app = _pool()
        system = await app.start()
        assert isinstance(system, PoolSystem)
        os.kill(system.worker_pid(1), signal.SIGKILL)
        await asyncio.sleep(0.01)  # let the pool see the death and begin the restart
        await app.stop()
    finally:
        logger.remove(sink)
    # Neither a drain nor an exit had to be waited out, and nothing is left running.
    assert not [w for w in warnings if "in time" in w], warnings
    for pid in system.stats().pids:
        if pid:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_a_module_that_fails_to_import_in_a_worker_says_where(tmp_path: Path) -> None:
    # Only the error's type and text came through: no file, no line to look at.
    from rio.local.config import import_modules

    bad = tmp_path / "rio_test_worker_only_bad.py"
    bad.write_text("import os\n\nvalue = undefined_name_here\n")
    # Failing inside a library it calls: the user's line, not the library's.
    lib = tmp_path / "rio_test_worker_only_lib.py"
    lib.write_text('import json\n\nconfig = json.loads("{not json")\n')
    names = ["rio_test_worker_only_bad", "rio_test_worker_only_lib"]
    try:
        problems = import_modules([(name, str(tmp_path / f"{name}.py")) for name in names])
    finally:
        for name in names:
            sys.modules.pop(name, None)
    assert problems[0] == (
        f"importing rio_test_worker_only_bad ({bad}) failed at {bad}:3: "
        "NameError: name 'undefined_name_here' is not defined"
    )
    assert problems[1].startswith(
        f"importing rio_test_worker_only_lib ({lib}) failed at {lib}:3: JSONDecodeError"
    ), problems[1]


class PfLauncher(rio.Actor):
    async def start_and_terminate(self) -> int:
        def work() -> int:
            import subprocess

            proc = subprocess.Popen(["sleep", "30"])
            proc.terminate()
            return proc.wait(10)

        return await self.run_blocking(work)


async def test_programs_an_actor_starts_in_a_worker_still_stop_on_sigterm() -> None:
    # Workers leave stop signals to the driver; with SIG_IGN, that disposition passed
    # on to every program an actor started, whose terminate() then did nothing.
    async with rio.App("pf-launch", storage="memory://", workers=1) as system:
        assert await system.ref(PfLauncher, "l").start_and_terminate() == -signal.SIGTERM
