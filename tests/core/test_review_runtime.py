"""Regression tests from a review of the in-process runtime (one per bug found).

Each runs an in-process app (``workers=0``): the runtime under test is the one every
worker runs too.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest
from waiting import eventually

import rio


class RvClock(rio.Actor, idle_ttl=None, reentrant=True):
    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.ticks = 0

    async def start(self, interval: float, tick_seconds: float) -> None:
        self.tick_seconds = tick_seconds
        self.start_timer(self.tick, interval, name="t")

    async def tick(self) -> None:
        self.ticks += 1
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(self.tick_seconds)
        self.running -= 1

    async def stats(self) -> tuple[int, int]:
        return self.ticks, self.most


async def test_a_tick_longer_than_the_call_timeout_is_not_overlapped_by_the_next() -> None:
    async with rio.App("rv-tick", storage="memory://", workers=0, default_timeout=0.05) as s:
        await s.ref(RvClock, "c").start(0.01, 0.1)

        async def three_ticks() -> bool:
            return (await s.ref(RvClock, "c").stats())[0] >= 3

        await eventually(three_ticks)
        assert (await s.ref(RvClock, "c").stats())[1] == 1  # one tick at a time


beats: list[str] = []


class RvHeart(rio.Actor, idle_ttl=0.2):
    async def start(self) -> None:
        self.start_timer(self.beat, 0.4, name="beat", keep_alive=True)

    async def beat(self) -> None:
        beats.append(self.id)


async def test_a_keep_alive_timer_slower_than_the_idle_ttl_keeps_its_actor_active() -> None:
    beats.clear()
    async with rio.App("rv-heart", storage="memory://", workers=0) as s:
        await s.ref(RvHeart, "h").start()
        # Nothing calls it meanwhile (a call would count as activity): only the timer
        # keeps it; deactivated after 0.2 s, it would never beat.
        await eventually(lambda: len(beats) >= 2, what="two beats")
        assert s.is_active(RvHeart, "h")


class RvLedger(rio.Actor, idle_ttl=None):
    def __init__(self) -> None:
        self.entries: list[int] = []

    async def add(self, x: int) -> None:
        self.entries.append(x)

    async def list(self) -> list[int]:
        return self.entries


class RvJob(rio.Actor, idle_ttl=None):
    async def job(self) -> None:
        await asyncio.sleep(0.2)  # past the caller's deadline
        try:
            await RvLedger.ref("l").add(1)  # this call's deadline has passed
        except rio.RioError as e:
            self.late = type(e).__name__
            raise

    async def outcome(self) -> str:
        return self.late  # queued behind job(): answered once it finished


async def test_a_call_whose_deadline_passed_does_not_run_even_on_an_idle_target() -> None:
    async with rio.App("rv-late", storage="memory://", workers=0) as s:
        with pytest.raises(rio.CallTimeout):
            await s.ref(RvJob, "j").with_timeout(0.05).job()
        assert await s.ref(RvJob, "j").outcome() == "CallTimeout"
        assert await s.ref(RvLedger, "l").list() == []


class RvSlow(rio.Actor, idle_ttl=0.6):
    async def work(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def test_idle_time_counts_from_the_end_of_a_turn() -> None:
    async with rio.App("rv-idle", storage="memory://", workers=0) as s:
        await s.ref(RvSlow, "w").work(0.8)  # longer than idle_ttl
        await asyncio.sleep(0.3)  # two sweeps later, still within idle_ttl of the end
        assert s.is_active(RvSlow, "w")
        await eventually(lambda: not s.is_active(RvSlow, "w"), what="deactivated when idle")


class RvCache(rio.Actor, idle_ttl=None):
    async def refresh_later(self) -> None:
        await asyncio.sleep(0)
        self.task = asyncio.create_task(self._later())  # after the turn's first await

    async def _later(self) -> str:
        await asyncio.sleep(0.05)  # the turn that created it is over by then
        return await RvCache.ref(self.id).ping()

    async def ping(self) -> str:
        return "pong"

    async def task_done(self) -> bool:
        return self.task.done()

    async def outcome(self) -> str:
        return self.task.result()


async def test_a_task_a_turn_created_calls_its_own_actor_after_the_turn() -> None:
    async with rio.App("rv-task", storage="memory://", workers=0) as s:
        await s.ref(RvCache, "c").refresh_later()
        await eventually(s.ref(RvCache, "c").task_done)
        assert await s.ref(RvCache, "c").outcome() == "pong"  # not a false Deadlock


class RvFetch(rio.Actor, idle_ttl=None):
    async def cancelled_later(self) -> str:
        t = asyncio.ensure_future(asyncio.sleep(1))
        await asyncio.sleep(0)
        t.cancel()
        await t  # CancelledError escapes the handler after it suspended
        return "x"

    async def cancelled_at_once(self) -> str:
        fut = asyncio.get_running_loop().create_future()
        fut.cancel()
        await fut  # raises without suspending
        return "x"


@pytest.mark.parametrize("method", ["cancelled_later", "cancelled_at_once"])
async def test_a_handlers_cancelled_error_is_its_calls_error(method: str) -> None:
    async with rio.App("rv-cancel", storage="memory://", workers=0) as s:
        with pytest.raises(rio.RemoteError, match=rf"RvFetch/f>\.{method}\(\) was cancelled"):
            await getattr(s.ref(RvFetch, "f"), method)()
        assert s.running
        # The caller's own task was not cancelled: it goes on.
        with pytest.raises(rio.RemoteError, match=r"asyncio\.CancelledError"):
            await getattr(s.ref(RvFetch, "f"), method)()


fired: list[float] = []


class RvNightly(rio.Actor, idle_ttl=None):
    async def arm(self) -> None:
        await self.register_reminder("nightly", 30.0, due=0.05)

    async def receive_reminder(self, name: str) -> None:
        fired.append(asyncio.get_running_loop().time())
        await RvSlow.ref("s").with_timeout(0.01).work(1.0)  # raises rio.CallTimeout


async def test_a_reminder_whose_handler_raises_a_rio_error_keeps_its_schedule() -> None:
    fired.clear()
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{Path(d) / 's.db'}"
        app = rio.App("rv-remind", storage=url, workers=0, reminder_poll=0.05)
        async with app as s:
            await s.ref(RvNightly, "n").arm()
            await eventually(lambda: fired, what="the first firing")
            await asyncio.sleep(1.0)  # a retry would have come within 0.1-0.8 s
            assert len(fired) == 1


class RvBroken(rio.Actor, idle_ttl=None):
    async def start(self) -> None:
        self.ticks = 0
        self.start_timer(self.tick, 0.001, name="broken")

    async def tick(self) -> None:
        self.ticks += 1
        if self.ticks <= 9:  # nine failures in a row, then it recovers
            raise ValueError("tick broke")

    async def count(self) -> int:
        return self.ticks


async def test_a_timer_failing_every_tick_logs_its_traceback_once() -> None:
    from loguru import logger

    records: list[dict[str, object]] = []
    sink = logger.add(lambda m: records.append(m.record), level="ERROR")
    try:
        async with rio.App("rv-broken", storage="memory://", workers=0) as s:
            await s.ref(RvBroken, "b").start()

            async def recovered() -> bool:
                return await s.ref(RvBroken, "b").count() >= 12

            await eventually(recovered)
    finally:
        logger.remove(sink)
    said = [r for r in records if "timer broken of RvBroken/b raised" in str(r["message"])]
    assert len(said) == 4  # the 1st, 2nd, 4th and 8th failure in a row
    assert [r["exception"] is not None for r in said] == [True, False, False, False]
    assert "8 ticks in a row" in str(said[-1]["message"])


class RvHolderState(msgspec.Struct):
    count: int = 0
    extra: Any = None


class RvHolder(rio.Actor[RvHolderState], idle_ttl=None):
    async def keep(self, lock: bool) -> int:
        self.state.count += 1
        self.state.extra = threading.Lock() if lock else None
        await self.save()
        return self.state.count


async def test_a_state_that_cannot_be_stored_names_its_actor_and_field() -> None:
    async with rio.App("rv-holder", storage="memory://", workers=0) as s:
        assert await s.ref(RvHolder, "h").keep(False) == 1
        with pytest.raises(rio.StateEncodeError, match=r"RvHolder/h: .* field 'extra' holds"):
            await s.ref(RvHolder, "h").keep(True)
        # Nothing was written; once the field holds a storable value, saves work again.
        assert await s.ref(RvHolder, "h").keep(False) == 3


def test_a_ref_of_rio_actor_itself_says_to_use_an_actor_class() -> None:
    with pytest.raises(rio.UnknownActorType, match=r"Actor\.ref\(\): rio\.Actor has no actors"):
        rio.Actor.ref("x")


async def test_an_actor_made_directly_says_to_use_a_ref() -> None:
    made = RvHolder()  # not activated by rio
    with pytest.raises(
        AttributeError, match=r"made directly \(RvHolder\(\)\).*RvHolder\.ref\(id\)"
    ):
        await made.keep(False)
    assert not hasattr(made, "anything")  # still an AttributeError for hasattr


class RvStateless(rio.Actor):
    async def peek(self) -> str:
        try:
            return repr(self.state)
        except AttributeError as e:
            return str(e)


class RvCountState(msgspec.Struct):
    n: int = 0


class RvStatefulChild(RvStateless, rio.Actor[RvCountState]):
    async def bump(self) -> int:
        self.state.n += 1
        return self.state.n


async def test_state_of_a_stateless_type_says_why_and_a_stateful_child_has_one() -> None:
    async with rio.App("rv-stateless", storage="memory://", workers=0) as s:
        said = await s.ref(RvStateless, "a").peek()
        assert said.startswith("RvStateless.state: RvStateless declares no state type")
        assert await s.ref(RvStatefulChild, "b").bump() == 1
        assert await s.ref(RvStatefulChild, "b").peek() == "RvCountState(n=1)"


noted: list[str] = []


class RvNoter(rio.Actor, idle_ttl=None):
    async def note(self, text: str) -> None:
        noted.append(text)


class RvLeaver(rio.Actor, idle_ttl=None):
    async def hello(self) -> None:
        pass

    async def on_deactivate(self) -> None:
        await RvNoter.ref("log").note(f"bye {self.id}")


async def test_on_deactivate_can_call_other_actors_while_the_app_stops() -> None:
    noted.clear()
    async with rio.App("rv-leave", storage="memory://", workers=0) as s:
        await s.ref(RvLeaver, "w1").hello()
    assert noted == ["bye w1"]


class RvSlowNightly(rio.Actor, idle_ttl=None):
    async def arm(self) -> None:
        await self.register_reminder("nightly", 3600.0, due=0.05)

    async def receive_reminder(self, name: str) -> None:
        fired.append(asyncio.get_running_loop().time())
        if len(fired) == 1:
            await asyncio.sleep(0.5)  # past the firing's own deadline


async def test_a_reminder_firing_that_outlives_its_own_deadline_is_retried_soon() -> None:
    fired.clear()
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{Path(d) / 's.db'}"
        app = rio.App("rv-remind2", storage=url, workers=0, reminder_poll=0.05, default_timeout=0.2)
        async with app as s:
            await s.ref(RvSlowNightly, "n").arm()
            await eventually(lambda: len(fired) >= 2, what="a retry of the timed-out firing")


def test_an_app_whose_storage_driver_is_missing_still_builds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import rio.storage as storage

    monkeypatch.delitem(storage._ENGINES, "postgresql", raising=False)
    monkeypatch.setitem(storage._LAZY, "postgresql", ("rio_no_such_driver", "postgres"))
    app = rio.App("rv-driver", storage="postgresql://db/prod")  # --storage may replace it
    app.configure(storage="memory://")
    with pytest.raises(rio.ConfigError, match="needs a driver that is not installed"):
        app.configure(storage="postgresql://db/prod")


class RvEarly(rio.Actor[RvCountState]):
    def __init__(self) -> None:
        try:
            self.early = repr(self.state)
        except AttributeError as e:
            self.early = str(e)

    async def said(self) -> str:
        return self.early


async def test_state_read_before_it_is_loaded_says_so_not_that_the_type_has_none() -> None:
    async with rio.App("rv-early", storage="memory://", workers=0) as s:
        said = await s.ref(RvEarly, "e").said()
        assert said.startswith("RvEarly.state is not set: it is loaded after __init__")
