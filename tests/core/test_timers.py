"""Timers: callbacks that run as turns of their activation, on every runtime path."""

from __future__ import annotations

import asyncio

import pytest
from waiting import eventually

import rio

from .helpers import Probe, is_active, probe


class TmClock(rio.Actor, idle_ttl=None):
    def __init__(self) -> None:
        self.in_handler = False
        self.ticks = 0
        self.fail_first = False
        self.timer: rio.Timer | None = None

    async def start(self, interval: float, fail_first: bool = False) -> None:
        self.fail_first = fail_first
        self.timer = self.start_timer(self.tick, interval, name="clock")

    async def tick(self) -> None:
        self.ticks += 1
        probe().hit("tick", self.id, self.ticks, self.in_handler)
        if self.fail_first and self.ticks == 1:
            raise ValueError("first tick broke")

    async def slow(self, seconds: float) -> None:
        # Awaits while the timer is due: the tick must wait for this turn to end.
        self.in_handler = True
        probe().hit("slow started", self.id)
        await asyncio.sleep(seconds)
        probe().hit("slow ending", self.id, self.ticks)
        self.in_handler = False

    async def stop(self) -> bool:
        assert self.timer is not None
        self.timer.cancel()
        return self.timer.active

    async def count(self) -> int:
        return self.ticks

    async def timers(self) -> int:
        return len(self._rio_timers or {})

    async def once(self, due: float) -> None:
        def fire() -> None:  # a plain function works as well as a coroutine function
            probe().hit("once", self.id)

        self.timer = self.start_timer(fire, None, due=due)

    async def active(self) -> bool:
        return self.timer is not None and self.timer.active

    async def bad(self, interval: float) -> None:
        self.start_timer(self.tick, interval)

    async def on_deactivate(self) -> None:
        probe().hit("deactivated", self.id, self.timer is not None and self.timer.active)


class TmIdle(rio.Actor, idle_ttl=0.2):
    async def start(self, keep_alive: bool) -> None:
        self.start_timer(self.tick, 0.02, keep_alive=keep_alive)

    async def tick(self) -> None:
        probe().hit("idle tick", self.id)

    async def on_deactivate(self) -> None:
        probe().hit("idle deactivated", self.id)


class TmKeep(rio.Actor, idle_ttl=0.5):
    async def start(self) -> None:
        self.began = asyncio.get_running_loop().time()
        self.start_timer(self.tick, 0.05, keep_alive=True)

    async def tick(self) -> None:
        probe().hit("kept", asyncio.get_running_loop().time() - self.began)


class TmWatcher(rio.Actor, idle_ttl=None):
    """Started timers in on_activate, publishes each tick: the game-loop pattern."""

    async def on_activate(self) -> None:
        self.n = 0
        self.start_timer(self.beat, 0.01, due=0)

    async def beat(self) -> None:
        self.n += 1
        self.publish(self.n)

    async def ping(self) -> None:
        pass


async def test_a_tick_never_overlaps_a_handler(system: rio.System, probe: Probe) -> None:
    clock = TmClock.ref("c1")
    await clock.start(0.01)
    await probe.wait("tick")
    call = clock.slow(0.15)  # several ticks fall due while it awaits
    await call
    await probe.wait("tick", count=probe.count("tick") + 2)
    # Every tick saw no handler in progress, and none ran between start and end of slow().
    assert all(in_handler is False for _, _, in_handler in probe.data("tick"))
    names = probe.names()
    start, end = names.index("slow started"), names.index("slow ending")
    assert "tick" not in names[start:end]
    _, ticks_when_ending = probe.data("slow ending")[0]
    assert ticks_when_ending == names[:start].count("tick")
    await clock.stop()


async def test_a_failing_tick_is_logged_and_the_timer_goes_on(
    system: rio.System, probe: Probe, logs: list[str]
) -> None:
    clock = TmClock.ref("c2")
    await clock.start(0.01, True)
    await probe.wait("tick", count=3)
    await clock.stop()
    failures = [line for line in logs if "raised ValueError: first tick broke" in line]
    assert len(failures) == 1, logs
    assert "timer clock of TmClock/c2" in failures[0]
    assert "keeps running" in failures[0]
    assert await clock.count() >= 3


async def test_timers_are_cancelled_when_the_actor_deactivates(
    system: rio.System, probe: Probe
) -> None:
    clock = TmClock.ref("c3")
    await clock.start(0.01)
    await probe.wait("tick", count=2)
    assert await system.deactivate(TmClock, "c3") is True
    # Cancelled before on_deactivate ran (it saw the timer stopped).
    assert probe.data("deactivated") == [("c3", False)]
    ticks = probe.count("tick")
    await asyncio.sleep(0.1)  # ten intervals: a live timer would have ticked
    assert probe.count("tick") == ticks
    # The next activation starts with no timer (and its ticks counter from zero).
    assert await clock.timers() == 0
    assert await clock.count() == 0


async def test_cancel_stops_the_ticks(system: rio.System, probe: Probe) -> None:
    clock = TmClock.ref("c4")
    await clock.start(0.01)
    await probe.wait("tick", count=2)
    assert await clock.stop() is False
    assert await clock.timers() == 0
    ticks = await clock.count()
    await asyncio.sleep(0.1)
    assert await clock.count() == ticks


async def test_a_one_shot_timer_fires_once(system: rio.System, probe: Probe) -> None:
    clock = TmClock.ref("c5")
    await clock.once(0.01)
    await probe.wait("once")
    assert await clock.active() is False
    await asyncio.sleep(0.05)
    assert probe.count("once") == 1
    assert await clock.timers() == 0


async def test_timer_arguments_are_checked(system: rio.System) -> None:
    with pytest.raises(rio.RemoteError, match="interval must be positive seconds"):
        await TmClock.ref("c6").bad(0)


async def test_ticks_do_not_keep_an_idle_actor_alive(system: rio.System, probe: Probe) -> None:
    await TmIdle.ref("i1").start(False)
    await probe.wait("idle tick", count=2)
    await probe.wait("idle deactivated", within=5.0)
    assert not await is_active(system, TmIdle, "i1")


@pytest.mark.slow
async def test_a_keep_alive_timer_keeps_an_idle_actor_alive(
    system: rio.System, probe: Probe
) -> None:
    await TmKeep.ref("k1").start()

    def long_enough() -> bool:
        return any(t > 1.0 for t in probe.data("kept"))  # twice the idle TTL

    await eventually(long_enough, within=10.0, what="ticks for over a second")
    assert await is_active(system, TmKeep, "k1")
    await system.deactivate(TmKeep, "k1")


async def test_a_timer_started_in_on_activate_publishes(system: rio.System) -> None:
    async with TmWatcher.ref("w1").subscribe() as beats:
        await TmWatcher.ref("w1").ping()  # activates it; on_activate starts the timer
        got = []
        async for n in beats:
            got.append(n)
            if len(got) == 3:
                break
    assert got == sorted(got)
    await system.deactivate(TmWatcher, "w1")
