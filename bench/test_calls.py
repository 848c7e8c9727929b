"""pytest-benchmark micro-measurements of one call on each local path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import rio
from rio.bench.workloads import BenchCounter


@pytest.fixture(params=[0, 2], ids=["inproc", "workers"])
def ref_and_loop(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[rio.Ref[BenchCounter], asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    app = rio.App("bench-calls", storage="memory://", workers=request.param)
    system = loop.run_until_complete(app.start())
    ref = system.ref(BenchCounter, "b")
    loop.run_until_complete(ref.incr(0))
    try:
        yield ref, loop
    finally:
        loop.run_until_complete(app.stop())
        loop.close()


def test_one_call(benchmark, ref_and_loop) -> None:  # type: ignore[no-untyped-def]
    ref, loop = ref_and_loop

    async def hundred() -> None:
        for _ in range(100):
            await ref.incr(1)

    benchmark(lambda: loop.run_until_complete(hundred()))
