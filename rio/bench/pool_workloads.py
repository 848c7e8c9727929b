"""Path ``workers``: the driver calling actors that live in worker processes.

The same workloads as ``inproc`` (``seq``, ``pipelined``, ``fanout``, ``activate``),
so the two paths read side by side; the actors run in a pool of two workers and every
call crosses a shared-memory ring each way.
"""

from __future__ import annotations

import rio
from rio.bench.core import Measurement, workload
from rio.bench.workloads import BenchCounter, BenchSaver, _seq, perf

WORKERS = 2
BATCH = 1000


def _pool() -> rio.App:
    return rio.App(
        "bench-pool", storage="memory://", actors=[BenchCounter, BenchSaver], workers=WORKERS
    )


@workload("workers", "seq", n=50_000, quick_n=10_000)
async def workers_seq(n: int) -> Measurement:
    """Sequential awaited calls to one actor in a worker process (a round trip each)."""
    async with _pool() as system:
        ref = system.ref(BenchCounter, "seq")
        await ref.incr(0)
        return await _seq(ref, n)


@workload("workers", "pipelined", n=300_000, quick_n=50_000)
async def workers_pipelined(n: int) -> Measurement:
    """Plain calls sent in batches of 1,000 without awaiting, then awaited: no batch API."""
    async with _pool() as system:
        ref = system.ref(BenchCounter, "pipe")
        await ref.incr(0)
        lat: list[float] = []
        done = 0
        start = perf()
        while done < n:
            b = min(BATCH, n - done)
            t0 = perf()
            futs = [ref.incr(1) for _ in range(b)]
            for f in futs:
                await f
            lat.append(perf() - t0)
            done += b
        return Measurement(n, perf() - start, lat)


@workload("workers", "fanout", n=100_000, quick_n=20_000)
async def workers_fanout(n: int) -> Measurement:
    """1,000 actors spread over both workers; rounds of one call to each, all in flight."""
    async with _pool() as system:
        refs = [system.ref(BenchCounter, f"f{i}") for i in range(1000)]
        for f in [r.incr(0) for r in refs]:
            await f
        per = max(1, n // len(refs))
        lat: list[float] = []
        start = perf()
        for _ in range(per):
            t0 = perf()
            futs = [r.incr(1) for r in refs]
            for f in futs:
                await f
            lat.append(perf() - t0)
        return Measurement(per * len(refs), perf() - start, lat)


@workload("workers", "activate", n=50_000, quick_n=10_000)
async def workers_activate(n: int) -> Measurement:
    """New actors in the workers (n of them), one call each, 1,000 in flight at a time."""
    async with _pool() as system:
        refs = [system.ref(BenchCounter, f"a{i}") for i in range(n)]
        lat: list[float] = []
        start = perf()
        for i in range(0, n, BATCH):
            t0 = perf()
            futs = [r.incr(1) for r in refs[i : i + BATCH]]
            for f in futs:
                await f
            lat.append(perf() - t0)
        return Measurement(n, perf() - start, lat)
