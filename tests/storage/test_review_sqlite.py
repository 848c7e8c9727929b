"""Regression tests from a review of the shared SQLite opener (rio.storage.sqlite.open_sqlite)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
