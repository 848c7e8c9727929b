"""Run in child processes by the concurrent-migration test; also reads the result.

The ``probe`` component's one migration is not idempotent (a plain CREATE TABLE, an
INCR) and holds the migration for a moment, so two processes running it both would
fail or count twice.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import msgspec

from rio.storage import StateStorage, storage_from_url


class Counter(msgspec.Struct):
    n: int = 0
    label: str = ""


async def _redis_probe(client: Any, prefix: str) -> None:
    await asyncio.sleep(0.05)  # widen the window a missing lock would leave open
    await client.incr(f"{prefix}probe")


PROBES: dict[str, list[Any]] = {
    "postgres": [
        ("SELECT pg_sleep(0.05)", "CREATE TABLE {probe} (n int)", "INSERT INTO {probe} VALUES (1)")
    ],
    "mysql": [("DO SLEEP(0.05)", "CREATE TABLE {probe} (n INT)", "INSERT INTO {probe} VALUES (1)")],
    "redis": [_redis_probe],
}


async def main(engine: str, url: str, object_id: str) -> None:
    storage = storage_from_url(url)
    print("ready", flush=True)
    sys.stdin.readline()
    await storage.open()
    try:
        if engine in PROBES:
            await storage.engine.migrate("probe", PROBES[engine])  # type: ignore[attr-defined]
        n = int(object_id.removeprefix("child"))
        await storage.save("Child", object_id, Counter(n), Counter, 0)
    finally:
        await storage.close()
    print("ok", flush=True)


async def probe_runs(engine: str, storage: StateStorage) -> int:
    """How many times the probe migration ran."""
    e: Any = storage.engine  # type: ignore[attr-defined]
    if engine == "postgres":
        return int(await e.pool.fetchval(f"SELECT count(*) FROM {e.tables['probe']}"))
    if engine == "mysql":
        _, rows = await e.execute(f"SELECT COUNT(*) FROM {e.tables['probe']}")
        return int(rows[0][0])
    return int(await e.client.get(f"{e.prefix}probe"))
