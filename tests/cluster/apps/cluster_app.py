"""A small app the cluster tests run as separate ``rio run --cluster`` nodes.

``Counter`` persists every increment before answering, and records a token per
activation in its state, so a test can tell how many activations there were and
check that no two were live at once (each save is a compare-and-set on the version:
a second live activation would fail its save with StateConflict). ``Ticker``
publishes an event per call (pub/sub across nodes).
"""

from __future__ import annotations

import os
import uuid

import msgspec

import rio


class CounterState(msgspec.Struct):
    value: int = 0
    activations: list[str] = []


class Counter(rio.Actor[CounterState]):
    """A persisted counter."""

    async def on_activate(self) -> None:
        self.token = f"{os.environ.get('RIO_NODE_LABEL', '?')}:{uuid.uuid4().hex[:8]}"
        self.state.activations.append(self.token)
        await self.save()

    async def incr(self, by: int) -> int:
        self.state.value += by
        await self.save()
        return self.state.value

    async def get(self) -> int:
        return self.state.value

    async def where(self) -> str:
        """The node label this activation runs on."""
        return os.environ.get("RIO_NODE_LABEL", "?")

    async def history(self) -> list[str]:
        return list(self.state.activations)


class Relay(rio.Actor[None]):
    """Calls a Counter from inside the cluster (object-to-object, maybe across nodes)."""

    async def bump(self, target: str, by: int) -> list[str]:
        ref = Counter.ref(target)
        value = await ref.incr(by)
        return [os.environ.get("RIO_NODE_LABEL", "?"), await ref.where(), str(value)]


class Tick(msgspec.Struct, frozen=True):
    """Published by ``Ticker.tick``: its number and the node label that published it.

    Nodes name it ``__rio_app__cluster_app:Tick`` (``rio run`` loads this file under
    that name); the test process, which imports this file as ``cluster_app``, finds
    the class under that name.
    """

    n: int
    node: str


class Ticker(rio.Actor[None]):
    """Publishes a :class:`Tick` on its own stream per call."""

    async def tick(self, n: int) -> str:
        node = os.environ.get("RIO_NODE_LABEL", "?")
        self.publish(Tick(n, node))
        return node


app = rio.App("clustered", actors=[Counter, Relay, Ticker])
