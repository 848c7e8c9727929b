"""Pub/sub across cluster nodes, with nodes in this test process (fast).

Each node is an ``App(cluster=..., workers=0)`` in this event loop with its own
listener, so registrations and events really cross TCP. A subscriber (a client, or an
actor on a node) registers each stream with every live member; each member relays
what is published there. tests/cluster/test_processes.py kills a real node with -9.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cluster.inproc import FAST, Nodes, node_launcher
from waiting import eventually

import rio
from rio.cluster.node import ClusterNode
from rio.cluster.streams import StreamEvents, oneway_decoder, send_runs
from rio.local.pool import PoolSystem

SECRET = "stream-secret"


class StTick(msgspec.Struct, frozen=True):
    n: int
    node: str


class StBlob(msgspec.Struct, frozen=True):
    n: int
    data: bytes


def _node_of(actor: rio.Actor[Any]) -> str:
    system = actor._rio_system.system  # the runtime's system: a node, or a worker of one
    if isinstance(system, ClusterNode):
        return system.core.member_id
    link = getattr(system, "link", None)
    assert link is not None
    return str(link.member_id)


class StPub(rio.Actor[None], idle_ttl=None):
    """Publishes on its own stream and on topics; answers with its node's member id."""

    async def emit(self, n: int) -> str:
        node = _node_of(self)
        self.publish(StTick(n, node))
        return node

    async def shout(self, topic: str, first: int, count: int) -> str:
        node = _node_of(self)
        for n in range(first, first + count):
            self.publish(StTick(n, node), topic=topic)
        return node

    async def burst(self, count: int) -> None:
        node = _node_of(self)
        for n in range(count):
            self.publish(StTick(n, node))

    async def blobs(self, count: int, size: int) -> float:
        """One big event per loop pass; returns the seconds publishing took."""
        start = time.perf_counter()
        for n in range(count):
            self.publish(StBlob(n, b"x" * size))
            await asyncio.sleep(0)
        return time.perf_counter() - start


class StWatcher(rio.Actor[None], idle_ttl=None):
    """Subscribes from inside an actor, in a background task."""

    async def on_activate(self) -> None:
        self.got: list[Any] = []

    async def follow(self, pub: str) -> None:
        ready = asyncio.Event()

        # Several nodes share this process: bind the ref to this actor's own node (an
        # unbound ref would use the process's default system, the last one started).
        node = self._rio_system.system

        async def run() -> None:
            async with node.ref(StPub, pub).subscribe() as sub:
                ready.set()
                async for event in sub:
                    self.got.append(event)

        self.spawn(run())
        await ready.wait()

    async def seen(self) -> list[int]:
        return [e.n for e in self.got if isinstance(e, StTick)]

    async def notices(self) -> list[rio.Lagged]:
        return [e for e in self.got if isinstance(e, rio.Lagged)]


@pytest.fixture
def url(tmp_path: Path) -> str:
    """The cluster store: a SQLite file in the test's folder."""
    return f"sqlite:///{tmp_path}/cluster.db"


@pytest.fixture
async def nodes(url: str, tmp_path: Path) -> AsyncIterator[Nodes]:
    """``await nodes(n)``: n started nodes hosting StPub and StWatcher, stopped at teardown."""
    state = f"sqlite:///{tmp_path}/state.db"
    async with node_launcher("st", [StPub, StWatcher], url, state, SECRET) as start:
        yield start


async def take(sub: rio.Subscription[Any], count: int, within: float = 10.0) -> list[Any]:
    """The next ``count`` items of ``sub``."""
    async with asyncio.timeout(within):
        return [await anext(sub) for _ in range(count)]


def ticks(items: list[Any]) -> list[int]:
    return [e.n for e in items if isinstance(e, StTick)]


def relays(ns: list[ClusterNode]) -> list[int]:
    return [n.stats().relays for n in ns]


async def test_a_client_gets_an_objects_events_and_a_topic_from_other_nodes_in_order(
    nodes: Nodes, url: str
) -> None:
    a, b = await nodes(2)
    assert await b.ref(StPub, "p").emit(-1) == b.core.member_id  # placed on b
    async with rio.connect(url, secret=SECRET) as client:
        pub = client.ref(StPub, "p")
        await pub.emit(-1)  # the client learns where it lives (uncached calls may redirect)
        async with pub.subscribe() as own, client.subscribe("news") as news:
            # 1,000 calls in flight: the events come in call order, from b.
            homes = await asyncio.gather(*(pub.emit(i) for i in range(1000)))
            assert set(homes) == {b.core.member_id}
            got = await take(own, 1000)
            assert ticks(got) == list(range(1000))
            # A topic published by an object on b, by a script on a, and by this client.
            await pub.shout("news", 0, 50)
            a.publish(StTick(50, "script"), topic="news")
            client.publish(StTick(51, "client"), topic="news")
            assert ticks(await take(news, 52)) == list(range(52))
            assert own.pending() == 0
        assert client.stats().streams == 0


async def test_an_actor_on_one_node_follows_an_object_on_another(nodes: Nodes, url: str) -> None:
    a, b = await nodes(2)
    await b.ref(StPub, "p").emit(-1)  # on b
    await a.core.link.view.refresh()  # a learns of b (it just joined)
    watcher = a.ref(StWatcher, "w")
    await watcher.follow("p")  # on a: a registers the stream with b
    assert relays([a, b]) == [0, 1]
    await b.ref(StPub, "p").burst(100)
    await eventually(lambda: watcher.seen(), within=10.0)

    async def all_seen() -> bool:
        return await watcher.seen() == list(range(100))

    await eventually(all_seen, within=10.0)
    assert await watcher.notices() == []


async def test_a_subscription_follows_its_object_when_its_node_drains(
    nodes: Nodes, url: str
) -> None:
    a, b, c = await nodes(3)
    await a.ref(StPub, "m").emit(-1)  # on a
    for n in (a, b, c):
        await n.core.link.view.refresh()  # each knows the others (they just joined)
    watcher = c.ref(StWatcher, "w")
    await watcher.follow("m")  # an actor on c follows it too
    async with rio.connect(url, secret=SECRET) as client:
        pub = client.ref(StPub, "m")
        async with pub.subscribe() as sub:
            before = [await pub.emit(i) for i in range(5)]
            assert set(before) == {a.core.member_id}
            await a.stop()  # drains: the object moves at its next call
            after = [await pub.emit(i) for i in range(5, 10)]
            assert a.core.member_id not in after
            got = await take(sub, 10)
            # A clean leave loses nothing: no notice, every event, in order.
            assert ticks(got) == list(range(10)), got
            assert [e.node for e in got] == before + after

    async def followed() -> bool:
        return await watcher.seen() == list(range(10))

    await eventually(followed, within=10.0)
    assert await watcher.notices() == []


async def test_a_subscription_follows_its_object_when_its_node_dies(nodes: Nodes, url: str) -> None:
    ns = await nodes(3)
    victim = ns[0]
    await victim.ref(StPub, "d").emit(-1)
    async with rio.connect(url, secret=SECRET) as client:
        pub = client.ref(StPub, "d")
        async with pub.subscribe() as sub:
            assert await pub.emit(0) == victim.core.member_id
            assert ticks(await take(sub, 1)) == [0]
            # The victim stops answering, as a crashed node would (see test_nodes.py).
            assert victim.core._agent is not None
            assert victim.core.server is not None
            victim.core._agent._on_dead = lambda: None
            await victim.core._agent.stop()
            await victim.core.server.close()
            home = await pub.emit(1)  # waits until the victim is declared dead
            assert home != victim.core.member_id
            # The connection dropped without a goodbye: events may have been lost.
            assert await take(sub, 1) == [rio.Lagged(0, "lost")]
            got = await take(sub, 1)
            assert got == [StTick(1, home)]
            await pub.emit(2)
            assert ticks(await take(sub, 1)) == [2]
    await victim.stop()


async def test_a_node_with_workers_relays_what_they_publish_and_they_subscribe(
    nodes: Nodes, url: str, tmp_path: Path
) -> None:
    (b,) = await nodes(1)
    settings = rio.ClusterSettings(url=url, secret=SECRET, **FAST)  # type: ignore[arg-type]
    pool_app = rio.App(
        "st-pool",
        actors=[StPub, StWatcher],
        storage=f"sqlite:///{tmp_path}/state.db",
        workers=1,
        cluster=settings,
        drain_timeout=5,
    )
    pool = await pool_app.start()
    assert isinstance(pool, PoolSystem)
    assert pool.node is not None
    try:
        await b.core.link.view.refresh()
        member = pool.node.member_id
        # An object in the pool's worker publishes; the driver relays it to the client.
        assert await pool.ref(StPub, "pw").emit(-1) == member  # placed on the pool node
        async with rio.connect(url, secret=SECRET) as client:
            pub = client.ref(StPub, "pw")
            async with pub.subscribe() as sub:
                assert pool.stats().relays == 1
                assert [await pub.emit(i) for i in range(5)] == [member] * 5
                assert ticks(await take(sub, 5)) == list(range(5))
                # An actor in the worker follows an object on b: the worker registers.
                await b.ref(StPub, "q").emit(-1)
                watcher = pool.ref(StWatcher, "w")
                await watcher.follow("q")
                assert relays([b]) == [2]  # the client's "pw" and the worker's "q"
                await b.ref(StPub, "q").burst(5)

                async def followed() -> bool:
                    return await watcher.seen() == list(range(5))

                await eventually(followed, within=10.0)
                # The worker publishing dies: the client is told, and hears the replacement.
                os.kill(pool.worker_pid(1), signal.SIGKILL)
                assert await take(sub, 1) == [rio.Lagged(0, "lost")]
                assert await pub.with_timeout(20).emit(5) == member
                assert ticks(await take(sub, 1)) == [5]
                # the dead worker's relay went
                await eventually(lambda: relays([b]) == [1], within=10.0)
    finally:
        await pool_app.stop()


async def test_a_member_that_joins_later_is_registered_with(nodes: Nodes, url: str) -> None:
    (a,) = await nodes(1)
    async with rio.connect(url, secret=SECRET) as client, client.subscribe("late") as sub:
        assert relays([a]) == [1]
        (b,) = await nodes(1)
        await client.view.refresh()
        await eventually(lambda: relays([a, b]) == [1, 1], within=10.0)
        await b.ref(StPub, "x").shout("late", 0, 3)
        assert ticks(await take(sub, 3)) == [0, 1, 2]


async def test_unsubscribing_frees_the_relays_on_every_node(nodes: Nodes, url: str) -> None:
    ns = await nodes(3)
    async with rio.connect(url, secret=SECRET) as client:
        own = await client.ref(StPub, "u").subscribe()
        topic = await client.subscribe("t")
        again = await client.subscribe("t")  # the same stream: registered once
        assert relays(ns) == [2, 2, 2]
        assert client.stats().streams == 2
        own.close()
        await eventually(lambda: relays(ns) == [1, 1, 1], within=10.0)
        topic.close()
        await asyncio.sleep(0.1)
        assert relays(ns) == [1, 1, 1]  # `again` still reads the topic
        again.close()
        await eventually(lambda: relays(ns) == [0, 0, 0], within=10.0)
        assert [n.streams.stats() for n in ns] == [(0, 0)] * 3  # nothing kept
        assert client.stats().streams == 0


_ABRUPT_CLIENT = """
import asyncio, sys
import rio

async def main() -> None:
    async with rio.connect(sys.argv[1], secret=sys.argv[2]) as client:
        subs = [await client.subscribe("abrupt"), await client.subscribe("abrupt-2")]
        print("subscribed", flush=True)
        await asyncio.sleep(3600)
        print(subs)

asyncio.run(main())
"""


async def test_a_subscriber_that_vanishes_frees_its_relays(nodes: Nodes, url: str) -> None:
    ns = await nodes(2)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _ABRUPT_CLIENT,
        url,
        SECRET,
        stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            assert (await proc.stdout.readline()).strip() == b"subscribed"
        assert relays(ns) == [2, 2]
        proc.send_signal(signal.SIGKILL)  # no unsubscribing, no goodbye
        await proc.wait()
        await eventually(lambda: relays(ns) == [0, 0], within=10.0)
        assert [n.streams.stats() for n in ns] == [(0, 0)] * 2
        await ns[0].ref(StPub, "after").shout("abrupt", 0, 3)  # publishing goes on
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_slow_subscriber_is_told_what_it_missed(nodes: Nodes, url: str) -> None:
    (a,) = await nodes(1)
    async with rio.connect(url, secret=SECRET) as client:
        pub = client.ref(StPub, "s")
        async with pub.subscribe(buffer=10) as slow, pub.subscribe(buffer=1000) as fast:
            await pub.burst(100)  # returns at once: nobody waits for the subscribers
            assert ticks(await take(fast, 100)) == list(range(100))
            # The slow one read nothing meanwhile: it lost the oldest 90 and is told.
            assert await take(slow, 11) == [
                rio.Lagged(90),
                *(StTick(n, a.core.member_id) for n in range(90, 100)),
            ]


async def test_a_subscriber_whose_connection_backs_up_gets_the_count_and_the_publisher_goes_on(
    nodes: Nodes, url: str
) -> None:
    (a,) = await nodes(1)
    count, size = 400, 50_000  # 20 MB: far more than the socket buffers hold
    async with (
        rio.connect(url, secret=SECRET) as client,
        client.ref(StPub, "b").subscribe(buffer=count) as sub,
    ):
        conn = client.router.connected(a.core.member_id)
        assert conn is not None
        assert conn._transport is not None
        conn._transport.pause_reading()  # the subscriber stops reading
        try:
            # Published on the node itself: the call does not cross the stalled link.
            seconds = await a.ref(StPub, "b").blobs(count, size)
        finally:
            conn._transport.resume_reading()
        assert seconds < 5  # the publisher never waited for the subscriber
        events = missed = 0
        notices = []
        async with asyncio.timeout(20):
            while events + missed < count:
                item = await anext(sub)
                if isinstance(item, rio.Lagged):
                    notices.append(item)
                    missed += item.missed
                else:
                    assert isinstance(item, StBlob)
                    events += 1
        assert notices
        assert all(n.reason == "slow" for n in notices)
        assert missed > 0
        assert events > 0
        assert events + missed == count


class _FakeConn:
    """Takes one-way messages up to ``limit`` bytes, as a connection would."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: list[Any] = []

    def send_oneway_nowait(self, body: Any) -> None:
        try:
            data = msgspec.msgpack.encode(body)
        except (TypeError, msgspec.EncodeError) as e:
            raise rio.BadArguments(f"cannot be encoded: {e}") from None
        if len(data) > self.limit:
            raise rio.BadArguments(f"{len(data)} bytes is over max_frame_size")
        self.sent.append(oneway_decoder.decode(data))


def test_a_refused_batch_is_split_and_only_what_cannot_go_alone_is_dropped() -> None:
    conn = _FakeConn(limit=2_500)
    blobs: list[Any] = [StBlob(n, b"x" * 1_000) for n in range(7)]
    blobs.insert(3, StBlob(99, b"x" * 5_000))  # too large on its own
    events = [*blobs, object()]  # and one that cannot be encoded at all

    def make(missed: int, type_name: str, run: Any) -> StreamEvents:
        return StreamEvents(1, missed, type_name, run)

    send_runs(conn, events, 0, make, "test")  # type: ignore[arg-type]
    sent = [(m.missed, len(msgspec.msgpack.decode(m.events))) for m in conn.sent]
    assert sum(n for _, n in sent) == 7  # every blob that fits went, in messages of 2
    assert max(n for _, n in sent) == 2
    assert sum(m for m, _ in sent) == 2  # the big one and the object, counted
    got = [StBlob(**b) for m in conn.sent for b in msgspec.msgpack.decode(m.events)]
    assert [b.n for b in got] == [0, 1, 2, 3, 4, 5, 6]


@pytest.mark.slow
async def test_a_node_that_joins_misses_no_topic_event_a_client_publishes(
    nodes: Nodes, url: str
) -> None:
    # A client publishes each topic through one member, chosen by rank; a new member
    # may rank first. Until every subscriber has registered there, events published
    # through it would reach no one: it takes them only once it is active, after
    # join_grace, by when the listener (refreshing every second) has registered.
    await nodes(1)
    topics = [f"join-{i}" for i in range(8)]
    async with (
        rio.connect(url, secret=SECRET) as listener,
        rio.connect(url, secret=SECRET) as publisher,
    ):
        subs = [listener.subscribe(t) for t in topics]
        for sub in subs:
            await sub  # registered with a
        joining = asyncio.ensure_future(nodes(1, join_grace=2.5))
        sent = 0
        after = 0  # rounds published since b took some topic
        while after < 20:
            await publisher.view.refresh()  # it sees b as early as can be
            for t in topics:
                publisher.publish(StTick(sent, "client"), topic=t)
            sent += 1
            if joining.done():
                (b,) = joining.result()
                route = publisher.subscriptions._publisher_for
                if any(route(t) == b.core.member_id for t in topics):
                    after += 1
            await asyncio.sleep(0.01)
        for sub in subs:
            got = await take(sub, sent)
            assert ticks(got) == list(range(sent)), got[-5:]
            sub.close()


@pytest.mark.slow
async def test_a_client_publishing_through_a_node_that_drains_loses_nothing(
    nodes: Nodes, url: str
) -> None:
    # Until its membership refresh, the client went on sending to the node that had
    # left, and dropped what queued for it: about a second of events.
    a, b = await nodes(2)
    async with (
        rio.connect(url, secret=SECRET) as listener,
        rio.connect(url, secret=SECRET) as publisher,
    ):
        route = publisher.subscriptions._publisher_for
        topic = next(t for t in (f"drain-{i}" for i in range(100)) if route(t) == b.core.member_id)
        sub = listener.subscribe(topic)
        await sub
        stopping: asyncio.Future[None] | None = None
        sent = 0
        while sent < 300:
            publisher.publish(StTick(sent, "client"), topic=topic)
            sent += 1
            if sent == 100:
                stopping = asyncio.ensure_future(b.stop())
            await asyncio.sleep(0.005)
        assert stopping is not None
        await stopping
        assert route(topic) == a.core.member_id
        got = await take(sub, sent)
        assert ticks(got) == list(range(sent)), got[-5:]
        sub.close()
