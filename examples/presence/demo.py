"""Three users come online, one goes silent and times out, the others leave.

Run it (from the repository root)::

    python examples/presence/demo.py                 # or: rio run examples/presence/demo.py
    python examples/presence/demo.py --lease 3       # a longer lease, a slower demo

Each user's client heartbeats every third of its lease. The demo follows the
lobby's stream (subscribed before anyone joins) and prints every join and leave.
With ``--cluster URL`` it joins the cluster as a node (see README).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Callable

import msgspec
from app import Joined, Left, Lobby, Presence, app

import rio

ROOM = "lobby"


class Options(msgspec.Struct):
    lease: float = 1.0  # seconds a heartbeat keeps a user online


OPTIONS = Options()


async def keep_alive(user: str) -> None:
    """A user's client: heartbeat until cancelled (the user goes silent)."""
    me = Presence.ref(user)
    while True:
        await me.heartbeat(ROOM, OPTIONS.lease)
        await asyncio.sleep(OPTIONS.lease / 3)


@app.main
async def main() -> None:
    lobby = Lobby.ref(ROOM)
    print(f"online at start: {await lobby.online()}")  # (in a cluster: the lobby is ours)
    clients: dict[str, asyncio.Task[None]] = {}
    async with lobby.subscribe() as stream:  # registered before anyone joins
        events = aiter(stream)
        try:
            for user in ("ada", "grace", "linus"):
                clients[user] = asyncio.create_task(keep_alive(user))
            await until(events, lambda e: isinstance(e, Joined) and len(e.online) == 3)

            print(f"-- linus goes silent (his lease is {OPTIONS.lease:g}s)")
            clients.pop("linus").cancel()
            silent = time.monotonic()
            await until(events, has_left("linus"))
            print(f"-- linus timed out {time.monotonic() - silent:.1f}s after he went silent")
            # A call now reaches a fresh activation: the timed-out one is gone.
            now = await Presence.ref("linus").room_now()
            print(f"-- Presence/linus is offline: room_now() = {now}")

            for user in ("ada", "grace"):
                print(f"-- {user} leaves")
                clients.pop(user).cancel()
                await Presence.ref(user).leave()
                await until(events, has_left(user))
        finally:
            for task in clients.values():
                task.cancel()
    print(f"online at the end: {await lobby.online()}")
    print("done; stopping the app deactivates what is still active")


def has_left(user: str) -> Callable[[object], bool]:
    return lambda event: isinstance(event, Left) and event.user == user


async def until(events: AsyncIterator[object], done: Callable[[object], bool]) -> None:
    """Print the lobby's events until one satisfies ``done``."""
    async for event in events:
        match event:
            case rio.Lagged(missed=n):
                print(f"(missed {n} events)")
            case Joined(user=user, online=online):
                print(f"{user} joined; online: {', '.join(online)}")
            case Left(user=user, reason=reason, online=online):
                print(f"{user} left ({reason}); online: {', '.join(online) or 'nobody'}")
        if done(event):
            return
    raise SystemExit("the lobby's stream ended early")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lease", type=float, default=OPTIONS.lease, help="heartbeat lease (s)")
    parser.add_argument("--cluster", metavar="URL", help="join this cluster as a node")
    parser.add_argument("--secret", help="the cluster secret (default: $RIO_CLUSTER_SECRET)")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    OPTIONS = Options(args.lease)
    if args.cluster:
        # The demo is a node of its own: rio's pub/sub reaches subscribers on the node
        # publishing the events, and the lobby is placed on the node that first calls it.
        app.configure(cluster=rio.ClusterSettings(url=args.cluster, secret=args.secret or ""))
    app.run()
