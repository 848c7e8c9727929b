"""Presence: who is online, kept by heartbeats; silent users time out.

This module holds the actors and the app; ``demo.py`` next to it runs a scenario.
Serve it as a cluster node with ``rio run examples/presence/app.py --cluster URL``.

* ``Presence`` (one per user) is online while its client heartbeats. The first
  heartbeat announces the user to their lobby and starts a timer
  (``self.start_timer``) that checks, as a turn of the actor, when the last one
  came; once the lease has run out, it tells the lobby and deactivates itself. It
  keeps nothing in storage: presence is a fact about now.
* ``Lobby`` (one per room) keeps the list of who is online, persisted, and
  publishes every join and leave on its own stream for subscribers.
"""

from __future__ import annotations

import contextlib
import time

import msgspec

import rio

# -- events on a lobby's stream ---------------------------------------------------------


class Joined(msgspec.Struct):
    room: str
    user: str
    online: list[str]


class Left(msgspec.Struct):
    room: str
    user: str
    reason: str  # "left", "timed out" or "offline" (deactivated for another reason)
    online: list[str]


# -- the actors -------------------------------------------------------------------------


class LobbyState(msgspec.Struct):
    online: list[str] = []


class Lobby(rio.Actor[LobbyState]):
    """One room's list of who is online; joins and leaves go out on its stream."""

    async def joined(self, user: str) -> None:
        if user not in self.state.online:
            self.state.online.append(user)
            await self.save()
            self.publish(Joined(self.id, user, list(self.state.online)))

    async def left(self, user: str, reason: str) -> None:
        if user in self.state.online:
            self.state.online.remove(user)
            await self.save()
            self.publish(Left(self.id, user, reason, list(self.state.online)))

    async def online(self) -> list[str]:
        return list(self.state.online)


class Presence(rio.Actor[None], idle_ttl=120):
    """One user: online in ``room`` while heartbeats arrive within their lease."""

    async def on_activate(self) -> None:
        self.room: str | None = None
        self.last = 0.0
        self.lease = 0.0

    async def heartbeat(self, room: str, lease: float = 5.0) -> None:
        """I am here; expect the next heartbeat within ``lease`` seconds."""
        self.last, self.lease = time.monotonic(), lease
        if self.room != room:
            if self.room is not None:
                await Lobby.ref(self.room).left(self.id, "left")
            self.room = room
            await Lobby.ref(room).joined(self.id)
            # Each check is a turn of this actor, so it never races a heartbeat.
            # Starting a timer by the name of a running one replaces it.
            self.start_timer(self._expire_if_silent, lease / 4, name="lease")

    async def leave(self) -> None:
        await self._go("left")

    async def room_now(self) -> str | None:
        """The room this activation is online in (None: offline)."""
        return self.room

    async def _expire_if_silent(self) -> None:  # private: a timer callback, not a handler
        if time.monotonic() - self.last > self.lease:
            await self._go("timed out")

    async def _go(self, reason: str) -> None:
        if self.room is not None:
            room, self.room = self.room, None
            await Lobby.ref(room).left(self.id, reason)
        self.deactivate()  # after this turn; the timer is cancelled with the activation

    async def on_deactivate(self) -> None:
        if self.room is not None:  # deactivated while online: idle, node draining, stop
            with contextlib.suppress(rio.RioError):
                await Lobby.ref(self.room).left(self.id, "offline")
        # One write, newline included: the line never splits one the demo prints.
        print(f"  [Presence/{self.id}] deactivated\n", end="", flush=True)


# In a cluster, users spread over the nodes; a lobby stays where it is first called.
app = rio.App("presence", actor_options={"Presence": {"placement": "consistent-hash"}})
