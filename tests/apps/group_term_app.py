"""A turn in a worker process that a stop signal finds in flight.

systemd (KillMode=control-group) sends SIGTERM to every process of the service at
once, workers included. They must leave the stop to the driver, which drains them:
the turn finishes and saves, and ``rio run`` exits 0. The test reads the state from
``<data dir>/cli-group-term.db``.
"""

import asyncio

import msgspec

import rio


class TaskState(msgspec.Struct):
    done: bool = False


class GtTask(rio.Actor[TaskState]):
    async def work(self) -> None:
        print("turn started", flush=True)
        await asyncio.sleep(1.0)  # the signal comes meanwhile
        self.state.done = True
        await self.save()
        print("turn finished", flush=True)


app = rio.App("cli-group-term", workers=1)


@app.main
async def main() -> None:
    await GtTask.ref("t").work()
    await asyncio.Event().wait()  # serve until stopped
