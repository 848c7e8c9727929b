"""``rio status`` and ``rio run --cluster`` refuse a wrong URL up front (exit code 2)."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
from test_cli import child_env, rio_command

APP = str(Path(__file__).parent / "apps" / "cluster_app.py")


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*rio_command(), *args],
        cwd=tmp_path,
        env=child_env(tmp_path, RIO_CLUSTER_SECRET="s3cret"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_status_of_a_missing_sqlite_file_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "clustr.db"
    proc = run(tmp_path, "status", "--cluster", f"sqlite:///{missing}")
    assert proc.returncode == 2, proc.stderr
    assert f"no cluster store at sqlite:///{missing}: the file {missing} does not exist" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "typo").exists()


async def _pg_tables(prefix: str) -> list[str]:
    import asyncpg
    from storage.conftest import PG_URL

    conn = await asyncpg.connect(PG_URL)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE starts_with(tablename, $1)", prefix
        )
        return [r[0] for r in rows]
    finally:
        await conn.close()


async def test_status_of_a_server_with_no_cluster_there_is_an_error_and_creates_nothing(
    tmp_path: Path,
) -> None:
    # It used to migrate: a mistyped prefix or database became an empty cluster ("0
    # live members", exit 0), with its tables created, and a newer rio would have
    # migrated a running cluster's tables.
    import asyncio
    import uuid

    from storage.conftest import PG_URL, REDIS_URL

    prefix = f"rt{uuid.uuid4().hex[:6]}nocluster_"
    other = tmp_path / "other.db"  # an SQLite file that holds something else
    sqlite3.connect(other).execute("CREATE TABLE user_data (x)").connection.close()
    urls = [f"{PG_URL}?prefix={prefix}", f"{REDIS_URL}?prefix={prefix}", f"sqlite:///{other}"]
    for url in urls:
        proc = await asyncio.to_thread(run, tmp_path, "status", "--cluster", url)
        assert proc.returncode == 2, proc.stderr
        assert "it holds no rio cluster tables (check the URL" in proc.stderr, proc.stderr
    assert await _pg_tables(prefix) == []
    tables = sqlite3.connect(other).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("user_data",)]
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        assert [k async for k in client.scan_iter(match=f"{prefix}*")] == []
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("bogus://db", "unknown scheme 'bogus'"),
        ("redis://127.0.0.1:6379/x", "the path must be a database number"),
    ],
)
def test_run_with_a_malformed_cluster_url_starts_nothing(
    tmp_path: Path, url: str, says: str
) -> None:
    proc = run(tmp_path, "run", APP, "--cluster", url)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr
    assert "listening on" not in proc.stderr  # refused before the listener opened
    assert "Traceback" not in proc.stderr


async def test_a_client_of_a_missing_sqlite_file_is_refused_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A mistyped path used to be made into an empty cluster: every call then failed
    # with NoNodesAvailable ("live members: none"), and the typo stayed on disk. A
    # client started with its nodes waits a moment for them to create the file.
    import rio
    from rio.cluster import client

    monkeypatch.setattr(client, "STORE_FILE_WAIT", 0.2)
    missing = tmp_path / "clustr.db"
    with pytest.raises(rio.ConfigError, match=f"the file {missing} does not exist"):
        async with rio.connect(f"sqlite:///{missing}", secret="s"):
            pass
    assert not missing.exists()


async def test_status_shows_a_member_that_stopped_heartbeating_as_silent(tmp_path: Path) -> None:
    # A node killed with -9 and no one left to declare it dead: its row still says
    # active, and `rio status` counted it live.
    import time

    from rio.cli.status import cluster_status, format_status
    from rio.cluster.store import Member, cluster_store_from_url

    url = f"sqlite:///{tmp_path}/cluster.db"
    store = cluster_store_from_url(url)
    await store.open()
    now = time.time()
    for name, beat in (("fresh", now), ("gone", now - 60)):
        await store.register(
            Member(
                member_id=f"{name}#1",
                node=name,
                address="127.0.0.1:7000",
                incarnation=1,
                status="active",
                types=["Counter"],
                heartbeat=beat,
                started=beat,
            )
        )
    await store.close()
    read = await cluster_status(url)
    assert read.silent == ["gone#1"]
    text = format_status(read)
    assert "active (silent)" in text
    assert "1 live member(s), 1 silent (no heartbeat for over 30s" in text
