"""The ClusterStore contract, run on every engine (sqlite, postgres, mysql, redis).

Times are explicit numbers, never the clock; concurrency comes from separate store
instances (separate connections) racing through ``asyncio.gather``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from storage.conftest import Backend, MySQLBackend, PostgresBackend, RedisBackend

from rio.cluster.store import ClusterStore, Member, cluster_store_from_url
from rio.core.errors import ConfigError, StorageError, StorageUnavailable

OpenStore = Callable[..., Awaitable[ClusterStore]]
Kill = Callable[[], Awaitable[int]]


def member(member_id: str, **fields: object) -> Member:
    values: dict[str, object] = {
        "node": member_id.split("#")[0],
        "address": "127.0.0.1:7000",
        "incarnation": 1,
        "status": "active",
        "types": ["Counter", "Room"],
        "heartbeat": 100.0,
        "started": 90.5,
    }
    values.update(fields)
    return Member(member_id=member_id, **values)  # type: ignore[arg-type]


async def registered(store: ClusterStore, *ids: str, **fields: object) -> list[Member]:
    rows = [member(i, **fields) for i in ids]
    for row in rows:
        await store.register(row)
    return rows


def by_id(rows: list[Member]) -> dict[str, Member]:
    return {m.member_id: m for m in rows}


# -- membership ---------------------------------------------------------------------------


async def test_register_then_members_round_trips_every_field(open_store: OpenStore) -> None:
    s = await open_store()
    assert await s.members() == []
    a = member(
        "a#1",
        status="joining",
        types=["Counter", "Ünïcode"],
        activations=7,
        by_type={"Counter": 5, "Ünïcode": 2},
        heartbeat=1_700_000_000.123456,
        started=1_699_999_999.5,
        incarnation=2**40,
    )
    b = member("b#1", types=[], by_type={})
    await s.register(a)
    await s.register(b)
    assert by_id(await s.members()) == {"a#1": a, "b#1": b}


async def test_duplicate_register_is_a_config_error(open_store: OpenStore) -> None:
    s = await open_store()
    first = member("a#1")
    await s.register(first)
    with pytest.raises(ConfigError, match="a#1"):
        await s.register(member("a#1", address="10.0.0.1:1", heartbeat=5.0))
    with pytest.raises(ConfigError):
        await s.register(first)
    assert await s.members() == [first]


async def test_member_ids_are_exact(open_store: OpenStore) -> None:
    # MySQL collations would merge these; keys are bytes there.
    s = await open_store()
    ids = ["a", "A", "a ", "ä"]
    await registered(s, *ids)
    assert sorted(m.member_id for m in await s.members()) == sorted(ids)
    assert (await s.update("A", heartbeat=1.0)) is not None
    assert {m.member_id: m.heartbeat for m in await s.members()} == {
        "a": 100.0,
        "A": 1.0,
        "a ": 100.0,
        "ä": 100.0,
    }


async def test_update_changes_each_field_and_returns_the_row(open_store: OpenStore) -> None:
    s = await open_store()
    (a,) = await registered(s, "a#1", status="joining", activations=0, by_type={})
    row = await s.update("a#1", status="active")
    assert row == Member(**{**_fields(a), "status": "active"})
    row = await s.update("a#1", heartbeat=123.25)
    assert row is not None
    assert (row.status, row.heartbeat) == ("active", 123.25)
    row = await s.update("a#1", activations=42)
    assert row is not None
    assert (row.activations, row.heartbeat) == (42, 123.25)
    row = await s.update("a#1", by_type={"Counter": 40, "Room": 2})
    assert row is not None
    assert row.by_type == {"Counter": 40, "Room": 2}
    row = await s.update("a#1", status="draining", heartbeat=200.0, activations=1, by_type={})
    assert row == Member(
        **{
            **_fields(a),
            "status": "draining",
            "heartbeat": 200.0,
            "activations": 1,
            "by_type": {},
        }
    )
    assert await s.members() == [row]
    assert await s.update("a#1") == row  # nothing to change: the row as stored


def _fields(m: Member) -> dict[str, object]:
    return {f: getattr(m, f) for f in m.__struct_fields__}


async def test_update_of_unknown_member_is_none(open_store: OpenStore) -> None:
    s = await open_store()
    assert await s.update("nobody", heartbeat=1.0) is None
    assert await s.members() == []


@pytest.mark.parametrize("how", ["left", "dead"])
async def test_terminal_rows_never_change(open_store: OpenStore, how: str) -> None:
    s = await open_store()
    await registered(s, "a#1")
    if how == "left":
        gone = await s.update("a#1", status="left", heartbeat=150.0)
    else:
        assert await s.declare_dead("a#1")
        gone = await s.update("a#1", heartbeat=150.0)  # dead already: refused
    assert gone is not None
    assert gone.status == how
    for change in (
        {"status": "active"},
        {"status": "joining"},
        {"status": "left"},
        {"heartbeat": 999.0},
        {"activations": 5},
        {"by_type": {"X": 1}},
    ):
        assert await s.update("a#1", **change) == gone  # type: ignore[arg-type]
    assert await s.members() == [gone]


async def test_update_to_dead_is_refused(open_store: OpenStore) -> None:
    # ConfigError, which is also a ValueError: declare_dead is the way to "dead".
    s = await open_store()
    (a,) = await registered(s, "a#1")
    with pytest.raises(ConfigError, match="declare_dead"):
        await s.update("a#1", status="dead")
    with pytest.raises(ValueError, match="declare_dead"):
        await s.update("a#1", status="dead", heartbeat=5.0)
    with pytest.raises(ConfigError, match="unknown member status"):
        await s.update("a#1", status="zombie")  # type: ignore[arg-type]
    assert await s.members() == [a]


# -- suspicions, death, pruning -------------------------------------------------------------


async def test_suspect_counts_distinct_observers_within_the_window(
    open_store: OpenStore,
) -> None:
    s = await open_store()
    await registered(s, "t", "o1", "o2", "o3")
    assert await s.suspect("t", "o1", 100.0, 10.0) == 1
    assert await s.suspect("t", "o1", 101.0, 10.0) == 1  # the same observer again
    assert await s.suspect("t", "o2", 105.0, 10.0) == 2
    assert await s.suspect("t", "o3", 112.0, 10.0) == 2  # o1 (101) is out of the window
    assert await s.suspect("t", "o3", 200.0, 1000.0) == 3
    # Another target's suspicions are its own.
    assert await s.suspect("o1", "o2", 112.0, 10.0) == 1


async def test_a_repeat_suspicion_replaces_the_observers_time(open_store: OpenStore) -> None:
    s = await open_store()
    assert await s.suspect("t", "o1", 100.0, 10.0) == 1
    assert await s.suspect("t", "o2", 100.0, 10.0) == 2
    assert await s.suspect("t", "o1", 120.0, 10.0) == 1  # o2 (100) is too old
    # o1's suspicion now dates from 120: it counts at 125, o2's does not.
    assert await s.suspect("t", "o3", 125.0, 10.0) == 2


async def test_declare_dead_once_and_purges_only_that_members_placements(
    open_store: OpenStore,
) -> None:
    s = await open_store()
    await registered(s, "a#1", "b#1")
    for i in range(5):
        assert await s.claim(("Counter", f"a{i}"), "a#1") == "a#1"
        assert await s.claim(("Counter", f"b{i}"), "b#1") == "b#1"
    assert await s.declare_dead("a#1") is True
    assert await s.declare_dead("a#1") is False
    assert await s.declare_dead("nobody") is False
    rows = by_id(await s.members())
    assert rows["a#1"].status == "dead"
    assert rows["b#1"].status == "active"
    for i in range(5):
        assert await s.lookup(("Counter", f"a{i}")) is None
        assert await s.lookup(("Counter", f"b{i}")) == "b#1"
    assert await s.placement_counts() == {"b#1": 5}


async def test_declare_dead_of_a_member_that_left_is_false(open_store: OpenStore) -> None:
    s = await open_store()
    await registered(s, "a#1")
    await s.claim(("Counter", "x"), "a#1")
    await s.update("a#1", status="left")
    assert await s.declare_dead("a#1") is False
    assert by_id(await s.members())["a#1"].status == "left"
    assert await s.lookup(("Counter", "x")) == "a#1"  # left: only claims take it over


async def test_prune_removes_old_terminal_rows_and_their_suspicions(
    open_store: OpenStore,
) -> None:
    s = await open_store()
    await registered(s, "old-dead", "old-left", "new-dead", "old-live", heartbeat=100.0)
    await s.declare_dead("old-dead")
    await s.update("old-left", status="left")
    await s.update("new-dead", heartbeat=300.0)
    await s.declare_dead("new-dead")
    assert await s.suspect("old-dead", "old-live", 150.0, 100.0) == 1
    assert await s.suspect("old-live", "old-left", 150.0, 100.0) == 1
    assert await s.suspect("new-dead", "old-live", 150.0, 100.0) == 1

    assert await s.prune(200.0) == 2
    assert sorted(m.member_id for m in await s.members()) == ["new-dead", "old-live"]
    # Their suspicions (as target and as observer) went with them; others stay.
    assert await s.suspect("old-dead", "x", 150.0, 100.0) == 1
    assert await s.suspect("old-live", "x", 150.0, 100.0) == 1
    assert await s.suspect("new-dead", "x", 150.0, 100.0) == 2
    assert await s.prune(200.0) == 0
    # A live member is never pruned, however old its heartbeat.
    assert await s.prune(10_000.0) == 1
    assert [m.member_id for m in await s.members()] == ["old-live"]


# -- placement ------------------------------------------------------------------------------


async def test_claim_lookup_release(open_store: OpenStore) -> None:
    s = await open_store()
    await registered(s, "a#1", "b#1")
    key = ("Counter", "c1")
    assert await s.lookup(key) is None
    assert await s.claim(key, "a#1") == "a#1"
    assert await s.claim(key, "a#1") == "a#1"  # again: still ours
    assert await s.claim(key, "b#1") == "a#1"  # a live owner keeps it
    assert await s.lookup(key) == "a#1"
    assert await s.lookup(("Room", "c1")) is None  # type names are part of the key
    assert await s.release([key], "b#1") == 0  # not b's to release
    assert await s.lookup(key) == "a#1"
    assert await s.release([key, key, ("Counter", "never")], "a#1") == 1
    assert await s.lookup(key) is None
    assert await s.release([key], "a#1") == 0
    assert await s.release([], "a#1") == 0
    assert await s.claim(key, "b#1") == "b#1"


async def test_claim_keys_are_exact(open_store: OpenStore) -> None:
    s = await open_store()
    ids = ["a", "A", "a ", "ä", "a:b"]
    await registered(s, *(f"m{i}" for i in range(len(ids))))
    for i, object_id in enumerate(ids):
        assert await s.claim(("T", object_id), f"m{i}") == f"m{i}"
    assert await s.claim(("T:a", "b"), "m0") == "m0"  # vs ("T", "a:b")
    for i, object_id in enumerate(ids):
        assert await s.lookup(("T", object_id)) == f"m{i}"
    assert await s.placement_counts() == {"m0": 2, "m1": 1, "m2": 1, "m3": 1, "m4": 1}


async def test_claim_takes_over_from_a_dead_or_departed_owner(open_store: OpenStore) -> None:
    s = await open_store()
    await registered(s, "a#1", "b#1", "c#1")
    assert await s.claim(("T", "x"), "a#1") == "a#1"
    assert await s.claim(("T", "y"), "b#1") == "b#1"
    await s.update("b#1", status="left")  # left without releasing y
    await s.update("a#1", status="draining")  # draining still holds x
    assert await s.claim(("T", "x"), "c#1") == "a#1"
    assert await s.claim(("T", "y"), "c#1") == "c#1"
    assert await s.placement_counts() == {"a#1": 1, "c#1": 1}
    # A dead owner's placements are purged with it; a row it still named (claimed
    # concurrently) would be taken over the same way.
    assert await s.claim(("T", "z"), "c#1") == "c#1"
    assert await s.declare_dead("c#1")
    assert await s.placement_counts() == {"a#1": 1}


async def test_claim_takes_over_from_a_missing_owner(open_store: OpenStore) -> None:
    s = await open_store()
    await registered(s, "gone#1", "b#1")
    assert await s.claim(("T", "x"), "gone#1") == "gone#1"
    await s.update("gone#1", status="left", heartbeat=1.0)
    assert await s.prune(50.0) == 1  # its row is gone, its placement is not
    assert await s.lookup(("T", "x")) == "gone#1"
    assert await s.claim(("T", "x"), "b#1") == "b#1"
    assert await s.lookup(("T", "x")) == "b#1"
    assert await s.placement_counts() == {"b#1": 1}


async def test_claim_by_a_terminal_or_unknown_member_takes_nothing(
    open_store: OpenStore,
) -> None:
    s = await open_store()
    await registered(s, "a#1", "dead#1", "left#1")
    await s.declare_dead("dead#1")
    await s.update("left#1", status="left")
    await s.claim(("T", "held"), "a#1")
    for claimant in ("dead#1", "left#1", "nobody"):
        assert await s.claim(("T", "free"), claimant) == ""
        assert await s.claim(("T", "held"), claimant) == "a#1"
    assert await s.lookup(("T", "free")) is None
    # Not even over a dead owner.
    await s.claim(("T", "orphan"), "a#1")
    await s.declare_dead("a#1")
    assert await s.claim(("T", "orphan"), "left#1") == ""
    assert await s.placement_counts() == {}


async def test_placement_counts(open_store: OpenStore) -> None:
    s = await open_store()
    assert await s.placement_counts() == {}
    await registered(s, "a#1", "b#1")
    for i in range(3):
        await s.claim(("A", str(i)), "a#1")
    await s.claim(("B", "0"), "b#1")
    assert await s.placement_counts() == {"a#1": 3, "b#1": 1}
    assert await s.release([("A", "0"), ("A", "1")], "a#1") == 2
    assert await s.placement_counts() == {"a#1": 1, "b#1": 1}
    assert await s.release([("A", "2")], "a#1") == 1
    assert await s.placement_counts() == {"b#1": 1}


async def test_claim_many_answers_each_key_in_order(open_store: OpenStore) -> None:
    s = await open_store()
    await registered(s, "a#1", "b#1", "c#1")
    assert await s.claim_many([], "a#1") == []
    assert await s.claim(("T", "held"), "b#1") == "b#1"
    assert await s.claim(("T", "orphan"), "c#1") == "c#1"
    await s.update("c#1", status="left")
    keys = [("T", "free"), ("T", "held"), ("T", "orphan"), ("T", "free"), ("U", "free")]
    assert await s.claim_many(keys, "a#1") == ["a#1", "b#1", "a#1", "a#1", "a#1"]
    assert await s.placement_counts() == {"a#1": 3, "b#1": 1}
    assert await s.claim_many(keys[:3], "a#1") == ["a#1", "b#1", "a#1"]  # again: the same
    # A member that is not live takes nothing, and learns the owners.
    assert await s.claim_many([("T", "held"), ("T", "new")], "c#1") == ["b#1", ""]
    assert await s.lookup(("T", "new")) is None


async def test_claim_many_takes_a_large_batch(open_store: OpenStore) -> None:
    s = await open_store()
    await registered(s, "a#1", "b#1", "gone#1")
    keys = [("T", f"k{i}") for i in range(450)]
    for key in keys[::3]:
        assert await s.claim(key, "b#1") == "b#1"
    for key in keys[1::9]:
        assert await s.claim(key, "gone#1") == "gone#1"
    await s.update("gone#1", status="left")
    expected = ["b#1" if i % 3 == 0 else "a#1" for i in range(len(keys))]
    assert await s.claim_many(keys, "a#1") == expected
    assert await s.placement_counts() == {"a#1": 300, "b#1": 150}


async def test_claim_many_batches_racing_over_the_same_keys_have_one_winner_each(
    open_store: OpenStore,
) -> None:
    stores = [await open_store() for _ in range(4)]
    ids = [f"m{i}#1" for i in range(4)]
    await registered(stores[0], *ids)
    keys = [("Counter", f"k{i}") for i in range(40)]
    # Every batch wants every key, in its own order: no deadlock, one owner per key.
    orders = [keys, keys[::-1], keys[1::2] + keys[::2], keys[20:] + keys[:20]]
    results = await asyncio.gather(*(stores[i].claim_many(orders[i], ids[i]) for i in range(4)))
    owner = {key: await stores[0].lookup(key) for key in keys}
    for i, got in enumerate(results):
        assert got == [owner[key] for key in orders[i]]
    assert set(owner.values()) <= set(ids)
    assert sum((await stores[1].placement_counts()).values()) == len(keys)


# -- concurrency ----------------------------------------------------------------------------


async def test_concurrent_claims_have_exactly_one_winner(open_store: OpenStore) -> None:
    stores = [await open_store() for _ in range(5)]
    ids = [f"m{i}#1" for i in range(5)]
    await registered(stores[0], *ids)
    for round_ in range(3):
        key = ("Counter", f"hot{round_}")
        calls = [stores[i % 5].claim(key, ids[i % 5]) for i in range(20)]
        results = await asyncio.gather(*calls)
        assert len(set(results)) == 1, results
        (winner,) = set(results)
        assert winner in ids
        assert await stores[3].lookup(key) == winner
    assert sum((await stores[1].placement_counts()).values()) == 3


async def test_concurrent_takeovers_of_a_dead_owner_have_one_winner(
    open_store: OpenStore,
) -> None:
    stores = [await open_store() for _ in range(5)]
    ids = [f"m{i}#1" for i in range(5)]
    await registered(stores[0], "old#1", *ids)
    keys = [("Counter", f"k{i}") for i in range(4)]
    for key in keys:
        await stores[0].claim(key, "old#1")
    await stores[0].update("old#1", status="left")
    for key in keys:
        results = await asyncio.gather(*(stores[i % 5].claim(key, ids[i % 5]) for i in range(20)))
        assert len(set(results)) == 1, results
        assert results[0] in ids
        assert await stores[2].lookup(key) == results[0]
    assert sum((await stores[4].placement_counts()).values()) == len(keys)
    assert "old#1" not in await stores[4].placement_counts()


async def test_declare_dead_racing_claims_leaves_nothing_on_the_dead(
    open_store: OpenStore,
) -> None:
    stores = [await open_store() for _ in range(4)]
    for round_ in range(3):
        victim, other = f"victim{round_}#1", f"other{round_}#1"
        await registered(stores[0], victim, other)
        keys = [("T", f"r{round_}k{i}") for i in range(24)]
        for key in keys[:4]:  # some placements exist before the race
            assert await stores[0].claim(key, victim) == victim

        calls = [
            *(stores[1 + i % 2].claim(key, victim) for i, key in enumerate(keys)),
            stores[3].declare_dead(victim),
            *(stores[0].claim(key, other) for key in keys[::3]),
        ]
        calls.insert(12, calls.pop(24))  # the kill lands amid the victim's claims
        results = await asyncio.gather(*calls)
        assert True in results  # the kill's answer
        for key in keys:
            assert await stores[2].lookup(key) in (None, other)
        assert victim not in await stores[2].placement_counts()
        assert await stores[1].claim(keys[1], victim) in ("", other)
        assert await stores[1].lookup(keys[1]) in (None, other)


# -- lifecycle and errors -------------------------------------------------------------------


async def test_close_and_reopen_keep_everything(backend: Backend, prefix: str) -> None:
    s = cluster_store_from_url(backend.url(prefix))
    await s.open()
    await s.open()
    (a,) = await registered(s, "a#1")
    await s.claim(("T", "x"), "a#1")
    await s.suspect("a#1", "b#1", 100.0, 10.0)
    await s.close()
    await s.close()
    with pytest.raises(StorageError, match="not open"):
        await s.members()
    await s.open()
    try:
        assert await s.members() == [a]
        assert await s.lookup(("T", "x")) == "a#1"
        assert await s.suspect("a#1", "c#1", 101.0, 10.0) == 2
    finally:
        await s.close()
    async with cluster_store_from_url(backend.url(prefix)) as again:
        assert await again.members() == [a]


async def test_two_instances_opening_together_migrate_once(backend: Backend, prefix: str) -> None:
    stores = [cluster_store_from_url(backend.url(prefix)) for _ in range(3)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        await stores[0].register(member("a#1"))
        for s in stores:
            assert [m.member_id for m in await s.members()] == ["a#1"]
    finally:
        for s in stores:
            await s.close()


async def test_cluster_and_state_tables_share_a_prefix(backend: Backend, prefix: str) -> None:
    from rio.storage import storage_from_url

    state = storage_from_url(backend.url(prefix))
    cluster = cluster_store_from_url(backend.url(prefix))
    await asyncio.gather(state.open(), cluster.open())
    try:
        await cluster.register(member("a#1"))
        assert [m.member_id for m in await cluster.members()] == ["a#1"]
        assert await state.load("T", "x", dict) is None
    finally:
        await state.close()
        await cluster.close()


def _unreachable(backend: Backend, tmp_path: Path, prefix: str) -> str:
    if backend.name == "sqlite":
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        return f"sqlite:///{blocker}/cluster.db"
    parts = urlsplit(backend.url(prefix))
    netloc = parts.netloc.rsplit("@", 1)
    netloc[-1] = "127.0.0.1:1"
    query = f"{parts.query}&connect_timeout=2"
    return urlunsplit(parts._replace(netloc="@".join(netloc), query=query))


async def test_an_unreachable_store_is_storage_unavailable(
    backend: Backend, tmp_path: Path, prefix: str
) -> None:
    s = cluster_store_from_url(_unreachable(backend, tmp_path, prefix))
    with pytest.raises(StorageUnavailable):
        await s.open()
    await s.close()


@pytest.mark.parametrize(
    ("url", "cls"),
    [
        ("sqlite:///x.db", "SQLiteClusterStore"),
        ("postgresql://u:pw@h/db", "PostgresClusterStore"),
        ("postgres://h/db", "PostgresClusterStore"),
        ("mysql://h/db", "MySQLClusterStore"),
        ("mariadb://u:pw@h/db", "MySQLClusterStore"),
        ("redis://h:6379/0", "RedisClusterStore"),
        ("rediss://:pw@h:6379/0", "RedisClusterStore"),
    ],
)
def test_every_scheme_builds_its_store(url: str, cls: str) -> None:
    store = cluster_store_from_url(url)
    assert type(store).__name__ == cls
    assert "pw" not in store.url


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///x.db?bogus=1",
        "sqlite://host/x.db",
        "postgresql://h/db?bogus=1",
        "mysql://h",
        "redis://h/x",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        cluster_store_from_url(url)


@pytest.fixture
async def killable(backend: Backend, prefix: str) -> AsyncIterator[tuple[str, Kill]]:
    """A URL for this test and a function that drops every server connection to it."""
    if isinstance(backend, PostgresBackend | RedisBackend):
        server = backend

        async def kill() -> int:
            return await server.kill(prefix)

        yield backend.url(prefix), kill
    elif isinstance(backend, MySQLBackend):
        # Its own database, so that killing every connection in it spares everyone else.
        database = f"{prefix}kill"
        await backend.query(f"CREATE DATABASE `{database}`")
        mysql = backend

        async def kill() -> int:
            return await mysql.kill_in_database(database)

        try:
            yield backend.url(prefix).replace("/test?", f"/{database}?", 1), kill
        finally:
            await backend.query(f"DROP DATABASE IF EXISTS `{database}`")
    else:
        pytest.skip(f"{backend.name} has no server connections to drop")


async def test_replayable_calls_survive_the_server_dropping_connections(
    killable: tuple[str, Kill],
) -> None:
    url, kill = killable
    s = cluster_store_from_url(url)
    await s.open()
    try:
        await registered(s, "a#1", "b#1")
        assert await s.claim(("T", "x"), "a#1") == "a#1"
        assert await kill() > 0
        assert [m.member_id for m in await s.members()] == ["a#1", "b#1"]
        await kill()
        assert await s.claim(("T", "x"), "b#1") == "a#1"
        assert await s.claim(("T", "y"), "b#1") == "b#1"
        await kill()
        row = await s.update("a#1", heartbeat=500.0)
        assert row is not None
        assert row.heartbeat == 500.0
        await kill()
        assert await s.suspect("a#1", "b#1", 1.0, 1.0) == 1
        await kill()
        assert await s.lookup(("T", "y")) == "b#1"
        await kill()
        assert await s.placement_counts() == {"a#1": 1, "b#1": 1}
    finally:
        await s.close()
