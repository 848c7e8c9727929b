"""The StateStorage contract, run on every engine (memory, sqlite, postgres, mysql, redis)."""

from __future__ import annotations

import asyncio
import enum
import sys
from pathlib import Path
from typing import Literal

import msgspec
import pytest

from rio.core.errors import StateConflict, StateDecodeError
from rio.storage import storage_from_url

from .conftest import Backend, OpenStorage


class Counter(msgspec.Struct):
    n: int = 0
    label: str = ""


class Blob(msgspec.Struct):
    payload: bytes
    note: str = ""


class Text(msgspec.Struct):
    text: str


class Measure(msgspec.Struct):
    value: float


class Renamed(msgspec.Struct):
    n: str


async def test_load_missing_returns_none(open_storage: OpenStorage) -> None:
    s = await open_storage()
    assert await s.load("Counter", "nobody", Counter) is None


async def test_save_then_load(open_storage: OpenStorage) -> None:
    s = await open_storage()
    assert await s.save("Counter", "a", Counter(1, "one"), Counter, 0) == 1
    assert await s.load("Counter", "a", Counter) == (Counter(1, "one"), 1)
    assert await s.save("Counter", "a", Counter(2, "two"), Counter, 1) == 2
    assert await s.load("Counter", "a", Counter) == (Counter(2, "two"), 2)


async def test_open_and_close_are_idempotent(backend: Backend, prefix: str) -> None:
    s = storage_from_url(backend.url(prefix))
    await s.open()
    await s.open()
    await s.save("Counter", "a", Counter(1), Counter, 0)
    await s.close()
    await s.close()


async def test_stale_version_is_refused_and_nothing_overwritten(
    open_storage: OpenStorage,
) -> None:
    s = await open_storage()
    await s.save("Counter", "a", Counter(1), Counter, 0)
    await s.save("Counter", "a", Counter(2), Counter, 1)
    for stale in (0, 1, 3):
        with pytest.raises(StateConflict) as info:
            await s.save("Counter", "a", Counter(99), Counter, stale)
        assert "Counter/a" in str(info.value)
        assert f"expected {stale}" in str(info.value)
    assert await s.load("Counter", "a", Counter) == (Counter(2), 2)
    with pytest.raises(StateConflict):
        await s.save("Counter", "never-saved", Counter(1), Counter, 1)
    assert await s.load("Counter", "never-saved", Counter) is None


async def test_concurrent_writers_exactly_one_wins_every_round(
    open_storage: OpenStorage,
) -> None:
    # Three separate engine instances (separate pools / connections) race on one key.
    writers = [await open_storage() for _ in range(3)]
    for round_ in range(40):
        version = round_
        results = await asyncio.gather(
            *(
                w.save("Race", "key", Counter(round_, f"w{i}"), Counter, version)
                for i, w in enumerate(writers)
            ),
            return_exceptions=True,
        )
        wins = [i for i, r in enumerate(results) if r == version + 1]
        losses = [r for r in results if isinstance(r, StateConflict)]
        assert len(wins) == 1, results
        assert len(losses) == len(writers) - 1, results
        stored = await writers[(round_ + 1) % 3].load("Race", "key", Counter)
        assert stored == (Counter(round_, f"w{wins[0]}"), version + 1)


async def test_one_mebibyte_states(open_storage: OpenStorage) -> None:
    s = await open_storage()
    payload = bytes(range(256)) * 4096
    assert len(payload) == 1 << 20
    await s.save("Big", "bytes", Blob(payload, "x"), Blob, 0)
    text = "ä€𝄞x" * (1 << 18)
    await s.save("Big", "text", Text(text), Text, 0)
    assert await s.load("Big", "bytes", Blob) == (Blob(payload, "x"), 1)
    assert await s.load("Big", "text", Text) == (Text(text), 1)
    await s.save("Big", "bytes", Blob(payload[::-1]), Blob, 1)
    assert await s.load("Big", "bytes", Blob) == (Blob(payload[::-1]), 2)


ODD_KEYS = [
    ("Counter", "ünïcødé ✓ 🚀"),
    ("Counter", "名前"),
    ("Counter", "A"),
    ("Counter", "a"),
    ("Counter", "a "),
    ("Counter", ""),
    ("Counter", "a:b"),
    ("Counter:a", "b"),
    ("Counter", "'; DROP TABLE x; --"),
    ("Counter", '%s %(x)s {} \\ " `'),
    ("my.module:Counter", "x/y"),
    ("Typ with spaces/and:colons", "x"),
    ("Zähler", "z"),
    ("a:b", "c"),
    ("a", "b:c"),
    ("7:a", "b"),
    ("x" * 200, "y" * 500),
]


async def test_unicode_ids_and_odd_type_names_are_distinct_keys(
    open_storage: OpenStorage,
) -> None:
    s = await open_storage()
    for i, (type_name, object_id) in enumerate(ODD_KEYS):
        assert await s.save(type_name, object_id, Counter(i, object_id), Counter, 0) == 1
    for i, (type_name, object_id) in enumerate(ODD_KEYS):
        assert await s.load(type_name, object_id, Counter) == (Counter(i, object_id), 1)
    for type_name, object_id in ODD_KEYS:
        await s.delete(type_name, object_id, 1)
        assert await s.load(type_name, object_id, Counter) is None


async def test_delete(open_storage: OpenStorage) -> None:
    s = await open_storage()
    await s.delete("Counter", "missing", 0)  # nothing stored, nothing expected: no-op
    with pytest.raises(StateConflict):
        await s.delete("Counter", "missing", 3)
    await s.save("Counter", "a", Counter(1), Counter, 0)
    await s.save("Counter", "a", Counter(2), Counter, 1)
    for stale in (0, 1, 3):
        with pytest.raises(StateConflict) as info:
            await s.delete("Counter", "a", stale)
        assert "stored version is 2" in str(info.value)
    assert await s.load("Counter", "a", Counter) == (Counter(2), 2)
    await s.delete("Counter", "a", 2)
    assert await s.load("Counter", "a", Counter) is None
    with pytest.raises(StateConflict):
        await s.delete("Counter", "a", 2)
    assert await s.save("Counter", "a", Counter(7), Counter, 0) == 1


async def test_many_objects(open_storage: OpenStorage) -> None:
    s = await open_storage()
    ids = [f"obj-{i}" for i in range(400)]
    await asyncio.gather(*(s.save("Many", i, Counter(len(i), i), Counter, 0) for i in ids))
    await asyncio.gather(*(s.save("Many", i, Counter(len(i) + 1, i), Counter, 1) for i in ids))
    loaded = await asyncio.gather(*(s.load("Many", i, Counter) for i in ids))
    assert loaded == [(Counter(len(i) + 1, i), 2) for i in ids]


async def test_prefix_isolation(backend: Backend, open_storage: OpenStorage) -> None:
    other_prefix = backend.new_prefix()
    try:
        a = await open_storage()
        b = await open_storage(other_prefix)
        await a.save("Counter", "same", Counter(1, "a"), Counter, 0)
        assert await b.load("Counter", "same", Counter) is None
        await b.save("Counter", "same", Counter(10, "b"), Counter, 0)
        await b.save("Counter", "same", Counter(11, "b"), Counter, 1)
        assert await a.load("Counter", "same", Counter) == (Counter(1, "a"), 1)
        assert await b.load("Counter", "same", Counter) == (Counter(11, "b"), 2)
        await a.delete("Counter", "same", 1)
        assert await b.load("Counter", "same", Counter) == (Counter(11, "b"), 2)
    finally:
        await backend.drop(other_prefix)


@pytest.mark.parametrize(
    ("state", "state_type"),
    [
        (Counter(5, "five"), Counter),  # postgres: jsonb
        (Blob(b"\x00\x01", "bin"), Blob),  # postgres: bytea
    ],
)
async def test_state_that_no_longer_decodes(
    backend: Backend, open_storage: OpenStorage, state: object, state_type: type
) -> None:
    s = await open_storage()
    await s.save("Acct", "id-7", state, state_type, 0)

    class Changed(msgspec.Struct):
        n: str
        payload: str

    with pytest.raises(StateDecodeError) as info:
        await s.load("Acct", "id-7", Changed)
    message = str(info.value)
    assert "Acct/id-7" in message
    assert "Changed" in message
    assert "`$.n`" in message or "`$.payload`" in message or "missing required field" in message
    # The stored value is untouched, never replaced by a default.
    assert await s.load("Acct", "id-7", state_type) == (state, 1)


async def test_decode_error_names_the_bad_field(
    backend: Backend, open_storage: OpenStorage
) -> None:
    s = await open_storage()
    await s.save("Acct", "x", Counter(3, "c"), Counter, 0)
    with pytest.raises(StateDecodeError, match=r"Acct/x .*Renamed.*`\$\.n`"):
        await s.load("Acct", "x", Renamed)


async def test_states_json_cannot_carry(open_storage: OpenStorage) -> None:
    s = await open_storage()
    cases: list[tuple[str, object, type]] = [
        ("nan", Measure(float("nan")), Measure),
        ("inf", Measure(float("inf")), Measure),
        ("nul", Text("a\x00b"), Text),
        ("any", {"k": b"bytes", "t": [1, 2]}, dict),
    ]
    for object_id, state, state_type in cases:
        await s.save("Odd", object_id, state, state_type, 0)
    got = await s.load("Odd", "nan", Measure)
    assert got is not None
    assert got.value.value != got.value.value  # NaN survives
    assert await s.load("Odd", "inf", Measure) == (Measure(float("inf")), 1)
    assert await s.load("Odd", "nul", Text) == (Text("a\x00b"), 1)
    assert await s.load("Odd", "any", dict) == ({"k": b"bytes", "t": [1, 2]}, 1)


class Level(enum.IntEnum):
    LOW = 1


class Samples(msgspec.Struct):
    values: list[int | float]
    level: Level | float = Level.LOW
    pick: Literal[1, 2] | float = 1


async def test_ints_and_floats_keep_their_type(open_storage: OpenStorage) -> None:
    # jsonb would write the float 1e16 as 10000000000000000, an int once read back.
    s = await open_storage()
    state = Samples([1, 1.5, 1e16, 2.0, 10**18], 1e16, 2.0)
    await s.save("Num", "x", state, Samples, 0)
    got = await s.load("Num", "x", Samples)
    assert got is not None
    assert [(type(v), v) for v in got.value.values] == [(type(v), v) for v in state.values]
    assert (type(got.value.level), got.value.level) == (float, 1e16)
    assert (type(got.value.pick), got.value.pick) == (float, 2.0)


_CHILD = """
import asyncio, sys
sys.path.insert(0, {root!r})
from tests.storage.migration_probe import main
asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""


async def test_concurrent_migrations_from_processes(
    backend: Backend, open_storage: OpenStorage, prefix: str
) -> None:
    """Several processes open the same fresh prefix at the same moment."""
    if backend.name == "memory":
        pytest.skip("memory storage lives in one process")
    root = str(Path(__file__).resolve().parents[2])
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD.format(root=root),
            backend.name,
            backend.url(prefix),
            f"child{i}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for i in range(3)
    ]
    for child in children:  # every child is imported and waiting at the barrier
        assert child.stdout is not None
        assert await child.stdout.readline() == b"ready\n"
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        await child.stdin.drain()
    outputs = [await child.communicate() for child in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err.decode()
        assert out == b"ok\n", (out, err.decode())
    s = await open_storage()
    for i in range(3):
        assert await s.load("Child", f"child{i}", Counter) == (Counter(i), 1)
    if backend.name != "sqlite":
        from .migration_probe import probe_runs

        assert await probe_runs(backend.name, s) == 1
