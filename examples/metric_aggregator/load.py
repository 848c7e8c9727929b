"""Send samples to the metrics concurrently, print requests per second, check the totals.

Run it (from the repository root)::

    python examples/metric_aggregator/load.py       # or: rio run examples/metric_aggregator/load.py
    python examples/metric_aggregator/load.py --samples 50000 --concurrency 200

Every sample goes to a ``Metric`` (cpu, mem, disk) with two tags, its host and its
region, which the metric forwards to the ``TagAggregate`` of each. Afterwards the
query reads every metric and aggregate back and checks that the counts agree: per
metric, the counts of the ``host=*`` aggregates add up to the metric's count, and so
do those of ``region=*``; and the metric's count grew by the samples sent to it.
With ``--cluster URL`` it is a client of a running cluster (see README).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter

import msgspec
from app import Metric, Stats, TagAggregate, app

import rio

METRICS = ["cpu", "mem", "disk"]
HOSTS = {"a": "eu", "b": "eu", "c": "us", "d": "us"}  # host -> region


class Options(msgspec.Struct):
    samples: int = 3000
    concurrency: int = 64


OPTIONS = Options()


def sample(rng: random.Random) -> tuple[str, float, list[str]]:
    host = rng.choice(list(HOSTS))
    return (
        rng.choice(METRICS),
        round(rng.uniform(0, 100), 2),
        [f"host={host}", f"region={HOSTS[host]}"],
    )


@app.main
async def main() -> None:
    before = {m: (await Metric.ref(m).summary()).stats.count for m in METRICS}
    sent = await load(OPTIONS.samples, OPTIONS.concurrency)
    if not query(before, sent, await read_all()):
        sys.exit("INCONSISTENT: the aggregates do not add up")


async def load(samples: int, concurrency: int) -> Counter[str]:
    """Send ``samples`` samples, ``concurrency`` at a time; the count sent per metric."""
    rng = random.Random(42)
    todo = [sample(rng) for _ in range(samples)]
    sent: Counter[str] = Counter()

    async def sender(share: list[tuple[str, float, list[str]]]) -> None:
        for metric, value, tags in share:  # one call in flight per sender
            await Metric.ref(metric).record(value, tags)
            sent[metric] += 1

    start = time.perf_counter()
    await asyncio.gather(*(sender(todo[i::concurrency]) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    print(
        f"sent {samples} samples in {elapsed:.2f}s with {concurrency} in flight: "
        f"{samples / elapsed:,.0f} requests/s "
        f"({samples * 3 / elapsed:,.0f} actor calls/s counting the fan-out to tags)"
    )
    return sent


async def read_all() -> tuple[dict[str, Stats], dict[str, dict[str, Stats]]]:
    """Every metric's statistics and every aggregate's, read from the actors."""
    metrics = {m: await Metric.ref(m).summary() for m in METRICS}
    tags = sorted({t for state in metrics.values() for t in state.tags})
    aggregates = await asyncio.gather(*(TagAggregate.ref(t).summary() for t in tags))
    return {m: s.stats for m, s in metrics.items()}, dict(zip(tags, aggregates, strict=True))


def query(
    before: dict[str, int],
    sent: Counter[str],
    totals: tuple[dict[str, Stats], dict[str, dict[str, Stats]]],
) -> bool:
    """Print the totals and check them; True when they are consistent."""
    metrics, aggregates = totals
    ok = True
    print("== metrics (all runs)")
    for m, s in metrics.items():
        grew = s.count - before[m]
        print(
            f"  {m:>5}: {s.count:>7} samples, mean {s.mean:6.2f}, "
            f"min {s.low or 0:6.2f}, max {s.high or 0:6.2f}  (+{grew}, sent {sent[m]})"
        )
        ok &= grew == sent[m]
    print("== tag aggregates (count / mean per metric)")
    for tag, by_metric in aggregates.items():
        cells = "  ".join(f"{m} {s.count:>6} / {s.mean:5.2f}" for m, s in sorted(by_metric.items()))
        print(f"  {tag:>9}: {cells}")
    print("== consistency: per metric, each tag key's aggregates add up to the metric")
    for m, s in metrics.items():
        for key in ("host", "region"):
            parts = {
                t: a[m].count for t, a in aggregates.items() if t.startswith(key + "=") and m in a
            }
            total = sum(parts.values())
            ok &= total == s.count
            mark = "ok" if total == s.count else "MISMATCH"
            print(
                f"  {m:>5} by {key:<6}: {' + '.join(map(str, parts.values()))} = {total} "
                f"vs {s.count}: {mark}"
            )
    print(f"sent this run: {sum(sent.values())}; totals {'consistent' if ok else 'INCONSISTENT'}")
    return ok


async def client(url: str, secret: str | None) -> None:
    """Run :func:`main` as a client of the cluster at ``url``."""
    async with rio.connect(url, secret=secret):
        await main()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=OPTIONS.samples)
    parser.add_argument("--concurrency", type=int, default=OPTIONS.concurrency)
    parser.add_argument("--cluster", metavar="URL", help="be a client of this cluster")
    parser.add_argument("--secret", help="the cluster secret (default: $RIO_CLUSTER_SECRET)")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    OPTIONS = Options(args.samples, args.concurrency)
    if args.cluster:
        rio.run(client(args.cluster, args.secret))
    else:
        app.run()
