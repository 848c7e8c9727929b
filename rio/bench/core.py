"""The benchmark registry, timing helpers and runner."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import msgspec

from rio.app import run

__all__ = [
    "Measurement",
    "Record",
    "Workload",
    "WorkloadFailed",
    "measure",
    "registered",
    "run_workloads",
    "workload",
]


class Record(msgspec.Struct, frozen=True, omit_defaults=True):
    """One benchmark result row (the ``--json`` contract).

    With ``rio bench --repeat N`` (N > 1) the row is the run with the median
    ``ops_per_s``, and ``runs`` holds every run's ``ops_per_s`` in the order they
    ran (it is left out of the JSON otherwise).
    """

    workload: str
    path: str
    n: int
    seconds: float
    ops_per_s: float
    p50_us: float
    p99_us: float
    runs: list[float] = []


@dataclass(frozen=True, slots=True)
class Measurement:
    """What a workload reports: operations done, wall time, latency samples (seconds)."""

    n: int
    seconds: float
    latencies: list[float]


WorkloadFn = Callable[[int], Awaitable[Measurement]]


@dataclass(frozen=True, slots=True)
class Workload:
    """A registered workload: where it runs, its name, and its full and quick sizes."""

    path: str
    name: str
    n: int
    quick_n: int
    fn: WorkloadFn
    description: str


_WORKLOADS: list[Workload] = []


def workload(path: str, name: str, *, n: int, quick_n: int) -> Callable[[WorkloadFn], WorkloadFn]:
    """Register an async workload function ``fn(n) -> Measurement``."""

    def register(fn: WorkloadFn) -> WorkloadFn:
        _WORKLOADS.append(Workload(path, name, n, quick_n, fn, (fn.__doc__ or "").strip()))
        return fn

    return register


#: Paths in the order the table shows them; others follow, by name.
PATH_ORDER = ("inproc", "workers", "cluster", "baseline")


def registered() -> list[Workload]:
    """Every registered workload: by path (:data:`PATH_ORDER`), then as registered."""
    from rio.bench import (  # noqa: F401  (importing registers them)
        cluster_workloads,
        local_baselines,
        pool_workloads,
        storage_workloads,
        tcp_baselines,
        workloads,
    )

    def rank(w: Workload) -> tuple[int, str]:
        known = w.path in PATH_ORDER
        return (PATH_ORDER.index(w.path) if known else len(PATH_ORDER), "" if known else w.path)

    return sorted(_WORKLOADS, key=rank)


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


def to_record(w: Workload, m: Measurement) -> Record:
    """Summarize a measurement as a result row."""
    lat = sorted(m.latencies)
    return Record(
        workload=w.name,
        path=w.path,
        n=m.n,
        seconds=round(m.seconds, 6),
        ops_per_s=round(m.n / m.seconds, 1) if m.seconds > 0 else 0.0,
        p50_us=round(_percentile(lat, 0.50) * 1e6, 2),
        p99_us=round(_percentile(lat, 0.99) * 1e6, 2),
    )


def measure(w: Workload, n: int) -> Record:
    """Run ``w`` once to warm up, then measure ``n`` operations (in this process)."""
    run(w.fn(max(1, n // 10)))  # warm-up: imports, caches, allocator
    gc.collect()
    start = time.perf_counter()
    m = run(w.fn(n))
    if m.seconds <= 0:
        m = Measurement(m.n, time.perf_counter() - start, m.latencies)
    return to_record(w, m)


class WorkloadFailed(Exception):
    """A workload's process failed; the message is the tail of what it printed."""


def _measure_in_child(w: Workload, n: int) -> Record:
    proc = subprocess.run(
        [sys.executable, "-m", "rio.bench.one", w.path, w.name, str(n)],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise WorkloadFailed(lines[-1] if lines else f"exit code {proc.returncode}")
    return msgspec.json.decode(proc.stdout.strip().splitlines()[-1], type=Record)


def run_workloads(
    selected: Iterable[Workload],
    *,
    quick: bool,
    progress: Callable[[int, int, Workload], None] | None = None,
    failed: Callable[[Workload, BaseException], None] | None = None,
    isolate: bool = True,
    repeat: int = 1,
) -> list[Record]:
    """Run each workload after a short warm-up run; by default each in a fresh process.

    A fresh interpreter per workload keeps one workload's leftovers (garbage, threads,
    child processes, a grown heap) out of the next one's figures. They run in
    registration order, so pairs meant to be compared (``persist-X`` and ``driver-X``)
    run back to back; the records come back in ``selected``'s order. A workload that
    fails is reported to ``failed`` and left out; the others still run.

    ``repeat`` > 1 runs the whole selection that many times, round after round (so a
    slow spell of a shared machine touches every workload alike), and each record
    is the median run with every run's ``ops_per_s`` in ``runs``.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    chosen = list(selected)
    order = {id(w): i for i, w in enumerate(_WORKLOADS)}
    by_run = sorted(chosen, key=lambda w: order.get(id(w), len(order)))
    runs: dict[int, list[Record]] = {id(w): [] for w in by_run}
    gone: set[int] = set()  # failed once: not run again
    total = repeat * len(by_run)
    for r in range(repeat):
        for i, w in enumerate(by_run):
            if id(w) in gone:
                continue
            if progress is not None:
                progress(r * len(by_run) + i, total, w)
            n = w.quick_n if quick else w.n
            try:
                runs[id(w)].append(_measure_in_child(w, n) if isolate else measure(w, n))
            except Exception as e:
                if failed is None:
                    raise
                gone.add(id(w))
                failed(w, e)
    return [_median(runs[id(w)]) for w in chosen if id(w) not in gone and runs[id(w)]]


def _median(records: list[Record]) -> Record:
    """The run with the median ops/s (the lower middle one of an even count), with ``runs``."""
    if len(records) == 1:
        return records[0]
    middle = sorted(records, key=lambda r: r.ops_per_s)[(len(records) - 1) // 2]
    return msgspec.structs.replace(middle, runs=[r.ops_per_s for r in records])
