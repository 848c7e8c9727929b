"""How the module of a class is named when its instances travel between processes.

One file can be a different module in each process: ``python app.py`` runs it as
``__main__`` (``__mp_main__`` in the worker processes it spawns), ``rio run app.py``
loads it as ``__rio_app__app``, and a client may ``import app``. Events and errors
name their class's module by the file's stem (``app``) in all three cases
(:func:`travel_name`), and each process looks for the class under every name the
file may have there (:func:`local_names`).
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "FILE_MODULE_PREFIX",
    "MAIN_MODULES",
    "file_module_name",
    "local_names",
    "same_class",
    "travel_name",
]

#: ``rio run app.py`` imports the file as ``FILE_MODULE_PREFIX + <sanitized stem>``.
FILE_MODULE_PREFIX = "__rio_app__"
#: The names of the script a process runs: ``__mp_main__`` in spawned children.
MAIN_MODULES = ("__main__", "__mp_main__")


def file_module_name(path: str) -> str:
    """The module name a file travels as: its stem, made an identifier (``my-app`` → ``my_app``)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return "".join(c if (c.isascii() and c.isalnum()) or c == "_" else "_" for c in stem)


def _main_name(main: str) -> str | None:
    """What the script that this process runs as ``main`` travels as, if it is a file.

    Its file's stem, even under ``python -m pkg.mod``: the worker processes load the
    script from its file, with no package to name it by.
    """
    path = getattr(sys.modules.get(main), "__file__", None)
    return file_module_name(path) if isinstance(path, str) else None


def travel_name(module: str) -> str:
    """The name ``module`` travels as: a script or a ``rio run`` file by its stem.

    ``__main__`` stays ``__main__`` when the script is not a file (``python -c``, a REPL).
    """
    if module.startswith(FILE_MODULE_PREFIX):
        return module[len(FILE_MODULE_PREFIX) :]
    if module in MAIN_MODULES:
        return _main_name(module) or module
    return module


def local_names(travelled: str) -> list[str]:
    """Modules of this process that may be the one a sender named ``travelled``.

    Besides the name itself: the file ``rio run`` loaded, the script this process
    runs, and across ``python -m pkg.mod``, where the script's end names it ``mod``
    and an importer ``pkg.mod``, the one for the other.
    """
    if travelled in MAIN_MODULES:  # the sender's script was not a file
        return list(MAIN_MODULES)
    stem = travelled.rpartition(".")[2]
    names = [travelled, FILE_MODULE_PREFIX + travelled]
    names.extend(main for main in MAIN_MODULES if _main_name(main) == stem)
    if "." not in travelled:  # a script's stem: a package module of that name here
        names.extend(m for m in list(sys.modules) if m.endswith("." + travelled))
    return names


def same_class(a: str, b: str) -> bool:
    """Whether two travelled ``module.QualName`` names may name one class.

    Equal, or one the other's ending at a dot: ``node.Err`` from a ``python -m
    pkg.node`` script and ``pkg.node.Err`` where that module was imported.
    """
    return a == b or a.endswith("." + b) or b.endswith("." + a)
