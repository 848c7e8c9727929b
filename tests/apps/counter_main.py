"""An ``@app.main`` that bumps a persisted counter once and prints it.

The app uses the embedded default (SQLite at ``<data dir>/cli-counter.db``), so the
tests can point it elsewhere with ``--data-dir`` or ``--storage``.
"""

import msgspec

import rio


class Hits(msgspec.Struct):
    value: int = 0


class CliCounter(rio.Actor[Hits]):
    async def bump(self) -> int:
        self.state.value += 1
        await self.save()
        return self.state.value


app = rio.App("cli-counter")


@app.main
async def main() -> None:
    print(f"count: {await CliCounter.ref('hits').bump()}")


if __name__ == "__main__":  # `rio run` imports the file under its own name: never runs
    print("the __main__ block ran")
    app.run()
