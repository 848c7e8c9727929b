"""A node's side of the directory (``rio.cluster.node.Placement``) on a real SQLite store.

A burst of activations claims its objects in a few store transactions, not one each;
every claimer still gets its own answer: ours, another member's (``Redirect``), or
the store's failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from rio.cluster.node import CLAIM_BATCH, Placement
from rio.cluster.routing import Redirect
from rio.cluster.store import Key, Member
from rio.cluster.stores.sqlite import SQLiteClusterStore
from rio.core.errors import StorageError


class CountingStore(SQLiteClusterStore):
    """The real SQLite store, counting the claim batches it is asked for."""

    batches: list[int]

    async def claim_many(self, keys: Sequence[Key], member_id: str) -> list[str]:
        self.batches.append(len(keys))
        return await super().claim_many(keys, member_id)


def member(member_id: str) -> Member:
    return Member(
        member_id=member_id,
        node=member_id.split("#")[0],
        address="127.0.0.1:7000",
        incarnation=1,
        status="active",
        types=["T"],
        heartbeat=100.0,
        started=90.0,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    s = CountingStore(f"sqlite:///{tmp_path / 'cluster.db'}")
    s.batches = []
    await s.open()
    for m in ("a#1", "b#1"):
        await s.register(member(m))
    try:
        yield s
    finally:
        await s.close()


async def test_a_burst_of_claims_goes_in_a_few_batches(store: CountingStore) -> None:
    place = Placement(store, "a#1", "node-a")
    keys = [("T", str(i)) for i in range(2_500)]
    await asyncio.gather(*(place.claim(k) for k in keys))
    assert place.owned == set(keys)
    assert await store.placement_counts() == {"a#1": 2_500}
    assert sum(store.batches) == 2_500
    # The first alone, then the rest, at most CLAIM_BATCH per transaction.
    assert max(store.batches) == CLAIM_BATCH
    assert len(store.batches) <= 5, store.batches


async def test_each_claimer_of_a_batch_gets_its_own_answer(store: CountingStore) -> None:
    assert await store.claim(("T", "theirs"), "b#1") == "b#1"
    place = Placement(store, "a#1", "node-a")
    results = await asyncio.gather(
        *(place.claim(("T", k)) for k in ["x", "theirs", "y"]), return_exceptions=True
    )
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], Redirect)
    assert results[1].owner == "b#1"
    assert "T/theirs is placed on b#1, not node-a" in str(results[1])
    assert place.owned == {("T", "x"), ("T", "y")}


async def test_a_store_failure_fails_every_claim_of_its_batch_and_the_next_succeed(
    store: CountingStore, tmp_path: Path
) -> None:
    place = Placement(store, "a#1", "node-a")
    await store.close()
    results = await asyncio.gather(
        *(place.claim(("T", str(i))) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, StorageError) for r in results), results
    assert place.owned == set()
    await store.open()
    await place.claim(("T", "0"))
    assert place.owned == {("T", "0")}
    assert await store.lookup(("T", "0")) == "a#1"


async def test_a_cancelled_claimer_leaves_the_others_answered(store: CountingStore) -> None:
    place = Placement(store, "a#1", "node-a")
    tasks = [asyncio.ensure_future(place.claim(("T", str(i)))) for i in range(4)]
    await asyncio.sleep(0)  # all four queued
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert [results[i] for i in (0, 2, 3)] == [None, None, None]
    assert place.owned == {("T", "0"), ("T", "2"), ("T", "3")}
