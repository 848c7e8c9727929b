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

    def send(self, dst: int, msg: Any) -> int:
        data = msgspec.msgpack.encode(msg)  # raises for what cannot cross, like the real hub
        self.sent.append((dst, msg))
        return len(data)

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


# -- flow control: a window of calls in flight per process, a bounded queue behind it ----


def _sent_reqs(hub: FakeHub) -> list[int]:
    return [m[1] for _, m in hub.sent]


async def test_calls_beyond_the_window_wait_their_turn_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("rio.local.remote.WINDOW", 3)
    hub = FakeHub()
    remote = RemoteCalls(hub, "test")  # type: ignore[arg-type]
    h = handler()
    now = hub.loop.time()
    futs = [remote.send(1, ("T", "x"), h, (i,), (("T", "x"),), now + 30, now) for i in range(8)]
    assert _sent_reqs(hub) == [1, 2, 3]  # the window; the rest wait, encoded
    assert remote.waiting() == 5
    assert len(remote) == 8
    other = remote.send(2, ("T", "y"), h, (9,), (("T", "y"),), now + 30, now)
    assert _sent_reqs(hub)[-1] == 9  # each process has its own window
    answer(remote, 2, 20)
    assert _sent_reqs(hub) == [1, 2, 3, 9, 4]  # an answer lets the next one go
    for req in (1, 3, 4, 5, 6, 7, 8):
        answer(remote, req, req * 10)
    assert _sent_reqs(hub) == [1, 2, 3, 9, 4, 5, 6, 7, 8]
    sent_args = [m[7] for _, m in hub.sent if m[1] >= 4]  # encoded while they waited
    assert [msgspec.msgpack.decode(a) for a in sent_args[1:]] == [[i] for i in range(3, 8)]
    assert [f.result() for f in futs] == [10, 20, 30, 40, 50, 60, 70, 80]
    assert remote.waiting() == 0
    assert not other.done()


async def test_a_waiting_call_keeps_its_arguments_as_they_were_when_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("rio.local.remote.WINDOW", 1)
    hub = FakeHub()
    remote = RemoteCalls(hub, "test")  # type: ignore[arg-type]
    h = handler()
    now = hub.loop.time()
    value = [1, 2]
    remote.send(1, ("T", "x"), h, (0,), (), now + 30, now)
    remote.send(1, ("T", "x"), h, (value,), (), now + 30, now)
    value.append(3)  # the caller reuses its list while the call waits
    answer(remote, 1, 0)
    assert msgspec.msgpack.decode(hub.sent[-1][1][7]) == [[1, 2]]


async def test_calls_made_inside_a_turn_never_wait_for_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An actor's call queued behind calls that wait on that actor would deadlock."""
    monkeypatch.setattr("rio.local.remote.WINDOW", 2)
    hub = FakeHub()
    remote = RemoteCalls(hub, "test")  # type: ignore[arg-type]
    h = handler()
    now = hub.loop.time()
    for i in range(4):
        remote.send(1, ("T", "x"), h, (i,), (("T", "x"),), now + 30, now)
    nested = (("A", "a"), ("T", "y"))
    remote.send(1, ("T", "y"), h, (99,), nested, now + 30, now)
    assert _sent_reqs(hub) == [1, 2, 5]


async def test_a_full_queue_refuses_the_call_at_once_with_overloaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("rio.local.remote.WINDOW", 2)
    hub = FakeHub()
    remote = RemoteCalls(hub, "test", max_queued=3)  # type: ignore[arg-type]
    h = handler()
    now = hub.loop.time()
    futs = [remote.send(1, ("T", "x"), h, (i,), (), now + 30, now) for i in range(5)]
    with pytest.raises(rio.Overloaded, match=r"T/x\.echo\(\) refused: 3 calls .*worker 1"):
        remote.send(1, ("T", "x"), h, (5,), (), now + 30, now)
    assert len(remote) == 5  # the refused call left nothing behind
    for req in range(1, 6):
        answer(remote, req, req)
    assert [f.result() for f in futs] == [1, 2, 3, 4, 5]
    remote.send(1, ("T", "x"), h, (6,), (), now + 30, now)  # room again


async def test_calls_that_expired_while_waiting_free_the_queue_and_say_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("rio.local.remote.WINDOW", 1)
    hub = FakeHub()
    remote = RemoteCalls(hub, "test", max_queued=4)  # type: ignore[arg-type]
    h = handler()
    loop = hub.loop
    now = loop.time()
    first = remote.send(1, ("T", "x"), h, (0,), (), now + 30, now)
    short = [remote.send(1, ("T", "x"), h, (i,), (), now + 0.02, now) for i in range(4)]
    with pytest.raises(rio.Overloaded):
        remote.send(1, ("T", "x"), h, (9,), (), now + 30, now)
    await asyncio.gather(*short, return_exceptions=True)
    for fut in short:
        with pytest.raises(rio.CallTimeout, match=r"was not sent within .* calls from this"):
            fut.result()
    now = loop.time()
    later = [remote.send(1, ("T", "x"), h, (i,), (), now + 30, now) for i in range(4)]
    answer(remote, 1, 0)
    assert first.result() == 0
    assert _sent_reqs(hub) == [1, 6]  # the expired ones were never sent (nor the refused)
    assert not any(f.done() for f in later)


async def test_calls_waiting_for_a_dead_worker_are_held_then_sent_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("rio.local.remote.WINDOW", 2)
    hub = FakeHub()
    remote = RemoteCalls(hub, "test")  # type: ignore[arg-type]
    h = handler()
    now = hub.loop.time()
    futs = [remote.send(1, ("T", "x"), h, (i,), (), now + 30, now) for i in range(4)]
    assert remote.peer_down(1, 1234, "killed") == 2  # the two sent ones
    for fut in futs[:2]:
        with pytest.raises(rio.WorkerLost, match=r"worker 1 \(pid 1234\) died"):
            fut.result()
    nested = remote.send(1, ("T", "y"), h, (7,), (("A", "a"), ("T", "y")), now + 30, now)
    hub.sent.clear()
    remote.peer_up(1)
    assert _sent_reqs(hub) == [5, 3, 4]  # a turn's calls at once; the rest in order
    answer(remote, 3, 3)
    answer(remote, 4, 4)
    answer(remote, 5, 5)
    assert [f.result() for f in (*futs[2:], nested)] == [3, 4, 5]


async def test_one_busy_object_does_not_hold_back_calls_to_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The window is per object: long polls to one object leave the worker reachable."""
    monkeypatch.setattr("rio.local.remote.WINDOW", 2)
    hub = FakeHub()
    remote = RemoteCalls(hub, "test")  # type: ignore[arg-type]
    h = handler()
    now = hub.loop.time()
    for i in range(4):
        remote.send(1, ("T", "busy"), h, (i,), (), now + 30, now)
    other = remote.send(1, ("T", "idle"), h, (9,), (), now + 30, now)
    assert _sent_reqs(hub) == [1, 2, 5]
    answer(remote, 5, 9)
    assert other.result() == 9


async def test_a_turn_s_calls_held_through_a_restart_are_not_overtaken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Held calls of turns all go when the worker is back, before any later call of theirs."""
    monkeypatch.setattr("rio.local.remote.WINDOW", 1)
    hub = FakeHub()
    remote = RemoteCalls(hub, "test")  # type: ignore[arg-type]
    h = handler()
    now = hub.loop.time()
    nested = (("A", "a"), ("T", "x"))
    remote.peer_down(1, 1234, "killed")
    for i in range(3):
        remote.send(1, ("T", "x"), h, (i,), nested, now + 30, now)  # a turn's, held
    remote.send(1, ("T", "x"), h, (7,), (), now + 30, now)  # a script's, held
    remote.peer_up(1)
    remote.send(1, ("T", "x"), h, (3,), nested, now + 30, now)  # the turn goes on
    assert _sent_reqs(hub) == [1, 2, 3, 5]  # the script's waits for the window
    assert remote.waiting() == 1


async def test_control_calls_never_wait_nor_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rio.local.remote.WINDOW", 1)
    hub = FakeHub()
    remote = RemoteCalls(hub, "test", max_queued=1)  # type: ignore[arg-type]
    h = handler()
    stats = Handler(owner="", name="$stats", fn=_echo, reentrant=True)
    stats.prepare()
    now = hub.loop.time()
    remote.send(1, ("", ""), h, (0,), (), now + 30, now)
    remote.send(1, ("", ""), h, (1,), (), now + 30, now)  # waits: the queue is full
    remote.send(1, ("", ""), stats, (), (), now + 30, now)
    assert _sent_reqs(hub) == [1, 3]


async def test_a_call_cancelled_while_waiting_is_never_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("rio.local.remote.WINDOW", 1)
    hub = FakeHub()
    remote = RemoteCalls(hub, "test")  # type: ignore[arg-type]
    h = handler()
    now = hub.loop.time()
    remote.send(1, ("T", "x"), h, (0,), (), now + 30, now)
    gone = remote.send(1, ("T", "x"), h, (1,), (), now + 30, now)
    kept = remote.send(1, ("T", "x"), h, (2,), (), now + 30, now)
    gone.cancel()
    answer(remote, 1, 0)
    assert _sent_reqs(hub) == [1, 3]
    answer(remote, 3, 2)
    assert kept.result() == 2
    assert len(remote) == 0
    assert remote.waiting() == 0
