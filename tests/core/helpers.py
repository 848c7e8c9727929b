"""Helpers for the core tests: a probe that actors report to, and runtime-neutral checks.

Actors under test reach the current probe with :func:`probe`; a test gets the same
object from the ``probe`` fixture. Everything a test waits for goes through it, so
no test sleeps to "let things happen".

The probe works across processes. The test process serves it on a Unix socket
(:class:`ProbeServer`, its path in ``$RIO_TEST_PROBE``, inherited by worker
processes); in a worker, :func:`probe` returns a :class:`RemoteProbe` whose hits are
acknowledged before they return, so hits keep their causal order across processes.
Worker logs reach the ``logs`` fixture the same way.

Some facts only the process hosting an activation knows (is it active, what is
queued, what its storage holds). :func:`is_active`, :func:`runtime_stats` and
:func:`storage` ask the in-process runtime directly, or the owning worker through
:class:`TxHelper`, a test-only actor every worker imports with this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import socketserver
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from loguru import logger

import rio
from rio.core.runtime import Runtime
from rio.local.config import owner_of
from rio.local.pool import PoolSystem
from rio.storage import MemoryStorage, StateStorage
from rio.storage.base import StoredState

#: What the ``make_app`` fixture returns: ``make_app(storage=..., **app_options)``.
AppFactory = Callable[..., rio.App]

#: The environment variable naming the probe's socket (set in the test process).
PROBE_ENV = "RIO_TEST_PROBE"

_current: Probe | None = None
_remote: RemoteProbe | None = None


def probe() -> Probe | RemoteProbe:
    """The probe of the running test (its remote end, inside a worker process)."""
    if _current is not None:
        return _current
    if _in_worker():
        global _remote
        if _remote is None:
            _remote = RemoteProbe(os.environ[PROBE_ENV])
        return _remote
    raise AssertionError("no probe installed (the autouse `probe` fixture sets one)")


def _in_worker() -> bool:
    return bool(os.environ.get("RIO_WORKER_INDEX")) and PROBE_ENV in os.environ


class Probe:
    """Records named hits (from any thread) and opens named gates (loop thread)."""

    def __init__(self) -> None:
        # The loop (and its thread) of the first waiter; hits from other threads are
        # handed to it. Before anyone waits there is nobody to wake.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = -1
        self._lock = threading.Lock()
        self._opened_cond = threading.Condition(self._lock)
        self._log: list[tuple[str, tuple[Any, ...]]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._gates: dict[str, asyncio.Event] = {}
        self._opened: set[str] = set()
        self._switches: set[str] = set()
        self._closed = False

    # -- hits ------------------------------------------------------------------

    def hit(self, name: str, *data: Any) -> None:
        """Record that ``name`` happened, with optional data; wakes waiters."""
        with self._lock:
            self._log.append((name, data))
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._thread:
            self._wake()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def count(self, name: str) -> int:
        """How many times ``name`` was hit."""
        with self._lock:
            return sum(1 for n, _ in self._log if n == name)

    def data(self, name: str) -> list[Any]:
        """The data of each hit of ``name``: the single value, or a tuple for several."""
        with self._lock:
            return [d[0] if len(d) == 1 else d for n, d in self._log if n == name]

    def names(self) -> list[str]:
        """Every hit's name, in order."""
        with self._lock:
            return [n for n, _ in self._log]

    async def wait(self, name: str, count: int = 1, within: float = 2.0) -> None:
        """Return once ``name`` was hit ``count`` times; fail the test after ``within`` seconds."""
        loop = self._bind()
        try:
            async with asyncio.timeout(within):
                while self.count(name) < count:
                    fut = loop.create_future()
                    self._waiters.append(fut)
                    await fut
        except TimeoutError:
            raise AssertionError(
                f"probe: {name!r} hit {self.count(name)} time(s) within {within}s, "
                f"expected {count}; hits so far: {self.names()}"
            ) from None

    def _bind(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._thread = threading.get_ident()
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # -- gates -------------------------------------------------------------------

    def _gate(self, name: str) -> asyncio.Event:
        self._bind()
        gate = self._gates.get(name)
        if gate is None:
            gate = self._gates[name] = asyncio.Event()
            if name in self._opened:
                gate.set()
        return gate

    async def gate(self, name: str) -> None:
        """Wait until the test opens gate ``name``."""
        await self._gate(name).wait()

    def open(self, name: str) -> None:
        """Open gate ``name``: every waiter, now and later, in any process, passes."""
        with self._lock:
            self._opened.add(name)
            self._opened_cond.notify_all()
        self._gate(name).set()

    def wait_gate_blocking(self, name: str) -> bool:
        """Block this (server) thread until gate ``name`` opens; False if the probe closed."""
        with self._lock:
            self._opened_cond.wait_for(lambda: name in self._opened or self._closed)
            return name in self._opened

    # -- switches ----------------------------------------------------------------

    def switch(self, name: str, on: bool = True) -> None:
        """Turn switch ``name`` on or off (actors read it with :meth:`is_on`)."""
        with self._lock:
            if on:
                self._switches.add(name)
            else:
                self._switches.discard(name)

    def is_on(self, name: str) -> bool:
        """True while switch ``name`` is on."""
        with self._lock:
            return name in self._switches

    def close(self) -> None:
        """The test is over: release remote gate waiters that will never pass."""
        with self._lock:
            self._closed = True
            self._opened_cond.notify_all()


def install(p: Probe | None) -> None:
    """Make ``p`` the current probe (the fixture's job)."""
    global _current
    _current = p


# -- runtime-specific outcomes ------------------------------------------------------------


def rio_bug(
    request: pytest.FixtureRequest, reason: str, *, on: tuple[str, ...], strict: bool = True
) -> None:
    """Mark this test a known rio bug (an xfail) on the runtimes in ``on``.

    Strict, so a fix shows up as a failure to remove the mark; ``strict=False`` only
    where the bug shows through a race (with a deterministic test of its own).
    """
    if request.getfixturevalue("runtime") in on:
        request.applymarker(pytest.mark.xfail(strict=strict, reason=f"rio bug: {reason}"))


def is_cause(err: BaseException, expected: type[BaseException]) -> bool:
    """True when ``err`` was caused by an ``expected`` (itself, or as a RemoteError).

    A cause from another process arrives as a RemoteError naming its type.
    """
    cause = err.__cause__
    if isinstance(cause, rio.RemoteError):
        return cause.is_a(expected)
    return isinstance(cause, expected)


# -- the probe across processes ----------------------------------------------------------

_HEADER = struct.Struct(">I")
_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.decode


def _frame(msg: Any) -> bytes:
    body = _encode(msg)
    return _HEADER.pack(len(body)) + body


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("probe server closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_frame(sock: socket.socket) -> Any:
    (size,) = _HEADER.unpack(_read_exactly(sock, _HEADER.size))
    return _decode(_read_exactly(sock, size))


class ProbeServer:
    """Serves the current test's probe to worker processes (one per test session).

    One thread per connection: a worker keeps one connection for hits and logs
    (each acknowledged) and opens one per gate it waits on.
    """

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="rio-probe-")
        self.path = str(Path(self.dir) / "probe.sock")
        self.probe: Probe | None = None
        self.log_sinks: list[list[str]] = []
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(OSError, ConnectionError):
                    while True:
                        reply = server._answer(_read_frame(self.request))
                        self.request.sendall(_frame(reply))

        self._server = socketserver.ThreadingUnixStreamServer(self.path, Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="rio-test-probe", daemon=True
        )

    def start(self) -> None:
        """Serve, and name the socket in the environment workers inherit."""
        self._thread.start()
        os.environ[PROBE_ENV] = self.path

    def stop(self) -> None:
        """Stop serving and remove the socket."""
        os.environ.pop(PROBE_ENV, None)
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)

    def _answer(self, msg: list[Any]) -> str | bool:
        op = msg[0]
        p = self.probe
        if op == "hit":
            if p is not None:
                p.hit(msg[1], *msg[2])
            return "ok"
        if op == "log":
            for sink in list(self.log_sinks):
                sink.append(msg[1])
            return "ok"
        if op == "is_on":
            return p is not None and p.is_on(msg[1])
        if op == "gate":
            return "open" if p is not None and p.wait_gate_blocking(msg[1]) else "closed"
        return f"unknown request {op!r}"


class RemoteProbe:
    """The probe as a worker process sees it: hits and gates go to the test process."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    def _request(self, msg: list[Any]) -> Any:
        with self._lock:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(self._path)
                self._sock = sock
            self._sock.sendall(_frame(msg))
            return _read_frame(self._sock)

    def hit(self, name: str, *data: Any) -> None:
        """Record ``name`` in the test's probe; returns once it is recorded."""
        self._request(["hit", name, list(data)])

    def is_on(self, name: str) -> bool:
        """True while the test has switch ``name`` on."""
        return bool(self._request(["is_on", name]))

    def log(self, line: str) -> None:
        """Hand one log line to the test's ``logs`` fixture (if one listens)."""
        self._request(["log", line])

    async def gate(self, name: str) -> None:
        """Wait until the test opens gate ``name``."""
        reader, writer = await asyncio.open_unix_connection(self._path)
        try:
            writer.write(_frame(["gate", name]))
            await writer.drain()
            (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
            answer = _decode(await reader.readexactly(size))
        finally:
            writer.close()
        if answer != "open":
            raise RuntimeError(f"the test ended before gate {name!r} opened")


def _forward_log(message: Any) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        p = probe()
        assert isinstance(p, RemoteProbe)
        p.log(str(message).rstrip("\n"))


#: A worker whose index this names exits as it starts (tests of a failed pool start).
DIE_AT_START_ENV = "RIO_TEST_DIE_AT_START"

if _in_worker():
    logger.add(_forward_log, format="{level} {message}")
    if os.environ.get(DIE_AT_START_ENV) == os.environ.get("RIO_WORKER_INDEX"):
        os._exit(3)


# -- facts that only the hosting process knows --------------------------------------------


class TxHelper(rio.Actor, reentrant=True, idle_ttl=None):
    """Test tooling inside a worker: inspects and resets that worker's runtime.

    Tests never call it directly; :func:`is_active`, :func:`runtime_stats`,
    :func:`storage` and :func:`reset_workers` do, on the worker that owns the key.
    """

    def _runtime(self) -> Runtime:
        return self._rio_system

    async def is_active(self, type_name: str, object_id: str) -> bool:
        return self._runtime().is_active(type_name, object_id)

    async def stats(self) -> tuple[int, dict[str, int], int]:
        stats = self._runtime().stats()
        by_type = {k: v for k, v in stats.by_type.items() if k != "TxHelper"}
        return sum(by_type.values()), by_type, stats.queued

    async def stream_stats(self) -> tuple[int, int]:
        return self._runtime().streams.stats()

    async def store_load(self, type_name: str, object_id: str) -> tuple[bytes, int] | None:
        found = await self._runtime().storage.load(type_name, object_id, msgspec.Raw)
        return None if found is None else (bytes(found.value), found.version)

    async def store_save(self, type_name: str, object_id: str, data: bytes, expected: int) -> int:
        return await self._runtime().storage.save(
            type_name, object_id, msgspec.Raw(data), msgspec.Raw, expected
        )

    async def store_delete(self, type_name: str, object_id: str, expected: int) -> None:
        await self._runtime().storage.delete(type_name, object_id, expected)

    async def reset(self, within: float) -> bool:
        """Deactivate every other activation (as a stop would) and forget memory storage.

        Memory reminders go too: a later test must not receive an earlier one's.
        """
        rt = self._runtime()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while others := [a for k, a in rt._acts.items() if k[0] != "TxHelper"]:
            waits = [rt._request_deactivation(a, front=False) for a in others]
            # asyncio.wait, not asyncio.timeout: this may run outside any task.
            _, pending = await asyncio.wait(waits, timeout=max(deadline - loop.time(), 0))
            if pending:
                return False
        if isinstance(rt.storage, MemoryStorage):
            rt.storage._data.clear()
            rt.storage._reminders.clear()
        return True


_helper_ids: dict[tuple[int, int], str] = {}


def _helper(system: PoolSystem, worker: int) -> rio.Ref[TxHelper]:
    key = (system.n, worker)
    hid = _helper_ids.get(key)
    if hid is None:
        i = 0
        while owner_of(("TxHelper", f"h{i}"), system.n) != worker:
            i += 1
        hid = _helper_ids[key] = f"h{i}"
    return system.ref(TxHelper, hid)


def _key(actor: type[rio.Actor[Any]] | str, object_id: str | int) -> tuple[str, str]:
    name = actor if isinstance(actor, str) else actor._rio_type.name
    return name, str(object_id)


def _owner_helper(system: PoolSystem, key: tuple[str, str]) -> rio.Ref[TxHelper]:
    return _helper(system, system.owner(key))


async def is_active(
    system: rio.System, actor: type[rio.Actor[Any]] | str, object_id: str | int
) -> bool:
    """True when ``(actor, object_id)`` has a live activation (wherever it is hosted)."""
    if isinstance(system, Runtime):
        return system.is_active(actor, object_id)
    assert isinstance(system, PoolSystem)
    key = _key(actor, object_id)
    return bool(await _owner_helper(system, key).is_active(*key))


async def runtime_stats(system: rio.System) -> rio.RuntimeStats:
    """Activations and queued messages of the whole system (every worker's, summed)."""
    if isinstance(system, Runtime):
        return system.stats()
    assert isinstance(system, PoolSystem)
    parts = await asyncio.gather(*(_helper(system, w).stats() for w in range(1, system.n + 1)))
    by_type: dict[str, int] = {}
    for _, types, _ in parts:
        for name, n in types.items():
            by_type[name] = by_type.get(name, 0) + n
    return rio.RuntimeStats(sum(p[0] for p in parts), by_type, sum(p[2] for p in parts))


async def stream_stats(system: rio.System) -> dict[str, tuple[int, int]]:
    """``(streams, subscribers)`` kept by each process: ``"here"`` and ``"worker N"``."""
    if isinstance(system, Runtime):
        return {"here": system.streams.stats()}
    assert isinstance(system, PoolSystem)
    out = {"here": system.streams.stats()}
    for w in range(1, system.n + 1):
        streams, subs = await _helper(system, w).stream_stats()
        out[f"worker {w}"] = (streams, subs)
    return out



def where(system: rio.System, actor: type[rio.Actor[Any]] | str, object_id: str | int) -> str:
    """What a timeout message says about where the object lives ("" in-process)."""
    if isinstance(system, PoolSystem):
        return f" (worker {system.owner(_key(actor, object_id))})"
    return ""


def placed_id(
    system: rio.System,
    near: tuple[type[rio.Actor[Any]], str],
    actor: type[rio.Actor[Any]],
    *,
    same: bool,
) -> str:
    """An id of ``actor`` hosted by the same worker as ``near`` (or another one).

    In-process every object shares the one runtime; any id does.
    """
    if not isinstance(system, PoolSystem):
        return "placed0"
    owner = system.owner(_key(*near))
    i = 0
    while (system.owner(_key(actor, f"placed{i}")) == owner) != same:
        i += 1
    return f"placed{i}"


class WorkerStorage:
    """The storage of a worker pool's objects, seen from the test process.

    Each call runs in the worker that owns the object, so memory storage (one per
    worker) works too. The same methods as a :class:`StateStorage`.
    """

    def __init__(self, system: PoolSystem) -> None:
        self.system = system

    async def load(self, type_name: str, object_id: str, state_type: Any) -> StoredState | None:
        """The stored state of an object, or None."""
        key = (type_name, object_id)
        found = await _owner_helper(self.system, key).store_load(*key)
        if found is None:
            return None
        return StoredState(msgspec.msgpack.decode(found[0], type=state_type), found[1])

    async def save(
        self, type_name: str, object_id: str, state: Any, state_type: Any, expected_version: int
    ) -> int:
        """Compare-and-set the state of an object (as another writer would)."""
        key = (type_name, object_id)
        data = msgspec.msgpack.encode(state)
        return int(await _owner_helper(self.system, key).store_save(*key, data, expected_version))

    async def delete(self, type_name: str, object_id: str, expected_version: int) -> None:
        """Compare-and-delete the state of an object."""
        key = (type_name, object_id)
        await _owner_helper(self.system, key).store_delete(*key, expected_version)


def storage(system: rio.System) -> StateStorage | WorkerStorage:
    """The storage the system's objects use, to read or write behind their backs."""
    if isinstance(system, Runtime):
        return system.storage
    assert isinstance(system, PoolSystem)
    return WorkerStorage(system)


async def reset_workers(system: PoolSystem, within: float) -> bool:
    """Deactivate everything in every worker and forget memory storage; False if stuck."""
    try:
        results = await asyncio.gather(
            *(
                _helper(system, w).with_timeout(within + 5).reset(within)
                for w in range(1, system.n + 1)
            )
        )
    except rio.RioError:
        return False
    return all(results)
