"""Fixtures shared by the whole suite.

Each behaviour test is written once and runs on every runtime path in
:data:`RUNTIMES`, through the ``runtime`` parameter that ``make_app`` and ``system``
depend on (pykka's habit). Today the only path is ``"inproc"``: actors in the test's
own event loop. Worker processes (``"workers"``) and a cluster (``"cluster"``) join
by adding their name to :data:`RUNTIMES` and their App options to
:data:`RUNTIME_OPTIONS`; the tests themselves do not change.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

import rio

#: Every runtime path the behaviour tests run on.
RUNTIMES = ["inproc"]
#: Extra ``rio.App`` keywords that select each runtime path.
RUNTIME_OPTIONS: dict[str, dict[str, Any]] = {"inproc": {"workers": 0}}

AppFactory = Callable[..., rio.App]


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    """The runtime path under test."""
    return str(request.param)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite storage URL in this test's own folder (absolute path: four slashes)."""
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def make_app(runtime: str, tmp_path: Path) -> AppFactory:
    """Build (not start) an app on the runtime under test; storage defaults to memory.

    Example::

        async with make_app(storage=sqlite_url, default_timeout=1) as system: ...
    """
    names = itertools.count()

    def make(*, storage: Any = "memory://", **options: Any) -> rio.App:
        # A test that fails while a turn is stuck should not also wait out a 30 s drain.
        options.setdefault("drain_timeout", 2.0)
        return rio.App(
            f"test-{runtime}-{next(names)}",
            storage=storage,
            data_dir=tmp_path,
            **RUNTIME_OPTIONS[runtime],
            **options,
        )

    return make


@pytest.fixture
async def system(make_app: AppFactory) -> AsyncIterator[rio.System]:
    """A started system with in-memory storage; stopped (drained) after the test."""
    async with make_app() as system:
        yield system


@pytest.fixture
async def sqlite_system(make_app: AppFactory, sqlite_url: str) -> AsyncIterator[rio.System]:
    """A started system storing state in a SQLite file under ``tmp_path``."""
    async with make_app(storage=sqlite_url) as system:
        yield system


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Messages logged through loguru during the test, as ``"LEVEL message"`` lines."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m).rstrip("\n")), format="{level} {message}")
    try:
        yield lines
    finally:
        logger.remove(sink)
