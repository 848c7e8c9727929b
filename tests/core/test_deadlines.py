"""Every call has a deadline: the default, per ref, per block; it bounds nested calls."""

import asyncio
import time

import pytest

import rio

from .helpers import AppFactory, Probe, probe, where


class TdSlow(rio.Actor):
    async def wait(self, gate: str) -> str:
        probe().hit("waiting", gate)
        await probe().gate(gate)
        probe().hit("done", gate)
        return gate

    async def fast(self) -> str:
        return "fast"


class TdSlowStart(TdSlow, name="TdSlowStart"):
    async def on_activate(self) -> None:
        time.sleep(0.02)  # noqa: ASYNC251 - the point: a slow, blocking activation step


class TdOuter(rio.Actor):
    async def nested(self, gate: str) -> str:
        """Calls a slow object with no deadline of its own: the caller's budget applies."""
        try:
            return await TdSlow.ref("inner").wait(gate)
        except rio.CallTimeout:
            probe().hit("inner timed out")
            raise

    async def nested_with_ref_timeout(self, gate: str) -> str:
        try:
            return await TdSlow.ref("inner").with_timeout(0.05).wait(gate)
        except rio.CallTimeout:
            return "inner timed out"

    async def nested_with_block_timeout(self, gate: str) -> str:
        try:
            with rio.timeout(0.05):
                return await TdSlow.ref("inner").wait(gate)
        except rio.CallTimeout:
            return "inner timed out"

    async def suspend_then_block_timeout(self, gate: str) -> str:
        await asyncio.sleep(0)
        return await self.nested_with_block_timeout(gate)

    async def hold(self, gate: str) -> None:
        await probe().gate(gate)


class TdGuarded(rio.Actor):
    """Bounds its own wait with asyncio.timeout, as any asyncio code may."""

    async def guarded(self, gate: str, suspend_first: bool) -> str:
        if suspend_first:
            await asyncio.sleep(0)
        try:
            async with asyncio.timeout(0.05):
                await probe().gate(gate)
        except TimeoutError:
            return "timed out"
        return "opened"


def test_default_timeout_is_30_seconds() -> None:
    assert rio.App("x", storage="memory://").default_timeout == 30.0
    assert rio.App("x", storage="memory://").make_runtime().default_timeout == 30.0


@pytest.mark.parametrize("bad", [0, -1.0])
def test_timeouts_must_be_positive(bad: float) -> None:
    with pytest.raises(rio.ConfigError, match="default_timeout must be positive"):
        rio.App("x", default_timeout=bad)
    with pytest.raises(rio.ConfigError, match="drain_timeout must be positive"):
        rio.App("x", drain_timeout=bad)
    with pytest.raises(ValueError, match="timeout must be positive"), rio.timeout(bad):
        pass


async def test_app_default_timeout(make_app: AppFactory, probe: Probe) -> None:
    async with make_app(default_timeout=0.05) as system:
        assert await TdSlow.ref("s").fast() == "fast"
        try:
            with pytest.raises(rio.CallTimeout) as info:
                await TdSlow.ref("s").wait("g")
        finally:
            probe.open("g")
        # On workers the message also names the worker that hosts the object.
        assert str(info.value) == (
            f"TdSlow/s.wait() did not answer within 0.05s{where(system, TdSlow, 's')}; "
            "the handler may still be running. "
            "Raise the deadline with ref.with_timeout(seconds) or rio.timeout(seconds)"
        )
        assert isinstance(info.value, TimeoutError)


async def test_timeout_message_names_the_callers_budget_after_a_slow_activation(
    system: rio.System, probe: Probe
) -> None:
    try:
        budget = r"did not answer within 0\.05s( \(worker \d\))?;"
        with pytest.raises(rio.CallTimeout, match=budget):
            await TdSlowStart.ref("s").with_timeout(0.05).wait("g")
    finally:
        probe.open("g")


async def test_ref_with_timeout(system: rio.System, probe: Probe) -> None:
    await TdSlow.ref("s").fast()
    with pytest.raises(rio.CallTimeout, match=r"TdSlow/s\.wait\(\) did not answer within 0\.05s"):
        await TdSlow.ref("s").with_timeout(0.05).wait("g")
    probe.open("g")


async def test_timeout_block_shares_one_budget(system: rio.System, probe: Probe) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with rio.timeout(0.05):
        assert await TdSlow.ref("s").fast() == "fast"
        with pytest.raises(rio.CallTimeout):
            await TdSlow.ref("s").wait("g")
    assert loop.time() - start < 1.0
    probe.open("g")


async def test_nested_timeout_blocks_take_the_tighter(system: rio.System, probe: Probe) -> None:
    with pytest.raises(rio.CallTimeout), rio.timeout(0.05), rio.timeout(10):
        await TdSlow.ref("s").wait("g")
    probe.open("g")


async def test_the_activation_keeps_serving_after_a_timeout(
    system: rio.System, probe: Probe
) -> None:
    ref = TdSlow.ref("s")
    with pytest.raises(rio.CallTimeout):
        await ref.with_timeout(0.05).wait("late")
    probe.open("late")  # the handler itself runs on to the end
    await probe.wait("done")
    assert await ref.fast() == "fast"
    assert await ref.wait("late") == "late"


async def test_queued_calls_time_out_too(system: rio.System, probe: Probe) -> None:
    ref = TdSlow.ref("busy")
    held = asyncio.ensure_future(ref.wait("hold"))
    await probe.wait("waiting")
    with pytest.raises(rio.CallTimeout):
        await ref.with_timeout(0.05).fast()  # never got its turn in time
    probe.open("hold")
    assert await held == "hold"
    assert await ref.fast() == "fast"


async def test_the_callers_deadline_bounds_nested_calls(system: rio.System, probe: Probe) -> None:
    with pytest.raises(rio.CallTimeout):
        await TdOuter.ref("o").with_timeout(0.05).nested("g")
    # The nested call got the outer budget, not the 30 s default.
    await probe.wait("inner timed out", within=1.0)
    probe.open("g")


async def test_the_callers_timeout_block_bounds_nested_calls(
    system: rio.System, probe: Probe
) -> None:
    with pytest.raises(rio.CallTimeout), rio.timeout(0.05):
        await TdOuter.ref("o").nested("g")
    await probe.wait("inner timed out", within=1.0)
    probe.open("g")


async def test_with_timeout_inside_a_handler(system: rio.System, probe: Probe) -> None:
    assert await TdOuter.ref("o").nested_with_ref_timeout("g") == "inner timed out"
    probe.open("g")


async def test_timeout_block_inside_a_queued_turn(system: rio.System, probe: Probe) -> None:
    outer = TdOuter.ref("queued")
    held = asyncio.ensure_future(outer.hold("h"))
    call = outer.nested_with_block_timeout("g")  # runs later, from the mailbox
    probe.open("h")
    await held
    try:
        async with asyncio.timeout(0.5):
            assert await call == "inner timed out"
    finally:
        probe.open("g")


async def test_timeout_block_inside_an_eager_turn(system: rio.System, probe: Probe) -> None:
    try:
        async with asyncio.timeout(0.5):
            assert await TdOuter.ref("eager").nested_with_block_timeout("g") == "inner timed out"
    finally:
        probe.open("g")


async def test_timeout_block_after_the_first_suspension(system: rio.System, probe: Probe) -> None:
    try:
        async with asyncio.timeout(0.5):
            assert await TdOuter.ref("later").suspend_then_block_timeout("g") == "inner timed out"
    finally:
        probe.open("g")


@pytest.mark.parametrize("suspend_first", [True, False], ids=["after-suspending", "at-once"])
async def test_asyncio_timeout_inside_a_handler(
    system: rio.System, probe: Probe, suspend_first: bool
) -> None:
    # At once: the turn's first step runs eagerly, in the caller's stack; the timeout
    # must still bound the handler, not cancel the caller (nor fail for want of a task).
    async def caller() -> str:
        return str(await TdGuarded.ref(f"g-{suspend_first}").guarded("never", suspend_first))

    task = asyncio.ensure_future(caller())
    try:
        await asyncio.wait([task], timeout=2.0)
        assert task.done()
        assert not task.cancelled(), "the timeout cancelled the caller instead of the handler"
        assert task.result() == "timed out"
    finally:
        probe.open("never")
