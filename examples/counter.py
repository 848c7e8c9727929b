"""A persisted counter: state that survives restarts.

Run it twice and watch the count continue::

    python examples/counter.py
    python examples/counter.py
    python examples/counter.py --data-dir /tmp/counter-demo   # somewhere else
    python examples/counter.py --storage memory://            # nothing persists

The state is a ``msgspec.Struct`` declared as the actor's generic argument. rio
loads it when the actor activates (or builds the default, ``Tally()``, the first
time) and writes it when the handler calls ``await self.save()``. A save that
returned is stored: the next process that activates ``Counter/visits`` reads it.
"""

import argparse
from pathlib import Path

import msgspec

import rio


class Tally(msgspec.Struct):
    """What a Counter stores. Every field needs a default: rio builds it from nothing."""

    value: int = 0
    increments: int = 0


class Counter(rio.Actor[Tally]):
    """A named counter whose value is kept in the app's storage."""

    async def incr(self, by: int = 1) -> int:
        # No lock needed: an actor runs one message at a time.
        self.state.value += by
        self.state.increments += 1
        await self.save()  # returns once the new state is in storage
        return self.state.value

    async def get(self) -> int:
        return self.state.value


# Storage defaults to SQLite at <data dir>/counter.db, the data dir being
# $RIO_DATA_DIR or ./.rio.
app = rio.App("counter")


@app.main
async def main() -> None:
    visits = Counter.ref("visits")
    print(f"count at start: {await visits.get()}")
    # Refs also take keyword arguments, checked against the handler's annotations.
    for by in (1, 2, 3):
        print(f"  incr({by}) -> {await visits.incr(by=by)}")
    now = await visits.get()
    print(f"count at end: {now} (run me again: it continues from {now})")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", help="folder for the SQLite file (default: $RIO_DATA_DIR or .rio)"
    )
    parser.add_argument(
        "--storage", metavar="URL", help="a storage URL, e.g. memory:// or sqlite:///x.db"
    )
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    # The app above was built with defaults so that `rio run examples/counter.py`
    # finds it; flags given on the command line override them before it starts.
    if args.data_dir:
        app.data_dir = Path(args.data_dir)
    if args.storage:
        app.storage_spec = args.storage
    app.run()
