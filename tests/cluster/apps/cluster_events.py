"""Event types of cluster_app.py, in a module of their own.

``rio run`` imports an app file under a private module name; events defined in a
module the app imports travel under one name (``cluster_events:Tick``) that the test
process, which imports this module too, rebuilds as the same class.
"""

from __future__ import annotations

import msgspec


class Tick(msgspec.Struct, frozen=True):
    """Published by ``Ticker.tick``: its number and the node label that published it."""

    n: int
    node: str
