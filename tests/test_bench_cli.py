"""``rio bench`` as a user runs it, in subprocesses, on its smallest workloads.

Only tiny workloads run here (``baseline/method-call``, ``baseline/queue-seq``,
``inproc/seq``, all with ``--quick``): these tests check the command's contract (the
table, the progress lines, the JSON records, selection and its errors), not speed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

RECORD_KEYS = {"workload", "path", "n", "seconds", "ops_per_s", "p50_us", "p99_us"}
HEADER = ["path", "workload", "n", "seconds", "ops/s", "p50 µs", "p99 µs"]
TINY = ["--path", "baseline", "--workload", "method-call", "--workload", "queue-seq"]


def rio_command() -> list[str]:
    """The ``rio`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("rio")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from rio.cli import main; main()"]


def bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``rio bench ARGS`` to completion in ``tmp_path``."""
    return subprocess.run(
        [*rio_command(), "bench", *args],
        cwd=tmp_path,
        env={**os.environ, "RIO_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def table_rows(stdout: str, header: list[str] = HEADER) -> list[list[str]]:
    """The table's data rows, split on runs of two or more spaces."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert re.split(r"\s{2,}", lines[0].strip()) == header, stdout
    assert set(lines[1].replace(" ", "")) == {"-"}, stdout  # the rule under the header
    return [re.split(r"\s{2,}", line.strip()) for line in lines[2:]]


def quick_sizes(tmp_path: Path) -> dict[str, int]:
    """``{"path/name": quick n}`` as ``rio bench --list`` prints them."""
    proc = bench(tmp_path, "--list")
    assert proc.returncode == 0, explain(proc)
    found = re.findall(r"^(\S+/\S+): .*, quick ([\d,]+)\)$", proc.stdout, re.M)
    return {key: int(n.replace(",", "")) for key, n in found}


def test_quick_run_prints_table_progress_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = bench(tmp_path, "--quick", *TINY, "--json", str(out))
    assert proc.returncode == 0, explain(proc)

    rows = table_rows(proc.stdout)
    assert [(r[0], r[1]) for r in rows] == [
        ("baseline", "method-call"),
        ("baseline", "queue-seq"),
    ]
    assert "[1/2] baseline/method-call" in proc.stderr
    assert "[2/2] baseline/queue-seq" in proc.stderr
    assert f"wrote {out}" in proc.stderr
    assert "\n2 workloads in " in proc.stderr

    records = json.loads(out.read_text(encoding="utf-8"))
    assert isinstance(records, list)
    assert [(r["path"], r["workload"]) for r in records] == [
        ("baseline", "method-call"),
        ("baseline", "queue-seq"),
    ]
    sizes = quick_sizes(tmp_path)
    for r, row in zip(records, rows, strict=True):
        assert set(r) == RECORD_KEYS, r
        assert isinstance(r["n"], int)
        assert r["n"] == sizes[f"{r['path']}/{r['workload']}"]  # --quick sizes were used
        assert r["seconds"] > 0
        assert r["ops_per_s"] == pytest.approx(r["n"] / r["seconds"], rel=1e-3)
        assert 0 <= r["p50_us"] <= r["p99_us"]
        assert r["p99_us"] < r["seconds"] * 1e6  # one call cannot outlast the whole run
        assert row[2] == f"{r['n']:,}"  # the table shows the same run


def test_repeat_runs_every_round_and_reports_the_median_run(tmp_path: Path) -> None:
    out = tmp_path / "repeat.json"
    proc = bench(tmp_path, "--quick", *TINY, "--repeat", "3", "--json", str(out))
    assert proc.returncode == 0, explain(proc)
    progress = re.findall(r"^\[(\d+)/6\] (\S+) ", proc.stderr, re.M)
    names = ["baseline/method-call", "baseline/queue-seq"]
    assert progress == [(str(i + 1), names[i % 2]) for i in range(6)]  # round after round
    records = json.loads(out.read_text(encoding="utf-8"))
    rows = table_rows(proc.stdout, [*HEADER, "runs min-max ops/s"])
    for r, row in zip(records, rows, strict=True):
        assert set(r) == RECORD_KEYS | {"runs"}, r
        assert len(r["runs"]) == 3
        assert sorted(r["runs"])[1] == r["ops_per_s"]  # the median run is the record
        assert r["ops_per_s"] == pytest.approx(r["n"] / r["seconds"], rel=1e-3)
        low, high = (float(x.replace(",", "")) for x in row[7].split("-"))
        assert low == pytest.approx(min(r["runs"]), abs=1)
        assert high == pytest.approx(max(r["runs"]), abs=1)


def test_repeat_below_one_is_refused_before_running(tmp_path: Path) -> None:
    proc = bench(tmp_path, "--quick", *TINY, "--repeat", "0")
    assert proc.returncode == 2, explain(proc)
    assert "--repeat must be a whole number >= 1, got 0" in proc.stderr
    assert not re.search(r"^\[\d+/\d+\]", proc.stderr, re.M)


def test_path_and_workload_select_one(tmp_path: Path) -> None:
    out = tmp_path / "seq.json"
    proc = bench(tmp_path, "--path", "inproc", "--workload", "seq", "--quick", "--json", str(out))
    assert proc.returncode == 0, explain(proc)
    assert [(r[0], r[1]) for r in table_rows(proc.stdout)] == [("inproc", "seq")]
    progress = [line for line in proc.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 1, proc.stderr
    assert progress[0].startswith("[1/1] inproc/seq ")
    assert "\n1 workload in " in proc.stderr  # singular
    [record] = json.loads(out.read_text(encoding="utf-8"))
    assert (record["path"], record["workload"]) == ("inproc", "seq")
    assert record["n"] > 0


def test_list_names_workloads_and_runs_nothing(tmp_path: Path) -> None:
    proc = bench(tmp_path, "--list")
    assert proc.returncode == 0, explain(proc)
    listed = re.findall(r"^(\S+/\S+): ", proc.stdout, re.M)
    assert {"inproc/seq", "baseline/method-call", "baseline/queue-seq"} <= set(listed)
    assert len(listed) == len(proc.stdout.splitlines())  # one line per workload
    assert "ops/s" not in proc.stdout  # no table: nothing ran
    assert not re.search(r"^\[\d+/\d+\]", proc.stderr, re.M)


def test_list_honours_the_path_selection(tmp_path: Path) -> None:
    proc = bench(tmp_path, "--list", "--path", "baseline")
    assert proc.returncode == 0, explain(proc)
    listed = re.findall(r"^(\S+)/\S+: ", proc.stdout, re.M)
    assert listed
    assert set(listed) == {"baseline"}


def test_unknown_path_names_the_known_ones(tmp_path: Path) -> None:
    out = tmp_path / "never.json"
    proc = bench(tmp_path, "--path", "warp-drive", "--json", str(out))
    assert proc.returncode == 2, explain(proc)
    assert "unknown path(s) warp-drive" in proc.stderr
    known = proc.stderr.split("known:", 1)[1]
    assert {"baseline", "inproc"} <= {p.strip() for p in known.split(",")}
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_unknown_workload_names_the_known_ones(tmp_path: Path) -> None:
    proc = bench(tmp_path, "--workload", "nope", "--quick")
    assert proc.returncode == 2, explain(proc)
    assert "unknown workload(s) nope" in proc.stderr
    known = proc.stderr.split("known:", 1)[1]
    assert {"seq", "method-call", "queue-seq"} <= {w.strip() for w in known.split(",")}
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_empty_selection_names_what_was_asked(tmp_path: Path) -> None:
    proc = bench(tmp_path, "--path", "baseline", "--workload", "seq")  # seq is inproc only
    assert proc.returncode == 2, explain(proc)
    assert proc.stderr == "rio bench: no workload seq on path baseline\n"
    assert proc.stdout == ""


def test_empty_selection_names_every_path_and_workload_asked(tmp_path: Path) -> None:
    proc = bench(tmp_path, "-p", "baseline", "-w", "seq", "-w", "activate", "--list")
    assert proc.returncode == 2, explain(proc)
    assert proc.stderr == "rio bench: no workload seq, activate on path baseline\n"
    assert proc.stdout == ""


def test_json_into_a_missing_folder_is_refused_before_running(tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "folder" / "x.json"
    proc = bench(tmp_path, "--quick", *TINY, "--json", str(out))
    assert proc.returncode == 2, explain(proc)
    assert proc.stderr == f"rio bench: --json {out}: no folder {out.parent}\n"
    assert proc.stdout == ""  # nothing ran: no table, no progress
    assert not out.parent.exists()


def test_json_naming_a_folder_is_refused_before_running(tmp_path: Path) -> None:
    proc = bench(tmp_path, "--quick", *TINY, "--json", str(tmp_path))
    assert proc.returncode == 2, explain(proc)
    assert proc.stderr == f"rio bench: --json {tmp_path}: is a folder; name a file in it\n"
    assert proc.stdout == ""


def test_help_names_every_path(tmp_path: Path) -> None:
    listed = bench(tmp_path, "--list")
    assert listed.returncode == 0, explain(listed)
    paths = set(re.findall(r"^(\S+)/\S+: ", listed.stdout, re.M))
    assert {"inproc", "workers", "cluster", "baseline"} <= paths
    proc = bench(tmp_path, "--help")
    assert proc.returncode == 0, explain(proc)
    text = " ".join(proc.stdout.split())  # the help wraps its lines
    for path in paths:
        assert path in text, f"rio bench --help does not name path {path}"
