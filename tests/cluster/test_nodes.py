"""Cluster nodes in one test process: routing, placement, redirects, draining, failure.

Each node here is an ``App(cluster=..., workers=0)`` in this event loop, with its own
listener and store connections, so what crosses between nodes really crosses TCP and
the store. (tests/cluster/test_processes.py runs nodes as separate ``rio run``
processes, with kill -9.)
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cluster.inproc import Nodes, hosting, node_launcher
from cluster.tls import self_signed
from waiting import eventually

import rio
from rio.cluster.routing import choose
from rio.cluster.store import Member

SECRET = "test-secret"


class CnState(msgspec.Struct):
    value: int = 0


class CnCounter(rio.Actor[CnState]):
    async def incr(self, by: int) -> int:
        self.state.value += by
        await self.save()
        return self.state.value

    async def get(self) -> int:
        return self.state.value


class CnRelay(rio.Actor[None]):
    async def bump(self, target: str) -> int:
        return await CnCounter.ref(target).incr(1)

    async def unreachable(self) -> None:
        raise rio.NodeUnreachable("a node this handler needed is down")

    async def echo(self, value: Any) -> Any:
        return value


class CnOther(rio.Actor[None]):
    async def ping(self) -> str:
        return "pong"


@pytest.fixture
async def nodes(urls: tuple[str, str]) -> AsyncIterator[Nodes]:
    """``await nodes(n, actors=None, **settings)``: n started nodes, stopped at teardown."""
    async with node_launcher("cn", [CnCounter, CnRelay], *urls, SECRET) as start:
        yield start


async def test_client_calls_spread_over_nodes_and_each_object_lives_once(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    ns = await nodes(3)
    async with rio.connect(urls[0], secret=SECRET) as client:
        assert len(client.stats().members) == 3
        for i in range(30):
            assert await client.ref(CnCounter, f"k{i}").incr(1) == 1
        for i in range(30):
            assert await client.ref(CnCounter, f"k{i}").incr(2) == 3
    where = [hosting(ns, ("CnCounter", f"k{i}")) for i in range(30)]
    assert all(len(w) == 1 for w in where)
    assert len({w[0] for w in where}) == 3  # consistent hashing spreads them


async def test_object_to_object_calls_cross_nodes(nodes: Nodes) -> None:
    a, b = await nodes(2)
    # Place the counter on b (prefer-local: b's own call claims it there).
    assert await b.ref(CnCounter, "shared").incr(1) == 1
    assert hosting([a, b], ("CnCounter", "shared")) == [1]
    # A relay on a calls it: the call crosses to b.
    assert await a.ref(CnRelay, "r").bump("shared") == 2
    assert hosting([a, b], ("CnRelay", "r")) == [0]
    assert hosting([a, b], ("CnCounter", "shared")) == [1]


async def test_racing_first_calls_make_one_activation(nodes: Nodes) -> None:
    ns = await nodes(3)
    # Every node's own call prefers itself: all three claim, one wins, two redirect.
    results = await asyncio.gather(*(n.ref(CnCounter, "race").incr(1) for n in ns))
    assert sorted(results) == [1, 2, 3]
    assert len(hosting(ns, ("CnCounter", "race"))) == 1


async def test_a_draining_node_hands_its_objects_over(nodes: Nodes, urls: tuple[str, str]) -> None:
    a, b = await nodes(2)
    for i in range(10):
        await a.ref(CnCounter, f"d{i}").incr(1)
    assert all(hosting([a, b], ("CnCounter", f"d{i}")) == [0] for i in range(10))
    async with rio.connect(urls[0], secret=SECRET) as client:
        stop = asyncio.ensure_future(a.stop())
        values = await asyncio.gather(*(client.ref(CnCounter, f"d{i}").incr(1) for i in range(10)))
        await stop
        assert values == [2] * 10  # nothing lost, nothing failed
        assert [await client.ref(CnCounter, f"d{i}").get() for i in range(10)] == [2] * 10
    assert all(hosting([a, b], ("CnCounter", f"d{i}")) == [1] for i in range(10))


async def test_a_node_that_refused_while_starting_is_used_once_it_serves(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    # A call that reaches a node between its row turning active and its serving gets
    # "not serving yet". The client passed that node over for good, so with no other
    # host every later first call failed with NoNodesAvailable.
    (a,) = await nodes(1)
    async with rio.connect(urls[0], secret=SECRET) as client:
        a.core._serving = False  # the row says active; the node does not serve yet
        call = asyncio.ensure_future(client.ref(CnCounter, "late").incr(1))
        router = client.router
        await eventually(lambda: a.core.member_id in router._refusing, what="the refusal")
        assert not call.done()  # it waits for the view to catch up, within its deadline
        a.core._serving = True
        assert await call == 1
        assert await client.ref(CnCounter, "later").incr(2) == 2


async def test_a_silent_node_is_declared_dead_and_its_objects_move(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    ns = await nodes(3)
    victim = ns[0]
    await victim.ref(CnCounter, "moving").incr(5)
    assert hosting(ns, ("CnCounter", "moving")) == [0]
    # The victim stops answering (its listener and membership duties end, as in a
    # crash) but its runtime is left alone, as a hung process would be.
    assert victim.core._agent is not None
    assert victim.core.server is not None
    dead_noticed = asyncio.Event()
    # A real node that reads its own row as dead exits the process; this one must not.
    victim.core._agent._on_dead = dead_noticed.set
    await victim.core._agent.stop()
    await victim.core.server.close()
    async with rio.connect(urls[0], secret=SECRET) as client:
        # The call waits until the others declare the victim dead, then goes elsewhere.
        assert await client.ref(CnCounter, "moving").incr(1) == 6
        rows = {m.member_id: m.status for m in client.members()}
    assert rows[victim.core.member_id] == "dead"
    assert len(hosting(ns[1:], ("CnCounter", "moving"))) == 1
    await victim.stop()
    assert dead_noticed.is_set()  # it learned, on its next write, that it was declared dead


async def test_no_node_hosting_the_type_is_a_clear_error(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    await nodes(1, actors=[CnCounter])
    async with rio.connect(urls[0], secret=SECRET) as client:
        with pytest.raises(rio.NoNodesAvailable, match="CnOther"):
            await client.ref(CnOther, "x").ping()
        assert await client.ref(CnCounter, "y").incr(1) == 1


async def test_client_with_no_members_fails_fast(urls: tuple[str, str]) -> None:
    async with rio.connect(urls[0], secret=SECRET) as client:
        with pytest.raises(rio.NoNodesAvailable, match="no cluster member"):
            await client.ref(CnCounter, "a").incr(1)


async def test_client_with_seeds_only(nodes: Nodes) -> None:
    (a,) = await nodes(1)
    seed = a.core.member.address if a.core.member else ""
    async with rio.connect(seeds=[seed], secret=SECRET) as client:
        assert await client.ref(CnCounter, "seeded").incr(3) == 3


async def test_a_wrong_secret_fails_at_once(nodes: Nodes, urls: tuple[str, str]) -> None:
    await nodes(1)
    async with rio.connect(urls[0], secret="not-the-secret") as client:
        with pytest.raises(rio.NodeUnreachable, match="handshake"):
            await client.ref(CnCounter, "a").with_timeout(20).incr(1)
        # And every later call at once too, not a wait for the view and a CallTimeout.
        for key in ("a", "b"):
            with pytest.raises(rio.NodeUnreachable, match="handshake"):
                await client.ref(CnCounter, key).with_timeout(1.5).incr(1)


async def test_a_node_with_another_secret_does_not_fail_calls_others_can_serve(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    # A node started with the wrong secret still registers and turns active. Calls
    # placed on it were refused in the handshake and failed (about half of them
    # here), though they never reached it and the good node could serve them.
    slow = {"probe_period": 30.0}  # neither node declares the other dead meanwhile
    (good,) = await nodes(1, **slow)
    async with node_launcher("cn", [CnCounter, CnRelay], *urls, "another-secret") as other:
        (bad,) = await other(1, **slow)
        async with rio.connect(urls[0], secret=SECRET) as client:
            await eventually(lambda: len(client.view.accepting("CnCounter")) == 2)
            calls = (client.ref(CnCounter, f"s{i}").incr(1) for i in range(40))
            assert await asyncio.gather(*calls) == [1] * 40
        assert all(hosting([good, bad], ("CnCounter", f"s{i}")) == [0] for i in range(40))


async def test_bad_arguments_and_unknown_methods_are_named(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    await nodes(1)
    async with rio.connect(urls[0], secret=SECRET) as client:
        with pytest.raises(rio.BadArguments, match="by"):
            await client.ref(CnCounter, "a").incr("one")  # type: ignore[arg-type]
        assert await client.ref(CnCounter, "a").incr(1) == 1


async def test_an_argument_that_cannot_cross_is_named_and_sends_nothing(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    await nodes(1)
    async with rio.connect(urls[0], secret=SECRET) as client:
        ref = client.ref(CnRelay, "e")
        assert await ref.echo([1, "a"]) == [1, "a"]  # placed: later calls take the fast path
        with pytest.raises(rio.BadArguments, match="argument 'value' cannot cross"):
            await ref.echo(object())
        with pytest.raises(rio.BadArguments, match="argument 'value' cannot cross"):
            await ref.echo(2**70)
        big = "x" * (17 << 20)  # over the default max_frame_size of 16 MiB
        with pytest.raises(rio.BadArguments, match="max_frame_size"):
            await ref.echo(big)
        assert await asyncio.gather(*(ref.echo(i) for i in range(100))) == list(range(100))


async def test_nodes_and_clients_over_tls(
    nodes: Nodes, urls: tuple[str, str], tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    tls = {"tls_cert": str(cert), "tls_key": str(key), "tls_ca": str(cert)}
    a, b = await nodes(2, **tls)
    assert await a.ref(CnCounter, "t").incr(1) == 1
    assert await b.ref(CnRelay, "t").bump("t") == 2  # node to node, over TLS
    async with rio.connect(urls[0], secret=SECRET, ssl=str(cert)) as client:
        assert await client.ref(CnCounter, "t").incr(1) == 3
    async with rio.connect(urls[0], secret=SECRET) as plain:
        with pytest.raises(rio.NodeUnreachable):
            await plain.ref(CnCounter, "t").with_timeout(3).incr(1)
    with pytest.raises(rio.ConfigError, match="tls_key"):
        rio.ClusterSettings(url="x", secret="s", tls_cert=str(cert)).resolved()
    with pytest.raises(rio.ConfigError, match="cannot load"):
        rio.ClusterSettings(url="x", secret="s", tls_ca=str(tmp_path / "none.pem")).resolved()


def test_settings_are_checked() -> None:
    with pytest.raises(rio.ConfigError, match="secret"):
        rio.ClusterSettings(url="sqlite:///x.db").resolved()
    with pytest.raises(rio.ConfigError, match="strategy"):
        rio.ClusterSettings(url="sqlite:///x.db", secret="s", placement="nearest").resolved()
    with pytest.raises(rio.ConfigError, match="placement"):
        rio.App("x", actor_options={"CnCounter": {"placement": "nearest"}})
    with pytest.raises(rio.ConfigError, match="scheme"):
        rio.connect("ftp://x", secret="s")
    with pytest.raises(rio.ConfigError, match="seed"):
        rio.connect(seeds=["no-port"], secret="s")


def test_cluster_settings_from_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "rio.toml"
    cfg.write_text(
        '[app]\nname = "t"\n[actors.CnCounter]\nplacement = "random"\n'
        '[cluster]\nurl = "redis://db/0"\nsecret = "hush"\nport = 7000\nprobe_period = 0.5\n'
    )
    app = rio.App.from_toml(cfg)
    assert app.cluster is not None
    assert (app.cluster.port, app.cluster.probe_period) == (7000, 0.5)
    assert app.placement == {"CnCounter": "random"}
    assert "hush" not in repr(app.cluster)
    cfg.write_text('[app]\nname = "t"\n[cluster]\nurl = "redis://db/0"\nprobe_perod = 1\n')
    with pytest.raises(rio.ConfigError, match="probe_perod"):
        rio.App.from_toml(cfg)


def _member(mid: str, activations: int = 0) -> Member:
    return Member(
        member_id=mid,
        node=mid,
        address="127.0.0.1:1",
        incarnation=1,
        status="active",
        types=["T"],
        activations=activations,
    )


def test_placement_strategies() -> None:
    ms = [_member("a", 10), _member("b", 0), _member("c", 5)]
    rng = random.Random(1)
    assert choose("prefer-local", ("T", "1"), ms, "c", rng).member_id == "c"
    # A client (no local member) or a node not hosting the type: consistent hashing.
    assert choose("prefer-local", ("T", "1"), ms, None, rng) == choose(
        "consistent-hash", ("T", "1"), ms, None, rng
    )
    spread = {choose("consistent-hash", ("T", str(i)), ms, None, rng).member_id for i in range(50)}
    assert spread == {"a", "b", "c"}
    # Consistent: dropping a member moves only the objects it had.
    moved = sum(
        choose("consistent-hash", ("T", str(i)), ms, None, rng).member_id
        != choose("consistent-hash", ("T", str(i)), ms[:2], None, rng).member_id
        for i in range(300)
        if choose("consistent-hash", ("T", str(i)), ms, None, rng).member_id != "c"
    )
    assert moved == 0
    assert {choose("random", ("T", "1"), ms, None, rng).member_id for _ in range(50)} == {
        "a",
        "b",
        "c",
    }
    loads = [choose("least-loaded", ("T", "1"), ms, None, rng).member_id for _ in range(50)]
    assert "a" not in loads  # the busiest never wins a pair


class Proxy:
    """A TCP proxy in front of a server, which a test can cut and restore."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_w}

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except OSError:
                pass
            finally:
                w.close()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    async def restore(self) -> None:
        await self.start()


async def test_losing_the_membership_store_does_not_stop_serving(nodes: Nodes) -> None:
    from storage.conftest import REDIS_URL, _reachable

    if not _reachable(REDIS_URL):
        pytest.skip("Redis is not reachable")
    from urllib.parse import urlsplit

    parts = urlsplit(REDIS_URL)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    await proxy.start()
    prefix = f"outage{random.randrange(1 << 30)}:"
    db = parts.path.strip("/") or "0"  # the database RIO_TEST_REDIS_URL names
    url = f"redis://127.0.0.1:{proxy.port}/{db}?prefix={prefix}&connect_timeout=1"
    try:
        a, b = await nodes(2, url=url)
        for i in range(6):
            await a.ref(CnCounter, f"o{i}").incr(1)
            await b.ref(CnRelay, f"r{i}").bump(f"o{i}")
        await proxy.cut()
        # Objects already active keep answering, across nodes too, while the store is gone.
        for _ in range(3):
            for i in range(6):
                await b.ref(CnRelay, f"r{i}").bump(f"o{i}")
        assert await a.ref(CnCounter, "o0").get() == 5
        # A new object cannot be placed meanwhile: a clear storage error, not a hang.
        with pytest.raises(rio.StorageUnavailable):
            await a.ref(CnCounter, "new").with_timeout(10).incr(1)
        await proxy.restore()
        assert await a.ref(CnCounter, "new").with_timeout(20).incr(1) == 1
    finally:
        await proxy.cut()
        import redis.asyncio as aioredis

        r = aioredis.from_url(REDIS_URL)
        keys = [k async for k in r.scan_iter(f"{prefix}*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


async def test_a_handler_raising_node_unreachable_is_an_answer_not_a_dead_route(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    await nodes(2)
    async with rio.connect(urls[0], secret=SECRET) as client:
        ref = client.ref(CnRelay, "u")
        for _ in range(2):  # the first call routes, the second takes the fast path
            # Were it taken for the node being unreachable, the call would wait for
            # that node to be declared dead and end in CallTimeout.
            with pytest.raises(rio.NodeUnreachable, match="this handler needed"):
                await ref.with_timeout(30).unreachable()
