"""Activation and deactivation: hooks, failures, self-deactivation, idle TTL, drain."""

import asyncio

import msgspec
import pytest

import rio

from .helpers import (
    AppFactory,
    Probe,
    is_active,
    is_cause,
    placed_id,
    probe,
    runtime_stats,
    storage,
)


class TlState(msgspec.Struct):
    value: int = 0


class TlHooks(rio.Actor[TlState]):
    """Reports every hook and message to the probe."""

    async def on_activate(self) -> None:
        probe().hit("activate", self.id, self.state.value)

    async def on_deactivate(self) -> None:
        probe().hit("deactivate", self.id)

    async def touch(self) -> int:
        probe().hit("touch", self.id)
        return self.state.value

    async def stop_after_this(self) -> None:
        self.deactivate()


class TlFlaky(rio.Actor):
    async def on_activate(self) -> None:
        probe().hit("activate", self.id)
        await probe().gate(f"activate-{self.id}")
        if probe().is_on(f"fail-{self.id}"):
            raise OSError(f"database for {self.id} unreachable")

    async def on_deactivate(self) -> None:
        probe().hit("deactivate", self.id)

    async def hello(self) -> str:
        return "hello"


class TlBadInit(rio.Actor):
    def __init__(self) -> None:
        raise RuntimeError("cannot build")

    async def hello(self) -> str:
        return "hello"


class TlBadDeactivate(rio.Actor):
    async def on_deactivate(self) -> None:
        raise ValueError("hook broke")

    async def hello(self) -> str:
        return "hello"


class TlRoom(rio.Actor):
    """rio-rs' ping-pong room: deactivates itself after three pings."""

    def __init__(self) -> None:
        self.pings = 0

    async def ping(self) -> int:
        self.pings += 1
        if self.pings == 3:
            self.deactivate()
        return self.pings

    async def on_deactivate(self) -> None:
        probe().hit("room closed", self.id, self.pings)


class TlSlowRoom(TlRoom, name="TlSlowRoom"):
    """The same room whose turns suspend, so the self-deactivation goes through a task."""

    async def ping(self) -> int:
        await asyncio.sleep(0)
        return await super().ping()


class TlSlowGoodbye(rio.Actor):
    async def on_activate(self) -> None:
        probe().hit("activate", self.id)

    async def on_deactivate(self) -> None:
        probe().hit("deactivating", self.id)
        await probe().gate("goodbye")
        probe().hit("deactivated", self.id)

    async def hello(self) -> str:
        return "hello"


#: Per id, in the process hosting it: (deactivation started, may finish).
GOODBYES: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}


class TlOrdered(rio.Actor):
    """Notes the order its messages run in; its deactivation waits for a go-ahead."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    async def note(self, n: int) -> list[int]:
        self.seen.append(n)
        return list(self.seen)

    async def on_deactivate(self) -> None:
        started, finish = GOODBYES[self.id]
        started.set()
        await finish.wait()


class TlOrderDriver(rio.Actor):
    """Drives TlOrdered from the same process, so the steps interleave deterministically."""

    async def across_deactivation(self, target: str) -> list[list[int]]:
        started, finish = GOODBYES[target] = (asyncio.Event(), asyncio.Event())
        ref = TlOrdered.ref(target)
        await ref.note(0)

        async def meanwhile() -> list[int]:
            await started.wait()
            sent = ref.note(1)  # queued behind the deactivation: for a fresh activation
            finish.set()
            return await sent

        first = asyncio.ensure_future(meanwhile())
        assert await self.system.deactivate(TlOrdered, target) is True
        second = await ref.note(2)  # sent after note(1): must run after it
        return [await first, second]


class TlShortLived(rio.Actor, idle_ttl=0.05):
    async def hello(self) -> str:
        return "hello"

    async def on_deactivate(self) -> None:
        probe().hit("idle", self.id)


class TlConfigured(rio.Actor, idle_ttl=None):
    """Never idles out by itself; apps may give it a TTL."""

    async def hello(self) -> str:
        return "hello"

    async def on_deactivate(self) -> None:
        probe().hit("idle", self.id)


class TlDraining(rio.Actor[TlState], save_on_deactivate=True):
    async def slow_add(self, n: int) -> int:
        probe().hit("turn started", self.id)
        await probe().gate("finish")
        self.state.value += n
        return self.state.value

    async def get(self) -> int:
        return self.state.value

    async def slow_then_call(self, other: str) -> int:
        probe().hit("turn started", self.id)
        await probe().gate("finish")
        return await TlHooks.ref(other).touch()  # a call made by a running turn

    async def on_deactivate(self) -> None:
        probe().hit("deactivate", self.id, self.state.value)


# -- activation ----------------------------------------------------------------------


async def test_on_activate_runs_after_state_load_before_first_message(
    system: rio.System, probe: Probe
) -> None:
    await storage(system).save("TlHooks", "h", TlState(5), TlState, 0)
    assert await TlHooks.ref("h").touch() == 5
    assert probe.names() == ["activate", "touch"]
    assert probe.data("activate") == [("h", 5)]  # it saw the loaded state
    await TlHooks.ref("h").touch()
    assert probe.count("activate") == 1


async def test_failing_on_activate_names_the_hook(system: rio.System, probe: Probe) -> None:
    probe.switch("fail-f1")
    probe.open("activate-f1")
    try:
        with pytest.raises(rio.ActivationFailed) as info:
            await TlFlaky.ref("f1").hello()
        message = str(info.value)
        assert message == (
            "activating TlFlaky/f1 failed in on_activate: OSError: database for f1 unreachable"
        )
        assert is_cause(info.value, OSError), repr(info.value.__cause__)
        assert not await is_active(system, TlFlaky, "f1")
        assert (await runtime_stats(system)).activations == 0
    finally:
        probe.switch("fail-f1", False)


async def test_failed_activation_is_retried_afresh(system: rio.System, probe: Probe) -> None:
    probe.switch("fail-f2")
    probe.open("activate-f2")
    try:
        with pytest.raises(rio.ActivationFailed):
            await TlFlaky.ref("f2").hello()
        with pytest.raises(rio.ActivationFailed):
            await TlFlaky.ref("f2").hello()
    finally:
        probe.switch("fail-f2", False)
    assert await TlFlaky.ref("f2").hello() == "hello"
    assert probe.count("activate") == 3
    # A half-built activation never ran on_deactivate; the good one will at stop.
    assert probe.count("deactivate") == 0


async def test_every_caller_queued_on_a_failing_activation_gets_the_error(
    system: rio.System, probe: Probe
) -> None:
    probe.switch("fail-f3")
    try:
        calls = [asyncio.ensure_future(TlFlaky.ref("f3").hello()) for _ in range(4)]
        await probe.wait("activate")
        assert (await runtime_stats(system)).queued == 3  # waiting behind the activation
        probe.open("activate-f3")
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        probe.switch("fail-f3", False)
    assert all(isinstance(r, rio.ActivationFailed) for r in results), results
    assert probe.count("activate") == 1
    assert (await runtime_stats(system)).queued == 0
    assert await TlFlaky.ref("f3").hello() == "hello"


async def test_failing_init_names_init(system: rio.System) -> None:
    expected = "failed in __init__: RuntimeError: cannot build"
    with pytest.raises(rio.ActivationFailed, match=expected):
        await TlBadInit.ref("i").hello()
    assert not await is_active(system, TlBadInit, "i")


# -- deactivation and its hook -------------------------------------------------------


async def test_operator_deactivation_runs_the_hook(system: rio.System, probe: Probe) -> None:
    await TlHooks.ref("op").touch()
    assert await system.deactivate(TlHooks, "op") is True
    assert probe.data("deactivate") == ["op"]
    assert not await is_active(system, TlHooks, "op")
    assert await system.deactivate(TlHooks, "op") is False  # no longer active
    assert await system.deactivate("TlHooks", "never-activated") is False


async def test_is_active_accepts_int_ids(system: rio.System) -> None:
    await TlHooks.ref(5).touch()
    assert await is_active(system, TlHooks, "5")
    assert await is_active(system, TlHooks, 5)


async def test_operator_deactivation_by_name_or_ref(system: rio.System, probe: Probe) -> None:
    await TlHooks.ref("n").touch()
    await TlHooks.ref("r").touch()
    assert await system.deactivate("TlHooks", "n") is True
    assert await system.deactivate(TlHooks.ref("r")) is True
    assert sorted(probe.data("deactivate")) == ["n", "r"]


async def test_operator_deactivation_waits_for_the_current_turn(
    system: rio.System, probe: Probe
) -> None:
    call = asyncio.ensure_future(TlDraining.ref("busy").slow_add(1))
    await probe.wait("turn started")
    deactivation = asyncio.ensure_future(system.deactivate(TlDraining, "busy"))
    await asyncio.sleep(0)
    assert not deactivation.done()
    probe.open("finish")
    assert await call == 1
    assert await deactivation is True
    assert probe.data("deactivate") == [("busy", 1)]


async def test_self_deactivation_runs_the_hook(system: rio.System, probe: Probe) -> None:
    await TlHooks.ref("self").stop_after_this()
    await probe.wait("deactivate")
    assert probe.data("deactivate") == ["self"]
    assert not await is_active(system, TlHooks, "self")


@pytest.mark.parametrize("room", [TlRoom, TlSlowRoom])
async def test_room_deactivates_itself_after_three_pings(
    system: rio.System, probe: Probe, room: type[TlRoom]
) -> None:
    ref = room.ref("lobby")
    assert [await ref.ping() for _ in range(7)] == [1, 2, 3, 1, 2, 3, 1]
    await probe.wait("room closed", 2)
    assert probe.data("room closed") == [("lobby", 3), ("lobby", 3)]


@pytest.mark.parametrize("room", [TlRoom, TlSlowRoom])
async def test_messages_sent_meanwhile_reach_a_fresh_activation(
    system: rio.System, probe: Probe, room: type[TlRoom]
) -> None:
    ref = room.ref("pipelined")
    pings = [ref.ping() for _ in range(7)]  # all sent before any answer
    assert await asyncio.gather(*pings) == [1, 2, 3, 1, 2, 3, 1]
    await probe.wait("room closed", 2)


async def test_no_second_activation_while_the_first_is_deactivating(
    system: rio.System, probe: Probe
) -> None:
    ref = TlSlowGoodbye.ref("one")
    await ref.hello()
    deactivation = asyncio.ensure_future(system.deactivate(TlSlowGoodbye, "one"))
    await probe.wait("deactivating")
    meanwhile = ref.hello()
    await asyncio.sleep(0.01)
    assert not meanwhile.done()
    assert probe.count("activate") == 1  # single activation: the new one waits
    probe.open("goodbye")
    assert await meanwhile == "hello"
    assert await deactivation is True
    assert probe.names() == ["activate", "deactivating", "deactivated", "activate"]


async def test_calls_queued_during_deactivation_keep_their_order(system: rio.System) -> None:
    # A fresh activation inherits the calls queued during the deactivation; a call made
    # after them must not overtake them.
    target = placed_id(system, (TlOrderDriver, "d"), TlOrdered, same=True)
    first, second = await TlOrderDriver.ref("d").across_deactivation(target)
    assert first == [1]  # the fresh activation's first message
    assert second == [1, 2]


async def test_failing_on_deactivate_is_logged_and_deactivation_completes(
    system: rio.System, logs: list[str]
) -> None:
    await TlBadDeactivate.ref("b").hello()
    assert await system.deactivate(TlBadDeactivate, "b") is True
    assert not await is_active(system, TlBadDeactivate, "b")
    assert any("on_deactivate of TlBadDeactivate/b raised hook broke" in line for line in logs)
    assert await TlBadDeactivate.ref("b").hello() == "hello"


# -- idle TTL ----------------------------------------------------------------------


async def test_idle_ttl_class_option(system: rio.System, probe: Probe) -> None:
    await TlShortLived.ref("s").hello()
    await probe.wait("idle", within=1.0)
    assert not await is_active(system, TlShortLived, "s")
    assert await TlShortLived.ref("s").hello() == "hello"  # a fresh activation


async def test_calls_keep_an_object_alive(system: rio.System, probe: Probe) -> None:
    ref = TlShortLived.ref("busy")
    loop = asyncio.get_running_loop()
    end = loop.time() + 0.15  # three TTLs
    while loop.time() < end:
        await ref.hello()
        await asyncio.sleep(0.005)
    assert probe.count("idle") == 0
    await probe.wait("idle", within=1.0)


async def test_idle_ttl_from_app_options(make_app: AppFactory, probe: Probe) -> None:
    async with make_app(actor_options={"TlConfigured": {"idle_ttl": 0.05}}) as system:
        await TlConfigured.ref("c").hello()
        await probe.wait("idle", within=1.0)
        assert not await is_active(system, TlConfigured, "c")


async def test_app_options_can_turn_idle_ttl_off(make_app: AppFactory, probe: Probe) -> None:
    async with make_app(actor_options={"TlShortLived": {"idle_ttl": None}}) as system:
        await TlShortLived.ref("kept").hello()
        await TlConfigured.ref("kept").hello()
        await asyncio.sleep(0.2)  # four of TlShortLived's own TTLs
        assert probe.count("idle") == 0
        assert await is_active(system, TlShortLived, "kept")
        assert await is_active(system, TlConfigured, "kept")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"T": {"idle_ttl": 0}}, "idle_ttl must be positive seconds or None, got 0"),
        ({"T": {"idle_ttl": "soon"}}, "idle_ttl must be positive seconds or None, got 'soon'"),
        ({"T": {"ttl": 1}}, "unknown option(s) ttl; known: idle_ttl"),
    ],
)
def test_bad_actor_options(options: dict[str, dict[str, object]], message: str) -> None:
    with pytest.raises(rio.ConfigError) as info:
        rio.App("x", storage="memory://", actor_options=options)
    assert message in str(info.value)


async def test_options_for_a_type_no_class_registers_are_refused_at_start() -> None:
    # A typo in the type's name was ignored: its idle_ttl never applied, without a word.
    app = rio.App("x", storage="memory://", actor_options={"TlConfigred": {"idle_ttl": 5}})
    with pytest.raises(rio.ConfigError) as info:
        await app.start()
    assert "actor_options names actor type 'TlConfigred'" in str(info.value)
    assert "TlConfigured" in str(info.value)  # the names it could have meant
    assert app.system is None


@pytest.mark.parametrize("setting", ["default_timeout", "drain_timeout", "reminder_poll"])
def test_seconds_given_as_text_are_refused_naming_the_setting(setting: str) -> None:
    # A string gave Python's own "'>' not supported between instances of 'str' and 'int'".
    with pytest.raises(rio.ConfigError, match=f"{setting} must be positive seconds, got '30'"):
        rio.App("x", storage="memory://", **{setting: "30"})  # type: ignore[arg-type]


# -- stopping the app drains -------------------------------------------------------


async def test_app_stop_drains(make_app: AppFactory, sqlite_url: str, probe: Probe) -> None:
    app = make_app(storage=sqlite_url)
    system = await app.start()
    await TlHooks.ref("idle-one").touch()
    call = asyncio.ensure_future(TlDraining.ref("d").slow_add(4))
    await probe.wait("turn started")
    queued = TlDraining.ref("d").slow_add(5)  # waits behind the first turn
    stopping = asyncio.ensure_future(app.stop())
    await asyncio.sleep(0)
    with pytest.raises(rio.SystemStopping, match="is stopping"):
        await system.ref(TlHooks, "late").touch()
    assert not stopping.done()
    probe.open("finish")
    assert await call == 4  # the in-flight turn finished
    assert await queued == 9  # so did the one queued before the stop
    await stopping
    assert set(probe.data("deactivate")) == {("d", 9), "idle-one"}
    async with make_app(storage=sqlite_url):
        assert await TlDraining.ref("d").get() == 9  # saved on deactivation


async def test_running_turns_may_still_call_other_objects_while_draining(
    make_app: AppFactory, probe: Probe
) -> None:
    app = make_app()
    await app.start()
    call = TlDraining.ref("caller").slow_then_call("callee")
    await probe.wait("turn started")
    stopping = asyncio.ensure_future(app.stop())
    await asyncio.sleep(0)
    probe.open("finish")
    assert await call == 0
    await stopping
    # The object activated during the drain was drained too.
    assert set(probe.data("deactivate")) == {("caller", 0), "callee"}


async def test_stop_is_idempotent(make_app: AppFactory) -> None:
    app = make_app()
    system = await app.start()
    await app.stop()
    await app.stop()
    await system.stop()
    assert not system.running


async def test_a_turn_stuck_past_the_drain_timeout_is_cancelled(
    make_app: AppFactory, probe: Probe, logs: list[str]
) -> None:
    app = make_app(drain_timeout=0.05)
    await app.start()
    stuck = TlDraining.ref("stuck").slow_add(1)  # its gate never opens
    await probe.wait("turn started")
    async with asyncio.timeout(1):
        await app.stop()
    with pytest.raises(rio.SystemStopping, match="cancelled by shutdown"):
        await stuck
    assert any("drain timeout (0.05s) passed with 1 activation(s) busy" in m for m in logs)
