"""Regression tests from a review of the cluster layer (one per bug found).

Nodes are in-process ``App(cluster=..., workers=0)`` nodes on SQLite files, as in
test_nodes.py; some tests drive a Router or a MembershipAgent directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cluster.inproc import FAST, Nodes, hosting, node_launcher

import rio
from rio.cluster.membership import MembershipAgent, MembershipView
from rio.cluster.node import ClusterNode
from rio.cluster.store import ClusterStore, Member, cluster_store_from_url

SECRET = "review-secret"


class RvState(msgspec.Struct):
    value: int = 0


class RvCounter(rio.Actor[RvState]):
    async def incr(self, by: int) -> int:
        self.state.value += by
        await self.save()
        return self.state.value

    async def get(self) -> int:
        return self.state.value

    async def hold(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class RvCaller(rio.Actor[None]):
    async def later_get(self, target: str, delay: float) -> int:
        await asyncio.sleep(delay)
        # Through this node (in-process, RvCounter.ref would use the last node started).
        return await self.system.ref(RvCounter, target).get()


@pytest.fixture
async def nodes(urls: tuple[str, str]) -> AsyncIterator[Nodes]:
    """``await nodes(n, **settings)``: n started nodes, stopped at teardown."""
    async with node_launcher("rv", [RvCounter, RvCaller], *urls, SECRET) as start:
        yield start


async def test_a_call_in_flight_to_a_hung_node_moves_once_the_node_is_declared_dead(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    # A call sent on the fast path (cached member, open connection) to a node that
    # hangs fails when the client's view drops that node and closes the connection;
    # it must then go to the object's new home, not wait for the new home to die.
    ns = await nodes(3)
    victim = ns[0]
    await victim.ref(RvCounter, "hung").incr(1)
    assert hosting(ns, ("RvCounter", "hung")) == [0]
    async with rio.connect(urls[0], secret=SECRET) as client:
        ref = client.ref(RvCounter, "hung")
        assert await ref.incr(1) == 2  # routes (maybe via a redirect) and caches
        assert await ref.incr(1) == 3  # the fast path
        assert victim.core._agent is not None
        victim.core._agent._on_dead = lambda: None  # must not exit the test process
        await victim.core._agent.stop()
        # The victim's listener still holds connections and answers keep-alive pings,
        # but nothing it is asked ever gets an answer (a stuck process).
        victim.core.gateway.handle = (  # type: ignore[method-assign]
            lambda conn, body: asyncio.get_running_loop().create_future()
        )
        victim.core._deliver = lambda req: asyncio.get_running_loop().create_future()
        started = time.monotonic()
        assert await ref.with_timeout(8).incr(1) == 4
        assert time.monotonic() - started < 5
        rows = {m.member_id: m.status for m in client.members()}
    assert rows[victim.core.member_id] == "dead"


async def test_a_call_gives_up_at_its_deadline_while_dialing_a_node_that_does_not_answer() -> None:
    # A node that accepts TCP but never completes the handshake (stuck, or a wrong
    # address taken by something else) must not hold a call past its deadline: the
    # dial alone would take handshake_timeout (5 s).
    from rio.cluster.membership import MembershipView
    from rio.cluster.routing import Router
    from rio.cluster.store import Member
    from rio.core.registry import actor_type

    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    member = Member(
        member_id="stuck#1",
        node="stuck",
        address=f"127.0.0.1:{port}",
        incarnation=1,
        status="active",
        types=["RvCounter"],
    )

    async def fetch() -> list[Member]:
        return [member]

    view = MembershipView(fetch, 1.0, "test")
    await view.refresh()
    router = Router(
        view, SECRET, local_member=None, local=None, strategy_of=lambda t: "consistent-hash"
    )
    handler = actor_type(RvCounter).handler("incr")
    loop = asyncio.get_running_loop()
    key = ("RvCounter", "x")
    try:
        started = loop.time()
        with pytest.raises(rio.CallTimeout):
            await router.call(key, handler, (1,), {}, (key,), started + 0.5, started)
        assert loop.time() - started < 2.0
    finally:
        await router.close()
        assert not router._connecting  # the dial that outlived the call is stopped
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()


async def test_a_call_whose_deadline_passed_fails_with_call_timeout_on_every_path(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    await nodes(1)
    async with rio.connect(urls[0], secret=SECRET) as client:
        ref = client.ref(RvCounter, "late")
        assert await ref.incr(1) == 1  # cached, with an open connection: the fast path
        with rio.timeout(0.05):
            await asyncio.sleep(0.1)
            with pytest.raises(rio.CallTimeout):
                await ref.incr(1)
        assert await ref.get() == 1


async def test_a_connection_dialed_to_a_member_that_went_away_meanwhile_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rio.cluster import routing
    from rio.cluster.membership import MembershipView
    from rio.cluster.routing import Router
    from rio.cluster.store import Member

    member = Member(
        member_id="m#1", node="m", address="127.0.0.1:1", incarnation=1, status="active"
    )
    rows = [member]

    async def fetch() -> list[Member]:
        return rows

    class FakeConn:
        is_closed = False

        async def close(self) -> None:
            self.is_closed = True

    dialed = FakeConn()
    go = asyncio.Event()

    async def slow_connect(*args: object, **kw: object) -> FakeConn:
        await go.wait()
        return dialed

    monkeypatch.setattr(routing, "connect", slow_connect)
    view = MembershipView(fetch, 1.0, "test")
    await view.refresh()
    router = Router(view, SECRET, local_member=None, local=None, strategy_of=lambda t: "random")
    dial = asyncio.ensure_future(router.connection("m#1"))
    await asyncio.sleep(0.01)
    view.apply([msgspec.structs.replace(member, status="dead")])  # declared dead meanwhile
    go.set()
    with pytest.raises(rio.NodeUnreachable):
        await dial
    assert dialed.is_closed
    assert "m#1" not in router._conns
    await router.close()


async def test_a_member_declared_dead_does_not_declare_the_others_dead(tmp_path: Path) -> None:
    # Two members that cannot reach each other (but reach the store) each suspect the
    # other. The first to complete its vote wins; the loser, which has not heard yet
    # that it is dead, must not take the winner down with it (the cluster would be empty).
    from rio.cluster.membership import MembershipAgent, MembershipView
    from rio.cluster.store import Member, cluster_store_from_url

    store = cluster_store_from_url(f"sqlite:///{tmp_path}/cluster.db")
    await store.open()
    try:
        a, b = (
            Member(member_id=m, node=m, address="127.0.0.1:1", incarnation=1, status="active")
            for m in ("a#1", "b#1")
        )
        await store.register(a)
        await store.register(b)
        view = MembershipView(store.members, 1.0, "a")
        await view.refresh()  # a sees both live
        settings = rio.ClusterSettings(url="unused", secret=SECRET)
        dead: list[str] = []

        async def probe(m: Member, limit: float) -> bool:
            return False

        agent = MembershipAgent(
            store, settings, a, view, probe, lambda: (0, {}), on_dead=lambda: dead.append("a")
        )
        assert await store.declare_dead("a#1")  # b won the race
        await agent._suspect(b)  # a's own vote, a moment later
        status = {m.member_id: m.status for m in await store.members()}
        assert status == {"a#1": "dead", "b#1": "active"}
        assert dead == ["a"]  # and a learned that it is dead
    finally:
        await store.close()


async def test_a_local_call_during_the_drain_follows_its_object_to_its_new_home(
    nodes: Nodes,
) -> None:
    # On a draining node, an actor's call to a local object that deactivates before
    # the call runs must reach the object's new home, not fail with Redirect.
    a, _b = await nodes(2)
    assert await a.ref(RvCounter, "s").incr(1) == 1
    hold = asyncio.ensure_future(a.ref(RvCounter, "s").hold(0.8))  # s is busy until 0.8 s
    call = asyncio.ensure_future(a.ref(RvCaller, "c").later_get("s", 0.4))  # calls s at 0.4 s
    await asyncio.sleep(0.05)
    stop = asyncio.ensure_future(a.stop())  # s and c deactivate after their turns
    await hold
    assert await call == 1
    await stop


async def test_a_local_call_in_a_draining_worker_follows_its_object_to_its_new_home(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    # The same, in a worker of a pool node (its shortcut to objects it hosts).
    (_b,) = await nodes(1)
    settings = rio.ClusterSettings(secret=SECRET, url=urls[0], **FAST)  # type: ignore[arg-type]
    app = rio.App("rv", actors=[RvCounter, RvCaller], storage=urls[1], workers=1, cluster=settings)
    pool = await app.start()
    try:
        assert await pool.ref(RvCounter, "ws").incr(1) == 1  # prefer-local: in the worker
        hold = asyncio.ensure_future(pool.ref(RvCounter, "ws").hold(0.8))
        call = asyncio.ensure_future(pool.ref(RvCaller, "wc").later_get("ws", 0.4))
        await asyncio.sleep(0.05)
        stop = asyncio.ensure_future(app.stop())
        await hold
        assert await call == 1
        await stop
    finally:
        await app.stop()


async def test_a_call_with_a_nan_budget_is_refused_and_deadlines_keep_working(
    nodes: Nodes,
) -> None:
    # A NaN deadline in the runtime's deadline heap stops every later deadline of
    # that node from firing: the gateway must refuse it.
    from rio.cluster.routing import CallReq
    from rio.cluster.transport import connect
    from rio.local.protocol import encode

    (a,) = await nodes(1)
    assert a.core.server is not None
    conn = await connect("127.0.0.1", a.core.server.port, secret=SECRET)
    try:
        for budget in (float("nan"), -1.0):
            req = CallReq("RvCounter", "nan", "incr", budget, [], msgspec.Raw(encode([1])))
            with pytest.raises(rio.BadArguments, match="budget"):
                await conn.request(req, timeout=5)
            fut = asyncio.get_running_loop().create_future()  # the same in a Call frame
            conn.call_into("RvCounter", "nan", "incr", (), (1,), a._loop.time() + 5, budget, fut)
            with pytest.raises(rio.BadArguments, match="budget"):
                await fut
    finally:
        await conn.close()
    hold = asyncio.ensure_future(a.ref(RvCounter, "busy").hold(1.0))
    await asyncio.sleep(0.05)
    async with asyncio.timeout(3):
        with pytest.raises(rio.CallTimeout):
            await a.ref(RvCounter, "busy").with_timeout(0.2).get()  # queued behind hold
    await hold


async def test_a_client_call_that_times_out_names_its_actor_and_method(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    # As on every other path, not "node X did not answer request 7".
    await nodes(1)
    async with rio.connect(urls[0], secret=SECRET) as client:
        for object_id in ("first-call", "cached"):  # the routed path, then the fast one
            ref = client.ref(RvCounter, object_id)
            if object_id == "cached":
                await ref.get()
            with pytest.raises(rio.CallTimeout) as info:
                await ref.with_timeout(0.3).hold(2.0)
            message = str(info.value)
            assert f"RvCounter/{object_id}.hold() did not answer within " in message
            assert "(node " in message
            assert "ref.with_timeout(seconds)" in message


async def test_calls_in_flight_when_a_client_closes_fail_at_once(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    # Closing the client closes its connections; the calls waiting on them must fail
    # then, not wait out their deadline for the (live) node to be declared dead.
    await nodes(1)
    client = rio.connect(urls[0], secret=SECRET)
    await client.start()
    try:
        ref = client.ref(RvCounter, "slow")
        assert await ref.incr(1) == 1
        busy = asyncio.ensure_future(ref.with_timeout(10).hold(3.0))
        routed = asyncio.ensure_future(client.ref(RvCounter, "other").with_timeout(10).hold(3.0))
        await asyncio.sleep(0.2)
    finally:
        await client.stop()
    started = time.monotonic()
    for fut in (busy, routed):
        with pytest.raises(rio.SystemStopping):
            await fut
    assert time.monotonic() - started < 1.0


async def test_a_client_refuses_calls_before_start_and_after_stop_clearly(
    urls: tuple[str, str],
) -> None:
    client = rio.connect(urls[0], secret=SECRET)
    with pytest.raises(rio.SystemStopping, match="not started"):
        client.ref(RvCounter, "a").get()
    await client.start()
    await client.stop()
    with pytest.raises(rio.SystemStopping, match="closed"):
        client.ref(RvCounter, "a").get()
    # From a thread, too (after stop the loop may be gone: nothing is scheduled on it).
    with pytest.raises(rio.SystemStopping, match="closed"):
        await asyncio.to_thread(lambda: client.ref(RvCounter, "a").get())


@contextlib.asynccontextmanager
async def voting_agent(
    tmp_path: Path, beats: dict[str, float], **settings: Any
) -> AsyncIterator[tuple[ClusterStore, MembershipAgent, dict[str, Member]]]:
    """Active members with these last heartbeats in a SQLite store, and the first one's
    membership agent (its probes all fail), for calling its vote directly."""
    store = cluster_store_from_url(f"sqlite:///{tmp_path}/cluster.db")
    await store.open()
    try:
        members = {
            m: Member(
                member_id=m,
                node=m,
                address="127.0.0.1:1",
                incarnation=1,
                status="active",
                heartbeat=beat,
            )
            for m, beat in beats.items()
        }
        for member in members.values():
            await store.register(member)
        first = next(iter(members))
        view = MembershipView(store.members, 1.0, first.split("#")[0])
        await view.refresh()
        cluster = rio.ClusterSettings(url="unused", secret=SECRET, **settings)

        async def probe(m: Member, limit: float) -> bool:
            return False

        yield (
            store,
            MembershipAgent(store, cluster, members[first], view, probe, lambda: (0, {})),
            members,
        )
    finally:
        await store.close()


async def test_the_survivor_of_a_double_failure_declares_both_dead(tmp_path: Path) -> None:
    # Two of three members die at once. The survivor's vote alone must be enough once
    # the dead have stopped heartbeating: they cannot vote, and waiting for their
    # votes would keep their objects unreachable forever.
    now = time.time()
    beats = {"a#1": now, "b#1": now - 60, "c#1": now - 60}
    async with voting_agent(tmp_path, beats) as (store, agent, members):
        await agent._suspect(members["b#1"])
        await agent._suspect(members["c#1"])
        status = {m.member_id: m.status for m in await store.members()}
        assert status == {"a#1": "active", "b#1": "dead", "c#1": "dead"}


async def test_a_call_finding_no_member_rereads_the_membership_within_its_deadline() -> None:
    # The reread a call makes when no member hosts its type must not outlast the
    # call's deadline (a store or seed that is slow to answer).
    from rio.cluster.membership import MembershipView
    from rio.cluster.routing import Router
    from rio.core.registry import actor_type

    reads = 0

    async def fetch() -> list[Member]:
        nonlocal reads
        reads += 1
        if reads > 1:
            await asyncio.sleep(5)  # the store is slow now
        return []

    view = MembershipView(fetch, 1.0, "test")
    await view.refresh()
    router = Router(view, SECRET, local_member=None, local=None, strategy_of=lambda t: "random")
    handler = actor_type(RvCounter).handler("get")
    loop = asyncio.get_running_loop()
    key = ("RvCounter", "x")
    started = loop.time()
    with pytest.raises((rio.CallTimeout, rio.NoNodesAvailable)):
        await router.call(key, handler, (), {}, (key,), started + 0.3, started)
    assert loop.time() - started < 1.0
    await router.close()


async def test_a_joining_node_refuses_calls_until_it_can_claim_what_it_activates(
    urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node listens before it has joined. A call that reaches it then (a caller whose
    # cache names the previous incarnation at the same address) must not activate an
    # object with no placement in the directory: another node could activate it too.
    from rio.cluster.membership import MembershipAgent
    from rio.cluster.routing import CallReq, Redirect
    from rio.cluster.transport import connect
    from rio.local.protocol import encode

    gate, joining = asyncio.Event(), asyncio.Event()
    join = MembershipAgent.join

    async def slow_join(self: MembershipAgent) -> None:
        joining.set()  # listening, registered soon
        await gate.wait()
        await join(self)

    monkeypatch.setattr(MembershipAgent, "join", slow_join)
    settings = rio.ClusterSettings(secret=SECRET, url=urls[0], **FAST)  # type: ignore[arg-type]
    app = rio.App("rv", actors=[RvCounter], storage=urls[1], workers=0, cluster=settings)
    node = ClusterNode(app, settings)
    starting = asyncio.ensure_future(node.start())
    try:
        await joining.wait()
        assert node.core.server is not None
        conn = await connect("127.0.0.1", node.core.server.port, secret=SECRET)
        try:
            req = CallReq("RvCounter", "early", "incr", 5.0, [], msgspec.Raw(encode([1])))
            with pytest.raises(Redirect):
                await conn.request(req, timeout=5)
        finally:
            await conn.close()
        assert ("RvCounter", "early") not in node.runtime._acts
    finally:
        gate.set()
        await starting
        await node.stop()


async def test_members_heartbeating_slower_than_the_suspicion_window_still_vote(
    tmp_path: Path,
) -> None:
    # With heartbeat_period above suspicion_window, a live member's row is always
    # older than the window: it must still count as a voter (one vote is not enough).
    beat = time.time() - 15  # one 20 s heartbeat period ago, at most
    beats = dict.fromkeys(("a#1", "b#1", "c#1"), beat)
    async with voting_agent(tmp_path, beats, heartbeat_period=20.0) as (store, agent, members):
        await agent._suspect(members["b#1"])  # a's vote alone: c could vote too
        status = {m.member_id: m.status for m in await store.members()}
        assert status == {"a#1": "active", "b#1": "active", "c#1": "active"}


async def test_a_call_in_flight_when_its_connection_breaks_goes_again_to_the_live_node(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    # The connection is cut (a reset, a proxy restart), not the node: the call must
    # go again over a new connection, not wait out its deadline for the node to die.
    (node,) = await nodes(1)
    async with rio.connect(urls[0], secret=SECRET) as client:
        ref = client.ref(RvCounter, "cut")
        assert await ref.incr(1) == 1
        call = ref.with_timeout(20).hold(0.3)
        await asyncio.sleep(0)  # sent
        conn = client.router.connected(node.core.member_id)
        assert conn is not None
        assert conn._transport is not None
        conn._transport.abort()  # as a reset from the network would
        async with asyncio.timeout(10):  # well within the call's own 20 s
            await call
        assert await ref.incr(1) == 2


async def test_a_second_node_under_a_live_nodes_name_is_refused_and_the_first_serves_on(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    (first,) = await nodes(1, node="web")
    await first.ref(RvCounter, "w").incr(1)
    with pytest.raises(rio.ConfigError, match=r"node name 'web' is taken: member web#\d+"):
        await nodes(1, node="web")
    store = cluster_store_from_url(urls[0])
    await store.open()
    try:
        rows = {m.member_id: m.status for m in await store.members()}
    finally:
        await store.close()
    assert rows[first.core.member_id] == "active"
    assert sorted(rows.values()) == ["active", "left"]  # the refused one left its row
    assert await first.ref(RvCounter, "w").incr(1) == 2


async def test_a_restarted_node_supersedes_its_silent_previous_incarnation(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    store = cluster_store_from_url(urls[0])
    await store.open()
    try:
        old = Member(
            member_id="web#1",
            node="web",
            address="127.0.0.1:1",  # nobody answers there: the old process is gone
            incarnation=1,
            status="active",
            types=["RvCounter"],
            heartbeat=time.time(),
        )
        await store.register(old)
        (node,) = await nodes(1, node="web")
        rows = {m.member_id: m.status for m in await store.members()}
    finally:
        await store.close()
    assert rows == {"web#1": "dead", node.core.member_id: "active"}
    assert await node.ref(RvCounter, "r").incr(1) == 1


async def test_nodes_keep_serving_when_the_store_loses_their_rows(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    # A membership store that comes back empty (a Redis without persistence restarts)
    # is no verdict: every node used to read its missing row as "declared dead and
    # pruned" and exit, all at once. A row is pruned only long after it was declared
    # dead, which a node that read its row live a moment ago would have read first.
    import sqlite3

    ns = await nodes(2)
    exits: list[str] = []
    for n in ns:
        assert n.core._agent is not None
        n.core._agent._on_dead = lambda n=n: exits.append(n.core.member_id)  # type: ignore[misc]
    assert await ns[0].ref(RvCounter, "w").incr(1) == 1
    path = urls[0].removeprefix("sqlite:///")

    def wipe() -> None:  # off the loop: the nodes' transactions must be able to commit
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as db, db:
            db.execute("DELETE FROM rio_members")
            db.execute("DELETE FROM rio_placements")
            db.execute("DELETE FROM rio_suspicions")

    await asyncio.to_thread(wipe)
    store = cluster_store_from_url(urls[0])
    await store.open()
    try:

        async def rows() -> dict[str, str]:
            return {m.member_id: m.status for m in await store.members()}

        want = {n.core.member_id: "active" for n in ns}
        deadline = time.monotonic() + 10
        while await rows() != want:
            assert time.monotonic() < deadline, await rows()
            await asyncio.sleep(0.05)
    finally:
        await store.close()
    assert exits == []
    assert await ns[0].ref(RvCounter, "w").incr(1) == 2  # still served where it lives
    async with rio.connect(urls[0], secret=SECRET) as client:
        assert await client.ref(RvCounter, "new").incr(5) == 5  # new activations too


async def test_a_node_whose_row_vanished_after_a_long_silence_stops(tmp_path: Path) -> None:
    # The other side of that rule: a node that has not read its row for longer than
    # half of prune_after may have been declared dead and pruned meanwhile: it stops.
    store = cluster_store_from_url(f"sqlite:///{tmp_path}/cluster.db")
    await store.open()
    try:
        a = Member(member_id="a#1", node="a", address="127.0.0.1:1", incarnation=1)
        view = MembershipView(store.members, 1.0, "a")
        settings = rio.ClusterSettings(url="unused", secret=SECRET, prune_after=10.0)
        dead: list[str] = []

        async def probe(m: Member, limit: float) -> bool:
            return True

        agent = MembershipAgent(
            store, settings, a, view, probe, lambda: (0, {}), on_dead=lambda: dead.append("a")
        )
        assert agent._gone(None) is False  # just started: the store lost it
        assert dead == []
        agent._row_seen -= 6.0  # silent for longer than prune_after / 2
        assert agent._gone(None) is True
        assert dead == ["a"]
    finally:
        await store.close()


async def test_a_call_waits_for_a_host_that_is_still_joining(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    # While the only node hosting a type is still joining, a call waits for it
    # (within its deadline) instead of failing at once with NoNodesAvailable, which
    # said to "start a node that hosts it" while one was starting.
    (n,) = await nodes(1)
    store = cluster_store_from_url(urls[0])
    await store.open()
    try:
        await store.update(n.core.member_id, status="joining")
        async with rio.connect(urls[0], secret=SECRET) as client:
            assert {m.status for m in client.members()} == {"joining"}
            call = asyncio.ensure_future(client.ref(RvCounter, "j").with_timeout(20).incr(1))
            await asyncio.sleep(0.3)  # a few view refreshes: it must still be waiting
            assert not call.done()
            await store.update(n.core.member_id, status="active")
            assert await call == 1
    finally:
        await store.close()


async def test_a_joining_row_that_stopped_heartbeating_is_not_waited_for(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    # A node that died while it joined, with no other node to declare it dead, kept
    # its row joining: every call waited its whole deadline, then CallTimeout.
    (n,) = await nodes(1)
    assert n.core._agent is not None
    await n.core._agent.stop()  # no more heartbeats, as after a kill -9
    store = cluster_store_from_url(urls[0])
    await store.open()
    try:
        await store.update(n.core.member_id, status="joining", heartbeat=time.time() - 60)
        async with rio.connect(urls[0], secret=SECRET) as client:
            with pytest.raises(rio.NoNodesAvailable, match="start a node that hosts it"):
                await client.ref(RvCounter, "stale").with_timeout(60).incr(1)
    finally:
        await store.close()


async def test_a_client_flooding_the_cluster_is_refused_beyond_max_queued(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    """Calls that wait for a placement or a connection are bounded, not one task each forever."""
    await nodes(1)
    async with rio.connect(urls[0], secret=SECRET, max_queued=50) as client:
        accepted = []
        refused = []
        for i in range(80):  # first calls to new objects: each waits for its placement
            try:
                accepted.append(client.ref(RvCounter, f"flood-{i}").incr(i))
            except rio.Overloaded as e:
                refused.append(str(e))
        assert len(accepted) == 50
        assert len(refused) == 30
        assert "RvCounter/flood-50.incr() refused" in refused[0]
        assert "max_queued=50" in refused[0]
        assert await asyncio.gather(*accepted) == list(range(50))
        assert await client.ref(RvCounter, "flood-50").incr(7) == 7  # room again
    with pytest.raises(rio.ConfigError, match="max_queued"):
        rio.connect(urls[0], secret=SECRET, max_queued=0)


async def test_calls_to_objects_placed_here_are_never_refused_by_the_routing_cap(
    urls: tuple[str, str],
) -> None:
    """max_queued bounds calls waiting for a placement or a connection, not running ones."""
    async with node_launcher("rvq", [RvCounter], *urls, SECRET, max_queued=5) as start:
        await start(1)
        for i in range(10):  # placed here, one at a time
            assert await RvCounter.ref(f"q{i}").incr(1) == 1
        results = await asyncio.gather(*[RvCounter.ref(f"q{i % 10}").incr(1) for i in range(50)])
        assert sorted(results) == sorted([2, 3, 4, 5, 6] * 10)


def test_a_joining_node_is_waited_for_while_its_heartbeat_moves_whatever_its_clock() -> None:
    # Judged by the node's clock alone, a node whose clock is minutes behind looked
    # dead while it joined. A heartbeat seen changing between reads is alive; one
    # that stays old is not.
    def row(mid: str, heartbeat: float) -> Member:
        return Member(
            member_id=mid, node=mid, address="h:1", incarnation=1, types=["T"], heartbeat=heartbeat
        )

    view = MembershipView(lambda: None, 1.0, "test")  # type: ignore[arg-type,return-value]
    past = time.time() - 600  # ten minutes behind
    view.apply([row("skewed", past)])
    assert not view.joining("T")  # old, and not seen moving yet
    view.apply([row("skewed", past + 2)])
    assert view.joining("T")  # it moved: alive
    view.apply([row("dead", past)])
    view.apply([row("dead", past)])
    assert not view.joining("T")
    view.apply([row("fresh", time.time())])
    assert view.joining("T")  # fresh by its own clock from the first read


async def test_a_view_stops_even_when_its_store_swallowed_the_cancellation() -> None:
    # redis-py's asyncio.wait_for can swallow a cancellation on Python 3.11: the
    # refresh loop then went on, and leaving `async with rio.connect(...)` hung.
    reading = asyncio.Event()
    reads: list[int] = []
    swallowed: list[bool] = []

    async def fetch() -> list[Member]:
        reads.append(1)
        if len(reads) == 2:  # the first refresh after start()
            reading.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed.append(True)  # as the driver does: the read "completes"
        return []

    view = MembershipView(fetch, 0.01, "test")
    await view.start()
    await reading.wait()
    async with asyncio.timeout(5):
        await view.stop()
    assert swallowed == [True]
