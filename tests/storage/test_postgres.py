"""PostgreSQL specifics: which column a state lands in, and that both load back."""

from __future__ import annotations

import datetime
import enum
import uuid
from typing import Any

import msgspec
import pytest

from rio.storage import storage_from_url

from .conftest import PostgresBackend


class Color(enum.Enum):
    RED = "red"


class Inner(msgspec.Struct):
    tags: list[str]
    scores: dict[int, int]


class Rich(msgspec.Struct):
    name: str
    when: datetime.datetime
    ident: uuid.UUID
    color: Color
    inner: Inner
    maybe: int | None = None


class Node(msgspec.Struct):
    value: int
    children: list[Node] = []


class Measure(msgspec.Struct):
    value: float
    other: float | None = None


class WithBytes(msgspec.Struct):
    raw: bytes


class WithAny(msgspec.Struct):
    anything: Any


RICH = Rich(
    "ü",
    datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC),
    uuid.UUID(int=7),
    Color.RED,
    Inner(["a"], {1: 2}),
)


@pytest.fixture
async def pg() -> Any:
    backend = PostgresBackend(tmp_path=None)  # type: ignore[arg-type]
    backend.check_reachable()
    prefix = backend.new_prefix()
    storage = storage_from_url(backend.url(prefix))
    await storage.open()
    yield storage
    await storage.close()
    await backend.drop(prefix)


@pytest.mark.parametrize(
    ("object_id", "state", "state_type", "column"),
    [
        ("rich", RICH, Rich, "doc"),
        ("tree", Node(1, [Node(2), Node(3, [Node(4)])]), Node, "doc"),
        ("float", Measure(1.5, None), Measure, "doc"),
        ("nan", Measure(float("nan")), Measure, "data"),
        ("inf-in-optional", Measure(1.0, float("-inf")), Measure, "data"),
        ("nul", Inner(["a\x00"], {}), Inner, "data"),
        ("bytes", WithBytes(b"\xff"), WithBytes, "data"),
        ("any", WithAny({"a": 1}), WithAny, "data"),
        ("plain-dict", {"b": 1, "a": 2}, dict[str, int], "doc"),
    ],
)
async def test_state_column(
    pg: Any, object_id: str, state: Any, state_type: Any, column: str
) -> None:
    await pg.save("T", object_id, state, state_type, 0)
    row = await pg.engine.pool.fetchrow(
        f"SELECT doc IS NOT NULL AS is_doc FROM {pg.engine.tables['state']} "
        "WHERE type_name='T' AND object_id=$1",
        object_id,
    )
    assert ("doc" if row["is_doc"] else "data") == column
    got = await pg.load("T", object_id, state_type)
    assert got is not None
    assert got.version == 1
    if object_id == "nan":
        assert got.value.value != got.value.value
    else:
        assert got.value == state


async def test_json_state_is_queryable_in_sql(pg: Any) -> None:
    await pg.save("Acct", "a", Inner(["x", "y"], {3: 4}), Inner, 0)
    tags = await pg.engine.pool.fetchval(
        f"SELECT doc->'tags'->>1 FROM {pg.engine.tables['state']} WHERE object_id='a'"
    )
    assert tags == "y"


async def test_a_type_can_move_between_columns(pg: Any) -> None:
    await pg.save("M", "m", Measure(1.0), Measure, 0)
    await pg.save("M", "m", Measure(float("inf")), Measure, 1)
    assert await pg.load("M", "m", Measure) == (Measure(float("inf")), 2)
    await pg.save("M", "m", Measure(2.0), Measure, 2)
    assert await pg.load("M", "m", Measure) == (Measure(2.0), 3)


async def test_schema_option(pg: Any) -> None:
    backend = PostgresBackend(tmp_path=None)  # type: ignore[arg-type]
    prefix = backend.new_prefix()
    schema = f"{prefix}ns"
    storage = storage_from_url(f"{backend.url(prefix)}&schema={schema}")
    try:
        await storage.open()
        await storage.save("T", "a", Inner([], {}), Inner, 0)
        found = await pg.engine.pool.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname=$1", schema
        )
        assert found == 3  # <prefix>state, <prefix>reminders and <prefix>schema
    finally:
        await storage.close()
        await pg.engine.pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
