"""The worker pool: real worker processes, real shared-memory rings, real kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

import rio
from rio.local.pool import PoolSystem
from tests.waiting import eventually

pytestmark = pytest.mark.slow


class PlState(msgspec.Struct):
    n: int = 0


class PlPoint(msgspec.Struct):
    x: int
    y: int


class PlCounter(rio.Actor[PlState]):
    async def incr(self, by: int) -> int:
        self.state.n += by
        return self.state.n

    async def incr_saved(self, by: int) -> int:
        self.state.n += by
        await self.save()
        return self.state.n

    async def pid(self) -> int:
        return os.getpid()

    async def boom(self, text: str) -> None:
        raise ValueError(text)

    async def poke(self, other: str, by: int) -> int:
        return await PlCounter.ref(other).incr(by)

    async def ping_back(self, other: str) -> int:
        return await PlCounter.ref(other).poke(self.id, 1)

    async def move(self, p: PlPoint, times: int = 1) -> PlPoint:
        return PlPoint(p.x * times, p.y * times)

    async def echo(self, data: bytes) -> bytes:
        return data

    async def slow(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds


def _app(tmp_path: Path, storage: str = "memory://", workers: int = 2) -> rio.App:
    return rio.App("pool-test", storage=storage, workers=workers, drain_timeout=5)


def _ids_on_each_worker(system: PoolSystem, count: int = 2) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {i: [] for i in range(1, system.n + 1)}
    i = 0
    while any(len(v) < count for v in found.values()):
        key = ("PlCounter", f"k{i}")
        owner = system.owner(key)
        if len(found[owner]) < count:
            found[owner].append(key[1])
        i += 1
    return found


async def test_calls_run_in_worker_processes(tmp_path: Path) -> None:
    async with _app(tmp_path) as system:
        assert isinstance(system, PoolSystem)
        on = _ids_on_each_worker(system)
        pids = {await PlCounter.ref(oid).pid() for ids in on.values() for oid in ids}
        assert os.getpid() not in pids
        assert pids == {system.worker_pid(1), system.worker_pid(2)}
        # Placement is stable: the same id always lands on the same worker.
        first = on[1][0]
        assert {await PlCounter.ref(first).pid() for _ in range(5)} == {system.worker_pid(1)}
        assert await PlCounter.ref(first).incr(2) == 2
        assert await PlCounter.ref(first).incr(3) == 5


async def test_structs_errors_and_arguments_cross_processes(tmp_path: Path) -> None:
    async with _app(tmp_path):
        ref = PlCounter.ref("s")
        assert await ref.move(PlPoint(1, 2), times=3) == PlPoint(3, 6)
        assert await ref.move(PlPoint(1, 2)) == PlPoint(1, 2)
        with pytest.raises(rio.RemoteError) as info:
            await ref.boom("nope")
        assert info.value.remote_type == "ValueError"
        assert info.value.remote_message == "nope"
        assert "raise ValueError(text)" in info.value.remote_traceback
        with pytest.raises(rio.BadArguments, match="Expected `int`, got `str`"):
            ref.incr("x")
        assert await ref.incr(1) == 1  # the activation kept serving


async def test_object_to_object_calls_across_workers_and_deadlock(tmp_path: Path) -> None:
    async with _app(tmp_path) as system:
        assert isinstance(system, PoolSystem)
        on = _ids_on_each_worker(system)
        a, b = on[1][0], on[2][0]
        assert await PlCounter.ref(a).poke(b, 7) == 7
        assert await PlCounter.ref(b).incr(0) == 7
        # a -> b -> a among non-reentrant actors on two workers: refused at once.
        with pytest.raises(rio.Deadlock) as info:
            await PlCounter.ref(a).ping_back(b)
        assert f"PlCounter/{a} -> PlCounter/{b} -> PlCounter/{a}" in str(info.value)


async def test_messages_larger_than_a_ring_arrive_whole(tmp_path: Path) -> None:
    async with _app(tmp_path):
        blob = os.urandom(3 * (1 << 20) + 17)  # three times a ring's capacity
        assert await PlCounter.ref("big").echo(blob) == blob


async def test_deadline_crosses_processes(tmp_path: Path) -> None:
    async with _app(tmp_path):
        with pytest.raises(rio.CallTimeout):
            await PlCounter.ref("slow").with_timeout(0.05).slow(1.0)
        assert await PlCounter.ref("slow").incr(1) == 1


async def test_pipelined_calls_keep_order(tmp_path: Path) -> None:
    async with _app(tmp_path):
        ref = PlCounter.ref("order")
        futs = [ref.incr(1) for _ in range(5000)]
        assert [await f for f in futs] == list(range(1, 5001))


async def test_sqlite_state_from_all_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pool.db'}"
    async with _app(tmp_path, url) as system:
        assert isinstance(system, PoolSystem)
        ids = [f"s{i}" for i in range(40)]
        for _ in range(3):
            await asyncio.gather(*(PlCounter.ref(i).incr_saved(1) for i in ids))
    async with _app(tmp_path, url):
        assert [await PlCounter.ref(i).incr(0) for i in ids] == [3] * 40


async def test_kill_9_worker_under_load(tmp_path: Path) -> None:
    """Every call returns or raises WorkerLost; acknowledged saves survive."""
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    async with _app(tmp_path, url) as system:
        assert isinstance(system, PoolSystem)
        on = _ids_on_each_worker(system, 3)
        ids = on[1] + on[2]
        acked = dict.fromkeys(ids, 0)
        lost: list[str] = []
        victim = system.worker_pid(1)

        done = asyncio.Event()

        async def load(oid: str) -> None:
            while not done.is_set():  # under load from before the kill to after the restart
                try:
                    acked[oid] = await PlCounter.ref(oid).incr_saved(1)
                except rio.WorkerLost as e:
                    lost.append(str(e))

        tasks = [asyncio.ensure_future(load(i)) for i in ids]
        await eventually(lambda: min(acked.values()) >= 5, what="every object acknowledged")
        os.kill(victim, signal.SIGKILL)
        await eventually(lambda: system.stats().restarts == 1, what="worker 1 restarted")
        after = dict(acked)
        await eventually(
            lambda: all(acked[i] > after[i] for i in on[1]), what="the restarted worker serves"
        )
        done.set()
        await asyncio.gather(*tasks)
        for message in lost:  # each names the worker and its pid
            assert f"worker 1 (pid {victim})" in message
        assert system.worker_pid(1) != victim  # restarted
        assert system.stats().restarts == 1
        # Objects of the dead worker answer again, re-activated from storage.
        for oid in on[1]:
            assert await PlCounter.ref(oid).incr(0) == acked[oid]
    with sqlite3.connect(tmp_path / "kill.db") as db:
        stored = dict(db.execute("SELECT object_id, version FROM rio_state").fetchall())
    for oid, value in acked.items():
        assert stored.get(oid, 0) >= value


async def test_graceful_stop_drains_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'drain.db'}"
    app = rio.App("pool-drain", storage=url, workers=2, drain_timeout=5)
    async with app:
        futs = [PlCounter.ref(f"d{i}").incr(5) for i in range(10)]
        assert [await f for f in futs] == [5] * 10
    # Nothing was saved explicitly; state is lost (no save_on_deactivate)...
    async with app:
        assert await PlCounter.ref("d0").incr(0) == 0


SCRIPT = """
import os, sys, msgspec, rio

class MainState(msgspec.Struct):
    n: int = 0

class MainCounter(rio.Actor[MainState], save_on_deactivate=True):
    async def incr(self) -> int:
        self.state.n += 1
        return self.state.n

    async def where(self) -> int:
        return os.getpid()

    async def on_deactivate(self) -> None:
        print("deactivated", self.id, self.state.n, flush=True)

app = rio.App("main-script", storage=sys.argv[1], workers=2)

@app.main
async def main() -> None:
    ref = MainCounter.ref("m")
    print("pid-differs", await ref.where() != os.getpid(), flush=True)
    print("value", await ref.incr(), flush=True)
    if len(sys.argv) > 2:
        print("ready", flush=True)
        import asyncio
        await asyncio.Event().wait()

if __name__ == "__main__":
    app.run()
"""


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "main_script.py"
    path.write_text(textwrap.dedent(SCRIPT))
    return path


def test_actors_defined_in_main_run_in_workers(tmp_path: Path) -> None:
    script = _script(tmp_path)
    url = f"sqlite:///{tmp_path / 'main.db'}"
    for expected in (1, 2):
        out = subprocess.run(
            [sys.executable, str(script), url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert "pid-differs True" in out.stdout
        assert f"value {expected}" in out.stdout
        assert f"deactivated m {expected}" in out.stdout  # drained in the worker


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.add(int(entry.name))
    return found


def test_kill_9_driver_leaves_no_worker_and_no_shm(tmp_path: Path) -> None:
    script = _script(tmp_path)
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    proc = subprocess.Popen(
        [sys.executable, str(script), f"sqlite:///{tmp_path / 'k.db'}", "wait"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "ready":
            break
    workers = _children(proc.pid)
    assert len(workers) == 2
    proc.kill()
    proc.wait(timeout=10)
    proc.stdout.close()
    for pid in workers:
        for _ in range(500):
            if not Path(f"/proc/{pid}").exists():
                break
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                break
            if stat.rsplit(")", 1)[1].split()[0] == "Z":  # reaped by init soon
                break
            import time

            time.sleep(0.01)
        else:
            pytest.fail(f"worker {pid} outlived its driver")
    shm_after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    assert shm_after <= shm_before
