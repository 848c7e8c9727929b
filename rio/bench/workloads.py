"""The built-in workloads: paths ``inproc`` and ``baseline``.

``inproc`` calls actors hosted in the caller's own process and event loop; the
``baseline`` rows measure what this machine's Python can do at all for the same
shape of work, in the same run, so rio's figures can be read against them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

import rio
from rio.bench.core import Measurement, workload

perf = time.perf_counter
PIPELINE_BATCH = 1000


class BenchCounter(rio.Actor[None], name="rio.bench.Counter", idle_ttl=None):
    """An actor holding an int in a plain attribute (no declared state)."""

    def __init__(self) -> None:
        self.value = 0

    async def incr(self, by: int) -> int:
        """Add ``by`` and return the new value."""
        self.value += by
        return self.value


class BenchState(msgspec.Struct):
    """The persisted state of :class:`BenchSaver`."""

    value: int = 0


class BenchSaver(rio.Actor[BenchState], name="rio.bench.Saver", idle_ttl=None):
    """An actor that saves its state on every call."""

    async def incr(self, by: int) -> int:
        """Add ``by``, save, return the new value."""
        self.state.value += by
        await self.save()
        return self.state.value


def _app(storage: str = "memory://") -> rio.App:
    return rio.App("bench", storage=storage, actors=[BenchCounter, BenchSaver], workers=0)


async def _seq(ref: Any, n: int) -> Measurement:
    lat: list[float] = []
    append = lat.append
    start = perf()
    for i in range(n):
        if i & 7:
            await ref.incr(1)
        else:
            t0 = perf()
            await ref.incr(1)
            append(perf() - t0)
    return Measurement(n, perf() - start, lat)


@workload("inproc", "seq", n=200_000, quick_n=20_000)
async def inproc_seq(n: int) -> Measurement:
    """Sequential awaited ``incr`` calls to one actor holding an int."""
    async with _app() as system:
        ref = system.ref(BenchCounter, "seq")
        await ref.incr(0)
        return await _seq(ref, n)


@workload("inproc", "pipelined", n=500_000, quick_n=100_000)
async def inproc_pipelined(n: int) -> Measurement:
    """Calls sent in batches of 1,000 without awaiting, then awaited together."""
    async with _app() as system:
        ref = system.ref(BenchCounter, "pipe")
        await ref.incr(0)
        lat: list[float] = []
        done = 0
        start = perf()
        while done < n:
            b = min(PIPELINE_BATCH, n - done)
            t0 = perf()
            futs = [ref.incr(1) for _ in range(b)]
            for f in futs:
                await f
            lat.append(perf() - t0)
            done += b
        return Measurement(n, perf() - start, lat)


@workload("inproc", "fanout", n=100_000, quick_n=20_000)
async def inproc_fanout(n: int) -> Measurement:
    """1,000 actors; rounds of one call to each, all 1,000 in flight, then awaited."""
    async with _app() as system:
        refs = [system.ref(BenchCounter, f"f{i}") for i in range(1000)]
        for r in refs:
            await r.incr(0)
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


@workload("inproc", "activate", n=100_000, quick_n=10_000)
async def inproc_activate(n: int) -> Measurement:
    """N new actors, one call each (activation plus first turn)."""
    async with _app() as system:
        refs = [system.ref(BenchCounter, f"a{i}") for i in range(n)]
        lat: list[float] = []
        start = perf()
        for i, r in enumerate(refs):
            if i & 7:
                await r.incr(1)
            else:
                t0 = perf()
                await r.incr(1)
                lat.append(perf() - t0)
        return Measurement(n, perf() - start, lat)


@workload("baseline", "method-call", n=1_000_000, quick_n=200_000)
async def baseline_method_call(n: int) -> Measurement:
    """A plain awaited async method call on an object: the floor of any call."""

    class Obj:
        value = 0

        async def incr(self, by: int) -> int:
            self.value += by
            return self.value

    return await _seq(Obj(), n)


@workload("baseline", "queue-seq", n=100_000, quick_n=20_000)
async def baseline_queue_seq(n: int) -> Measurement:
    """An asyncio.Queue request/response pair between two tasks (a naive mailbox)."""
    requests: asyncio.Queue[int] = asyncio.Queue()
    responses: asyncio.Queue[int] = asyncio.Queue()

    async def server() -> None:
        value = 0
        while True:
            value += await requests.get()
            responses.put_nowait(value)

    task = asyncio.get_running_loop().create_task(server())

    class Client:
        async def incr(self, by: int) -> int:
            requests.put_nowait(by)
            return await responses.get()

    try:
        return await _seq(Client(), n)
    finally:
        task.cancel()
