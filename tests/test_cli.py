"""The ``rio`` command as a user runs it: real subprocesses, real signals.

Each test starts the installed console script (``rio`` next to ``sys.executable``)
with the test's ``tmp_path`` as working folder and ``RIO_DATA_DIR``, so nothing lands
in the working tree. The apps it runs live in ``tests/apps/``. Tests that need the
child to reach a point (serving, a turn in flight) wait for the line it prints there,
with a deadline, never a sleep.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgspec
import pytest

import rio

APPS = Path(__file__).resolve().parent / "apps"
#: Generous: a child that hangs fails the test after this long instead of the suite.
DEADLINE = 15.0


def rio_command() -> list[str]:
    """The ``rio`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("rio")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from rio.cli import main; main()"]


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "RIO_DATA_DIR": str(tmp_path / "default-data"),
        "PYTHONUNBUFFERED": "1",
        "NO_COLOR": "1",
        "COLUMNS": "100",
    }
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def rio_cmd(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``rio ARGS`` to completion in ``tmp_path``."""
    return subprocess.run(
        [*rio_command(), *args],
        cwd=tmp_path,
        env=child_env(tmp_path, **env),
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=DEADLINE,
        check=False,
    )


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


class Child:
    """A running ``rio`` whose output is read line by line as it comes."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*rio_command(), *args],
            cwd=tmp_path,
            env=child_env(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self.out: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._queues: dict[str, queue.Queue[str | None]] = {}
        self._readers: list[threading.Thread] = []
        for name, stream in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr)):
            q: queue.Queue[str | None] = queue.Queue()
            self._queues[name] = q
            t = threading.Thread(target=self._pump, args=(stream, q), daemon=True)
            t.start()
            self._readers.append(t)

    @staticmethod
    def _pump(stream: IO[str] | None, q: queue.Queue[str | None]) -> None:
        assert stream is not None
        for line in stream:
            q.put(line)
        q.put(None)

    def _take(self, name: str, timeout: float) -> str | None:
        line = self._queues[name].get(timeout=timeout)
        if line is not None:
            self.out[name].append(line)
        return line

    def expect(self, name: str, text: str, timeout: float = DEADLINE) -> str:
        """Wait until a line of ``name`` (stdout or stderr) contains ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._take(name, max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {text!r} on {name} within {timeout}s\n{self.transcript()}")
            if line is None:
                self.proc.wait(timeout=DEADLINE)
                pytest.fail(f"{name} closed before {text!r}\n{self.transcript()}")
            if text in line:
                return line

    def finish(self, timeout: float = DEADLINE) -> int:
        """Wait for the exit; collect the rest of the output. Returns the exit code."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {timeout}s later\n{self.transcript()}")
        for t in self._readers:
            t.join(timeout=DEADLINE)
        for name in self._queues:
            while True:
                try:
                    if self._take(name, 0) is None:
                        break
                except queue.Empty:
                    break
        return code

    def stdout(self) -> str:
        return "".join(self.out["stdout"])

    def stderr(self) -> str:
        return "".join(self.out["stderr"])

    def transcript(self) -> str:
        return f"--- stdout\n{self.stdout()}\n--- stderr\n{self.stderr()}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=DEADLINE)
        for t in self._readers:
            t.join(timeout=DEADLINE)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """``start(*args)`` launches ``rio ARGS`` in tmp_path; killed after the test."""
    children: list[Child] = []

    def launch(*args: str) -> Child:
        child = Child(tmp_path, *args)
        children.append(child)
        return child

    try:
        yield launch
    finally:
        for child in children:
            child.close()


def stored_states(db: Path) -> dict[tuple[str, str], Any]:
    """Every row of the SQLite store's ``rio_state`` table, data decoded from msgpack."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)  # never creates the file
    try:
        rows = conn.execute("SELECT type_name, object_id, data FROM rio_state").fetchall()
    finally:
        conn.close()
    return {(t, i): msgspec.msgpack.decode(d) for t, i, d in rows}


def member_statuses(db: Path) -> list[str]:
    """The status of every row of an SQLite cluster store's membership table."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)  # never creates the file
    try:
        return [s for (s,) in conn.execute("SELECT status FROM rio_members").fetchall()]
    finally:
        conn.close()


# -- the command itself --------------------------------------------------------------


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "--version")
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout == f"rio {rio.__version__}\n"


def command_names(help_text: str) -> set[str]:
    """First words of the lines of the help's Commands section."""
    names = set()
    in_commands = False
    for line in help_text.splitlines():
        stripped = line.strip("│ ").strip()
        if "Commands" in line:
            in_commands = True
        elif in_commands and stripped:
            names.add(stripped.split()[0])
    return names


def test_help_lists_run_and_bench(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "--help")
    assert proc.returncode == 0, explain(proc)
    assert "Usage: rio" in proc.stdout
    assert {"run", "bench"} <= command_names(proc.stdout)


def test_no_arguments_shows_the_help(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path)
    # Click exits 2 (a usage error) when it shows help for missing arguments.
    assert proc.returncode in (0, 2), explain(proc)
    assert "Usage: rio" in proc.stdout
    assert {"run", "bench"} <= command_names(proc.stdout)


# -- rio run: finding the app --------------------------------------------------------


def test_run_missing_file_names_it(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "run", "missing_app.py")
    assert proc.returncode == 2, explain(proc)
    assert "no such file" in proc.stderr
    assert "missing_app.py" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_file_without_an_app_says_how_to_add_one(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "run", str(APPS / "no_app.py"))
    assert proc.returncode == 2, explain(proc)
    assert "no_app.py" in proc.stderr
    assert "defines no rio.App" in proc.stderr
    assert 'add `app = rio.App("name")`' in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_file_with_two_apps_asks_for_a_name(tmp_path: Path) -> None:
    target = str(APPS / "two_apps.py")
    proc = rio_cmd(tmp_path, "run", target)
    assert proc.returncode == 2, explain(proc)
    assert "several apps (first, second)" in proc.stderr
    assert f"{target}:NAME" in proc.stderr
    assert "main of" not in proc.stdout  # neither ran


def test_run_file_colon_name_selects_that_app(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "run", f"{APPS / 'two_apps.py'}:second")
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout == "main of second\n"


def test_run_file_colon_unknown_name(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "run", f"{APPS / 'two_apps.py'}:third")
    assert proc.returncode == 2, explain(proc)
    assert "has no rio.App named 'third'" in proc.stderr


def test_run_module_colon_name_from_pythonpath(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "run", "two_apps:first", PYTHONPATH=str(APPS))
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout == "main of first\n"


def test_run_module_without_name_finds_its_only_app(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "run", "counter_main", PYTHONPATH=str(APPS))
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout == "count: 1\n"


def test_run_module_in_the_working_folder_with_the_rio_script(tmp_path: Path) -> None:
    # As ``python -m pkg.module`` does, ``rio run pkg.module`` finds modules in the
    # working folder (the rio script's folder was first on sys.path instead), in the
    # workers too.
    script = Path(sys.executable).parent / "rio"
    if not script.exists():
        pytest.skip("no rio script next to this interpreter")
    (tmp_path / "pkgmod").mkdir()
    (tmp_path / "pkgmod" / "__init__.py").write_text("")
    (tmp_path / "pkgmod" / "app_mod.py").write_text(
        "import rio\n\n\n"
        "class ModEcho(rio.Actor):\n"
        "    async def echo(self, s: str) -> str:\n"
        "        return s\n\n\n"
        'app = rio.App("modapp", storage="memory://", workers=1)\n\n\n'
        "@app.main\n"
        "async def main() -> None:\n"
        '    print(await ModEcho.ref("a").echo("from the worker"))\n'
    )
    proc = subprocess.run(
        [str(script), "run", "pkgmod.app_mod"],
        cwd=tmp_path,
        env=child_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout == "from the worker\n"


def test_run_node_options_without_a_cluster_are_refused(tmp_path: Path) -> None:
    # They used to be ignored in silence: the app served locally, nothing listened.
    proc = rio_cmd(tmp_path, "run", str(APPS / "counter_main.py"), "--port", "7000", "--node", "a")
    assert proc.returncode == 2, explain(proc)
    assert "--port, --node apply only to a cluster node: add --cluster URL" in proc.stderr
    secret = rio_cmd(tmp_path, "run", str(APPS / "counter_main.py"), "--secret", "s")
    assert secret.returncode == 2, explain(secret)
    assert "--secret applies only to a cluster node" in secret.stderr
    # From the environment (set for every app on a box) it is no mistake: ignored.
    env = rio_cmd(tmp_path, "run", str(APPS / "counter_main.py"), RIO_CLUSTER_SECRET="s")
    assert env.returncode == 0, explain(env)


def test_run_node_options_replace_single_fields_of_the_apps_cluster_settings(
    tmp_path: Path,
) -> None:
    # --cluster (or --port...) used to replace the app's whole ClusterSettings, so a
    # config file's port, node name or timings were dropped without a word.
    app = tmp_path / "node_app.py"
    app.write_text(
        "import rio\n\n"
        "app = rio.App('n', storage='memory://', workers=0, cluster=rio.ClusterSettings(\n"
        f"    url='sqlite:///{tmp_path}/c.db', secret='s', node='from-code', port=0,\n"
        "    heartbeat_period=0.5))\n\n\n"
        "@app.main\n"
        "async def main() -> None:\n"
        "    c = app.cluster\n"
        "    print(c.url.rsplit('/', 1)[1], c.node, c.heartbeat_period, c.placement)\n"
    )
    proc = rio_cmd(
        tmp_path,
        "run",
        str(app),
        "--cluster",
        f"sqlite:///{tmp_path}/d.db",
        "--placement",
        "random",
    )
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout == "d.db from-code 0.5 random\n"


def test_run_unknown_module(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "run", "no_such_module_here:app")
    assert proc.returncode == 2, explain(proc)
    assert "cannot import module 'no_such_module_here'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_file_with_a_syntax_error_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken_app.py"
    bad.write_text("import rio\n\napp = rio.App('broken'\n", encoding="utf-8")
    proc = rio_cmd(tmp_path, "run", str(bad))
    assert proc.returncode == 2, explain(proc)
    assert proc.stderr == f"rio run: {bad.resolve()}:3: syntax error: '(' was never closed\n"
    assert proc.stdout == ""
    assert not (tmp_path / "default-data").exists()  # nothing started


def test_run_syntax_error_in_an_imported_sibling_names_the_sibling(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("def f(:\n    pass\n", encoding="utf-8")
    target = tmp_path / "uses_helpers.py"
    target.write_text("import helpers\nimport rio\n\napp = rio.App('x')\n", encoding="utf-8")
    proc = rio_cmd(tmp_path, "run", str(target))
    assert proc.returncode == 2, explain(proc)
    assert proc.stderr == (
        f"rio run: {(tmp_path / 'helpers.py').resolve()}:1: syntax error: invalid syntax\n"
    )


def test_run_module_with_a_syntax_error_is_one_line(tmp_path: Path) -> None:
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "broken_mod.py").write_text("x = (\n", encoding="utf-8")
    proc = rio_cmd(tmp_path, "run", "broken_mod", PYTHONPATH=str(mods))
    assert proc.returncode == 2, explain(proc)
    assert proc.stderr == (
        f"rio run: {(mods / 'broken_mod.py').resolve()}:1: syntax error: '(' was never closed\n"
    )


def traceback_frames(stderr: str) -> list[tuple[str, str]]:
    """``(file, function)`` of each ``File "...", line N, in F`` line, in order."""
    return re.findall(r'^  File "([^"]*)", line \d+, in (\S+)$', stderr, re.M)


def marked_line(path: Path, mark: str) -> str:
    """The source line of ``path`` carrying the comment ``# raises: MARK``, stripped."""
    [line] = [ln for ln in path.read_text(encoding="utf-8").splitlines() if f"# {mark}" in ln]
    return line.strip()


def test_run_file_raising_at_import_shows_only_its_own_frames(tmp_path: Path) -> None:
    target = APPS / "import_fails.py"
    proc = rio_cmd(tmp_path, "run", str(target))
    assert proc.returncode == 2, explain(proc)
    # No rio, typer, click or importlib frames: just the file's own two.
    assert traceback_frames(proc.stderr) == [
        (str(target), "<module>"),
        (str(target), "read_setting"),
    ], explain(proc)
    assert proc.stderr.startswith("Traceback (most recent call last):\n"), explain(proc)
    assert marked_line(target, "raises: import") in proc.stderr
    assert proc.stderr.endswith(
        "ValueError: invalid literal for int() with base 10: 'not a number'\n"
        f"rio run: importing {target} failed\n"
    ), explain(proc)
    assert proc.stdout == ""


def test_run_module_raising_at_import_shows_only_its_own_frames(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "run", "import_fails", PYTHONPATH=str(APPS))
    assert proc.returncode == 2, explain(proc)
    target = str(APPS / "import_fails.py")
    assert traceback_frames(proc.stderr) == [
        (target, "<module>"),
        (target, "read_setting"),
    ], explain(proc)
    assert proc.stderr.endswith("rio run: importing import_fails failed\n"), explain(proc)


def test_run_file_importing_a_missing_module_shows_where(tmp_path: Path) -> None:
    target = tmp_path / "needs_dep.py"
    target.write_text("import rio\nimport rio_no_such_dependency\n", encoding="utf-8")
    proc = rio_cmd(tmp_path, "run", str(target))
    assert proc.returncode == 2, explain(proc)
    assert traceback_frames(proc.stderr) == [(str(target), "<module>")], explain(proc)
    assert proc.stderr.endswith(
        "ModuleNotFoundError: No module named 'rio_no_such_dependency'\n"
        f"rio run: importing {target} failed\n"
    ), explain(proc)


def test_run_module_importing_a_missing_module_is_not_called_missing(tmp_path: Path) -> None:
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "needs_dep.py").write_text("import rio_no_such_dependency\n", encoding="utf-8")
    proc = rio_cmd(tmp_path, "run", "needs_dep", PYTHONPATH=str(mods))
    assert proc.returncode == 2, explain(proc)
    assert proc.stderr == (
        "rio run: importing 'needs_dep' failed: No module named 'rio_no_such_dependency'\n"
    )


def test_run_missing_submodule_of_a_package_is_called_missing(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "run", "json.no_such_part")
    assert proc.returncode == 2, explain(proc)
    expected = "rio run: cannot import module 'json.no_such_part' ("
    assert proc.stderr.startswith(expected), explain(proc)


# -- rio run: a file named like a module ---------------------------------------------


@pytest.mark.parametrize("filename", ["rio.py", "json.py"])
def test_file_named_like_a_module_does_not_take_it_over(tmp_path: Path, filename: str) -> None:
    folder = tmp_path / "shadow"
    folder.mkdir()
    target = folder / filename
    target.write_text((APPS / "which_module.py").read_text(encoding="utf-8"), encoding="utf-8")
    proc = rio_cmd(tmp_path, "run", str(target))
    assert proc.returncode == 0, explain(proc)
    private = "__rio_app__" + filename.removesuffix(".py")
    assert proc.stdout.splitlines() == [
        f"__name__ {private}",
        f"actor module {private}",  # classes carry the private name ...
        f"registered file {target}",  # ... and it stays in sys.modules, with its file
        f"rio from {Path(rio.__file__).resolve()}",  # the real rio, not the file
        'json {"ok": true}',  # the real json
    ], explain(proc)


# -- rio run: an app with @app.main ---------------------------------------------------


def test_run_main_runs_it_once_and_exits_0(tmp_path: Path) -> None:
    target = str(APPS / "counter_main.py")
    proc = rio_cmd(tmp_path, "run", target)
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout == "count: 1\n"  # and not "the __main__ block ran"
    db = tmp_path / "default-data" / "cli-counter.db"  # $RIO_DATA_DIR/<app name>.db
    assert db.is_file()
    again = rio_cmd(tmp_path, "run", target)
    assert again.stdout == "count: 2\n", explain(again)  # the state persisted
    assert stored_states(db) == {("CliCounter", "hits"): {"value": 2}}


def test_run_data_dir_overrides_the_default_folder(tmp_path: Path) -> None:
    folder = tmp_path / "chosen"
    proc = rio_cmd(tmp_path, "run", str(APPS / "counter_main.py"), "--data-dir", str(folder))
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout == "count: 1\n"
    assert stored_states(folder / "cli-counter.db") == {("CliCounter", "hits"): {"value": 1}}
    assert not (tmp_path / "default-data").exists()


def test_run_storage_memory_keeps_nothing(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "run", str(APPS / "counter_main.py"), "--storage", "memory://")
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout == "count: 1\n"
    assert list(tmp_path.iterdir()) == []  # no database anywhere


def test_run_storage_url_overrides_the_default(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "state.db"
    proc = rio_cmd(tmp_path, "run", str(APPS / "counter_main.py"), "--storage", f"sqlite:///{db}")
    assert proc.returncode == 0, explain(proc)
    assert stored_states(db) == {("CliCounter", "hits"): {"value": 1}}
    assert not (tmp_path / "default-data").exists()


def test_run_bad_storage_url_is_refused(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "run", str(APPS / "counter_main.py"), "--storage", "bogus://x")
    assert proc.returncode == 2, explain(proc)  # a usage error: nothing started
    assert proc.stderr.startswith("rio run: --storage: unknown storage scheme 'bogus'")
    assert "sqlite" in proc.stderr  # names the known ones
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_loading_never_replaces_a_module_already_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process: a taken private name gets a suffix; the same file loads only once."""
    import types

    from rio.cli.loader import load_app

    monkeypatch.setattr(sys, "path", list(sys.path))  # load_app adds the file's folder
    target = tmp_path / "plain-app.py"
    target.write_text("import rio\napp = rio.App('plain', storage='memory://')\n", "utf-8")
    other = types.ModuleType("__rio_app__plain_app")
    monkeypatch.setitem(sys.modules, "__rio_app__plain_app", other)  # another file's
    monkeypatch.setitem(sys.modules, "__rio_app__plain_app_2", None)  # removed after the test
    del sys.modules["__rio_app__plain_app_2"]

    app = load_app(str(target))
    assert sys.modules["__rio_app__plain_app"] is other  # untouched
    module = sys.modules["__rio_app__plain_app_2"]
    assert module.__file__ == str(target.resolve())
    assert module.app is app
    assert load_app(str(target)) is app  # the same file again: not executed twice
    assert sys.path[0] == str(tmp_path.resolve())


def test_file_named_rio_runs_from_its_own_folder(tmp_path: Path) -> None:
    target = tmp_path / "rio.py"
    target.write_text((APPS / "which_module.py").read_text(encoding="utf-8"), encoding="utf-8")
    proc = rio_cmd(tmp_path, "run", "rio.py")
    assert proc.returncode == 0, explain(proc)
    assert "actor module __rio_app__rio" in proc.stdout.splitlines(), explain(proc)


# -- rio run: @app.main raises ---------------------------------------------------------

MAIN_ERRORS = APPS / "main_errors.py"


def test_handler_error_in_main_shows_the_handlers_frames(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "run", f"{MAIN_ERRORS}:handler_raises")
    assert proc.returncode == 1, explain(proc)
    # The remote traceback, without rio's frames: the handler, then what it called.
    assert traceback_frames(proc.stderr) == [
        (str(MAIN_ERRORS), "take"),
        (str(MAIN_ERRORS), "check_amount"),
    ], explain(proc)
    assert marked_line(MAIN_ERRORS, "raises: handler") in proc.stderr
    assert proc.stderr.endswith(
        "ValueError: amount 500 over the limit\n"
        "rio run: RemoteError: ValueError: amount 500 over the limit\n"
    ), explain(proc)


def test_rio_error_in_main_is_one_line(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "run", f"{MAIN_ERRORS}:rio_error")
    assert proc.returncode == 1, explain(proc)
    assert "Traceback" not in proc.stderr, explain(proc)
    assert proc.stderr.endswith(
        "rio run: BadArguments: Till.take(): argument 'amount': Expected `int`, got `str`\n"
    ), explain(proc)


def test_other_error_in_main_shows_only_user_frames(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "run", f"{MAIN_ERRORS}:plain_raises")
    assert proc.returncode == 1, explain(proc)
    # No typer, click, asyncio, uvloop or rio frames in between.
    assert traceback_frames(proc.stderr) == [
        (str(MAIN_ERRORS), "main_raises_itself"),
        (str(MAIN_ERRORS), "lookup"),
    ], explain(proc)
    assert marked_line(MAIN_ERRORS, "raises: plain") in proc.stderr
    assert proc.stderr.endswith("KeyError: 'b'\n"), explain(proc)


def test_keyboard_interrupt_out_of_run_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: the app handles SIGINT itself; this is the fallback if one escapes."""
    from typer.testing import CliRunner

    import rio.cli.loader
    from rio.cli.main import app as cli

    class Interrupted:
        def configure(self, **options: object) -> Interrupted:
            return self

        def run(self) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(rio.cli.loader, "load_app", lambda target: Interrupted())
    result = CliRunner().invoke(cli, ["run", "whatever.py"])
    assert result.exit_code == 130, result.output


# -- rio run: serving, signals, drain -------------------------------------------------

SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]


@pytest.mark.parametrize("sig", SIGNALS)
def test_serving_app_stops_cleanly_on_signal(start: Any, sig: signal.Signals) -> None:
    child = start("run", str(APPS / "serve_app.py"))
    child.expect("stderr", "cli-serve: serving")
    child.proc.send_signal(sig)
    code = child.finish()
    # A requested stop that drained completely is a success, as for any server.
    assert code == 0, child.transcript()
    assert "draining" in child.stderr()
    assert "Traceback" not in child.stderr()


@pytest.mark.parametrize("sig", SIGNALS)
def test_signal_during_main_drains_turn_hooks_and_state(
    start: Any, tmp_path: Path, sig: signal.Signals
) -> None:
    data = tmp_path / "data"
    child = start("run", str(APPS / "drain_app.py"), "--data-dir", str(data))
    child.expect("stdout", "turn started")  # in flight until the signal, and after
    child.proc.send_signal(sig)
    code = child.finish()
    lines = child.stdout().splitlines()
    steps = ["turn saw the system stopping: True", "turn finished", "on_deactivate ran"]
    assert [line for line in lines if line in steps] == steps, child.transcript()
    assert "Traceback" not in child.stderr(), child.transcript()
    assert stored_states(data / "cli-drain.db") == {
        ("Job", "j"): {"turn_finished": True, "deactivated": True}
    }
    assert code == 0, child.transcript()


@pytest.mark.parametrize("sig", SIGNALS)
def test_a_signal_while_a_node_starts_undoes_the_start(
    start: Any, tmp_path: Path, sig: signal.Signals
) -> None:
    # The stop handlers came after the start: a signal while the workers loaded killed
    # the node at once (-15), its row stayed joining, and clients waited for it.
    db = tmp_path / "cluster.db"
    child = start(
        "run",
        str(APPS / "slow_start_app.py"),
        "--workers",
        "1",
        "--cluster",
        f"sqlite:///{db}",
        "--secret",
        "s",
        "--node",
        "slow",
    )
    child.expect("stdout", "worker loading")  # the node joined; its worker is loading
    child.proc.send_signal(sig)
    code = child.finish()
    assert code == 0, child.transcript()
    assert "stop signal received while starting" in child.stderr(), child.transcript()
    assert "Traceback" not in child.stderr(), child.transcript()
    assert member_statuses(db) == ["left"]


def test_sigterm_to_every_process_of_the_app_still_drains_the_workers(
    start: Any, tmp_path: Path
) -> None:
    # systemd's default stop (KillMode=control-group) signals every process of the
    # service, workers included: they died before they drained, losing the turn's save.
    data = tmp_path / "data"
    child = start("run", str(APPS / "group_term_app.py"), "--data-dir", str(data))
    child.expect("stdout", "turn started")
    pid = child.proc.pid
    workers = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert workers, child.transcript()
    for target in [pid, *map(int, workers)]:
        os.kill(target, signal.SIGTERM)
    code = child.finish()
    assert "turn finished" in child.stdout(), child.transcript()
    assert "before it drained" not in child.stderr(), child.transcript()
    assert stored_states(data / "cli-group-term.db") == {("GtTask", "t"): {"done": True}}
    assert code == 0, child.transcript()


def test_a_stop_that_cut_turns_short_exits_1(start: Any) -> None:
    # A supervisor or a deploy script must be able to tell that work was lost.
    child = start("run", str(APPS / "drain_timeout_app.py"))
    child.expect("stdout", "turn started")
    child.proc.send_signal(signal.SIGTERM)
    code = child.finish()
    assert code == 1, child.transcript()
    assert (
        "rio run: stopped without draining completely: drain timeout (0.3s) passed with 1 "
        "activation(s) busy (DtLong/d): cancelled" in child.stderr()
    ), child.transcript()
    assert "Traceback" not in child.stderr(), child.transcript()


def test_a_stop_during_the_join_grace_of_a_node_with_workers_undoes_the_start(
    start: Any, tmp_path: Path
) -> None:
    # The pool activated its node outside the start's cleanup: a stop during the
    # grace left the process hanging on an unclosed store, its row joining.
    db = tmp_path / "cluster.db"
    child = start(
        "run", str(APPS / "grace_app.py"), "--workers", "1", "--cluster", f"sqlite:///{db}"
    )
    child.expect("stderr", "(join_grace")
    child.proc.send_signal(signal.SIGTERM)
    code = child.finish(timeout=20)
    assert code == 0, child.transcript()
    assert member_statuses(db) == ["left"]


def test_a_second_sigint_during_the_drain_exits_at_once(start: Any) -> None:
    child = start("run", str(APPS / "stuck_drain_app.py"))
    child.expect("stdout", "ready")
    child.proc.send_signal(signal.SIGINT)
    child.expect("stdout", "on_deactivate waiting")  # the drain waits on it
    child.proc.send_signal(signal.SIGINT)
    code = child.finish()
    assert code == 130, child.transcript()
    assert "SIGINT during the drain: exiting now" in child.stderr()
    assert "Traceback" not in child.stderr()


def test_log_level_hides_lower_levels(start: Any) -> None:
    child = start("run", str(APPS / "stuck_drain_app.py"), "--log-level", "error")
    child.expect("stdout", "ready")
    child.proc.send_signal(signal.SIGINT)
    child.expect("stdout", "on_deactivate waiting")
    child.proc.send_signal(signal.SIGINT)
    assert child.finish() == 130, child.transcript()
    for level in ("DEBUG", "INFO", "WARNING"):
        assert f"| {level}" not in child.stderr(), child.transcript()


def test_an_unknown_log_level_is_refused(tmp_path: Path) -> None:
    proc = rio_cmd(tmp_path, "run", str(APPS / "stuck_drain_app.py"), "--log-level", "loud")
    assert proc.returncode == 2, explain(proc)
    assert "rio run: --log-level: log level 'loud': expected one of TRACE" in proc.stderr
    # From the environment it names the variable (it said --log-level, not given).
    env = rio_cmd(tmp_path, "run", str(APPS / "stuck_drain_app.py"), RIO_LOG_LEVEL="bogus")
    assert env.returncode == 2, explain(env)
    assert "rio run: RIO_LOG_LEVEL: log level 'bogus': expected one of" in env.stderr


def test_arguments_after_the_target_reach_the_app_and_its_workers(tmp_path: Path) -> None:
    app = str(APPS / "argv_app.py")
    proc = rio_cmd(tmp_path, "run", app, "--workers", "1", "--", "--rounds", "3", "x")
    assert proc.returncode == 0, explain(proc)
    assert "driver argv ['--rounds', '3', 'x']" in proc.stdout, explain(proc)
    assert "worker argv ['--rounds', '3', 'x']" in proc.stdout, explain(proc)
    # Without --, an option rio run does not know is refused (a typo, not the app's).
    typo = rio_cmd(tmp_path, "run", app, "--worker", "1")
    assert typo.returncode == 2, explain(typo)
    assert "No such option" in typo.stderr
