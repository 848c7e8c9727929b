"""Turn-based execution as properties: one message at a time, in arrival order, none lost.

Apart from the actors of :mod:`test_turns` so that worker processes, which import
every module defining an actor, need not import hypothesis.
"""

import asyncio
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rio

from .test_turns import TtCounter, TtLog

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

#: Numbers each hypothesis example, whose objects must start fresh.
EXAMPLES = itertools.count()

callers = st.lists(
    st.tuples(
        st.integers(0, 3),  # yields before the caller starts
        st.lists(st.tuples(st.integers(0, 1), st.integers(0, 3)), min_size=1, max_size=6),
        st.booleans(),  # send all at once (pipelined) or await each answer
    ),
    min_size=1,
    max_size=6,
)


@PROPERTY
@given(plan=callers)
async def test_turns_never_overlap_and_keep_arrival_order(
    system: rio.System, plan: list[tuple[int, list[tuple[int, int]], bool]]
) -> None:
    run = next(EXAMPLES)  # fresh objects for each example
    arrivals: dict[int, list[tuple[int, int]]] = {0: [], 1: []}

    async def caller(c: int, delay: int, calls: list[tuple[int, int]], pipelined: bool) -> None:
        for _ in range(delay):
            await asyncio.sleep(0)
        sent = []
        for seq, (obj, yields) in enumerate(calls):
            arrivals[obj].append((c, seq))
            call = TtLog.ref(f"{run}-{obj}").step(c, seq, yields)
            if pipelined:
                sent.append(call)
            else:
                await call
        await asyncio.gather(*sent)

    await asyncio.gather(*(caller(c, *spec) for c, spec in enumerate(plan)))
    logs = {obj: await TtLog.ref(f"{run}-{obj}").log() for obj in arrivals}
    for obj, log in logs.items():
        starts = [(c, s) for kind, c, s in log[0::2]]
        ends = [(c, s) for kind, c, s in log[1::2]]
        assert [kind for kind, _, _ in log] == ["start", "end"] * (len(log) // 2)
        assert starts == ends  # each turn ended before the next started
        assert starts == arrivals[obj]  # in the order the calls were made


@PROPERTY
@given(
    shape=st.lists(st.tuples(st.integers(1, 8), st.integers(0, 3), st.booleans()), max_size=12)
)
async def test_no_lost_increments(system: rio.System, shape: list[tuple[int, int, bool]]) -> None:
    ref = TtCounter.ref(f"shared-{next(EXAMPLES)}")  # a fresh object for each example

    async def caller(n: int, yields: int, pipelined: bool) -> None:
        if pipelined:
            await asyncio.gather(*(ref.incr(yields) for _ in range(n)))
        else:
            for _ in range(n):
                await ref.incr(yields)

    await asyncio.gather(*(caller(*spec) for spec in shape))
    assert await ref.get() == sum(n for n, _, _ in shape)
