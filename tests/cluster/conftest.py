"""Fixtures for the cluster store suite, on the storage suite's backends.

The servers, their URLs (RIO_TEST_POSTGRES_URL, RIO_TEST_MYSQL_URL,
RIO_TEST_REDIS_URL), the per-test prefixes and their clean-up, and the rule "skip when
a server is unreachable locally, fail under CI" all come from ``tests/storage``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

# The storage suite's conftest, imported by the name pytest gives it (tests/ is on
# sys.path for the rootless tests/conftest.py); its session sweep runs for us too.
from storage.conftest import BACKENDS, Backend, _sweep_run_leftovers

from rio.cluster.store import ClusterStore, cluster_store_from_url

__all__ = ["CLUSTER_ENGINES", "_sweep_run_leftovers"]

#: Every engine a cluster store runs on (memory has no cluster store).
CLUSTER_ENGINES = ["sqlite", "postgres", "mysql", "redis"]

OpenStore = Callable[..., Awaitable[ClusterStore]]


@pytest.fixture(params=CLUSTER_ENGINES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each cluster store engine in turn."""
    b = BACKENDS[request.param](tmp_path)
    b.check_reachable()
    return b


@pytest.fixture
async def prefix(backend: Backend) -> AsyncIterator[str]:
    """A fresh table/key prefix for this test, dropped afterwards."""
    p = backend.new_prefix()
    yield p
    await backend.drop(p)


@pytest.fixture
async def open_store(backend: Backend, prefix: str) -> AsyncIterator[OpenStore]:
    """``await open_store(prefix=None)``: an opened store, closed at teardown.

    Each call builds a separate instance with its own connections.
    """
    opened: list[ClusterStore] = []

    async def make(prefix_: str | None = None) -> ClusterStore:
        store = cluster_store_from_url(backend.url(prefix_ or prefix))
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
def urls(tmp_path: Path) -> tuple[str, str]:
    """(cluster store URL, state storage URL), both SQLite files in the test's folder.

    The cluster file exists (empty) from the start, as once a node has run: a client
    refuses a cluster file that nobody creates.
    """
    sqlite3.connect(tmp_path / "cluster.db").close()
    return f"sqlite:///{tmp_path}/cluster.db", f"sqlite:///{tmp_path}/state.db"
