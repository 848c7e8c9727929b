"""Finding the :class:`rio.App` that ``rio run TARGET`` names."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from rio.app import App
from rio.core.errors import ConfigError
from rio.core.modules import FILE_MODULE_PREFIX, file_module_name

__all__ = ["FILE_MODULE_PREFIX", "ImportFailed", "load_app"]


class ImportFailed(Exception):
    """Importing the target raised; ``error`` is what it raised, ``target`` what was named.

    Not a :class:`rio.RioError`: the fault is in the user's code, whose traceback is the
    useful part, so ``rio run`` prints it (user frames only) rather than one line.
    """

    def __init__(self, target: str, error: Exception) -> None:
        super().__init__(f"importing {target} failed: {type(error).__name__}: {error}")
        self.target = target
        self.error = error


def load_app(target: str) -> App:
    """Load ``file.py``, ``file.py:name``, ``pkg.module`` or ``pkg.module:name``.

    A file is imported under a private module name, ``__rio_app__<stem>`` (never as
    ``__main__``, so its ``if __name__ == "__main__":`` block does not run, and never
    under its plain stem, so ``rio.py`` or ``json.py`` cannot take over the real
    ``rio`` or ``json``). The module stays registered in ``sys.modules`` under that
    name, with ``__file__`` set, and classes defined in it carry it as ``__module__``.

    The file's folder goes first on ``sys.path`` (as ``python app.py`` does), so the
    file can import its siblings; for a module, the working folder does (as
    ``python -m pkg.module`` does). Caveat: a sibling named like a module that is not
    imported yet (say a ``csv.py`` next to the app) shadows that module for the whole
    process, exactly as it would under ``python app.py``.

    Raises:
        ConfigError: the file or module is missing, has a syntax error, a module it
            imports is missing (module targets), or it holds no (or several) apps.
        ImportFailed: executing the file or module raised anything else.
    """
    spec, _, attr = target.partition(":")
    if spec.endswith(".py") or "/" in spec or Path(spec).is_file():
        module = _load_file(Path(spec))
    else:
        module = _load_module(spec, target)
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, App):
            raise ConfigError(f"{spec!r} has no rio.App named {attr!r}")
        return found
    apps = {name: v for name, v in vars(module).items() if isinstance(v, App)}
    if not apps:
        raise ConfigError(
            f'{spec!r} defines no rio.App: add `app = rio.App("name")` at module level'
        )
    if len(apps) > 1:
        names = ", ".join(sorted(apps))
        raise ConfigError(f"{spec!r} defines several apps ({names}): name one as {spec}:NAME")
    return next(iter(apps.values()))


def _load_module(spec: str, target: str) -> ModuleType:
    if not spec or spec.startswith(".") or not all(p.isidentifier() for p in spec.split(".")):
        raise ConfigError(
            f"{target!r} is neither a file nor a module name: pass app.py or pkg.module"
        )
    parts = spec.split(".")
    own = {".".join(parts[: i + 1]) for i in range(len(parts))}  # the target and its parents
    # The working folder goes first on sys.path, as under ``python -m pkg.module``
    # (the rio script's own folder is there instead); workers inherit sys.path.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return _guarded(spec, spec, lambda: importlib.import_module(spec))
    except ModuleNotFoundError as e:
        if e.name in own:
            raise ConfigError(
                f"cannot import module {spec!r} ({e}); pass a file path like app.py "
                "or a module on sys.path"
            ) from None
        raise ConfigError(f"importing {spec!r} failed: {e}") from None


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"no such file: {str(path)!r}")
    given = str(path)
    path = path.resolve()
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    base = FILE_MODULE_PREFIX + file_module_name(str(path))
    name, n = base, 1
    while name in sys.modules:  # never replace a module that is already there
        existing = sys.modules[name]
        if getattr(existing, "__file__", None) == str(path):
            return existing  # this very file, loaded before in this process
        n += 1
        name = f"{base}_{n}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise ConfigError(f"cannot load {given!r} as Python")
    loader = spec.loader
    module = importlib.util.module_from_spec(spec)

    def execute() -> ModuleType:
        sys.modules[name] = module
        try:
            loader.exec_module(module)
        except BaseException:
            if sys.modules.get(name) is module:
                del sys.modules[name]
            raise
        return module

    try:
        return _guarded(given, str(path), execute)
    except ModuleNotFoundError as e:  # a module the file imports: the user's code is at fault
        raise ImportFailed(given, e) from e


def _guarded(label: str, where: str, do: Callable[[], ModuleType]) -> ModuleType:
    """Run an import, turning what it raises into the CLI's errors.

    A syntax error becomes a one-line ConfigError, any other exception
    :class:`ImportFailed`; ModuleNotFoundError is left to the caller.
    """
    try:
        return do()
    except SyntaxError as e:
        place = e.filename or where
        if e.lineno:
            place = f"{place}:{e.lineno}"
        raise ConfigError(f"{place}: syntax error: {e.msg}") from None
    except ModuleNotFoundError:
        raise
    except Exception as e:
        raise ImportFailed(label, e) from e
