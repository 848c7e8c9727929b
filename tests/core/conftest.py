"""Fixtures of the core tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import helpers


@pytest.fixture(autouse=True)
def probe() -> Iterator[helpers.Probe]:
    """A fresh probe that this test's actors report to (see :mod:`helpers`).

    Autouse, so it is set up before ``system`` and outlives its drain, where
    ``on_deactivate`` hooks still report.
    """
    p = helpers.Probe()
    helpers.install(p)
    try:
        yield p
    finally:
        helpers.install(None)
