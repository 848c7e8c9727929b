"""A handler that blocks its process's event loop is reported, with where it blocks."""

from __future__ import annotations

import asyncio
import time

import pytest
from waiting import eventually

import rio
from rio.core import watchdog


class WdBlocker(rio.Actor):
    async def block(self, seconds: float) -> None:
        time.sleep(seconds)  # noqa: ASYNC251 - the mistake this test is about

    async def ping(self) -> str:
        return "pong"


async def test_a_blocked_event_loop_is_reported_with_the_blocking_frame(
    monkeypatch: pytest.MonkeyPatch, logs: list[str]
) -> None:
    # Every other actor of the process waited and timed out, and nothing said why.
    monkeypatch.setattr(watchdog, "TICK", 0.05)
    monkeypatch.setattr(watchdog, "BLOCKED_AFTER", 0.3)
    async with rio.App("wd", storage="memory://", workers=0) as system:
        await system.ref(WdBlocker, "b").block(1.0)
        assert await system.ref(WdBlocker, "b").ping() == "pong"
        await eventually(lambda: any("runs again" in line for line in logs), within=5)
    said = [line for line in logs if "event loop has been blocked" in line]
    assert len(said) == 1, logs
    assert "in block" in said[0]
    assert "time.sleep(seconds)" in said[0]
    assert any("runs again after being blocked for" in line for line in logs)


async def test_a_busy_but_responsive_loop_is_not_reported(
    monkeypatch: pytest.MonkeyPatch, logs: list[str]
) -> None:
    monkeypatch.setattr(watchdog, "TICK", 0.05)
    monkeypatch.setattr(watchdog, "BLOCKED_AFTER", 0.3)
    async with rio.App("wd-ok", storage="memory://", workers=0) as system:
        for _ in range(5):  # short blocks, with the loop running in between
            await system.ref(WdBlocker, "b").block(0.1)
            await asyncio.sleep(0.06)
    assert not [line for line in logs if "event loop" in line], logs
