"""A drain that times out leaves nothing running behind a closed storage."""

from __future__ import annotations

import asyncio

import rio


class DtSlowHook(rio.Actor):
    finished = False

    async def ping(self) -> int:
        return 1

    async def on_deactivate(self) -> None:
        await asyncio.sleep(5)  # longer than the drain allows
        DtSlowHook.finished = True


async def test_drain_timeout_cancels_hooks_before_storage_closes() -> None:
    app = rio.App("drain-timeout", storage="memory://", workers=0, drain_timeout=0.3)
    system = await app.start()
    await system.ref(DtSlowHook, "a").ping()
    await app.stop()
    me = asyncio.current_task()
    leftovers = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    assert leftovers == []
    assert not DtSlowHook.finished
    assert app.stop_problems == [
        "drain timeout (0.3s) passed with 1 activation(s) busy (DtSlowHook/a): cancelled"
    ]


async def test_a_drain_timeout_in_a_worker_reaches_the_driver() -> None:
    app = rio.App("drain-timeout-w", storage="memory://", workers=1, drain_timeout=0.3)
    system = await app.start()
    await system.ref(DtSlowHook, "w").ping()
    await app.stop()
    assert app.stop_problems == [
        "worker 1: drain timeout (0.3s) passed with 1 activation(s) busy (DtSlowHook/w): "
        "cancelled"
    ]
    await app.start()
    await app.stop()  # nothing was busy: the last stop's problems only
    assert app.stop_problems == []
