"""Path ``workers``: the driver calling actors that live in two worker processes.

The same call suite as ``inproc`` (``seq``, ``pipelined``, ``fanout``, ``activate``),
so the two paths read side by side; every call crosses a shared-memory ring each way.
"""

from __future__ import annotations

from rio.bench.workloads import register_call_suite

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
