"""Background work owned by an activation: tasks, blocking calls, threads."""

import asyncio
import concurrent.futures
import threading
import time

import pytest

import rio

from .helpers import AppFactory, Probe, is_active, placed_id, probe


class TbCounter(rio.Actor):
    def __init__(self) -> None:
        self.value = 0

    async def incr(self, by: int) -> int:
        self.value += by
        return self.value


class TbWorker(rio.Actor):
    def __init__(self) -> None:
        self.ticks = 0

    # -- tasks ------------------------------------------------------------------------

    async def start_task(self) -> None:
        async def forever() -> None:
            probe().hit("task started", self.id)
            try:
                await asyncio.Event().wait()
            finally:
                probe().hit("task stopped", self.id)

        self.spawn(forever())

    async def start_ticking(self, n: int) -> None:
        async def tick() -> None:
            for _ in range(n):  # calls to its own ref are ordinary turns
                await TbWorker.ref(self.id).tick()
            probe().hit("ticked", self.id)

        self.spawn(tick())

    async def tick(self) -> int:
        self.ticks += 1
        return self.ticks

    async def start_failing_task(self) -> None:
        async def fail() -> None:
            await asyncio.sleep(0)
            raise ValueError("task broke")

        self.spawn(fail())

    # -- blocking calls -------------------------------------------------------------------

    async def blocking(self, x: int) -> list[int]:
        def work(a: int) -> list[int]:
            time.sleep(0.001)
            return [a * 2, threading.get_ident()]

        return [*await self.run_blocking(work, x), threading.get_ident()]

    async def blocking_fails(self) -> None:
        def work() -> None:
            raise KeyError("missing")

        await self.run_blocking(work)

    # -- threads ------------------------------------------------------------------------

    async def start_loop_thread(self) -> None:
        def loop(stop: threading.Event, label: str) -> None:
            probe().hit("thread started", threading.current_thread().name, label)
            while not stop.wait(0.005):
                pass
            probe().hit("thread stopping", label)

        self.start_thread(loop, "looper", name=f"tb-{self.id}")

    async def start_calling_thread(self, counter: str) -> None:
        def call(stop: threading.Event) -> None:
            fut = TbCounter.ref(counter).incr(5)
            is_future = isinstance(fut, concurrent.futures.Future)
            probe().hit("future", is_future, fut.result(timeout=2))

        self.start_thread(call)

    async def start_failing_thread(self) -> None:
        def fail(stop: threading.Event) -> None:
            raise RuntimeError("thread broke")

        self.start_thread(fail)

    async def on_deactivate(self) -> None:
        probe().hit("deactivated", self.id)
        try:
            self.spawn(asyncio.sleep(0))
        except rio.SystemStopping as e:
            probe().hit("spawn refused", str(e))


async def test_spawned_task_is_cancelled_on_deactivation(system: rio.System, probe: Probe) -> None:
    await TbWorker.ref("t").start_task()
    await probe.wait("task started")
    assert probe.count("task stopped") == 0
    assert await system.deactivate(TbWorker, "t") is True
    # Cancelled and awaited before deactivate() returned, after on_deactivate ran.
    assert probe.names()[-3:] == ["deactivated", "spawn refused", "task stopped"]


async def test_spawned_tasks_are_stopped_at_app_stop(make_app: AppFactory, probe: Probe) -> None:
    async with make_app():
        await TbWorker.ref("s").start_task()
        await probe.wait("task started")
    assert probe.count("task stopped") == 1


async def test_a_task_calling_its_own_ref_makes_ordinary_turns(
    system: rio.System, probe: Probe
) -> None:
    await TbWorker.ref("own").start_ticking(3)
    await probe.wait("ticked")
    assert await TbWorker.ref("own").tick() == 4


async def test_a_failing_task_is_logged_and_deactivates(
    system: rio.System, probe: Probe, logs: list[str]
) -> None:
    await TbWorker.ref("f").start_failing_task()
    await probe.wait("deactivated")
    assert not await is_active(system, TbWorker, "f")
    assert any(
        line.startswith("ERROR")
        and "background task of TbWorker/f failed: ValueError: task broke; deactivating it" in line
        for line in logs
    ), logs


async def test_spawn_is_refused_once_deactivating(system: rio.System, probe: Probe) -> None:
    await TbWorker.ref("late").tick()
    await system.deactivate(TbWorker, "late")
    assert probe.data("spawn refused") == [
        "<TbWorker/late> is deactivating; it cannot start background work"
    ]


async def test_run_blocking_runs_in_another_thread(system: rio.System) -> None:
    doubled, thread_id, handler_thread_id = await TbWorker.ref("b").blocking(21)
    assert doubled == 42
    assert thread_id != handler_thread_id


async def test_run_blocking_errors_reach_the_caller(system: rio.System) -> None:
    with pytest.raises(rio.RemoteError) as info:
        await TbWorker.ref("b").blocking_fails()
    assert info.value.remote_type == "KeyError"
    assert await is_active(system, TbWorker, "b")


async def test_thread_is_stopped_and_joined_on_deactivation(
    system: rio.System, probe: Probe
) -> None:
    await TbWorker.ref("th").start_loop_thread()
    await probe.wait("thread started")
    assert probe.data("thread started") == [("tb-th", "looper")]
    assert probe.count("thread stopping") == 0
    await system.deactivate(TbWorker, "th")
    # Stopped (and joined) before deactivate() returned.
    assert probe.data("thread stopping") == ["looper"]


@pytest.mark.parametrize("where", ["same", "other"])
async def test_calling_a_ref_from_a_thread_returns_a_future(
    system: rio.System, probe: Probe, where: str
) -> None:
    # On workers, "other" puts the target in another process than the calling thread.
    target = placed_id(system, (TbWorker, "caller"), TbCounter, same=where == "same")
    await TbWorker.ref("caller").start_calling_thread(target)
    await probe.wait("future")
    assert probe.data("future") == [(True, 5)]
    assert await TbCounter.ref(target).incr(1) == 6


async def test_calling_a_ref_from_a_plain_thread(system: rio.System) -> None:
    ref = system.ref(TbCounter, "plain")

    def in_thread() -> int:
        fut = ref.incr(2)
        assert isinstance(fut, concurrent.futures.Future)
        return int(fut.result(timeout=2))

    assert await asyncio.to_thread(in_thread) == 2


async def test_a_failing_thread_is_logged_and_deactivates(
    system: rio.System, probe: Probe, logs: list[str]
) -> None:
    await TbWorker.ref("ft").start_failing_thread()
    await probe.wait("deactivated")
    assert not await is_active(system, TbWorker, "ft")
    expected = "background thread of TbWorker/ft failed: RuntimeError: thread broke"
    assert any(expected in line for line in logs), logs
