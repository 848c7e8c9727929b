"""Durable reminders on every runtime path: kept in storage, fired as turns, at least once.

Each test starts its own app with a short ``reminder_poll``, on SQLite by default
(shared by the worker processes and the driver that fires their reminders).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from waiting import eventually

import rio
from rio.storage import storage_from_url
from rio.storage.base import to_ms

from .helpers import AppFactory, Probe, probe

POLL = 0.05
HOUR = 3600.0

Start = Callable[..., AbstractAsyncContextManager[rio.System]]


class RmClock(rio.Actor, idle_ttl=None):
    async def on_activate(self) -> None:
        probe().hit("activated", self.id)

    async def setup(
        self, name: str, period: float, due: float | None = None, then_deactivate: bool = False
    ) -> rio.Reminder:
        self.set_up = True
        reminder = await self.register_reminder(name, period, due=due)
        if then_deactivate:
            self.deactivate()
        return reminder

    async def cancel(self, name: str) -> bool:
        return await self.unregister_reminder(name)

    async def listing(self) -> list[rio.Reminder]:
        return await self.reminders()

    async def bad_period(self, period: float) -> None:
        await self.register_reminder("bad", period)

    async def bad_name(self, name: str) -> None:
        await self.register_reminder(name, 1.0)

    async def receive_reminder(self, name: str) -> None:
        probe().hit(f"fired:{name}", self.id, getattr(self, "set_up", False))


class RmDeaf(rio.Actor):
    """Has reminders (stored by an earlier version of the type) but no receive_reminder."""

    async def setup(self, period: float) -> None:
        storage = self._rio_system.storage
        await storage.upsert_reminder("RmDeaf", self.id, "unheard", period, time.time())
        poller = self._rio_system.reminder_poller  # None in a worker: the driver polls
        if poller is not None:
            poller.wake(time.time())

    async def register(self) -> None:
        await self.register_reminder("unheard", 1.0)

    async def listed(self) -> list[str]:
        return [r.name for r in await self.reminders()]


class RmFaulty(rio.Actor):
    async def setup(self, period: float) -> None:
        await self.register_reminder("faulty", period, due=0)

    async def stop(self) -> bool:
        return await self.unregister_reminder("faulty")

    async def receive_reminder(self, name: str) -> None:
        probe().hit("faulty fired", name)
        raise ValueError("reminder handler broke")


class RmFlaky(rio.Actor):
    """Refuses to activate while the test says so."""

    async def on_activate(self) -> None:
        if probe().is_on("refuse activation"):
            probe().hit("refused", self.id)
            raise RuntimeError("not now")

    async def setup(self) -> None:
        await self.register_reminder("once an hour", HOUR, due=0.1)
        self.deactivate()

    async def receive_reminder(self, name: str) -> None:
        probe().hit("flaky fired", name)


@pytest.fixture
def start(make_app: AppFactory, sqlite_url: str) -> Start:
    """``async with start(storage=...) as system``: an app polling reminders every POLL s."""

    @asynccontextmanager
    async def started(storage: str | None = None, **options: Any) -> AsyncIterator[rio.System]:
        app = make_app(storage=storage or sqlite_url, reminder_poll=POLL, **options)
        async with app as system:
            yield system

    return started


async def test_register_list_replace_and_cancel(start: Start) -> None:
    async with start():
        clock = RmClock.ref("l1")
        before = time.time()
        b = await clock.setup("b", HOUR)
        a = await clock.setup("a", 60.0, 10.0)
        assert (a.name, a.period, b.name, b.period) == ("a", 60.0, "b", HOUR)
        assert before + 10 <= a.next_due < time.time() + 10.01
        assert await clock.listing() == [a, b]  # by name
        replaced = await clock.setup("a", 120.0)
        assert [(r.name, r.period) for r in await clock.listing()] == [("a", 120.0), ("b", HOUR)]
        assert replaced.next_due > a.next_due
        assert await clock.cancel("a") is True
        assert await clock.cancel("a") is False
        assert await clock.cancel("never registered") is False
        assert [r.name for r in await clock.listing()] == ["b"]
        assert await RmClock.ref("l2").listing() == []  # per object
        assert await clock.cancel("b") is True
        assert await clock.listing() == []


async def test_arguments_are_checked(start: Start) -> None:
    async with start():
        clock = RmClock.ref("args")
        for period in (0.0, -1.0, float("inf"), float("nan")):
            with pytest.raises(rio.RemoteError, match="period must be seconds"):
                await clock.bad_period(period)
        with pytest.raises(rio.RemoteError, match="non-empty str"):
            await clock.bad_name("")
        with pytest.raises(rio.RemoteError, match="at most 255 bytes"):
            await clock.bad_name("é" * 200)
        assert await clock.listing() == []


@pytest.mark.parametrize("storage", ["sqlite", "memory"])
async def test_fires_every_period_until_cancelled(start: Start, probe: Probe, storage: str) -> None:
    async with start(storage="memory://" if storage == "memory" else None):
        clock = RmClock.ref("p1")
        await clock.setup("tick", 0.1, 0.0)
        await probe.wait("fired:tick", count=3, within=5.0)
        assert await clock.cancel("tick") is True
        ticks = probe.count("fired:tick")
        # A later reminder of the same object: by the time it fires, a live "tick"
        # would have fired several times; only one already being delivered may land.
        await clock.setup("marker", HOUR, 0.5)
        await probe.wait("fired:marker", within=5.0)
        assert probe.count("fired:tick") <= ticks + 1
        assert [r.name for r in await clock.listing()] == ["marker"]


async def test_fires_on_a_deactivated_object_by_activating_it(start: Start, probe: Probe) -> None:
    async with start():
        await RmClock.ref("d1").setup("wake up", HOUR, 0.3, True)  # deactivates after
        await probe.wait("fired:wake up", within=5.0)
        # A fresh activation got it (the one that registered it had set_up = True).
        assert probe.data("fired:wake up") == [("d1", False)]
        assert probe.count("activated") == 2


async def test_a_type_without_receive_reminder_is_told_once_and_keeps_it(
    start: Start, logs: list[str], sqlite_url: str
) -> None:
    async with start():
        await RmDeaf.ref("x").setup(0.05)
        storage = storage_from_url(sqlite_url)
        await storage.open()
        try:
            (first,) = await storage.list_reminders("RmDeaf", "x")

            async def fired_three_times() -> bool:
                (now,) = await storage.list_reminders("RmDeaf", "x")
                return now.next_due >= first.next_due + 3 * 0.05

            await eventually(fired_three_times, what="three firings")
        finally:
            await storage.close()
    told = [line for line in logs if "has no receive_reminder" in line]
    assert len(told) == 1, logs
    assert "reminder 'unheard' of RmDeaf/x" in told[0]


async def test_a_type_without_receive_reminder_cannot_register_one(start: Start) -> None:
    # It was stored, and the mistake showed only as a warning at each first firing.
    async with start():
        with pytest.raises(rio.UnknownMethod, match="RmDeaf has no receive_reminder"):
            await RmDeaf.ref("y").register()
        assert await RmDeaf.ref("y").listed() == []


async def test_a_raising_receive_reminder_is_logged_and_the_reminder_goes_on(
    start: Start, probe: Probe, logs: list[str]
) -> None:
    async with start():
        await RmFaulty.ref("f").setup(0.05)
        await probe.wait("faulty fired", count=3, within=5.0)
        assert await RmFaulty.ref("f").stop() is True
    raised = [line for line in logs if "raised" in line and "reminder handler broke" in line]
    assert raised, logs
    assert "receive_reminder('faulty') of RmFaulty/f" in raised[0]
    assert "keeps its schedule" in raised[0]


async def test_a_failed_delivery_is_retried_before_the_next_period(
    start: Start, probe: Probe, logs: list[str]
) -> None:
    async with start():
        await RmFlaky.ref("fl").setup()  # hourly, first due in 0.1 s; deactivated
        probe.switch("refuse activation")
        await probe.wait("refused", within=5.0)
        probe.switch("refuse activation", on=False)
        await probe.wait("flaky fired", within=5.0)  # long before the hour is up
        assert probe.data("flaky fired") == ["once an hour"]
    assert any("delivering reminder 'once an hour' to RmFlaky/fl failed" in x for x in logs), logs


async def test_reminders_survive_a_restart_of_the_app(
    start: Start, probe: Probe, sqlite_url: str
) -> None:
    async with start():
        await RmClock.ref("r1").setup("later", HOUR)
    assert probe.count("fired:later") == 0
    # The hour passes while nothing runs.
    storage = storage_from_url(sqlite_url)
    await storage.open()
    due = time.time()
    try:
        (stored,) = await storage.list_reminders("RmClock", "r1")
        assert await storage.advance_reminder("RmClock", "r1", "later", stored.next_due, due)
    finally:
        await storage.close()
    async with start():  # a new app on the same file fires what the old one registered
        await probe.wait("fired:later", within=5.0)
        assert probe.data("fired:later") == [("r1", False)]
        hourly = (to_ms(due) + 3_600_000) / 1000

        async def rescheduled() -> bool:  # the poller writes it after the call answers
            (after,) = await RmClock.ref("r1").listing()
            return after.next_due == hourly

        await eventually(rescheduled, what="next_due back on its hourly schedule")


def test_reminder_names_are_reserved() -> None:
    with pytest.raises(rio.RegistrationError, match="clashes with rio's own 'reminders'"):

        class RmClash(rio.Actor):
            async def reminders(self) -> list[str]:
                return []

    with pytest.raises(rio.RegistrationError, match="receive_reminder must be an `async def"):

        class RmSync(rio.Actor):
            def receive_reminder(self, name: str) -> None:  # type: ignore[override]
                pass


def test_receive_reminder_is_not_a_handler_refs_offer() -> None:
    with pytest.raises(rio.UnknownMethod, match="has no handler 'receive_reminder'"):
        RmClock.ref("x").receive_reminder("tick")
    assert "receive_reminder" not in RmClock._rio_type.handlers
    assert RmClock._rio_type.reminder is not None
    assert RmDeaf._rio_type.reminder is None


def test_reminder_poll_setting(tmp_path: Path) -> None:
    assert rio.App("a").reminder_poll == 1.0
    for bad in (0, -1.0, float("inf"), True, "1"):
        with pytest.raises(rio.ConfigError, match="reminder_poll must be positive seconds"):
            rio.App("a", reminder_poll=bad)  # type: ignore[arg-type]
    toml = tmp_path / "rio.toml"
    toml.write_text('[app]\nname = "t"\nreminder_poll = 0.25\n')
    assert rio.App.from_toml(toml).reminder_poll == 0.25
