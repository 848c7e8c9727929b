"""Turn-based execution, reentrancy and call cycles."""

import asyncio

import pytest

import rio

from .helpers import Probe, probe, runtime_stats


class TtLog(rio.Actor):
    """Records the start and end of every turn; fails loudly if two ever overlap."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, int, int]] = []
        self.inside = False

    async def step(self, caller: int, seq: int, yields: int) -> None:
        assert not self.inside, "two turns overlapped"
        self.inside = True
        self.entries.append(("start", caller, seq))
        for _ in range(yields):
            await asyncio.sleep(0)
        self.entries.append(("end", caller, seq))
        self.inside = False

    async def log(self) -> list[tuple[str, int, int]]:
        return self.entries


class TtCounter(rio.Actor):
    def __init__(self) -> None:
        self.value = 0

    async def incr(self, yields: int) -> int:
        seen = self.value  # read, suspend, write: loses updates unless turns are serial
        for _ in range(yields):
            await asyncio.sleep(0)
        self.value = seen + 1
        return self.value

    async def get(self) -> int:
        return self.value


class TtGated(rio.Actor):
    async def hold(self, tag: str) -> str:
        probe().hit("enter", tag)
        await probe().gate(f"release-{tag}")
        probe().hit("leave", tag)
        return tag

    @rio.reentrant
    async def peek(self) -> str:
        return "peeked"


class TtGatedReentrant(TtGated, name="TtGatedReentrant", reentrant=True):
    pass


class TtA(rio.Actor):
    async def call_self(self) -> None:
        await TtA.ref(self.id).noop()

    async def call_via(self, b: str) -> str:
        return await TtB.ref(b).call_back(self.id)

    async def call_via_reentrant_handler(self, b: str) -> str:
        return await TtB.ref(b).call_back_reentrant(self.id)

    async def catch_cycle(self) -> list[str]:
        try:
            await TtA.ref(self.id).noop()
        except rio.Deadlock as e:
            return e.chain
        return []

    async def noop(self) -> str:
        return f"A/{self.id}"

    async def hold(self) -> None:
        probe().hit("enter", self.id)
        await probe().gate(f"release-{self.id}")

    @rio.reentrant
    async def reentrant_noop(self) -> str:
        return f"A/{self.id} again"

    async def fan_out(self, n: int) -> list[str]:
        # Calls to other objects from one turn may run concurrently.
        return list(await asyncio.gather(*(TtB.ref(f"fan{i}").hello() for i in range(n))))


class TtB(rio.Actor):
    async def call_back(self, a: str) -> str:
        return await TtA.ref(a).noop()

    async def call_back_reentrant(self, a: str) -> str:
        return await TtA.ref(a).reentrant_noop()

    async def via_c(self, c: str) -> str:
        return await TtC.ref(c).back_to_b(self.id)

    async def hello(self) -> str:
        await asyncio.sleep(0)
        return f"B/{self.id}"


class TtC(rio.Actor):
    async def back_to_b(self, b: str) -> str:
        return await TtB.ref(b).hello()


class TtLoop(rio.Actor, reentrant=True):
    """Reentrant A for A -> B -> A callbacks."""

    async def start(self, b: str) -> str:
        return await TtLoopPeer.ref(b).relay(self.id)

    async def callback(self) -> str:
        return f"called back on {self.id}"


class TtLoopPeer(rio.Actor):
    async def relay(self, a: str) -> str:
        return await TtLoop.ref(a).callback()


# -- one message at a time (properties: test_turn_properties.py) ---------------------


async def test_a_busy_object_queues_the_next_message(system: rio.System, probe: Probe) -> None:
    ref = TtGated.ref("g")
    first = asyncio.ensure_future(ref.hold("one"))
    second = asyncio.ensure_future(ref.hold("two"))
    await probe.wait("enter")
    await asyncio.sleep(0)
    assert probe.data("enter") == ["one"]
    assert (await runtime_stats(system)).queued == 1
    probe.open("release-one")
    assert await first == "one"
    await probe.wait("enter", 2)
    probe.open("release-two")
    assert await second == "two"
    assert probe.names() == ["enter", "leave", "enter", "leave"]


# -- reentrancy ------------------------------------------------------------------------


async def test_reentrant_type_interleaves_turns(system: rio.System, probe: Probe) -> None:
    ref = TtGatedReentrant.ref("r")
    first = asyncio.ensure_future(ref.hold("one"))
    second = asyncio.ensure_future(ref.hold("two"))
    await probe.wait("enter", 2)  # both inside at once
    assert probe.count("leave") == 0
    probe.open("release-two")
    assert await second == "two"
    assert not first.done()
    probe.open("release-one")
    assert await first == "one"


async def test_reentrant_handler_runs_while_a_turn_is_suspended(
    system: rio.System, probe: Probe
) -> None:
    ref = TtGated.ref("p")
    held = asyncio.ensure_future(ref.hold("slow"))
    await probe.wait("enter")
    assert await ref.peek() == "peeked"
    assert not held.done()
    probe.open("release-slow")
    assert await held == "slow"


async def test_reentrant_type_allows_callbacks(system: rio.System) -> None:
    assert await TtLoop.ref("a").start("b") == "called back on a"


async def test_reentrant_handler_allows_callbacks(system: rio.System) -> None:
    assert await TtA.ref("a").call_via_reentrant_handler("b") == "A/a again"


async def test_calls_to_distinct_objects_from_one_turn_run_concurrently(
    system: rio.System,
) -> None:
    assert await TtA.ref("fan").fan_out(3) == ["B/fan0", "B/fan1", "B/fan2"]


# -- deadlocks -------------------------------------------------------------------------


async def test_self_call_is_a_deadlock_at_once(system: rio.System) -> None:
    async with asyncio.timeout(1):  # not after the 30 s default deadline
        with pytest.raises(rio.Deadlock) as info:
            await TtA.ref("x").call_self()
    assert info.value.chain == ["TtA/x", "TtA/x"]
    message = str(info.value)
    assert "call cycle among non-reentrant actors: TtA/x -> TtA/x (calling noop())" in message
    assert "reentrant" in message
    assert await TtA.ref("x").noop() == "A/x"  # still serving


async def test_a_b_a_is_a_deadlock_naming_the_chain(system: rio.System) -> None:
    async with asyncio.timeout(1):
        with pytest.raises(rio.Deadlock) as info:
            await TtA.ref("a").call_via("b")
    assert info.value.chain == ["TtA/a", "TtB/b", "TtA/a"]
    assert "TtA/a -> TtB/b -> TtA/a" in str(info.value)
    assert await TtB.ref("b").hello() == "B/b"


async def test_the_chain_starts_where_the_cycle_does(system: rio.System) -> None:
    # Outer caller -> B -> C -> B: A is not part of the cycle.
    async with asyncio.timeout(1):
        with pytest.raises(rio.Deadlock) as info:
            await TtB.ref("b2").via_c("c2")
    assert info.value.chain == ["TtB/b2", "TtC/c2", "TtB/b2"]


async def test_a_handler_can_catch_the_deadlock(system: rio.System) -> None:
    assert await TtA.ref("catcher").catch_cycle() == ["TtA/catcher", "TtA/catcher"]


async def test_cycles_are_caught_for_queued_turns_too(system: rio.System, probe: Probe) -> None:
    # The object is busy, so the cycle-closing turn runs later, from its mailbox.
    held = asyncio.ensure_future(TtA.ref("q").hold())
    await probe.wait("enter")
    queued = asyncio.ensure_future(TtA.ref("q").call_via("qb"))
    await asyncio.sleep(0)
    assert (await runtime_stats(system)).queued == 1
    probe.open("release-q")
    await held
    async with asyncio.timeout(1):
        with pytest.raises(rio.Deadlock) as info:
            await queued
    assert info.value.chain == ["TtA/q", "TtB/qb", "TtA/q"]
