"""The code checks CI runs, in the suite too: ruff on everything, mypy --strict on rio/.

Docstrings on every public name are ruff's ``D`` rules (see pyproject.toml).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_finds_nothing() -> None:
    proc = _run("ruff", "check", "--no-cache", "rio", "tests", "bench", "examples")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_mypy_strict_finds_nothing_in_rio() -> None:
    proc = _run("mypy", "--strict", "rio")
    assert proc.returncode == 0, proc.stdout + proc.stderr
