"""Fixtures of the core tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from . import helpers


@pytest.fixture
async def probe() -> AsyncIterator[helpers.Probe]:
    """A fresh probe that this test's actors report to (see :mod:`helpers`)."""
    p = helpers.Probe(asyncio.get_running_loop())
    helpers.install(p)
    try:
        yield p
    finally:
        helpers.install(None)
