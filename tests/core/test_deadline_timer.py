"""The Deadlines structure: a FIFO for in-order deadlines, a heap for the others, one timer."""

from __future__ import annotations

from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from rio.core.deadlines import Deadlines


class FakeTimer:
    def __init__(self, when: float, callback: Any, args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Just the clock and call_at of an event loop, advanced by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any, *args: Any) -> FakeTimer:
        timer = FakeTimer(when, callback, args)
        self.timers.append(timer)
        return timer

    def advance(self, to: float) -> None:
        self.now = to
        while True:
            due = [t for t in self.timers if not t.cancelled and t.when <= to]
            if not due:
                return
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            timer.callback(*timer.args)

    def armed(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]


# An operation: add a token with a deadline (relative to now), answer a token, or let
# time pass.
ops = st.one_of(
    st.tuples(st.just("add"), st.floats(0, 10)),
    st.tuples(st.just("answer"), st.integers(0, 200)),
    st.tuples(st.just("advance"), st.floats(0, 3)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=200))
def test_every_live_token_expires_once_at_its_deadline_and_answered_ones_never(
    script: list[tuple[str, float]],
) -> None:
    loop = FakeLoop()
    live: set[int] = set()
    when_of: dict[int, float] = {}
    expired: list[tuple[int, float]] = []

    def expire(token: int) -> None:
        assert token in live
        live.discard(token)
        expired.append((token, loop.now))

    deadlines = Deadlines(expire, live.__contains__)
    for op, arg in script:
        if op == "add":
            token = len(when_of)
            when_of[token] = loop.now + arg
            live.add(token)
            deadlines.add(cast(Any, loop), when_of[token], token)
        elif op == "answer":
            live.discard(int(arg))
        else:
            loop.advance(loop.now + arg)
            # Nothing whose time has come is still waiting.
            assert all(when_of[t] > loop.now for t in live)
        # One timer at most, never later than the soonest waiting deadline.
        assert len(loop.armed()) <= 1
        if live:
            assert loop.armed()
            assert loop.armed()[0].when <= min(when_of[t] for t in live)
    loop.advance(loop.now + 20)
    assert not live
    assert len({t for t, _ in expired}) == len(expired)  # never twice
    assert all(at >= when_of[t] for t, at in expired)


def test_in_order_deadlines_use_the_fifo_and_a_sooner_one_the_heap() -> None:
    loop = FakeLoop()
    live = {0, 1, 2, 3}
    fired: list[int] = []

    def expire(token: int) -> None:
        live.discard(token)
        fired.append(token)

    deadlines = Deadlines(expire, live.__contains__)
    for token, when in [(0, 1.0), (1, 2.0), (2, 2.0), (3, 0.5)]:
        deadlines.add(cast(Any, loop), when, token)
    assert len(deadlines) == 4
    loop.advance(0.6)
    assert fired == [3]
    loop.advance(2.0)
    assert fired == [3, 0, 1, 2]
    assert len(deadlines) == 0
    assert not loop.armed()


def test_answered_entries_are_swept_as_they_pile_up() -> None:
    loop = FakeLoop()
    live: set[int] = set()
    deadlines = Deadlines(lambda token: None, live.__contains__)
    for token in range(100_000):
        live.add(token)
        deadlines.add(cast(Any, loop), 30.0 + token * 1e-6, token)
        live.discard(token - 10)  # about ten wait at any time
    assert len(deadlines) <= 2 * 1024 + 1
    for token in range(100_000):
        live.add(token)
        deadlines.add(cast(Any, loop), 30.0 - token * 1e-6, token)  # decreasing: the heap
        live.discard(token - 10)
    assert len(deadlines) <= 4 * 1024 + 2
    live.clear()
    deadlines.sweep()
    assert len(deadlines) == 0
