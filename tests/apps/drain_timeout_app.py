"""A turn that outlasts the drain timeout: the stop cuts it short, so ``rio run`` exits 1."""

import asyncio

import rio


class DtLong(rio.Actor):
    async def work(self) -> None:
        print("turn started", flush=True)
        await asyncio.sleep(60)


app = rio.App("cli-drain-timeout", workers=0, storage="memory://", drain_timeout=0.3)
_in_flight: list[object] = []


@app.main
async def main() -> None:
    _in_flight.append(DtLong.ref("d").work())  # sent at once, not awaited
    await asyncio.Event().wait()
