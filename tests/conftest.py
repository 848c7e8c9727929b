"""Fixtures shared by the whole suite.

Each behaviour test is written once and runs on every runtime path in
:data:`RUNTIMES`, through the ``runtime`` parameter that ``make_app`` (and the
``system`` fixtures of the core tests) depend on (pykka's habit):

- ``"inproc"``: actors in the test's own event loop (``workers=0``);
- ``"workers"``: actors in two worker processes, the test process being the driver.

A cluster (``"cluster"``) joins by adding its name to :data:`RUNTIMES` and its App
options to :data:`RUNTIME_OPTIONS`; the tests themselves do not change.

Async tests that take the ``runtime`` parameter run in one event loop for the whole
session, so a worker pool started for one test can serve the next ones (starting
one costs far more than a test).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from pytest_asyncio import is_async_test

import rio

#: Every runtime path the behaviour tests run on.
RUNTIMES = ["inproc", "workers"]
#: Extra ``rio.App`` keywords that select each runtime path.
RUNTIME_OPTIONS: dict[str, dict[str, Any]] = {
    "inproc": {"workers": 0},
    "workers": {"workers": 2},
}

AppFactory = Callable[..., rio.App]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    session_loop = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if "runtime" in getattr(item, "fixturenames", ()) and is_async_test(item):
            item.add_marker(session_loop, append=False)


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
def logs() -> Iterator[list[str]]:
    """Messages logged through loguru during the test, as ``"LEVEL message"`` lines."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m).rstrip("\n")), format="{level} {message}")
    try:
        yield lines
    finally:
        logger.remove(sink)
