"""The requests a connection waits on (rio.cluster._calls.Pending): deadlines per run."""

from __future__ import annotations

import asyncio

import pytest

import rio
from rio.cluster._calls import Pending


async def test_each_run_times_out_with_its_budget_and_answered_ones_do_not_pile_up() -> None:
    loop = asyncio.get_running_loop()
    next_id = 1
    pending = Pending(loop, "node-x", lambda: next_id)

    def track(deadline: float, budget: float) -> asyncio.Future[object]:
        nonlocal next_id
        req = next_id
        next_id += 1
        return pending.track(req, deadline, budget)  # type: ignore[return-value]

    now = loop.time()
    for i in range(20_000):  # a new deadline each request: a run each, all answered
        fut = track(now + 30.0 + i * 1e-4, 30.0)
        pending.futures.pop(next_id - 1)
        fut.cancel()
    assert len(pending._runs) <= 2 * 1024 + 1

    short = [track(now + 0.02, 0.02) for _ in range(3)]  # one run of three
    long = track(now + 30.0, 30.0)
    answered = short[1]
    pending.futures.pop(next_id - 3)  # short[1] answered before its deadline
    answered.set_result(b"ok")
    async with asyncio.timeout(5):
        for fut in (short[0], short[2]):
            with pytest.raises(
                rio.CallTimeout, match=r"node node-x did not answer request \d+ within 0.02s"
            ):
                await fut
    assert await answered == b"ok"
    assert not long.done()  # a later run is not touched
    pending.fail_all(lambda req: rio.NodeUnreachable(f"closed before {req}"))
    with pytest.raises(rio.NodeUnreachable, match="closed before"):
        await long
    assert len(pending._runs) == 0
