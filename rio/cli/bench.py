"""``rio bench``: select workloads, run them with progress, print a table, write JSON."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import msgspec

from rio.bench.core import Record, Workload, registered, run_workloads

__all__ = ["format_table", "run_bench"]


def _select(paths: list[str], names: list[str]) -> list[Workload]:
    every = registered()
    known_paths = sorted({w.path for w in every})
    known_names = sorted({w.name for w in every})
    bad = [p for p in paths if p not in known_paths]
    if bad:
        raise SystemExit(
            f"rio bench: unknown path(s) {', '.join(bad)}; known: {', '.join(known_paths)}"
        )
    bad = [n for n in names if n not in known_names]
    if bad:
        raise SystemExit(
            f"rio bench: unknown workload(s) {', '.join(bad)}; known: {', '.join(known_names)}"
        )
    return [w for w in every if (not paths or w.path in paths) and (not names or w.name in names)]


def format_table(records: list[Record]) -> str:
    """A plain-text table of records, aligned for a terminal."""
    head = ("path", "workload", "n", "seconds", "ops/s", "p50 µs", "p99 µs")
    rows = [
        (
            r.path,
            r.workload,
            f"{r.n:,}",
            f"{r.seconds:.3f}",
            f"{r.ops_per_s:,.0f}",
            f"{r.p50_us:,.1f}",
            f"{r.p99_us:,.1f}",
        )
        for r in records
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    lines = []
    for i, row in enumerate([head, *rows]):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in pairs]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_bench(
    *, paths: list[str], workloads: list[str], quick: bool, json_file: Path | None, list_only: bool
) -> int:
    """Run the selected workloads; returns the process exit code."""
    selected = _select(paths, workloads)
    if list_only:
        for w in selected:
            print(f"{w.path}/{w.name}: {w.description} (n={w.n:,}, quick {w.quick_n:,})")
        return 0
    started = time.perf_counter()

    def progress(i: int, total: int, w: Workload) -> None:
        elapsed = time.perf_counter() - started
        print(
            f"[{i + 1}/{total}] {w.path}/{w.name} (elapsed {elapsed:.1f}s)",
            file=sys.stderr,
            flush=True,
        )

    records = run_workloads(selected, quick=quick, progress=progress)
    print(format_table(records))
    print(f"\n{len(records)} workloads in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    if json_file is not None:
        json_file.write_bytes(msgspec.json.format(msgspec.json.encode(records), indent=2) + b"\n")
        print(f"wrote {json_file}", file=sys.stderr)
    return 0
