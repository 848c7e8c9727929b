"""An idle activation without state costs well under a kibibyte."""

from __future__ import annotations

import gc
import tracemalloc

import rio


class MemIdle(rio.Actor):
    async def ping(self) -> int:
        return 1


async def test_idle_activation_costs_under_1_kib() -> None:
    async with rio.App("mem", storage="memory://", workers=0) as system:
        await system.ref(MemIdle, "warm").ping()
        n = 5_000
        ids = [f"id{i}" for i in range(n)]  # the ids are the caller's, not rio's
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for i in ids:
                await system.ref(MemIdle, i).ping()
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
        assert system.stats().activations == n + 1
        assert grown / n < 1024, f"{grown / n:.0f} bytes per idle activation"
