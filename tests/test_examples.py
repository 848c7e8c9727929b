"""Each example runs to completion as a newcomer would run it, and says what it should.

Examples run in subprocesses (``python examples/X.py``) with ``RIO_DATA_DIR`` pointing
at the test's tmp_path, so they use the embedded SQLite default and never touch the
working tree, and their actor type names cannot clash with the test suite's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import rio_command

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.py"))
#: Example apps in folders (actors in app.py): folder -> the script its README runs.
APPS = {"black_jack": "demo.py", "metric_aggregator": "load.py", "presence": "demo.py"}


def run_example(name: str, data_dir: Path, *args: str) -> str:
    """Run ``examples/<name>.py``; assert it exits 0 and return its stdout."""
    return run_script(EXAMPLES / f"{name}.py", data_dir, *args)


def run_app(folder: str, data_dir: Path, *args: str) -> str:
    """Run the script of ``examples/<folder>/`` its README names; return its stdout."""
    return run_script(EXAMPLES / folder / APPS[folder], data_dir, *args)


def run_script(path: Path, data_dir: Path, *args: str) -> str:
    """Run ``python path ARGS`` in ``data_dir``; assert it exits 0 and return its stdout."""
    name = path.relative_to(EXAMPLES)
    env = {**os.environ, "RIO_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(path), *args],
        cwd=data_dir,  # a stray relative path would land in tmp_path, not the repo
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{name} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
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
    # Named by its file, however each process loaded it (script, worker, `rio run`).
    assert "refused: bank.InsufficientFunds: bob has $50.00, cannot withdraw $50.01" in out
    assert "e.remote_type = 'bank.InsufficientFunds'" in out
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
    # Not anchored at a line's start: a worker's print may land between the driver's
    # text and its newline (print writes them apart), on the same line.
    pongs = re.findall(r"ping (\d) -> pong from activation #(\d) \(ping (\d) of", out)
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


# -- the example apps in folders: black_jack, presence, metric_aggregator ----------------


def test_app_folders_are_documented() -> None:
    index = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for folder, script in APPS.items():
        assert (EXAMPLES / folder / "app.py").is_file()
        readme = (EXAMPLES / folder / "README.md").read_text(encoding="utf-8")
        # One command runs it embedded; the cluster recipe starts nodes with rio run.
        assert f"python examples/{folder}/{script}" in readme, folder
        assert f"rio run examples/{folder}/app.py --cluster sqlite:///" in readme, folder
        assert f"examples/{folder}/{script} --cluster sqlite:///" in readme, folder
        assert f"({folder}/)" in index, f"examples/README.md does not list {folder}/"


@pytest.mark.parametrize("folder", sorted(APPS))
def test_app_folders_expose_app_and_do_not_run_on_import(folder: str, tmp_path: Path) -> None:
    # `rio run examples/X/app.py` (a node) and `rio run examples/X/<script>` (the demo)
    # both need a module-level rio.App, and importing either must not start anything.
    code = (
        "import runpy, sys, rio\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import app as module\n"  # as the script imports it, and rio run would find it
        "assert isinstance(module.app, rio.App)\n"
        "ns = runpy.run_path(sys.argv[1] + '/' + sys.argv[2], run_name='rio_example')\n"
        "assert ns['app'] is module.app\n"
        "assert module.app.system is None\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLES / folder), APPS[folder]],
        cwd=tmp_path,
        env={**os.environ, "RIO_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"
    assert not list(tmp_path.iterdir())


def test_actor_type_names_are_distinct_across_all_examples(tmp_path: Path) -> None:
    code = (
        "import runpy, sys\n"
        "for path in sys.argv[1:]:\n"
        "    runpy.run_path(path, run_name='rio_example')\n"
        "print('ok')\n"
    )
    paths = [str(EXAMPLES / f"{n}.py") for n in NAMES]
    paths += [str(EXAMPLES / folder / "app.py") for folder in sorted(APPS)]
    proc = subprocess.run(
        [sys.executable, "-c", code, *paths],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"


def table_rounds(out: str, table: str) -> int:
    """Check one table's events in black_jack's output; how many rounds it dealt."""
    mine = [line for line in out.splitlines() if line.startswith(f"[{table}] ")]
    overs = [int(m[1]) for line in mine if (m := re.match(rf"\[{table}\] round (\d+) over", line))]
    dealt = len(overs)
    assert overs == list(range(1, dealt + 1)), out
    assert mine[-1] == f"[{table}] nobody seated: the dealer goes home after {dealt} rounds"
    seen = re.search(rf"^table {table}: the subscriber saw (\d+) events, (\d+) rounds$", out, re.M)
    assert seen, out
    assert int(seen[1]) == len(mine)  # it printed every event it received
    assert int(seen[2]) == dealt
    assert not any("missed" in line for line in mine)
    return dealt


def records(out: str) -> dict[str, int]:
    """Player -> rounds in their persisted record (won + lost + pushed)."""
    found = re.findall(r"^  (\w+): -?\d+ chips \(won (\d+), lost (\d+), pushed (\d+)\)$", out, re.M)
    return {name: int(w) + int(lost) + int(p) for name, w, lost, p in found}


def paid(out: str) -> dict[str, int]:
    """Player -> rounds they were paid out in, from the RoundOver events printed."""
    counts: dict[str, int] = {}
    for line in out.splitlines():
        if " over: dealer " in line:
            for name in re.findall(r"(\w+) (?:win|lose|push) \(", line):
                counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.mark.slow
def test_black_jack(tmp_path: Path) -> None:
    out = run_app("black_jack", tmp_path)
    # The dealer threads dealt at least three rounds (a player seated late plays on).
    assert table_rounds(out, "green") >= 3
    assert table_rounds(out, "blue") >= 3
    assert re.search(r"^\[blue\]   \w+ (hits|stands|busts|has blackjack): ", out, re.M)
    assert "[green] ada stands up" in out
    players = {"ada", "bob", "cy", "dee", "eve"}
    assert paid(out) == dict.fromkeys(players, 3)  # each played the three rounds asked
    first = records(out)
    assert first == paid(out)  # the persisted records count exactly those rounds

    again = run_app("black_jack", tmp_path, "--rounds", "1", "--pace", "0.01")
    assert paid(again) == dict.fromkeys(players, 1)
    assert records(again) == {n: first[n] + 1 for n in players}  # they persisted


@pytest.mark.slow
def test_presence(tmp_path: Path) -> None:
    raw = run_app("presence", tmp_path)
    # Worker processes print "[Presence/x] deactivated" into the same stdout: set those
    # lines apart (one may land between the demo's text and its newline).
    deactivated = re.findall(r"  \[Presence/(\w+)\] deactivated\n", raw)
    out = re.sub(r"  \[Presence/\w+\] deactivated\n", "", raw)
    lines = out.splitlines()

    def at(text: str) -> int:
        found = [i for i, line in enumerate(lines) if line.startswith(text)]
        assert found, f"no line starts with {text!r} in:\n{out}"
        return found[0]

    assert at("linus joined") < at("-- linus goes silent")
    assert at("-- linus goes silent") < at("linus left (timed out); online: ")
    timed_out = re.search(r"^-- linus timed out ([\d.]+)s after he went silent$", out, re.M)
    assert timed_out, out
    # A 1 s lease, checked every 0.25 s; he went silent up to 1/3 s after a heartbeat.
    assert 0.5 <= float(timed_out[1]) < 5
    assert "-- Presence/linus is offline: room_now() = None" in lines
    assert "linus" in deactivated, raw  # the timed-out activation (and later the fresh one)
    assert {"ada", "grace"} <= set(deactivated), raw
    assert at("ada left (left); online: grace") < at("grace left (left); online: nobody")
    assert "online at the end: []" in lines
    assert not any(line.startswith("(missed") for line in lines)


def metric_totals(out: str) -> dict[str, tuple[int, int, int]]:
    """``metric -> (count, grew by, sent)`` from load.py's output."""
    found = re.findall(r"^ +(\w+): +(\d+) samples, .*\(\+(\d+), sent (\d+)\)$", out, re.M)
    return {m: (int(c), int(g), int(s)) for m, c, g, s in found}


def check_load_output(out: str, samples: int) -> dict[str, tuple[int, int, int]]:
    rate = re.search(
        rf"^sent {samples} samples in [\d.]+s with \d+ in flight: ([\d,]+) requests/s", out, re.M
    )
    assert rate, out
    assert int(rate[1].replace(",", "")) > 0
    totals = metric_totals(out)
    assert set(totals) == {"cpu", "mem", "disk"}, out
    assert all(grew == sent for _, grew, sent in totals.values())
    assert sum(sent for _, _, sent in totals.values()) == samples
    checks = re.findall(r"^ +\w+ by (host|region) *: .* vs \d+: (\w+)$", out, re.M)
    assert len(checks) == 6, out
    assert all(mark == "ok" for _, mark in checks), out
    assert out.rstrip().endswith(f"sent this run: {samples}; totals consistent")
    return totals


@pytest.mark.slow
def test_metric_aggregator(tmp_path: Path) -> None:
    first = check_load_output(run_app("metric_aggregator", tmp_path), 3000)
    assert all(count == grew for count, grew, _ in first.values())
    # The state persisted, aggregates included (saved behind, and on deactivation).
    again = check_load_output(
        run_app("metric_aggregator", tmp_path, "--samples", "300", "--concurrency", "8"), 300
    )
    assert all(again[m][0] == first[m][0] + again[m][1] for m in first)


class Node:
    """A ``rio run ... --cluster`` process whose output is read as it comes."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no {text!r} in the node's output:\n{self.output()}")
                self._changed.wait(min(left, 0.5))

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        """SIGTERM (a drain), or kill after 30 s; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(10)  # the pipe is at its end once the process has exited
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    try:
        yield started
    finally:
        for node in started:
            node.stop()


@pytest.mark.slow
def test_metric_aggregator_on_a_cluster_of_two_nodes(tmp_path: Path, nodes: list[Node]) -> None:
    # As its README says: two `rio run app.py --cluster sqlite:///...` nodes sharing one
    # folder, and the load client with --cluster.
    url = "sqlite:///cluster.db"
    secret = "example-test-secret"
    env = {
        **os.environ,
        "RIO_DATA_DIR": str(tmp_path),
        "RIO_CLUSTER_SECRET": secret,
        "PYTHONUNBUFFERED": "1",
        "NO_COLOR": "1",
    }
    app = str(EXAMPLES / "metric_aggregator" / "app.py")
    for name in ("one", "two"):
        args = [*rio_command(), "run", app, "--cluster", url, "--workers", "0", "--node", name]
        nodes.append(Node(args, tmp_path, env))
    for node in nodes:
        node.wait_for("serving; SIGINT or SIGTERM drains and stops")

    client = ("--cluster", url, "--secret", secret)
    first = check_load_output(
        run_app("metric_aggregator", tmp_path, *client, "--samples", "600"), 600
    )
    again = check_load_output(
        run_app("metric_aggregator", tmp_path, *client, "--samples", "300"), 300
    )
    assert all(again[m][0] == first[m][0] + again[m][1] for m in first)

    # Draining saves what the aggregates held; the embedded app then reads it all back.
    for node in nodes:
        assert node.stop() == 0, node.output()
    local = check_load_output(run_app("metric_aggregator", tmp_path, "--samples", "100"), 100)
    assert all(local[m][0] == again[m][0] + local[m][1] for m in first)
