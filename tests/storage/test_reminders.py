"""The reminder part of the StateStorage contract, on every engine."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import rio
from rio.core.reminders import Reminders
from rio.storage import storage_from_url
from rio.storage.base import StoredReminder

from .conftest import Backend, OpenStorage

T0 = 1_700_000_000.0  # reminder times are seconds since the epoch


async def test_upsert_list_and_delete(open_storage: OpenStorage) -> None:
    s = await open_storage()
    assert await s.list_reminders("Clock", "a") == []
    await s.upsert_reminder("Clock", "a", "tick", 5.0, T0 + 5)
    await s.upsert_reminder("Clock", "a", "alarm", 0.25, T0 + 1)
    await s.upsert_reminder("Clock", "b", "tick", 60.0, T0 + 60)
    assert await s.list_reminders("Clock", "a") == [
        StoredReminder("Clock", "a", "alarm", 0.25, T0 + 1),
        StoredReminder("Clock", "a", "tick", 5.0, T0 + 5),
    ]
    # Registering a name again replaces its period and due time.
    await s.upsert_reminder("Clock", "a", "tick", 7.5, T0 + 9)
    assert await s.list_reminders("Clock", "a") == [
        StoredReminder("Clock", "a", "alarm", 0.25, T0 + 1),
        StoredReminder("Clock", "a", "tick", 7.5, T0 + 9),
    ]
    assert await s.delete_reminder("Clock", "a", "tick") is True
    assert await s.delete_reminder("Clock", "a", "tick") is False
    assert await s.delete_reminder("Clock", "nobody", "tick") is False
    assert [r.name for r in await s.list_reminders("Clock", "a")] == ["alarm"]
    assert [r.name for r in await s.list_reminders("Clock", "b")] == ["tick"]


async def test_times_are_kept_to_the_millisecond(open_storage: OpenStorage) -> None:
    s = await open_storage()
    await s.upsert_reminder("Clock", "a", "tick", 0.05, T0 + 1.23456)
    (r,) = await s.list_reminders("Clock", "a")
    assert r.period == 0.05
    assert r.next_due == T0 + 1.235
    # A due time read back is the one a compare-and-set expects.
    assert await s.advance_reminder("Clock", "a", "tick", r.next_due, T0 + 2) is True


async def test_odd_keys_stay_apart(open_storage: OpenStorage) -> None:
    s = await open_storage()
    keys = [("a:b", "c", "n"), ("a", "b:c", "n"), ("a", "b", "c:n"), ("Zé", "ü/1", "név ✓")]
    for i, (t, o, n) in enumerate(keys):
        await s.upsert_reminder(t, o, n, 1.0 + i, T0 + i)
    for i, (t, o, n) in enumerate(keys):
        assert await s.list_reminders(t, o) == [StoredReminder(t, o, n, 1.0 + i, T0 + i)]
    due = await s.due_reminders(T0 + 10, 100)
    assert due == [StoredReminder(t, o, n, 1.0 + i, T0 + i) for i, (t, o, n) in enumerate(keys)]


async def test_due_returns_the_earliest_up_to_the_limit(open_storage: OpenStorage) -> None:
    s = await open_storage()
    for i in range(10):
        await s.upsert_reminder("Clock", f"o{i}", "tick", 1.0, T0 + 10 - i)
    assert await s.due_reminders(T0, 100) == []
    due = await s.due_reminders(T0 + 5, 100)
    assert [r.object_id for r in due] == ["o9", "o8", "o7", "o6", "o5"]
    assert [r.next_due for r in due] == [T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 5]
    assert [r.object_id for r in await s.due_reminders(T0 + 100, 3)] == ["o9", "o8", "o7"]


async def test_advance_is_a_compare_and_set(open_storage: OpenStorage) -> None:
    s = await open_storage()
    await s.upsert_reminder("Clock", "a", "tick", 1.0, T0)
    assert await s.advance_reminder("Clock", "a", "tick", T0 + 1, T0 + 2) is False
    assert await s.advance_reminder("Clock", "a", "tick", T0, T0 + 1) is True
    assert await s.advance_reminder("Clock", "a", "tick", T0, T0 + 1) is False  # stale
    assert (await s.list_reminders("Clock", "a"))[0].next_due == T0 + 1
    assert await s.advance_reminder("Clock", "a", "tick", T0 + 1, T0 + 1) is True  # unchanged
    assert await s.advance_reminder("Clock", "a", "nothing", T0, T0 + 1) is False
    assert await s.due_reminders(T0 + 0.5, 10) == []
    await s.delete_reminder("Clock", "a", "tick")
    assert await s.advance_reminder("Clock", "a", "tick", T0 + 1, T0 + 2) is False
    assert await s.list_reminders("Clock", "a") == []


async def test_racing_pollers_each_take_a_firing_once(
    backend: Backend, open_storage: OpenStorage
) -> None:
    """Pollers with their own connections race for every firing: one wins each."""
    pollers = [await open_storage() for _ in range(3)]
    if backend.name == "memory":
        pollers = [pollers[0]] * 3  # one process: the same instance
    await pollers[0].upsert_reminder("Clock", "a", "tick", 1.0, T0)
    due = T0
    for _ in range(20):
        wins = await asyncio.gather(
            *(p.advance_reminder("Clock", "a", "tick", due, due + 1) for p in pollers)
        )
        assert sorted(wins) == [False, False, True]
        due += 1
    assert (await pollers[1].list_reminders("Clock", "a"))[0].next_due == due


async def test_reminders_persist_and_prefixes_keep_them_apart(
    backend: Backend, open_storage: OpenStorage, prefix: str
) -> None:
    s = await open_storage()
    await s.upsert_reminder("Clock", "a", "tick", 2.0, T0)
    if backend.name != "memory":
        again = storage_from_url(backend.url(prefix))
        await again.open()
        try:
            assert await again.list_reminders("Clock", "a") == [
                StoredReminder("Clock", "a", "tick", 2.0, T0)
            ]
        finally:
            await again.close()
    other_prefix = backend.new_prefix()
    try:
        other = await open_storage(other_prefix)
        assert await other.list_reminders("Clock", "a") == []
        assert await other.due_reminders(T0 + 1, 10) == []
    finally:
        await backend.drop(other_prefix)


class RaceClock(rio.Actor):
    async def receive_reminder(self, name: str) -> None:
        """Never runs: the pollers below deliver to a recorder."""


class Recorder:
    """Stands for a system: records each delivery and answers it at once."""

    def __init__(self, enough: int) -> None:
        self.calls: list[tuple[tuple[str, str], str]] = []
        self.enough = enough
        self.got_enough = asyncio.Event()

    def call(self, key: tuple[str, str], handler: Any, args: Any, kwargs: Any, timeout: Any) -> Any:
        self.calls.append((key, args[0]))
        if len(self.calls) >= self.enough:
            self.got_enough.set()
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


async def test_racing_pollers_deliver_each_firing_once(
    backend: Backend, open_storage: OpenStorage
) -> None:
    """Two Reminders services on one storage: every firing is claimed and delivered once."""
    storages = [await open_storage(), await open_storage()]
    claims: list[tuple[tuple[str, str, str], float]] = []
    lost: list[tuple[tuple[str, str, str], float]] = []  # claims the other poller won
    for s in {id(s): s for s in storages}.values():  # memory: one instance, spied once
        advance = s.advance_reminder

        async def spy(t: str, i: str, n: str, expected: float, new: float, advance=advance) -> bool:
            won = await advance(t, i, n, expected, new)
            if new > expected + 3:  # a claim moves it to the end of its lease
                (claims if won else lost).append(((t, i, n), expected))
            return won

        s.advance_reminder = spy  # type: ignore[method-assign]
    now = time.time()
    for i in range(3):
        await storages[0].upsert_reminder("RaceClock", f"c{i}", "tick", 0.1, now)
    recorder = Recorder(enough=18)
    pollers = [Reminders(s, recorder, poll=0.02, timeout=5.0, name="p") for s in storages]  # type: ignore[arg-type]
    for p in pollers:
        p.start()
    try:
        async with asyncio.timeout(10):
            await recorder.got_enough.wait()
    finally:
        for p in pollers:
            await p.stop()
    assert len(recorder.calls) >= 18
    assert len(claims) == len(set(claims)), "a firing was claimed twice"
    assert lost, "the pollers never raced for a firing"  # they poll in step: most are raced
    assert set(lost) <= set(claims)
    assert len(recorder.calls) == len(claims) == sum(p.delivered for p in pollers)
    for i in range(3):
        dues = [due for slot, due in claims if slot == ("RaceClock", f"c{i}", "tick")]
        assert dues == sorted(dues)
        assert [(("RaceClock", f"c{i}"), "tick")] * len(dues) == [
            c for c in recorder.calls if c[0] == ("RaceClock", f"c{i}")
        ]


async def test_stop_ends_a_poller_whose_storage_swallows_the_cancel() -> None:
    # redis-py's commands go through asyncio.wait_for, which on Python 3.11 can
    # swallow a cancellation that arrives as the command completes: the poller went
    # on to wait for its next poll, and App.stop() waited for it forever.
    from rio.storage.memory import MemoryStorage

    class Swallowing(MemoryStorage):
        async def due_reminders(self, now: float, limit: int) -> list[Any]:
            # Cancelled, it returns anyway: as wait_for does when the inner call
            # finished meanwhile.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)
            return []

    poller = Reminders(Swallowing(), Recorder(enough=1), poll=0.05, name="p")  # type: ignore[arg-type]
    poller.start()
    await asyncio.sleep(0)  # the poller is inside due_reminders
    async with asyncio.timeout(5):
        await poller.stop(wait=1.0)
    assert not poller.running
