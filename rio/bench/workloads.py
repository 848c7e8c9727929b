"""The built-in workloads: the call suite on path ``inproc``, and ``baseline``.

``inproc`` calls actors hosted in the caller's own process and event loop; the
``baseline`` rows measure what this machine's Python can do at all for the same
shape of work, in the same run, so rio's figures can be read against them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
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


class BenchEvent(msgspec.Struct, frozen=True):
    """The event :class:`BenchPublisher` publishes."""

    seq: int


class BenchPublisher(rio.Actor[None], name="rio.bench.Publisher", idle_ttl=None):
    """An actor that publishes one event on its own stream per call."""

    async def emit(self, seq: int) -> None:
        """Publish ``BenchEvent(seq)``."""
        self.publish(BenchEvent(seq))


#: Subscriber buffer in the pub/sub workloads: large enough that none lags.
PUBSUB_BUFFER = 1 << 16


#: Makes the system a call suite runs against: ``async with make() as system``.
SystemFactory = Callable[[], AbstractAsyncContextManager[rio.System]]


def register_pubsub(
    path: str,
    workers: int | SystemFactory,
    sizes: dict[str, tuple[int, int]],
    where: str | None = None,
) -> None:
    """Register ``pubsub-1`` and ``pubsub-100`` on ``path``.

    The driver (or a cluster client) calls a publisher actor, 1,000 calls in flight
    at a time; each call publishes one event on the actor's stream. 1 or 100
    subscriptions in the calling process read every event with ``async for``; the
    run ends when each has counted all ``n`` (a ``rio.Lagged`` notice fails the
    run). Events per second are ``n`` over that time. ``workers`` is as for
    :func:`register_call_suite`.
    """
    if callable(workers):
        app: SystemFactory = workers
    else:
        nworkers = workers

        def app() -> AbstractAsyncContextManager[rio.System]:
            return rio.App(
                f"bench-{path}", storage="memory://", actors=[BenchPublisher], workers=nworkers
            )

    async def pubsub(n: int, subscribers: int) -> Measurement:
        async with app() as system:
            pub = system.ref(BenchPublisher, "p")
            await pub.emit(-1)
            subs = [await pub.subscribe(buffer=PUBSUB_BUFFER) for _ in range(subscribers)]
            counts = [0] * subscribers

            async def consume(i: int, sub: rio.Subscription[Any]) -> None:
                count = 0
                async for event in sub:
                    if type(event) is not BenchEvent:
                        raise RuntimeError(f"subscriber {i} lost events: {event}")
                    count += 1
                    if count == n:
                        break
                counts[i] = count

            loop = asyncio.get_running_loop()
            readers = [loop.create_task(consume(i, s)) for i, s in enumerate(subs)]
            lat: list[float] = []
            start = perf()
            for first in range(0, n, PIPELINE_BATCH):
                t0 = perf()
                futs = [pub.emit(i) for i in range(first, min(n, first + PIPELINE_BATCH))]
                for f in futs:
                    await f
                lat.append(perf() - t0)
                # In-process calls that finish at once never yield to the loop: let the
                # subscribers read this batch before the next (they share the thread).
                await asyncio.sleep(0)
            await asyncio.gather(*readers)
            elapsed = perf() - start
            if counts != [n] * subscribers:
                raise RuntimeError(f"deliveries lost: counted {counts}, published {n} each")
            return Measurement(n, elapsed, lat)

    if where is None:
        where = "in the caller's own process" if workers == 0 else f"in {workers} worker processes"
    for subscribers in (1, 100):

        async def fn(n: int, subscribers: int = subscribers) -> Measurement:
            return await pubsub(n, subscribers)

        name = f"pubsub-{subscribers}"
        fn.__doc__ = (
            f"Events published by an actor {where}, one per call, 1,000 calls in flight, "
            f"each delivered to {subscribers} subscriber{'s' if subscribers > 1 else ''} "
            "in the calling process (all counted)."
        )
        workload(path, name, n=sizes[name][0], quick_n=sizes[name][1])(fn)


def _app(storage: str = "memory://") -> rio.App:
    return rio.App("bench", storage=storage, actors=[BenchCounter, BenchSaver], workers=0)


async def seq_calls(ref: Any, n: int) -> Measurement:
    """``n`` awaited ``ref.incr(1)`` calls, timing every 8th."""
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


def register_call_suite(
    path: str,
    workers: int | SystemFactory,
    sizes: dict[str, tuple[int, int]],
    where: str | None = None,
) -> None:
    """Register ``seq``, ``pipelined``, ``fanout`` and ``activate`` on ``path``.

    The same bodies serve every path; only where the actors live differs
    (``workers=0``: the caller's own process; a factory: any system, such as a
    cluster client). ``sizes`` maps each name to its full and quick operation counts.
    """
    if callable(workers):
        app: SystemFactory = workers
    else:

        def app() -> AbstractAsyncContextManager[rio.System]:
            return rio.App(
                f"bench-{path}", storage="memory://", actors=[BenchCounter], workers=workers
            )

    async def batches(refs: list[Any], rounds: int) -> Measurement:
        # Each round sends one call to every ref without awaiting, then awaits them all.
        lat: list[float] = []
        start = perf()
        for _ in range(rounds):
            t0 = perf()
            futs = [r.incr(1) for r in refs]
            for f in futs:
                await f
            lat.append(perf() - t0)
        return Measurement(rounds * len(refs), perf() - start, lat)

    async def seq(n: int) -> Measurement:
        async with app() as system:
            ref = system.ref(BenchCounter, "seq")
            await ref.incr(0)
            return await seq_calls(ref, n)

    async def pipelined(n: int) -> Measurement:
        async with app() as system:
            ref = system.ref(BenchCounter, "pipe")
            await ref.incr(0)
            return await batches([ref] * PIPELINE_BATCH, max(1, n // PIPELINE_BATCH))

    async def fanout(n: int) -> Measurement:
        async with app() as system:
            refs = [system.ref(BenchCounter, f"f{i}") for i in range(1000)]
            for f in [r.incr(0) for r in refs]:
                await f
            return await batches(refs, max(1, n // len(refs)))

    async def activate(n: int) -> Measurement:
        async with app() as system:
            lat: list[float] = []
            start = perf()
            for first in range(0, n, PIPELINE_BATCH):
                t0 = perf()
                last = min(n, first + PIPELINE_BATCH)
                futs = [system.ref(BenchCounter, f"a{i}").incr(1) for i in range(first, last)]
                for f in futs:
                    await f
                lat.append(perf() - t0)
            return Measurement(n, perf() - start, lat)

    if where is None:
        where = "in the caller's own process" if workers == 0 else f"in {workers} worker processes"
    seq.__doc__ = f"Sequential awaited calls to one actor {where}."
    pipelined.__doc__ = (
        f"Plain calls to one actor {where}, 1,000 sent without awaiting, then awaited."
    )
    fanout.__doc__ = f"1,000 actors {where}; rounds of one call to each, all in flight."
    activate.__doc__ = f"New actors {where}, one call each, 1,000 in flight at a time."
    for fn in (seq, pipelined, fanout, activate):
        n, quick_n = sizes[fn.__name__]
        workload(path, fn.__name__, n=n, quick_n=quick_n)(fn)


register_call_suite(
    "inproc",
    0,
    {
        "seq": (200_000, 20_000),
        "pipelined": (500_000, 100_000),
        "fanout": (100_000, 20_000),
        "activate": (100_000, 10_000),
    },
)
register_pubsub("inproc", 0, {"pubsub-1": (200_000, 50_000), "pubsub-100": (20_000, 5_000)})


@workload("baseline", "method-call", n=1_000_000, quick_n=200_000)
async def baseline_method_call(n: int) -> Measurement:
    """A plain awaited async method call on an object: the floor of any call."""

    class Obj:
        value = 0

        async def incr(self, by: int) -> int:
            self.value += by
            return self.value

    return await seq_calls(Obj(), n)


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
        return await seq_calls(Client(), n)
    finally:
        task.cancel()
