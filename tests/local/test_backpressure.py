"""Flow control between the driver and a worker: memory stays bounded under a flood.

A caller that starts calls without awaiting them gets at most a window of them in
flight to one worker; the rest wait in the caller's process, encoded, in order, up
to ``max_queued``; beyond that each call is refused at once with ``rio.Overloaded``.
So the worker, which hosts everyone's objects, never holds more than the window.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

import rio
from rio.local.pool import PoolSystem
from rio.local.remote import WINDOW

pytestmark = pytest.mark.slow


class BpEcho(rio.Actor):
    async def n(self, i: int) -> int:
        return i

    async def yielding(self, i: int) -> int:
        await asyncio.sleep(0)  # each turn suspends once: later calls queue behind it
        return i


class BpGate(rio.Actor, reentrant=True):
    async def hold(self, blob: bytes) -> int:
        if not hasattr(self, "gate"):
            self.gate = asyncio.Event()
        await self.gate.wait()
        return len(blob)

    async def open(self) -> None:
        self.gate = getattr(self, "gate", asyncio.Event())
        self.gate.set()


class BpFlooder(rio.Actor):
    async def flood(self, target: str, count: int, size: int) -> list[int]:
        """``count`` unawaited calls of ``size`` bytes each; [sent, refused]."""
        blob = b"x" * size
        self.futs, refused = [], 0
        for _ in range(count):
            try:
                self.futs.append(BpGate.ref(target).hold(blob))
            except rio.Overloaded:
                refused += 1
        return [len(self.futs), refused]

    async def answered(self) -> int:
        """How many of the calls :meth:`flood` made were answered (awaits them all)."""
        return len([await f for f in self.futs])


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory so far, in bytes (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def test_a_flood_beyond_the_window_and_the_queue_is_refused_and_the_rest_served(
    tmp_path: Any,
) -> None:
    async with rio.App("bp-flood", storage="memory://", workers=1, max_queued=1_000) as system:
        assert isinstance(system, PoolSystem)
        ref = BpEcho.ref("a")
        assert await ref.n(-1) == -1
        accepted: list[asyncio.Future[int]] = []
        refused: list[rio.Overloaded] = []
        for i in range(WINDOW + 2_000):  # no await: nothing is answered meanwhile
            try:
                accepted.append(ref.n(i))
            except rio.Overloaded as e:
                refused.append(e)
        assert len(accepted) == WINDOW + 1_000
        assert len(refused) == 1_000
        assert "BpEcho/a.n() refused" in str(refused[0])
        assert "worker 1" in str(refused[0])
        assert system.stats().queued == 1_000
        assert await asyncio.gather(*accepted) == list(range(WINDOW + 1_000))  # in order
        assert system.stats().queued == 0
        assert system.stats().in_flight == 0
        assert await ref.n(5) == 5


async def test_a_worker_holds_at_most_the_window_of_a_flood(tmp_path: Any) -> None:
    """100,000 unawaited calls to a slow object: the worker's memory barely grows.

    Without flow control the worker held every call (about 1 KiB each, 100 MiB here).
    """
    n = 100_000
    async with rio.App("bp-mem", storage="memory://", workers=1, max_queued=n) as system:
        assert isinstance(system, PoolSystem)
        ref = BpEcho.ref("slow")
        assert await ref.yielding(-1) == -1
        pid = system.worker_pid(1)
        before = _peak_rss(pid)
        results = await asyncio.gather(*[ref.yielding(i) for i in range(n)])
        assert results == list(range(n))
        grown = _peak_rss(pid) - before
        assert grown < 48 << 20, f"worker grew by {grown >> 20} MiB"
        assert os.getpid() != pid


async def test_a_turns_flood_of_large_calls_is_refused_beyond_a_byte_bound() -> None:
    # A turn's calls never wait for a window; before, only a count bounded them, so
    # 2,000 calls of 1 MiB took 2 GiB in the target worker. The unanswered bytes
    # from one process to one worker are bounded now (MAX_QUEUED_BYTES, 256 MiB).
    async with rio.App("bp-bytes", storage="memory://", workers=2) as system:
        assert isinstance(system, PoolSystem)
        target = next(f"g{i}" for i in range(100) if system.owner(("BpGate", f"g{i}")) == 2)
        flooder = next(f"f{i}" for i in range(100) if system.owner(("BpFlooder", f"f{i}")) == 1)
        mib = 1 << 20
        sent, refused = await BpFlooder.ref(flooder).with_timeout(120).flood(target, 300, mib)
        assert sent + refused == 300
        assert 250 <= sent <= 260, (sent, refused)  # 256 MiB of 1 MiB calls, give or take
        await BpGate.ref(target).open()  # from the driver: not one of that turn's calls
        assert await BpFlooder.ref(flooder).with_timeout(120).answered() == sent
