"""Metrics fanned out to tag aggregates, after rio-rs' metric-aggregator example.

This module holds the actors and the app; ``load.py`` next to it sends samples and
queries the totals. Serve it as a cluster node with
``rio run examples/metric_aggregator/app.py --cluster URL``.

* ``Metric`` (one per metric name, e.g. ``cpu``) receives samples. Each sample
  carries tags (``host=a``, ``region=eu``); the metric updates its own statistics
  and forwards the value to one ``TagAggregate`` per tag: object-to-object calls,
  sent at once and awaited together.
* ``TagAggregate`` (one per tag, e.g. ``region=eu``) keeps statistics per metric.
* Both persist their state (``await self.save()``). A metric writes through: it
  saves before answering, so an acknowledged sample is in storage. The aggregates
  are derived data and write behind (a timer saves them when they changed, and rio
  saves them on deactivation): one save covers many samples. A crash may lose an
  aggregate's last half-second, never a metric's samples.
"""

from __future__ import annotations

import asyncio

import msgspec

import rio

#: Seconds between the saves of a changed aggregate.
FLUSH_EVERY = 0.5


class Stats(msgspec.Struct):
    """Running statistics of a series of values."""

    count: int = 0
    total: float = 0.0
    low: float | None = None
    high: float | None = None

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class MetricState(msgspec.Struct):
    stats: Stats = msgspec.field(default_factory=Stats)
    tags: list[str] = []  # every tag seen on this metric: its aggregates


class AggregateState(msgspec.Struct):
    by_metric: dict[str, Stats] = {}


class Metric(rio.Actor[MetricState]):
    """One metric: its own statistics, and the fan-out of each sample to its tags."""

    async def record(self, value: float, tags: list[str]) -> int:
        """Add one sample; returns how many this metric has counted."""
        # The aggregates first: if one fails, the caller gets the error and this
        # metric does not count the sample (it may be sent again).
        await asyncio.gather(*(TagAggregate.ref(tag).add(self.id, value) for tag in tags))
        self.state.stats.add(value)
        for tag in tags:
            if tag not in self.state.tags:
                self.state.tags.append(tag)
        await self.save()
        return self.state.stats.count

    async def summary(self) -> MetricState:
        return self.state


class TagAggregate(rio.Actor[AggregateState], save_on_deactivate=True):
    """The statistics of every metric for one tag, such as ``region=eu``.

    It writes behind: a timer saves the state at most every ``FLUSH_EVERY`` seconds
    when it changed, and rio saves it on deactivation (``save_on_deactivate``), so
    one save covers many samples.
    """

    async def on_activate(self) -> None:
        self.dirty = False
        self.start_timer(self._flush, FLUSH_EVERY, name="flush")

    async def add(self, metric: str, value: float) -> None:
        stats = self.state.by_metric.get(metric)
        if stats is None:
            stats = self.state.by_metric[metric] = Stats()
        stats.add(value)
        self.dirty = True

    async def summary(self) -> dict[str, Stats]:
        return self.state.by_metric

    async def _flush(self) -> None:  # a timer tick: a turn, never concurrent with add()
        if self.dirty:
            self.dirty = False
            await self.save()


app = rio.App("metric_aggregator")
