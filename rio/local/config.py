"""What a worker process is told at start, and how it finds the user's actor classes."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
import zlib
from typing import Any

import msgspec

from rio.cluster.settings import ClusterSettings
from rio.core.registry import all_types

__all__ = ["AppSettings", "WorkerConfig", "actor_modules", "import_modules", "owner_of"]


class AppSettings(msgspec.Struct, frozen=True):
    """The parts of an :class:`rio.App` a worker needs."""

    name: str
    storage: str
    types: list[str] | None
    default_timeout: float
    drain_timeout: float
    idle_ttl: dict[str, float | None]
    placement: dict[str, str] = {}
    reminder_poll: float = 1.0
    max_queued: int = 100_000


class WorkerConfig(msgspec.Struct, frozen=True):
    """Everything a worker needs, passed as JSON in its environment."""

    index: int
    gen: int
    nworkers: int
    fabric_fd: int
    capacity: int
    doorbells: list[int]
    lifeline: int
    modules: list[tuple[str, str | None]]
    sys_path: list[str]
    argv: list[str]
    app: AppSettings
    spin: float
    recheck: float
    #: Set when the pool is a cluster node: its settings and member id.
    cluster: ClusterSettings | None = None
    member_id: str = ""


def owner_of(key: tuple[str, str], nworkers: int) -> int:
    """The worker (1-based process index) that owns ``key``: the same in every process."""
    return 1 + zlib.crc32(f"{key[0]}\x00{key[1]}".encode()) % nworkers


def actor_modules() -> list[tuple[str, str | None]]:
    """``(module name, file)`` of every module defining a registered actor type.

    ``__main__`` is named by its file so workers can load it as ``__mp_main__`` (its
    ``if __name__ == "__main__":`` block does not run there).
    """
    out: dict[str, str | None] = {}
    for info in all_types().values():
        name = info.cls.__module__
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        out[name] = path
    return sorted(out.items(), key=lambda kv: kv[0] != "__main__")


def import_modules(modules: list[tuple[str, str | None]]) -> list[str]:
    """Import the user's actor modules in a worker; returns problems (not raised)."""
    problems: list[str] = []
    for name, path in modules:
        if name in sys.modules and name != "__main__":
            continue
        try:
            if name == "__main__":
                if path is None:
                    problems.append(
                        "actors defined in an interactive __main__ cannot run in worker "
                        "processes: define them in a file (or use workers=0)"
                    )
                    continue
                _load_file("__mp_main__", path, alias="__main__")
            elif path is not None and importlib.util.find_spec(name.split(".")[0]) is None:
                _load_file(name, path)
            else:
                importlib.import_module(name)
        except Exception as e:  # reported to the driver; the worker still starts
            frame = _user_frame(traceback.extract_tb(e.__traceback__))
            where = f" at {frame.filename}:{frame.lineno}" if frame is not None else ""
            problems.append(f"importing {name} ({path}) failed{where}: {type(e).__name__}: {e}")
    return problems


def _user_frame(frames: traceback.StackSummary) -> traceback.FrameSummary | None:
    """The innermost frame in the user's code: not Python's library, nor an installed one."""
    library = tuple({sys.prefix, sys.base_prefix, os.path.dirname(os.__file__)})
    for frame in reversed(frames):
        name = frame.filename
        if not (name.startswith(library) or "site-packages" in name or name.startswith("<")):
            return frame
    return frames[-1] if frames else None


def _load_file(name: str, path: str, alias: str | None = None) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if alias is not None:
        sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module
