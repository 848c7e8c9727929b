"""``rio bench``: select workloads, run them with progress, print a table, write JSON."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import msgspec

from rio.bench.core import Record, Workload, registered, run_workloads

__all__ = ["format_table", "run_bench"]


class _UsageError(Exception):
    """A wrong selection or option: reported on stderr, exit 2, nothing runs."""


def _select(paths: list[str], names: list[str]) -> list[Workload]:
    every = registered()
    known_paths = sorted({w.path for w in every})
    known_names = sorted({w.name for w in every})
    bad = [p for p in paths if p not in known_paths]
    if bad:
        raise _UsageError(f"unknown path(s) {', '.join(bad)}; known: {', '.join(known_paths)}")
    bad = [n for n in names if n not in known_names]
    if bad:
        raise _UsageError(f"unknown workload(s) {', '.join(bad)}; known: {', '.join(known_names)}")
    chosen = [w for w in every if (not paths or w.path in paths) and (not names or w.name in names)]
    if not chosen:
        asked = f"no workload {', '.join(names)}" if names else "no workloads"
        if paths:
            asked += f" on path {', '.join(paths)}"
        raise _UsageError(asked)
    return chosen


def _check_json_file(json_file: Path) -> None:
    """Refuse a ``--json`` file that cannot be written, before anything runs."""
    folder = json_file.parent
    if json_file.is_dir():
        raise _UsageError(f"--json {json_file}: is a folder; name a file in it")
    if not folder.is_dir():
        raise _UsageError(f"--json {json_file}: no folder {folder}")
    if not os.access(folder, os.W_OK):
        raise _UsageError(f"--json {json_file}: folder {folder} is not writable")


def format_table(records: list[Record]) -> str:
    """A plain-text table of records, aligned for a terminal.

    Records of repeated runs add a column with the slowest and fastest run.
    """
    head: tuple[str, ...] = ("path", "workload", "n", "seconds", "ops/s", "p50 µs", "p99 µs")
    repeated = any(r.runs for r in records)
    if repeated:
        head = (*head, "runs min-max ops/s")
    rows = []
    for r in records:
        row: tuple[str, ...] = (
            r.path,
            r.workload,
            f"{r.n:,}",
            f"{r.seconds:.3f}",
            f"{r.ops_per_s:,.0f}",
            f"{r.p50_us:,.1f}",
            f"{r.p99_us:,.1f}",
        )
        if repeated:
            spread = f"{min(r.runs):,.0f}-{max(r.runs):,.0f}" if r.runs else ""
            row = (*row, spread)
        rows.append(row)
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
    *,
    paths: list[str],
    workloads: list[str],
    quick: bool,
    json_file: Path | None,
    list_only: bool,
    repeat: int = 1,
) -> int:
    """Run the selected workloads; returns the process exit code.

    0 on success, 2 for a usage error (unknown or empty selection, a ``--json`` file
    that cannot be written), reported on stderr before anything runs; 1 when writing
    the JSON fails after the run.
    """
    try:
        if repeat < 1:
            raise _UsageError(f"--repeat must be a whole number >= 1, got {repeat}")
        selected = _select(paths, workloads)
        if json_file is not None and not list_only:
            _check_json_file(json_file)
    except _UsageError as e:
        print(f"rio bench: {e}", file=sys.stderr)
        return 2
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

    failures: list[str] = []

    def failed(w: Workload, e: BaseException) -> None:
        line = f"{w.path}/{w.name} failed: {type(e).__name__}: {e}"
        failures.append(line)
        print(line, file=sys.stderr, flush=True)

    records = run_workloads(selected, quick=quick, progress=progress, failed=failed, repeat=repeat)
    print(format_table(records))
    count = f"{len(records)} workload{'' if len(records) == 1 else 's'}"
    print(f"\n{count} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    if json_file is not None:
        try:
            json_file.write_bytes(
                msgspec.json.format(msgspec.json.encode(records), indent=2) + b"\n"
            )
        except OSError as e:
            print(f"rio bench: cannot write {json_file}: {e.strerror or e}", file=sys.stderr)
            return 1
        print(f"wrote {json_file}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} workload(s) failed:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0
