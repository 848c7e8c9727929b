"""RemoteCalls without processes: calls into a fake hub, answers by hand, deadlines per run.

Calls sent one after another with the same deadline share one deadline entry (a run
of request ids); these tests check that every call still times out on its own
deadline, that answered calls never do, and that the entries do not pile up.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

import rio
from rio.core.registry import Handler
from rio.local.protocol import Reply
from rio.local.remote import RemoteCalls


class FakeHub:
    """Records what is sent instead of writing to rings."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.sent: list[tuple[int, Any]] = []

    def send(self, dst: int, msg: Any) -> None:
        msgspec.msgpack.encode(msg)  # raises for what cannot cross, like the real hub
        self.sent.append((dst, msg))

    def send_encoded(self, dst: int, data: bytes) -> None:
        self.sent.append((dst, msgspec.msgpack.decode(data)))

    def reset_peer(self, peer: int) -> None:
        pass


async def _echo(self: Any, value: int) -> int:
    return value


def handler() -> Handler:
    h = Handler(owner="T", name="echo", fn=_echo, reentrant=False)
    h.prepare()
    return h


def answer(remote: RemoteCalls, req: int, value: int) -> None:
    remote.on_reply(Reply(req, True, msgspec.Raw(msgspec.msgpack.encode(value))))


async def test_calls_sharing_a_deadline_expire_together_and_answered_ones_do_not() -> None:
    hub = FakeHub()
    remote = RemoteCalls(hub, "test")  # type: ignore[arg-type]
    h = handler()
    loop = hub.loop
    now = loop.time()
    futs = [
        remote.send(1, ("T", f"x{i}"), h, (i,), (("T", f"x{i}"),), now + 0.05, now)
        for i in range(10)
    ]
    assert [m[1] for _, m in hub.sent] == list(range(1, 11))  # request ids in order
    assert hub.sent[0][1][6] == ()  # a chain of just the target travels empty
    for req in (1, 4, 10):
        answer(remote, req, req * 100)
    await asyncio.sleep(0.2)
    for i, fut in enumerate(futs):
        if i + 1 in (1, 4, 10):
            assert fut.result() == (i + 1) * 100
        else:
            with pytest.raises(rio.CallTimeout):
                fut.result()
    assert len(remote) == 0


async def test_interleaved_deadlines_each_expire_on_time() -> None:
    hub = FakeHub()
    remote = RemoteCalls(hub, "test")  # type: ignore[arg-type]
    h = handler()
    loop = hub.loop
    now = loop.time()
    budgets = [0.05, 0.05, 5.0, 0.05, 5.0, 5.0, 0.02]
    futs = [remote.send(1, ("T", "x"), h, (i,), (), now + b, now) for i, b in enumerate(budgets)]
    await asyncio.sleep(0.2)
    for fut, budget in zip(futs, budgets, strict=True):
        assert fut.done() == (budget < 1)
    for fut, budget in zip(futs, budgets, strict=True):
        if budget > 1:
            answer(remote, futs.index(fut) + 1, 7)
            assert fut.result() == 7
        else:
            assert isinstance(fut.exception(), rio.CallTimeout)


async def test_a_call_whose_deadline_already_passed_still_times_out() -> None:
    """Even with the very deadline of a run that has already expired (rio.timeout blocks)."""
    hub = FakeHub()
    remote = RemoteCalls(hub, "test")  # type: ignore[arg-type]
    h = handler()
    loop = hub.loop
    now = loop.time()
    first = remote.send(1, ("T", "x"), h, (1,), (), now + 0.01, now)
    await asyncio.sleep(0.05)
    with pytest.raises(rio.CallTimeout):
        first.result()
    late = remote.send(1, ("T", "x"), h, (2,), (), now + 0.01, loop.time())
    await asyncio.sleep(0.05)
    with pytest.raises(rio.CallTimeout):
        late.result()


async def test_answered_runs_do_not_pile_up() -> None:
    hub = FakeHub()
    remote = RemoteCalls(hub, "test")  # type: ignore[arg-type]
    h = handler()
    loop = hub.loop
    for i in range(20_000):
        now = loop.time() + i * 1e-4  # a new deadline each call: a run per call
        fut = remote.send(1, ("T", "x"), h, (i,), (), now + 30.0, now)
        answer(remote, i + 1, i)
        assert fut.result() == i
        hub.sent.clear()
    assert len(remote._runs) <= 2 * 1024 + 1
    remote.fail_all(lambda: rio.SystemStopping("done"))
    assert len(remote._runs) == 0


async def test_an_argument_that_cannot_cross_is_refused_at_the_call() -> None:
    hub = FakeHub()
    remote = RemoteCalls(hub, "test")  # type: ignore[arg-type]
    now = hub.loop.time()
    with pytest.raises(rio.BadArguments, match="argument 'value' cannot cross processes"):
        remote.send(1, ("T", "x"), handler(), (object(),), (), now + 1, now)
    assert len(remote) == 0
    assert hub.sent == []
