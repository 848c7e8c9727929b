"""Fixtures of the core tests: the probe, and started systems on every runtime path.

On the ``workers`` path the ``system`` fixture shares one worker pool between tests
(starting one costs far more than most tests): after each test every activation
is deactivated, as a stop would, and memory storage is forgotten, so the next test
finds a fresh system. A pool that cannot be reset (a turn stuck on a gate) is
stopped and replaced.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

import rio
from rio.core.context import set_default_system
from rio.local.pool import PoolSystem

from . import helpers
from .helpers import AppFactory

RESET_WITHIN = 2.0


@pytest.fixture(scope="session", autouse=True)
def probe_server() -> Iterator[helpers.ProbeServer]:
    """Serves each test's probe to worker processes (before any pool starts)."""
    server = helpers.ProbeServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def probe(probe_server: helpers.ProbeServer) -> Iterator[helpers.Probe]:
    """A fresh probe that this test's actors report to (see :mod:`helpers`).

    Autouse, so it is set up before ``system`` and outlives its drain, where
    ``on_deactivate`` hooks still report.
    """
    p = helpers.Probe()
    helpers.install(p)
    probe_server.probe = p
    try:
        yield p
    finally:
        probe_server.probe = None
        p.close()
        helpers.install(None)


@pytest.fixture
def logs(logs: list[str], probe_server: helpers.ProbeServer) -> Iterator[list[str]]:
    """The suite's ``logs``, plus the lines logged in worker processes."""
    probe_server.log_sinks.append(logs)
    try:
        yield logs
    finally:
        probe_server.log_sinks.remove(logs)


class SharedPool:
    """One worker pool with the default test options, reset between tests."""

    def __init__(self) -> None:
        self.system: PoolSystem | None = None

    async def get(self, make_app: AppFactory) -> PoolSystem:
        if self.system is None:
            # Not app.start(): the fixture binds the pool as each test's system itself.
            app = make_app(drain_timeout=RESET_WITHIN)
            system = PoolSystem(app, app.workers)
            await system.start()
            self.system = system
        return self.system

    async def reset(self) -> None:
        system = self.system
        if system is None:
            return
        ok = system.running and await helpers.reset_workers(system, RESET_WITHIN)
        if not ok:
            self.system = None
            await system.stop()

    async def close(self) -> None:
        system, self.system = self.system, None
        if system is not None:
            await system.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shared_pool() -> AsyncIterator[SharedPool]:
    """The worker pool that ``system`` fixtures on the workers path share."""
    pool = SharedPool()
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def started(
    runtime: str, make_app: AppFactory, shared_pool: SharedPool, storage: str = "memory://"
) -> AsyncIterator[rio.System]:
    """A started system; on workers with memory storage, the shared pool."""
    if runtime != "workers" or storage != "memory://":
        async with make_app(storage=storage) as system:
            yield system
        return
    shared = await shared_pool.get(make_app)
    set_default_system(shared)
    try:
        yield shared
    finally:
        set_default_system(None)
        await shared_pool.reset()


@pytest_asyncio.fixture(loop_scope="session")
async def system(
    runtime: str, make_app: AppFactory, shared_pool: SharedPool
) -> AsyncIterator[rio.System]:
    """A started system with in-memory storage; stopped (drained) after the test."""
    async with started(runtime, make_app, shared_pool) as system:
        yield system


@pytest_asyncio.fixture(loop_scope="session")
async def sqlite_system(
    runtime: str, make_app: AppFactory, shared_pool: SharedPool, sqlite_url: str
) -> AsyncIterator[rio.System]:
    """A started system storing state in a SQLite file under ``tmp_path``."""
    async with started(runtime, make_app, shared_pool, sqlite_url) as system:
        yield system


@pytest_asyncio.fixture(loop_scope="session", params=["memory", "sqlite"])
async def engine_system(
    request: pytest.FixtureRequest,
    runtime: str,
    make_app: AppFactory,
    shared_pool: SharedPool,
    sqlite_url: str,
) -> AsyncIterator[rio.System]:
    """A started system on each storage engine in turn (memory, then SQLite)."""
    storage = "memory://" if request.param == "memory" else sqlite_url
    async with started(runtime, make_app, shared_pool, storage) as system:
        yield system
