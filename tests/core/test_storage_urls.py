"""Choosing storage by URL: parsing, options, refusals, and passwords kept out of messages."""

import sqlite3
from pathlib import Path

import msgspec
import pytest

import rio
from rio.storage import MemoryStorage, SQLiteStorage, mask_url, storage_from_url


class TuState(msgspec.Struct):
    value: int = 0


def test_memory_url() -> None:
    storage = storage_from_url("memory://")
    assert isinstance(storage, MemoryStorage)
    assert storage.url == "memory://"


def test_sqlite_relative_and_absolute_paths() -> None:
    relative = storage_from_url("sqlite:///data/app.db")
    assert isinstance(relative, SQLiteStorage)
    assert relative.path == "data/app.db"
    absolute = storage_from_url("sqlite:////var/lib/app.db")
    assert isinstance(absolute, SQLiteStorage)
    assert absolute.path == "/var/lib/app.db"
    assert storage_from_url("sqlite://localhost/data/app.db").path == "data/app.db"  # type: ignore[attr-defined]


def test_sqlite_home_directory_is_expanded() -> None:
    storage = storage_from_url("sqlite:///~/app.db")
    assert isinstance(storage, SQLiteStorage)
    assert storage.path == str(Path("~/app.db").expanduser())


def test_scheme_is_case_insensitive() -> None:
    assert isinstance(storage_from_url("SQLite:///x.db"), SQLiteStorage)


async def test_sqlite_url_options(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/opts.db?prefix=app1_&synchronous=full&busy_timeout_ms=500"
    storage = storage_from_url(url)
    assert isinstance(storage, SQLiteStorage)
    assert storage.url == url
    async with storage:
        assert await storage.save("T", "a", TuState(1), TuState, 0) == 1
        found = await storage.load("T", "a", TuState)
        assert found is not None
        assert found.value == TuState(1)
    with sqlite3.connect(tmp_path / "opts.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"app1_state", "app1_schema"} <= tables


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///x.db?prefix=bad-prefix", "sqlite table prefix 'bad-prefix' is not allowed"),
        ("sqlite:///x.db?synchronous=sometimes", "expected OFF, NORMAL, FULL or EXTRA"),
        ("sqlite:///x.db?busy_timeout_ms=soon", "busy_timeout_ms must be an integer"),
        ("sqlite:///x.db?cache=big&mode=ro", "unknown option(s) cache, mode; known: prefix"),
        ("sqlite://db.example.com/x.db", "names a host; use sqlite:///relative.db"),
        ("sqlite://", "names no file: e.g. sqlite:///data/rio.db"),
        ("sqlite:///", "names no file"),
    ],
)
def test_bad_sqlite_urls(url: str, expected: str) -> None:
    with pytest.raises(rio.ConfigError) as info:
        storage_from_url(url)
    assert expected in str(info.value)


def test_url_without_scheme() -> None:
    with pytest.raises(rio.ConfigError) as info:
        storage_from_url("data/app.db")
    message = str(info.value)
    assert "storage URL 'data/app.db' has no scheme" in message
    assert "memory" in message
    assert "sqlite" in message
    assert "e.g. 'sqlite:///data/rio.db'" in message


def test_a_url_missing_its_slashes_is_told_so() -> None:
    with pytest.raises(rio.ConfigError, match=r"storage URL 'sqlite:/x.db' is missing '://'"):
        rio.App("x", storage="sqlite:/x.db")


def test_unknown_scheme() -> None:
    with pytest.raises(rio.ConfigError) as info:
        storage_from_url("mongodb://user:hunter2@db/app")
    message = str(info.value)
    assert "unknown storage scheme 'mongodb'" in message
    assert "expected one of" in message
    assert "sqlite" in message
    assert "hunter2" not in message
    assert "mongodb://user:***@db/app" in message


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("nope://", "unknown storage scheme 'nope'"),
        ("sqlite://hello.db", "names a host; use sqlite:///relative.db"),
    ],
)
def test_app_with_a_bad_storage_url_fails_when_it_is_built(url: str, says: str) -> None:
    # Refused by App() itself, not later by each worker process as it starts.
    with pytest.raises(rio.ConfigError, match=says):
        rio.App("x", storage=url)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgres://rio:s3cret@db:5432/app", "postgres://rio:***@db:5432/app"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("mysql://u:p%40ss@h/db?x=1", "mysql://u:***@h/db?x=1"),
        ("postgres://rio@db/app", "postgres://rio@db/app"),
        ("sqlite:///data/app.db", "sqlite:///data/app.db"),
        ("memory://", "memory://"),
        ("postgres://u:pw@[::1/x", "<unparseable URL>"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked
