"""An app that prints the name it was imported under, for the module-name tests.

``tests/test_cli.py`` copies it as ``rio.py`` and ``json.py``: either name must not take
over the real module. Its main prints, one per line: ``__name__``, the actor class's
``__module__`` as seen from a turn, that module's ``__file__`` from ``sys.modules``,
where ``rio`` was imported from, and ``json.dumps`` working.
"""

import json
import sys

import rio


class Where(rio.Actor):
    async def module(self) -> str:
        return type(self).__module__


app = rio.App("cli-which-module", storage="memory://")


@app.main
async def main() -> None:
    name = await Where.ref("w").module()
    print(f"__name__ {__name__}")
    print(f"actor module {name}")
    print(f"registered file {sys.modules[name].__file__}")
    print(f"rio from {rio.__file__}")
    print(f"json {json.dumps({'ok': True})}")
