"""Finding the :class:`rio.App` that ``rio run TARGET`` names."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from rio.app import App
from rio.core.errors import ConfigError

__all__ = ["load_app"]


def load_app(target: str) -> App:
    """Load ``file.py``, ``file.py:name``, ``pkg.module`` or ``pkg.module:name``.

    A file is imported as a module named after its stem (never as ``__main__``, so its
    ``if __name__ == "__main__":`` block does not run), with its folder on ``sys.path``.

    Raises:
        ConfigError: the file or module is missing, or holds no (or several) apps.
    """
    spec, _, attr = target.partition(":")
    if spec.endswith(".py") or "/" in spec or Path(spec).is_file():
        module = _load_file(Path(spec))
    else:
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as e:
            raise ConfigError(
                f"cannot import module {spec!r} ({e}); pass a file path like app.py "
                "or a module on sys.path"
            ) from None
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


def _load_file(path: Path) -> object:
    if not path.is_file():
        raise ConfigError(f"no such file: {str(path)!r}")
    path = path.resolve()
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem
    if not name.isidentifier():
        name = "rio_app_" + "".join(c if c.isalnum() else "_" for c in name)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise ConfigError(f"cannot load {str(path)!r} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
