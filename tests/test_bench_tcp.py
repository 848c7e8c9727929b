"""The raw TCP baselines against their echo child: every request answered and matched.

These run the real workloads at small sizes (a child process each); they check that
each form completes every request it made, not how fast.
"""

from __future__ import annotations

import pytest

from rio.bench.tcp_baselines import (
    baseline_tcp_batched,
    baseline_tcp_pipelined,
    baseline_tcp_seq,
)


@pytest.mark.parametrize(
    "workload", [baseline_tcp_seq, baseline_tcp_pipelined, baseline_tcp_batched]
)
async def test_tcp_baseline_answers_every_request(workload: object) -> None:
    m = await workload(2_500)  # type: ignore[operator]
    assert m.n == 2_500
    assert m.seconds > 0
    assert m.latencies
