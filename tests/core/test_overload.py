"""Bounded mailboxes: a call that would wait behind ``max_queued`` others is refused.

On every runtime path: in-process the call raises at once; from another process the
refusal comes back as the call's answer. Either way it never ran, and the calls
already queued are served as usual.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from waiting import eventually

import rio


class OlGate(rio.Actor):
    """Holds its turn until released (release is reentrant, so it runs meanwhile)."""

    _gate: asyncio.Future[None] | None = None

    def _gate_future(self) -> asyncio.Future[None]:
        if self._gate is None:
            self._gate = asyncio.get_running_loop().create_future()
        return self._gate

    async def hold(self) -> str:
        await self._gate_future()
        self._gate = None
        return "held"

    @rio.reentrant
    async def release(self) -> None:
        gate = self._gate_future()
        if not gate.done():
            gate.set_result(None)

    async def n(self, i: int) -> int:
        return i


async def test_a_full_mailbox_refuses_further_calls_with_overloaded(make_app: Any) -> None:
    async with make_app(max_queued=3):
        ref = OlGate.ref("m")
        held = ref.hold()  # busy until released: what follows queues behind it
        calls: list[Any] = []
        for i in range(6):
            try:
                calls.append(ref.n(i))
            except rio.Overloaded as e:  # in-process: refused right at the call
                calls.append(e)
        await ref.release()
        assert await held == "held"
        outcomes = [c if isinstance(c, Exception) else await _settle(c) for c in calls]
        assert outcomes[:3] == [0, 1, 2]
        for refused in outcomes[3:]:
            assert isinstance(refused, rio.Overloaded)
            assert "OlGate/m.n() refused" in str(refused)
            assert "max_queued=3" in str(refused)
        assert await ref.n(7) == 7  # room again once the mailbox drained


async def _settle(fut: Any) -> Any:
    try:
        return await fut
    except rio.Overloaded as e:
        return e


def test_max_queued_must_be_a_positive_whole_number() -> None:
    for bad in (0, -1, 2.5, "10", True):
        with pytest.raises(rio.ConfigError, match="max_queued"):
            rio.App("x", max_queued=bad)  # type: ignore[arg-type]


_fired = asyncio.Event()


class OlReminded(OlGate):
    async def arm(self, due: float) -> None:
        await self.register_reminder("r", 3600.0, due=due)

    async def receive_reminder(self, name: str) -> None:
        _fired.set()


async def test_a_reminder_firing_refused_by_a_full_mailbox_is_tried_again(
    logs: list[str],
) -> None:
    """Overloaded means the firing never ran: it is retried, not counted as delivered."""
    _fired.clear()
    app = rio.App("ol-rem", storage="memory://", workers=0, max_queued=1, reminder_poll=0.05)
    async with app:
        ref = OlReminded.ref("r")
        await ref.arm(0.3)
        held = ref.hold()
        queued = ref.n(1)  # the mailbox (of one) is full until released
        await eventually(
            lambda: any("Overloaded" in line and "'r'" in line for line in logs),
            what="a firing refused",
        )
        await ref.release()
        assert await held == "held"
        assert await queued == 1
        await asyncio.wait_for(_fired.wait(), 10)
