"""Path ``workers``: the driver calling actors that live in two worker processes.

The same call suite as ``inproc`` (``seq``, ``pipelined``, ``fanout``, ``activate``),
so the two paths read side by side; every call crosses a shared-memory ring each way.
``pubsub-1`` and ``pubsub-100``: events cross from the publisher's worker to the
driver's subscribers in batches.
"""

from __future__ import annotations

from rio.bench.workloads import register_call_suite, register_pubsub

register_call_suite(
    "workers",
    2,
    {
        "seq": (50_000, 10_000),
        "pipelined": (300_000, 50_000),
        "fanout": (100_000, 20_000),
        "activate": (50_000, 10_000),
    },
)
register_pubsub("workers", 2, {"pubsub-1": (100_000, 20_000), "pubsub-100": (20_000, 5_000)})
