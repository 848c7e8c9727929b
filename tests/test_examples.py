"""Each example runs to completion as a newcomer would run it, and says what it should.

Examples run in subprocesses (``python examples/X.py``) with ``RIO_DATA_DIR`` pointing
at the test's tmp_path, so they use the embedded SQLite default and never touch the
working tree, and their actor type names cannot clash with the test suite's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.py"))


def run_example(name: str, data_dir: Path, *args: str) -> str:
    """Run ``examples/<name>.py``; assert it exits 0 and return its stdout."""
    env = {**os.environ, "RIO_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        cwd=data_dir,  # a stray relative path would land in tmp_path, not the repo
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{name}.py exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc.stdout


def test_the_known_examples_are_there() -> None:
    assert {"hello", "counter", "bank", "ping_pong"} <= set(NAMES)


def test_readme_lists_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    missing = [n for n in NAMES if f"examples/{n}.py" not in readme]
    assert not missing, f"examples/README.md does not mention {missing}"


def test_examples_expose_app_for_rio_run_and_do_not_run_on_import(tmp_path: Path) -> None:
    # What `rio run file.py` relies on: a module-level rio.App named `app`, and no
    # work done at import. Loading all of them in one process also proves their
    # actor type names are distinct.
    code = (
        "import runpy, sys, rio\n"
        "for path in sys.argv[1:]:\n"
        "    ns = runpy.run_path(path, run_name='rio_example')\n"
        "    assert isinstance(ns.get('app'), rio.App), path\n"
        "    assert ns['app'].system is None, path\n"
        "print('ok')\n"
    )
    paths = [str(EXAMPLES / f"{n}.py") for n in NAMES]
    proc = subprocess.run(
        [sys.executable, "-c", code, *paths],
        cwd=tmp_path,
        env={**os.environ, "RIO_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"  # importing printed nothing, so nothing ran
    assert not list(tmp_path.iterdir())  # and created no database


def test_hello(tmp_path: Path) -> None:
    out = run_example("hello", tmp_path)
    assert "Hello, Ada! (greeting #1 from Greeter/world)" in out
    assert "Hello, Grace! (greeting #2 from Greeter/world)" in out


def counts(out: str) -> tuple[int, int]:
    start = re.search(r"^count at start: (\d+)$", out, re.M)
    end = re.search(r"^count at end: (\d+) ", out, re.M)
    assert start, out
    assert end, out
    return int(start[1]), int(end[1])


def test_counter_continues_across_restarts(tmp_path: Path) -> None:
    first = counts(run_example("counter", tmp_path))
    second = counts(run_example("counter", tmp_path))
    assert first == (0, 6)
    assert second == (6, 12)  # the second process read what the first one saved
    assert (tmp_path / "counter.db").exists()


def test_counter_flags(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    assert counts(run_example("counter", tmp_path, "--data-dir", str(elsewhere))) == (0, 6)
    assert counts(run_example("counter", tmp_path, "--data-dir", str(elsewhere))) == (6, 12)
    assert (elsewhere / "counter.db").exists()
    # memory:// keeps nothing between runs
    assert counts(run_example("counter", tmp_path, "--storage", "memory://")) == (0, 6)
    assert counts(run_example("counter", tmp_path, "--storage", "memory://")) == (0, 6)
    assert not (tmp_path / "counter.db").exists()


def test_bank(tmp_path: Path) -> None:
    out = run_example("bank", tmp_path)
    assert "alice: opened with $100.00" in out
    assert "20 transfers of $1.00 sent at once: all done" in out
    # The handler's InsufficientFunds crossed Account -> Bank -> script as RemoteError.
    assert "refused: InsufficientFunds: bob has $50.00, cannot withdraw $50.01" in out
    assert "e.remote_type = 'InsufficientFunds'" in out
    assert "e.is_a(InsufficientFunds) = True" in out
    assert "transfers done: 23, refused: 1" in out
    assert "total held: $150.00, total deposited: $150.00" in out
    assert out.rstrip().endswith("totals conserved")

    again = run_example("bank", tmp_path)
    assert "alice: already open, balance $100.00" in again
    assert "transfers done: 46, refused: 2 (all runs)" in again  # the ledger persisted
    assert again.rstrip().endswith("totals conserved")


def test_ping_pong_room_leaves_after_three_pings(tmp_path: Path) -> None:
    out = run_example("ping_pong", tmp_path)
    pongs = re.findall(r"^ping (\d) -> pong from activation #(\d) \(ping (\d) of", out, re.M)
    assert [tuple(map(int, p)) for p in pongs] == [
        (1, 1, 1),
        (2, 1, 2),
        (3, 1, 3),
        (4, 2, 1),  # a fresh activation: its in-memory count starts again
        (5, 2, 2),
        (6, 2, 3),
        (7, 3, 1),
    ]
    assert "7 in total" in out  # the stored count survived the deactivations
    lines = out.splitlines()

    def at(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    # Hooks ran in order: activation #1 ended after its third ping, before #2 began.
    assert at("on_activate: activation #1") < at("ping 1 ->")
    assert at("ping 3 from player-3: that's enough") < at("on_deactivate: activation #1 ends")
    assert at("on_deactivate: activation #1 ends") < at("on_activate: activation #2, 3 pings")
    assert at("on_activate: activation #2") < at("ping 4 ->")
    assert at("on_deactivate: activation #2 ends") < at("on_activate: activation #3, 6 pings")
    assert lines[-1].strip() == "[Room/lobby] on_deactivate: activation #3 ends"  # at stop


@pytest.mark.parametrize("name", NAMES)
def test_every_example_runs(name: str, tmp_path: Path) -> None:
    assert run_example(name, tmp_path).strip()
