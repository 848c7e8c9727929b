"""Pub/sub: objects' own streams and topics, on every runtime path."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import msgspec
import pytest
from waiting import eventually

import rio

from .helpers import Probe, is_active, placed_id, probe, stream_stats


class Move(msgspec.Struct, frozen=True):
    table: str
    n: int


class SsTable(rio.Actor, idle_ttl=None):
    async def play(self, n: int) -> None:
        self.publish(Move(self.id, n))

    async def burst(self, count: int) -> int:
        for n in range(count):
            self.publish(Move(self.id, n))
        return count

    async def shout(self, topic: str, count: int) -> None:
        for n in range(count):
            self.publish(Move(self.id, n), topic=topic)

    async def from_thread(self, count: int) -> None:
        def loop(stop: threading.Event) -> None:
            for n in range(count):
                self.publish(Move(self.id, n))

        self.start_thread(loop)

    async def ping(self) -> None:
        pass


class SsPlayer(rio.Actor, idle_ttl=None):
    """Subscribes from inside a worker, in a background task, and reports to the probe."""

    async def follow(self, table: str, count: int) -> None:
        ready = asyncio.Event()

        async def run() -> None:
            got = []
            async with SsTable.ref(table).subscribe() as moves:
                ready.set()
                async for move in moves:
                    got.append(move.n)
                    if len(got) == count:
                        break
            probe().hit("followed", self.id, got)

        self.spawn(run())
        await ready.wait()

    async def follow_topic(self, topic: str) -> None:
        ready = asyncio.Event()

        async def run() -> None:
            async with self.system.subscribe(topic) as moves:
                ready.set()
                async for move in moves:
                    probe().hit("heard", self.id, move.table, move.n)

        self.spawn(run())
        await ready.wait()


async def take(sub: rio.Subscription[Any], count: int, within: float = 5.0) -> list[Any]:
    """The next ``count`` items of ``sub`` (events and notices)."""
    out = []
    async with asyncio.timeout(within):
        async for item in sub:
            out.append(item)
            if len(out) == count:
                break
    return out


async def test_an_object_stream_reaches_a_subscriber(system: rio.System) -> None:
    table = SsTable.ref("t1")
    async with table.subscribe() as moves:
        for n in range(3):
            await table.play(n)
        got = await take(moves, 3)
    assert got == [Move("t1", 0), Move("t1", 1), Move("t1", 2)]  # the class, rebuilt


async def test_events_keep_the_publishers_order(system: rio.System) -> None:
    table = SsTable.ref("t2")
    async with table.subscribe(buffer=5000) as moves:
        await table.burst(3000)
        got = await take(moves, 3000)
    assert [m.n for m in got] == list(range(3000))


async def test_a_topic_hears_publishers_in_every_worker(system: rio.System) -> None:
    a = "t3"
    b = placed_id(system, (SsTable, a), SsTable, same=False)
    async with system.subscribe("news", buffer=5000) as news:
        await asyncio.gather(SsTable.ref(a).shout("news", 500), SsTable.ref(b).shout("news", 500))
        got = await take(news, 1000)
    for table in (a, b):
        assert [m.n for m in got if m.table == table] == list(range(500))


async def test_the_driver_publishes_on_a_topic(system: rio.System) -> None:
    async with system.subscribe("notes") as notes:
        system.publish({"text": "hello"}, topic="notes")
        assert await take(notes, 1) == [{"text": "hello"}]


async def test_an_actor_subscribes_in_a_background_task(system: rio.System, probe: Probe) -> None:
    table = "t4"
    player = placed_id(system, (SsTable, table), SsPlayer, same=False)
    await SsPlayer.ref(player).follow(table, 3)
    for n in range(3):
        await SsTable.ref(table).play(n)
    await probe.wait("followed")
    assert probe.data("followed") == [(player, [0, 1, 2])]


async def test_an_actor_subscribes_to_a_topic(system: rio.System, probe: Probe) -> None:
    await SsPlayer.ref("p1").follow_topic("scores")
    await SsTable.ref("t5").shout("scores", 2)
    await probe.wait("heard", count=2)
    assert probe.data("heard") == [("p1", "t5", 0), ("p1", "t5", 1)]


async def test_a_slow_subscriber_is_told_what_it_missed(system: rio.System) -> None:
    table = SsTable.ref("t6")
    async with table.subscribe(buffer=10) as moves:
        # The publisher is not held up by a subscriber that reads nothing meanwhile.
        assert await table.burst(1000) == 1000
        got: list[Any] = []
        async with asyncio.timeout(5):
            async for item in moves:
                got.append(item)
                if isinstance(item, Move) and item.n == 999:
                    break
    notices = [g for g in got if isinstance(g, rio.Lagged)]
    events = [g.n for g in got if isinstance(g, Move)]
    assert notices
    assert all(n.reason == "slow" for n in notices)
    assert sum(n.missed for n in notices) + len(events) == 1000  # nothing silently lost
    assert events == sorted(events)
    assert events[-10:] == list(range(990, 1000))
    assert len(events) <= 10 * len(notices) + 10


async def test_leaving_the_loop_unsubscribes(system: rio.System) -> None:
    table = SsTable.ref("t7")

    async def first() -> Any:
        async for move in table.subscribe():
            return move  # leaves the loop: the subscription goes with it
        return None

    reader = asyncio.ensure_future(first())
    await asyncio.sleep(0)  # subscribed (calls from here travel behind the subscription)
    await table.play(0)
    assert await asyncio.wait_for(reader, 5) == Move("t7", 0)
    sub = table.subscribe()
    await sub
    await table.play(1)
    assert await take(sub, 1) == [Move("t7", 1)]
    del sub
    async with system.subscribe("t7-news") as news:  # registered with every process
        await table.shout("t7-news", 1)
        assert await take(news, 1) == [Move("t7", 0)]

    async def nothing_kept() -> bool:
        return all(s == (0, 0) for s in (await stream_stats(system)).values())

    await eventually(nothing_kept, what="every process freed the stream")


async def test_close_ends_the_iteration(system: rio.System) -> None:
    sub = SsTable.ref("t8").subscribe()

    async def read() -> list[Any]:
        return [item async for item in sub]

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0)
    sub.close()
    assert await asyncio.wait_for(reader, 5) == []
    assert sub.closed


async def test_subscribing_neither_needs_nor_keeps_the_object_active(system: rio.System) -> None:
    table = SsTable.ref("t9")
    async with table.subscribe() as moves:
        assert not await is_active(system, SsTable, "t9")
        await table.play(1)
        await system.deactivate(SsTable, "t9")
        assert not await is_active(system, SsTable, "t9")
        await table.play(2)  # a fresh activation publishes to the same subscription
        assert await take(moves, 2) == [Move("t9", 1), Move("t9", 2)]


async def test_publishing_without_subscribers_keeps_nothing(system: rio.System) -> None:
    await SsTable.ref("t10").burst(100)
    await SsTable.ref("t10").shout("nobody", 100)
    stats = await stream_stats(system)
    assert all(s == (0, 0) for s in stats.values()), stats


async def test_a_thread_publishes(system: rio.System) -> None:
    table = SsTable.ref("t11")
    async with table.subscribe() as moves:
        await table.from_thread(3)
        assert [m.n for m in await take(moves, 3)] == [0, 1, 2]


async def test_a_thread_subscribes(system: rio.System) -> None:
    table = SsTable.ref("t14")
    subscribed = threading.Event()

    def consume() -> list[Any]:
        sub = table.subscribe()  # from a thread: returns once registered
        subscribed.set()
        got = []
        for move in sub:
            got.append(move.n)
            if len(got) == 3:
                break
        sub.close()
        return got

    loop = asyncio.get_running_loop()
    consumer = loop.run_in_executor(None, consume)
    await loop.run_in_executor(None, subscribed.wait, 5)
    for n in range(3):
        await table.play(n)
    assert await asyncio.wait_for(consumer, 5) == [0, 1, 2]


async def test_subscriptions_end_when_the_system_stops(make_app: Any) -> None:
    async with make_app() as system:
        sub = await SsTable.ref("t12").subscribe()
        reader = asyncio.ensure_future(take(sub, 10))
        await asyncio.sleep(0)
    assert await asyncio.wait_for(reader, 5) == []
    assert sub.closed
    with pytest.raises(rio.SystemStopping):
        system.subscribe("late")


async def test_bad_subscriptions_are_refused(system: rio.System) -> None:
    with pytest.raises(ValueError, match="buffer must be a positive number"):
        SsTable.ref("t13").subscribe(buffer=0)
    with pytest.raises(ValueError, match="a topic is a non-empty str"):
        system.subscribe("")
