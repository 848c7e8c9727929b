"""The App: configuration (in code and TOML), starting, stopping, stats."""

import asyncio
import contextlib
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

import rio
from rio.storage import MemoryStorage, SQLiteStorage

from .helpers import DIE_AT_START_ENV, AppFactory, runtime_stats


class TpState(msgspec.Struct):
    value: int = 0


class TpCounter(rio.Actor[TpState]):
    async def incr(self) -> int:
        self.state.value += 1
        await self.save()
        return self.state.value


class TpOther(rio.Actor):
    async def ping(self) -> str:
        return "pong"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rio.toml"
    path.write_text(text, encoding="utf-8")
    return path


# -- App in code ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "has space", "a/b", "semi;colon"])
def test_bad_app_names(name: str) -> None:
    with pytest.raises(rio.ConfigError, match=re.escape("use letters, digits, '-', '_' or '.'")):
        rio.App(name)


def test_default_storage_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    storage = rio.App("bank", data_dir=tmp_path).make_storage()
    assert isinstance(storage, SQLiteStorage)
    assert Path(storage.path) == tmp_path / "bank.db"


def test_data_dir_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIO_DATA_DIR", str(tmp_path / "env"))
    storage = rio.App("bank").make_storage()
    assert isinstance(storage, SQLiteStorage)
    assert Path(storage.path) == tmp_path / "env" / "bank.db"


async def test_the_app_is_the_context_manager(make_app: AppFactory) -> None:
    app = make_app()
    assert app.system is None
    async with app as system:
        assert app.system is system
        assert isinstance(system, rio.System)
        assert system.running
        assert rio.current_system() is system
        with pytest.raises(rio.ConfigError, match="is already running"):
            await app.start()
    assert app.system is None
    assert not system.running


async def test_storage_that_cannot_open_fails_the_start_clearly(
    make_app: AppFactory, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    app = make_app(storage=f"sqlite:///{tmp_path / 'a-file' / 'state.db'}")
    with pytest.raises(rio.StorageUnavailable, match="cannot create the folder"):
        await app.start()
    assert app.system is None


async def test_no_system_running(make_app: AppFactory) -> None:
    with pytest.raises(rio.NoSystemRunning, match=r"start one with `async with app:`"):
        await TpOther.ref("x").ping()
    with pytest.raises(rio.NoSystemRunning):
        rio.current_system()
    async with make_app():
        assert await TpOther.ref("x").ping() == "pong"
    with pytest.raises(rio.NoSystemRunning):
        await TpOther.ref("x").ping()


async def test_bound_refs_refuse_calls_after_stop(make_app: AppFactory) -> None:
    async with make_app() as system:
        ref = system.ref(TpOther, "x")
        assert await ref.ping() == "pong"
    with pytest.raises(rio.SystemStopping, match=r"is stopping: call to TpOther/x\.ping"):
        await ref.ping()


async def test_stats(system: rio.System) -> None:
    # Activations live where they are hosted: on workers, the sum of every worker's.
    assert await runtime_stats(system) == rio.RuntimeStats(activations=0, by_type={}, queued=0)
    await TpCounter.ref("a").incr()
    await TpCounter.ref("b").incr()
    await TpOther.ref("a").ping()
    stats = await runtime_stats(system)
    assert stats.activations == 3
    assert stats.by_type == {"TpCounter": 2, "TpOther": 1}
    assert stats.queued == 0
    await system.deactivate(TpOther, "a")
    assert (await runtime_stats(system)).by_type == {"TpCounter": 2}


async def test_stats_are_a_frozen_snapshot(system: rio.System) -> None:
    stats = system.stats()
    assert isinstance(stats, msgspec.Struct)
    with pytest.raises(AttributeError):
        stats.activations = 0  # type: ignore[attr-defined]


def test_run_drives_a_main_coroutine(make_app: AppFactory, sqlite_url: str) -> None:
    app = make_app(storage=sqlite_url)
    seen: list[int] = []

    @app.main
    async def main() -> None:
        seen.append(await TpCounter.ref("r").incr())
        seen.append(await TpCounter.ref("r").incr())

    app.run()
    app.run()  # state persisted across runs
    assert seen == [1, 2, 3, 4]
    assert app.system is None


def test_run_stops_the_app_when_main_fails(make_app: AppFactory) -> None:
    app = make_app()

    async def main() -> None:
        raise RuntimeError("main broke")

    with pytest.raises(RuntimeError, match="main broke"):
        app.run(main)
    assert app.system is None


def test_rio_run_returns_the_result() -> None:
    async def compute() -> int:
        return 42

    assert rio.run(compute()) == 42


# -- App.from_toml -------------------------------------------------------------------


def test_from_toml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        [app]
        name = "bank"
        storage = "memory://"
        default_timeout = 7
        drain_timeout = 3.5
        workers = 3
        actors = ["{__name__}:TpCounter"]

        [actors.TpCounter]
        idle_ttl = 120

        [actors.TpOther]
        idle_ttl = "never"
        """,
    )
    app = rio.App.from_toml(path)
    assert app.name == "bank"
    assert isinstance(app.make_storage(), MemoryStorage)
    assert app.default_timeout == 7.0
    assert app.drain_timeout == 3.5
    assert app.workers == 3
    assert app.actors is not None
    assert [a.cls for a in app.actors] == [TpCounter]
    assert app.idle_ttl == {"TpCounter": 120.0, "TpOther": None}


async def test_from_toml_app_runs_and_hosts_only_its_actors(
    tmp_path: Path, make_app: AppFactory
) -> None:
    workers = make_app().workers  # the runtime under test
    path = write(
        tmp_path,
        f"""
        [app]
        name = "tomlapp"
        data_dir = "data"
        actors = ["{__name__}:TpCounter"]
        workers = {workers}
        """,
    )
    app = rio.App.from_toml(path)
    assert app.data_dir == (tmp_path / "data").resolve()  # relative to the file
    assert app.workers == workers
    async with app:
        assert await TpCounter.ref("t").incr() == 1
        with pytest.raises(rio.UnknownActorType, match="does not host actor type 'TpOther'"):
            await TpOther.ref("t").ping()
    db = tmp_path / "data" / "tomlapp.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:  # the default storage, in data_dir
        rows = conn.execute("SELECT type_name, object_id FROM rio_state").fetchall()
    assert rows == [("TpCounter", "t")]


def test_from_toml_empty_file_gives_defaults(tmp_path: Path) -> None:
    app = rio.App.from_toml(write(tmp_path, ""))
    assert app.name == "rio"
    assert app.actors is None
    assert app.default_timeout == 30.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[app]\nname = "x"\nwrokers = 4\n', "[app]: unknown key(s) wrokers; known: actors, "),
        ('[app]\nnmae = "x"\nsorage = "y"\n', "unknown key(s) nmae, sorage"),
        ("[apps]\n", "unknown section(s) apps; known: app, actors"),
        ('[app]\nactors = "m:C"\n', "[app].actors must be a list of 'module:Class' strings"),
        ('[app]\nactors = ["no_colon"]\n', "actor 'no_colon' must read 'module:Class'"),
        ('[app]\nactors = ["rio_no_such_module:X"]\n', "cannot import 'rio_no_such_module'"),
        ('[app]\nactors = ["pathlib:Path"]\n', "'pathlib:Path' is not a rio.Actor subclass"),
        ('[app]\nactors = ["pathlib:Nope"]\n', "'pathlib:Nope' is not a rio.Actor subclass"),
        ("[actors]\nTpCounter = 5\n", "[actors.TpCounter] must be a table"),
        ("[actors.TpCounter]\nttl = 5\n", "unknown option(s) ttl; known: idle_ttl"),
        ("[actors.TpCounter]\nidle_ttl = -1\n", "idle_ttl must be positive seconds or None"),
        ('[app]\ndefault_timeout = 0\n', "default_timeout must be positive seconds"),
        ('[app]\nname = "bad name"\n', "app name 'bad name'"),
        ('[app]\ndefault_timeout = "fast"\n', "[app]:"),
        ('[app]\nworkers = -1\n', "workers must be a whole number >= 0 (0 = in-process)"),
    ],
)
def test_from_toml_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(rio.ConfigError) as info:
        rio.App.from_toml(write(tmp_path, text))
    assert expected in str(info.value)


def test_from_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[app]\nwrokers = 4\n')
    with pytest.raises(rio.ConfigError, match=r"rio\.toml"):
        rio.App.from_toml(path)


def test_from_toml_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(rio.ConfigError) as info:
        rio.App.from_toml(missing)
    assert str(info.value) == f"config file {str(missing)!r} does not exist"


def test_from_toml_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(rio.ConfigError, match="is not valid TOML") as info:
        rio.App.from_toml(write(tmp_path, "[app\nname = \n"))
    assert "rio.toml" in str(info.value)


async def test_a_worker_that_dies_at_start_fails_the_start_and_nothing_restarts(
    tmp_path: Path, logs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DIE_AT_START_ENV, "2")  # worker 2 exits as it imports the helpers
    app = rio.App("dies", storage="memory://", data_dir=tmp_path, workers=2)
    with pytest.raises(rio.WorkerLost, match=r"worker 2 \(pid \d+\) exited with code 3"):
        await app.start()
    assert app.system is None
    assert [line for line in logs if "restarting" in line] == []


async def test_cancelling_serve_while_it_starts_cancels_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stop signal during the start undoes it and serve() returns; a cancellation of
    # serve() itself (asyncio.timeout around it) must still raise, not return None.
    app = rio.App("x", storage="memory://", workers=0)
    started = asyncio.Event()

    async def slow_start() -> rio.System:
        started.set()
        await asyncio.Event().wait()  # a start that takes forever
        raise AssertionError("unreachable")

    monkeypatch.setattr(app, "start", slow_start)
    serving = asyncio.ensure_future(app.serve())
    await started.wait()
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await app.serve()


def test_the_default_worker_count_follows_the_cpus_this_process_may_use() -> None:
    # taskset, cpusets and container quotas: not the machine's CPU count.
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "import rio; print(rio.App('cpus', storage='memory://').workers)"
    )
    env = {k: v for k, v in os.environ.items() if k != "RIO_WORKERS"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.stdout.strip() == "1", out.stderr


async def test_a_bad_rio_workers_fails_the_start_unless_workers_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The app reads RIO_WORKERS when it is built (as the script is imported), before
    # `rio run --workers 2` can override it: that override must still win.
    monkeypatch.setenv("RIO_WORKERS", "abc")
    app = rio.App("bad-env", storage="memory://")
    with pytest.raises(rio.ConfigError, match=r"RIO_WORKERS='abc': expected a whole number"):
        await app.start()
    app.configure(workers=0)
    async with app as system:
        assert system.name == "bad-env"
