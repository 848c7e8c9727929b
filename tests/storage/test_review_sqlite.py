"""Regression tests from a review of the shared SQLite opener (rio.storage.sqlite.open_sqlite)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import msgspec
import pytest

import rio
from rio.cluster.stores.sqlite import SQLiteClusterStore


async def test_a_cluster_store_whose_file_stays_locked_at_open_says_so(tmp_path: Path) -> None:
    # Another process holds the file (here: an exclusive transaction on a file not in
    # WAL mode yet), so switching it to WAL is retried until busy_timeout_ms. The
    # cluster store used to say what happened and for how long; through the shared
    # opener it now only says "cannot prepare ...: database is locked".
    path = tmp_path / "cluster.db"
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("CREATE TABLE t (x)")
        other.execute("BEGIN EXCLUSIVE")
        store = SQLiteClusterStore(f"sqlite:///{path}?busy_timeout_ms=100")
        with pytest.raises(rio.StorageUnavailable, match="stayed locked by another process"):
            await store.open()
        await store.close()
    finally:
        other.close()


class _Count(msgspec.Struct):
    n: int = 0


class SqBusy(rio.Actor[_Count]):
    async def incr(self) -> int:
        self.state.n += 1
        await self.save()
        return self.state.n


async def test_saves_from_two_workers_on_existing_rows_never_report_locked(
    tmp_path: Path,
) -> None:
    # Each worker shares one connection among its activations. A load used to step
    # its SELECT and then await the row: a save by another activation ran on the same
    # connection inside that still-open read transaction, and when the other worker
    # had committed meanwhile SQLite refused it at once ("database is locked",
    # SQLITE_BUSY_SNAPSHOT, which busy_timeout does not wait out): a StorageError for
    # a save that only had to wait its turn (hundreds in 5,000 such calls).
    url = f"sqlite:///{tmp_path}/state.db"
    ids = [f"c{i}" for i in range(2_000)]
    for expected in (1, 2):  # inserts, then loads of existing rows and updates
        async with rio.App("sqbusy", storage=url, actors=[SqBusy], workers=2):
            got = await asyncio.gather(*(SqBusy.ref(i).incr() for i in ids))
        assert got == [expected] * len(ids)
