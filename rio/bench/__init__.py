"""rio's benchmark suite, run by ``rio bench``.

A workload is an async function registered with :func:`workload` under a path
(``inproc``, ``baseline``, later ``workers`` and ``cluster``) and a name. It gets the
operation count and returns a :class:`Measurement`. The runner turns measurements
into :class:`Record` rows, the JSON contract:
``{"workload", "path", "n", "seconds", "ops_per_s", "p50_us", "p99_us"}``.
"""

from rio.bench.core import Measurement, Record, Workload, registered, run_workloads, workload

__all__ = ["Measurement", "Record", "Workload", "registered", "run_workloads", "workload"]
