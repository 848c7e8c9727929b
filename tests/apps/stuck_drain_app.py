"""An actor whose ``on_deactivate`` never finishes: the drain after a stop waits on it.

A first SIGINT starts the drain (it prints "draining"); a second one must end the
process at once rather than wait out the drain.
"""

import asyncio

import rio


class Stuck(rio.Actor):
    async def ping(self) -> int:
        return 1

    async def on_deactivate(self) -> None:
        print("on_deactivate waiting", flush=True)
        await asyncio.Event().wait()  # never set


app = rio.App("cli-stuck", storage="memory://", workers=0, drain_timeout=600)


@app.main
async def main() -> None:
    await Stuck.ref("s").ping()
    print("ready", flush=True)
    await asyncio.Event().wait()  # until a signal
