"""Prints the arguments it was given, from the driver and from a worker process."""

import os
import sys

import rio


class Echo(rio.Actor):
    async def argv(self) -> list[str]:
        return sys.argv[1:]

    async def pid(self) -> int:
        return os.getpid()


app = rio.App("cli-argv", storage="memory://", workers=1)


@app.main
async def main() -> None:
    print(f"driver argv {sys.argv[1:]}", flush=True)
    print(f"worker argv {await Echo.ref('e').argv()}", flush=True)
    assert await Echo.ref("e").pid() != os.getpid()  # it did run in a worker
