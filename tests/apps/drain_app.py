"""A main that leaves a turn in flight, then waits forever for a stop signal.

SIGINT or SIGTERM must drain the app: the turn in flight finishes and saves,
``on_deactivate`` runs and saves, and the process exits cleanly. The turn waits until
main is cancelled by the signal, so it is certainly in flight when the drain begins,
then works a little longer. Each step prints a line, so the test can wait on output
instead of sleeping, and reads the stored state from ``<data dir>/cli-drain.db``.
"""

import asyncio
from typing import Any

import msgspec

import rio

#: Set when main is cancelled (the stop signal arrived).
SIGNALLED = asyncio.Event()


class JobState(msgspec.Struct):
    turn_finished: bool = False
    deactivated: bool = False


class Job(rio.Actor[JobState]):
    async def work(self) -> None:
        print("turn started", flush=True)
        await SIGNALLED.wait()
        await asyncio.sleep(0.1)  # still working once the drain began: it must wait
        print(f"turn saw the system stopping: {not self.system.running}", flush=True)
        self.state.turn_finished = True
        await self.save()
        print("turn finished", flush=True)

    async def on_deactivate(self) -> None:
        self.state.deactivated = True
        await self.save()
        print("on_deactivate ran", flush=True)


# In-process on purpose: main and the actor share the module-level event above.
app = rio.App("cli-drain", workers=0)
_in_flight: list[Any] = []  # the call's awaitable, kept alive while main waits


@app.main
async def main() -> None:
    _in_flight.append(Job.ref("j").work())  # sent at once, not awaited
    print("main waiting for a signal", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        SIGNALLED.set()
