"""State: loaded on activation, written by save(), versioned against stale writers."""

import asyncio
from pathlib import Path

import msgspec
import pytest

import rio
from rio.storage import MemoryStorage, SQLiteStorage

from .helpers import (
    AppFactory,
    Probe,
    is_active,
    is_cause,
    probe,
    storage,
)


class TsAccountState(msgspec.Struct):
    balance: int = 0
    history: list[int] = msgspec.field(default_factory=list)


class TsAccount(rio.Actor[TsAccountState]):
    async def deposit(self, amount: int) -> int:
        self.state.balance += amount
        self.state.history.append(amount)
        await self.save()
        return self.state.balance

    async def deposit_unsaved(self, amount: int) -> int:
        self.state.balance += amount
        return self.state.balance

    async def balance(self) -> int:
        return self.state.balance

    async def history(self) -> list[int]:
        return list(self.state.history)

    async def close(self) -> None:
        await self.clear_state()

    async def hold(self) -> None:
        await probe().gate("hold")

    async def replace(self, balance: int) -> None:
        self.state = TsAccountState(balance=balance)
        await self.save()

    async def deposit_wrong(self, amount: int) -> None:
        self.state.balance += amount
        self.state.history.append(str(amount))  # type: ignore[arg-type]
        await self.save()


class TsAutoSaved(rio.Actor[TsAccountState], save_on_deactivate=True):
    async def add(self, amount: int) -> int:
        self.state.balance += amount
        return self.state.balance

    async def add_and_save_wrong(self, amount: int) -> None:
        self.state.balance += amount
        self.state.history.append("not an int")  # type: ignore[arg-type]
        await self.save()

    async def balance(self) -> int:
        return self.state.balance


class TsBurst(rio.Actor[TsAccountState], reentrant=True):
    """Many overlapping turns saving at once: saves are serialized, none conflicts."""

    async def add(self, amount: int) -> None:
        self.state.balance += amount
        await self.save()


class TsStateless(rio.Actor):
    async def try_save(self) -> None:
        await self.save()

    async def try_clear(self) -> None:
        await self.clear_state()

    async def read_state(self) -> object:
        return self.state


class TsOtherShape(msgspec.Struct):
    balance: str = ""


class TsDecodes(rio.Actor[TsAccountState]):
    async def balance(self) -> int:
        return self.state.balance


async def stored(system: rio.System, cls: type[rio.Actor], object_id: str) -> object:
    """What the storage holds for an object, or None."""
    info = cls._rio_type
    found = await storage(system).load(info.name, object_id, info.state_type)
    return None if found is None else found.value


async def test_default_state_when_nothing_is_stored(system: rio.System) -> None:
    assert await TsAccount.ref("new").balance() == 0
    assert await stored(system, TsAccount, "new") is None


async def test_save_writes_to_storage(system: rio.System) -> None:
    assert await TsAccount.ref("a").deposit(5) == 5
    assert await stored(system, TsAccount, "a") == TsAccountState(5, [5])
    found = await storage(system).load("TsAccount", "a", TsAccountState)
    assert found is not None
    assert found.version == 1


async def test_state_survives_deactivation(system: rio.System) -> None:
    ref = TsAccount.ref("b")
    await ref.deposit(3)
    await ref.deposit(4)
    assert await system.deactivate(TsAccount, "b") is True
    assert not await is_active(system, TsAccount, "b")
    assert await ref.balance() == 7
    assert await ref.history() == [3, 4]


async def test_state_survives_an_app_restart_on_sqlite(
    make_app: AppFactory, sqlite_url: str
) -> None:
    async with make_app(storage=sqlite_url):
        await TsAccount.ref("alice").deposit(10)
        await TsAccount.ref("alice").deposit(5)
        await TsAccount.ref("bob").deposit(1)
    async with make_app(storage=sqlite_url):
        assert await TsAccount.ref("alice").balance() == 15
        assert await TsAccount.ref("alice").history() == [10, 5]
        assert await TsAccount.ref("bob").balance() == 1
        assert await TsAccount.ref("carol").balance() == 0
        assert await TsAccount.ref("alice").deposit(1) == 16  # versions carried over too


async def test_unsaved_changes_are_lost_on_deactivation(engine_system: rio.System) -> None:
    ref = TsAccount.ref("u")
    await ref.deposit(1)
    assert await ref.deposit_unsaved(100) == 101
    await engine_system.deactivate(TsAccount, "u")
    assert await ref.balance() == 1


async def test_replacing_the_state_object(sqlite_system: rio.System) -> None:
    ref = TsAccount.ref("r")
    await ref.deposit(1)
    await ref.replace(42)
    await sqlite_system.deactivate(TsAccount, "r")
    assert await ref.balance() == 42
    assert await ref.history() == []


async def test_save_on_deactivate(sqlite_system: rio.System) -> None:
    ref = TsAutoSaved.ref("s")
    await ref.add(2)
    await ref.add(3)
    assert await stored(sqlite_system, TsAutoSaved, "s") is None  # not saved yet
    await sqlite_system.deactivate(TsAutoSaved, "s")
    assert await stored(sqlite_system, TsAutoSaved, "s") == TsAccountState(5)
    assert await ref.balance() == 5


async def test_a_conflicting_save_on_deactivate_is_logged_and_overwrites_nothing(
    sqlite_system: rio.System, logs: list[str]
) -> None:
    ref = TsAutoSaved.ref("late")
    await ref.add(1)
    await storage(sqlite_system).save("TsAutoSaved", "late", TsAccountState(50), TsAccountState, 0)
    assert await sqlite_system.deactivate(TsAutoSaved, "late") is True
    assert await stored(sqlite_system, TsAutoSaved, "late") == TsAccountState(50)
    assert any("saving TsAutoSaved/late on deactivation failed" in line for line in logs)
    assert await ref.balance() == 50


async def test_a_save_on_deactivate_that_fails_at_stop_is_a_stop_problem(
    make_app: AppFactory, sqlite_url: str
) -> None:
    # Its state is lost with the process: `rio run` must exit 1, not 0.
    app = make_app(storage=sqlite_url)
    async with app:
        with pytest.raises(rio.StateEncodeError):
            await TsAutoSaved.ref("lost").add_and_save_wrong(1)
    assert len(app.stop_problems) == 1
    assert "saving TsAutoSaved/lost on deactivation failed" in app.stop_problems[0]


async def test_save_on_deactivate_at_app_stop(make_app: AppFactory, sqlite_url: str) -> None:
    async with make_app(storage=sqlite_url):
        await TsAutoSaved.ref("stop").add(9)
    async with make_app(storage=sqlite_url):
        assert await TsAutoSaved.ref("stop").balance() == 9


async def test_a_state_that_would_not_load_back_is_not_saved(engine_system: rio.System) -> None:
    # msgspec would encode a str in a list[int] field; stored, it would fail every
    # later activation of the object. The save is refused instead, naming the field.
    ref = TsAccount.ref("wrong")
    await ref.deposit(1)
    with pytest.raises(rio.StateEncodeError) as info:
        await ref.deposit_wrong(5)
    message = str(info.value)
    assert "TsAccount/wrong: the state cannot be saved" in message
    assert "$.history[1]" in message
    assert await stored(engine_system, TsAccount, "wrong") == TsAccountState(1, [1])
    # As after any failed save, the change stays in memory (nothing is rolled back)
    # until the activation goes; the next activation loads what was stored.
    assert await ref.balance() == 6
    await engine_system.deactivate(TsAccount, "wrong")
    assert await ref.balance() == 1
    assert await ref.deposit(2) == 3


async def test_save_on_deactivate_writes_no_state_that_would_not_load_back(
    sqlite_system: rio.System, logs: list[str]
) -> None:
    ref = TsAutoSaved.ref("failed")
    await ref.add(1)
    with pytest.raises(rio.StateEncodeError):
        await ref.add_and_save_wrong(10)
    assert await sqlite_system.deactivate(TsAutoSaved, "failed") is True
    assert await stored(sqlite_system, TsAutoSaved, "failed") is None
    assert any("saving TsAutoSaved/failed on deactivation failed" in line for line in logs)
    assert await ref.balance() == 0  # loads fine: nothing bad was stored


async def test_clear_state(system: rio.System) -> None:
    ref = TsAccount.ref("c")
    await ref.deposit(8)
    await ref.close()
    assert await ref.balance() == 0  # reset in memory at once
    assert await stored(system, TsAccount, "c") is None
    await system.deactivate(TsAccount, "c")
    assert await ref.balance() == 0
    assert await ref.deposit(2) == 2  # a fresh write after a clear works


async def test_clear_state_of_something_never_saved(system: rio.System) -> None:
    await TsAccount.ref("never").close()
    assert await TsAccount.ref("never").deposit(1) == 1


async def test_overlapping_saves_of_one_activation_do_not_conflict(
    sqlite_system: rio.System,
) -> None:
    ref = TsBurst.ref("burst")
    await asyncio.gather(*(ref.add(1) for _ in range(20)))
    found = await storage(sqlite_system).load("TsBurst", "burst", TsAccountState)
    assert found is not None
    assert found.value.balance == 20
    assert found.version == 20


async def test_save_and_clear_need_a_state_type(system: rio.System) -> None:
    with pytest.raises(rio.RegistrationError, match="TsStateless declares no state type"):
        await TsStateless.ref("x").try_save()
    with pytest.raises(rio.RegistrationError, match="TsStateless declares no state type"):
        await TsStateless.ref("x").try_clear()
    # Reading self.state says the same, not "'TsStateless' object has no attribute".
    with pytest.raises(rio.RemoteError, match=r"TsStateless\.state: TsStateless declares no state"):
        await TsStateless.ref("x").read_state()


# -- optimistic concurrency --------------------------------------------------------


async def test_write_behind_the_actors_back_is_a_conflict(engine_system: rio.System) -> None:
    system = engine_system
    ref = TsAccount.ref("raced")
    await ref.deposit(1)  # stored version 1
    # Another writer (a stale node, another process) stores version 2.
    await storage(system).save("TsAccount", "raced", TsAccountState(100, [100]), TsAccountState, 1)
    with pytest.raises(rio.StateConflict) as info:
        await ref.deposit(1)
    assert "TsAccount/raced" in str(info.value)
    assert "stored version is 2" in str(info.value)
    # The write did not overwrite the newer state...
    assert await stored(system, TsAccount, "raced") == TsAccountState(100, [100])
    # ...and the stale activation is gone: the next call loads the newer state.
    assert await ref.balance() == 100
    assert await ref.deposit(1) == 101


async def test_calls_queued_behind_a_conflict_see_the_newer_state(
    system: rio.System, probe: Probe
) -> None:
    ref = TsAccount.ref("queued-raced")
    await ref.deposit(1)
    held = ref.hold()
    conflicting = ref.deposit(1)
    after = ref.balance()  # queued on the activation that is about to go stale
    await storage(system).save(
        "TsAccount", "queued-raced", TsAccountState(100), TsAccountState, 1
    )
    probe.open("hold")
    await held
    with pytest.raises(rio.StateConflict):
        await conflicting
    assert await after == 100


async def test_clear_state_conflict(system: rio.System) -> None:
    ref = TsAccount.ref("clear-raced")
    await ref.deposit(1)
    await storage(system).save("TsAccount", "clear-raced", TsAccountState(7), TsAccountState, 1)
    with pytest.raises(rio.StateConflict):
        await ref.close()
    assert await stored(system, TsAccount, "clear-raced") == TsAccountState(7)
    assert await ref.balance() == 7


async def test_two_apps_racing_on_one_file(make_app: AppFactory, sqlite_url: str) -> None:
    # Two activations of one object (two apps that both believe they own it).
    first, second = make_app(storage=sqlite_url), make_app(storage=sqlite_url)
    one = await first.start()
    try:
        two = await second.start()
        try:
            a = one.ref(TsAccount, "shared")
            b = two.ref(TsAccount, "shared")
            assert await a.balance() == 0
            assert await b.balance() == 0
            assert await a.deposit(5) == 5
            with pytest.raises(rio.StateConflict):
                await b.deposit(7)
            assert await b.balance() == 5  # reloaded
            assert await b.deposit(7) == 12
        finally:
            await second.stop()
    finally:
        await first.stop()


async def test_a_state_that_no_longer_decodes_fails_activation(system: rio.System) -> None:
    await storage(system).save("TsDecodes", "d", TsOtherShape("lots"), TsOtherShape, 0)
    with pytest.raises(rio.ActivationFailed) as info:
        await TsDecodes.ref("d").balance()
    message = str(info.value)
    assert "activating TsDecodes/d failed in loading state" in message
    assert "StateDecodeError" in message
    assert "$.balance" in message
    assert is_cause(info.value, rio.StateDecodeError), repr(info.value.__cause__)
    assert not await is_active(system, TsDecodes, "d")
    # The stored value is left as it was.
    found = await storage(system).load("TsDecodes", "d", TsOtherShape)
    assert found is not None
    assert found.value == TsOtherShape("lots")


def test_memory_storage_can_be_passed_as_an_object() -> None:
    storage = MemoryStorage()
    assert rio.App("x", storage=storage).make_storage() is storage


async def test_connections_opening_a_new_sqlite_file_at_once(tmp_path: Path) -> None:
    # What the workers of a pool do when they start on a new file (each one switches it
    # to WAL); a race, so tried a number of times.
    for attempt in range(50):
        path = tmp_path / f"race-{attempt}.db"
        stores = [SQLiteStorage(str(path)) for _ in range(4)]
        opened = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
        for store, result in zip(stores, opened, strict=True):
            if result is None:
                await store.close()
        failures = [r for r in opened if r is not None]
        assert failures == [], f"attempt {attempt}: {failures[0]!r}"
