"""Regression tests from a review of the router's fast path (Call frames, plain answers).

Nodes are in-process ``App(cluster=..., workers=0)`` nodes on SQLite files (see
tests/cluster/inproc.py); a client (``rio.connect``) makes the calls, so they cross TCP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator
from typing import Any

import pytest
from cluster.inproc import Nodes, hosting, node_launcher

import rio

SECRET = "fastpath-review-secret"

#: What the awaitable returned by ``FpActor.deferred`` did, and when.
RAN: list[str] = []


class _Deferred:
    """An awaitable value (not a coroutine: no "never awaited" warning when dropped)."""

    def __await__(self) -> Generator[Any, None, int]:
        RAN.append("awaited outside the turn")
        return 42
        yield  # a generator


class FpActor(rio.Actor[None]):
    async def ping(self) -> None:
        return None

    async def deferred(self) -> Any:
        # A handler that returns an awaitable instead of awaiting it (a forgotten
        # ``await``). In-process the caller gets the object; through a worker the
        # call fails ("cannot cross processes"); it must never be run by the
        # transport, outside the actor's turn.
        return _Deferred()

    async def take(self, items: Any) -> Any:
        return items

    async def cancelled(self) -> None:
        raise asyncio.CancelledError()


@pytest.fixture
async def nodes(urls: tuple[str, str]) -> AsyncIterator[Nodes]:
    async with node_launcher("fpr", [FpActor], *urls, SECRET) as start:
        yield start


async def test_an_awaitable_a_handler_returns_is_not_awaited_by_the_node(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    # Runtime.deliver(plain=True) hands the value itself to the transport, whose
    # Inbound._start awaits anything awaitable in a task: the value's code runs
    # outside the turn (no turn isolation) and its result is answered. Before
    # plain answers (and in a worker pool today) the call failed: not encodable.
    RAN.clear()
    await nodes(1)
    async with rio.connect(urls[0], secret=SECRET) as client:
        ref = client.ref(FpActor, "d")
        await ref.ping()  # placed: the next call takes the fast path (Call frame)
        with pytest.raises(rio.RemoteError, match="cannot be encoded"):
            await ref.deferred()
    assert RAN == []


async def test_a_redirected_call_carries_the_arguments_it_was_made_with(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    # The fast path encodes the arguments when the call is made; after a Redirect
    # (or a lost connection) the slow road used to resend those bytes, but now it
    # encodes the caller's objects again, as they are by then.
    ns = await nodes(2)
    async with rio.connect(urls[0], secret=SECRET) as client:
        homes: dict[int, str] = {}
        for i in range(40):  # opens the client's connections to both nodes
            oid = f"r{i}"
            await client.ref(FpActor, oid).ping()
            homes.setdefault(hosting(ns, ("FpActor", oid))[0], oid)
        target = homes[1]  # lives on node 1
        # A stale cache entry (the object moved): the call goes to node 0 on the
        # fast path, which answers Redirect to node 1.
        client.router.cache.put(("FpActor", target), ns[0].core.member_id)
        items = [1, 2, 3]
        call = client.ref(FpActor, target).take(items)
        items.clear()  # the caller reuses its list once the call is made
        assert await call == [1, 2, 3]


async def test_a_handler_cancelled_at_once_is_an_answer_and_the_connection_stays(
    nodes: Nodes, urls: tuple[str, str]
) -> None:
    # A handler that raises CancelledError before its first await: the node answers
    # it as the call's error (as a worker does); it used to escape the transport's
    # read callback and close the whole connection, failing every call on it over
    # and leaving this one to wait for its deadline.
    await nodes(1)
    async with rio.connect(urls[0], secret=SECRET) as client:
        ref = client.ref(FpActor, "c")
        await ref.ping()
        [conn] = [c for c in client.router._conns.values() if not c.is_closed]
        async with asyncio.timeout(5):
            with pytest.raises(rio.RemoteError, match="CancelledError"):
                await ref.with_timeout(30).cancelled()
        assert not conn.is_closed
        assert await ref.take([7]) == [7]
