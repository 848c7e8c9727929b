"""Ping-pong, after rio-rs' example: a room that shuts itself down after three pings.

Run it::

    python examples/ping_pong.py

What it shows:

* Lifecycle hooks: ``on_activate`` runs after the state is loaded and before the
  first message; ``on_deactivate`` runs before the activation goes away.
* Self-deactivation: ``self.deactivate()`` in a handler ends this activation once
  the current turn is over. The actor still exists (actors are virtual): the next
  ping activates it afresh, from its stored state.
* What survives: fields set on ``self`` live only as long as one activation; the
  declared state lives in storage across activations (and restarts).
"""

import msgspec

import rio

PINGS_PER_ACTIVATION = 3


class RoomState(msgspec.Struct):
    activations: int = 0  # how many times this room has been activated, ever
    total_pings: int = 0


class Pong(msgspec.Struct):
    room: str
    activation: int  # which activation answered
    ping_in_activation: int  # resets with every activation
    total_pings: int  # kept in storage, so it keeps counting


class Room(rio.Actor[RoomState]):
    """Counts pings; leaves after the third one of each activation."""

    async def on_activate(self) -> None:
        self.pings = 0  # in memory only: a fresh activation starts from zero
        self.state.activations += 1
        await self.save()
        print(
            f"  [Room/{self.id}] on_activate: activation #{self.state.activations}, "
            f"{self.state.total_pings} pings so far"
        )

    async def on_deactivate(self) -> None:
        print(f"  [Room/{self.id}] on_deactivate: activation #{self.state.activations} ends")

    async def ping(self, who: str) -> Pong:
        self.pings += 1
        self.state.total_pings += 1
        await self.save()
        if self.pings == PINGS_PER_ACTIVATION:
            # Not immediate: this turn finishes (and the caller gets its Pong) first.
            self.deactivate()
            print(f"  [Room/{self.id}] ping {self.pings} from {who}: that's enough, leaving")
        return Pong(self.id, self.state.activations, self.pings, self.state.total_pings)


app = rio.App("ping_pong")


@app.main
async def main() -> None:
    room = Room.ref("lobby")
    for i in range(1, 8):
        pong = await room.ping(f"player-{i}")
        print(
            f"ping {i} -> pong from activation #{pong.activation} "
            f"(ping {pong.ping_in_activation} of this activation, {pong.total_pings} in total)"
        )
    print("done; stopping the app deactivates whatever is still active:")


if __name__ == "__main__":
    app.run()
