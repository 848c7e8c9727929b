"""An app whose worker processes take a minute to load it: a signal comes while it starts."""

import os
import time

import rio


class SlowStart(rio.Actor[None]):
    async def ping(self) -> str:
        return "pong"


app = rio.App("cli-slow-start", actors=[SlowStart], storage="memory://")

if os.environ.get("RIO_WORKER_INDEX"):  # a worker loading this file
    print("worker loading", flush=True)
    time.sleep(60)
