"""Black-jack tables, after rio-rs' example: a dealer loop in a thread, state pushed to clients.

This module holds the actors and the app; ``demo.py`` next to it plays a few rounds.
Serve it as a cluster node with ``rio run examples/black_jack/app.py --cluster URL``.

* ``Table`` (one per table id) keeps the game in memory: seats, deck, hands. While
  someone is seated it runs a *dealer*: a blocking loop in a thread owned by the
  activation (``self.start_thread``). The thread never touches the table's fields:
  it paces the game and asks the table for each step through its ref, so every step
  is an ordinary turn, and the table publishes what happened on its own stream
  (``self.publish``), where clients follow it with ``Table.ref(id).subscribe()``.
* ``Player`` (one per player name) is persisted: chips and record survive restarts.
  The table asks a player whether to hit and pays it out: object-to-object calls.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import Future
from typing import Any

import msgspec

import rio

BET = 10
RANKS = ["A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K"]
SUITS = "shdc"  # spades, hearts, diamonds, clubs

# -- events on a table's stream ---------------------------------------------------------


class Seated(msgspec.Struct):
    table: str
    player: str
    players: list[str]


class Left(msgspec.Struct):
    table: str
    player: str
    players: list[str]


class RoundStarted(msgspec.Struct):
    table: str
    round: int
    players: list[str]
    dealer_shows: str


class Move(msgspec.Struct):
    table: str
    round: int
    player: str
    move: str  # "hit", "stand", "bust" or "blackjack"
    cards: list[str]
    total: int


class RoundOver(msgspec.Struct):
    table: str
    round: int
    dealer_cards: list[str]
    dealer_total: int
    results: dict[str, str]  # player -> "win", "lose" or "push"
    chips: dict[str, int]  # player -> chips after the payout


class DealerLeft(msgspec.Struct):
    table: str
    rounds: int


TableEvent = Seated | Left | RoundStarted | Move | RoundOver | DealerLeft

# -- the actors -------------------------------------------------------------------------


class PlayerState(msgspec.Struct):
    chips: int = 100
    stand_on: int = 17  # this player's strategy: hit below this total
    won: int = 0
    lost: int = 0
    pushed: int = 0


class Player(rio.Actor[PlayerState]):
    """A player's wallet and style; persisted, so a returning player keeps their chips."""

    async def sit(self, stand_on: int) -> int:
        """Take a seat playing to ``stand_on``; a broke player buys back in. Returns chips."""
        self.state.stand_on = stand_on
        if self.state.chips < BET:
            self.state.chips = 100
        await self.save()
        return self.state.chips

    async def wants_card(self, total: int, dealer_shows: int) -> bool:
        return total < self.state.stand_on

    async def settle(self, result: str) -> int:
        """Pay out one round's bet; returns the chips after it."""
        if result == "win":
            self.state.chips += BET
            self.state.won += 1
        elif result == "lose":
            self.state.chips -= BET
            self.state.lost += 1
        else:
            self.state.pushed += 1
        await self.save()
        return self.state.chips

    async def profile(self) -> PlayerState:
        return self.state


class Table(rio.Actor[None], idle_ttl=30):
    """One table: seats and the round in progress, in memory; a dealer thread while seated."""

    async def on_activate(self) -> None:
        self.players: list[str] = []
        self.rounds_left: dict[str, int] = {}  # players who play a set number of rounds
        self.dealing = False  # a dealer thread runs (set and cleared in turns only)
        self.pace = 0.05
        self.rounds = 0
        self.deck: list[str] = []
        self.hands: dict[str, list[str]] = {}
        self.dealer: list[str] = []

    # handlers the clients call

    async def join(
        self, player: str, stand_on: int = 17, rounds: int | None = None, pace: float = 0.05
    ) -> list[str]:
        """Seat ``player``; the dealer starts if it was away.

        The player hits below ``stand_on`` and is stood up after ``rounds`` rounds
        (None: when they call ``leave``); ``pace`` is a new dealer's delay between moves.
        """
        await Player.ref(player).sit(stand_on)
        if player not in self.players:
            self.players.append(player)
            self.publish(Seated(self.id, player, list(self.players)))
        if rounds is not None:
            self.rounds_left[player] = rounds
        if not self.dealing:
            self.dealing = True
            self.pace = pace
            # The thread is owned by this activation: it is told to stop (its event is
            # set) and joined when the table deactivates.
            self.start_thread(dealer_loop, Table.ref(self.id), pace, name=f"dealer-{self.id}")
        return list(self.players)

    async def leave(self, player: str) -> None:
        """Stand up now (a hand in play is forfeited, not paid)."""
        if player in self.players:
            self.players.remove(player)
            self.hands.pop(player, None)
            self.rounds_left.pop(player, None)
            self.publish(Left(self.id, player, list(self.players)))

    # the steps of a round: called by the dealer thread, each one a turn

    async def begin_round(self) -> list[str]:
        """Deal a new round; returns who plays it, [] when nobody is seated."""
        if not self.players:
            self.dealing = False  # decided in a turn: a later join starts a new dealer
            self.publish(DealerLeft(self.id, self.rounds))
            return []
        self.rounds += 1
        rng = random.Random(f"{self.id}/{self.rounds}")  # reproducible shuffles
        self.deck = [r + s for s in SUITS for r in RANKS]
        rng.shuffle(self.deck)
        self.hands = {p: [self.deck.pop(), self.deck.pop()] for p in self.players}
        self.dealer = [self.deck.pop(), self.deck.pop()]
        self.publish(RoundStarted(self.id, self.rounds, list(self.players), self.dealer[0]))
        return list(self.players)

    async def play_turn(self, player: str) -> bool:
        """One move of ``player``; True while it is still their turn."""
        hand = self.hands.get(player)
        if hand is None:  # left the table meanwhile
            return False
        total = score(hand)
        if total == 21 and len(hand) == 2:
            move = "blackjack"
        elif total > 21:
            move = "bust"
        elif await Player.ref(player).wants_card(total, score(self.dealer[:1])):
            hand.append(self.deck.pop())
            move = "hit"
        else:
            move = "stand"
        self.publish(Move(self.id, self.rounds, player, move, list(hand), score(hand)))
        return move == "hit"

    async def finish_round(self) -> None:
        """The dealer draws to 17, then every hand is paid out."""
        while score(self.dealer) < 17:
            self.dealer.append(self.deck.pop())
        dealer = score(self.dealer)
        results: dict[str, str] = {}
        natural = dealer == 21 and len(self.dealer) == 2
        for player, hand in self.hands.items():
            mine = score(hand)
            if mine > 21 or (dealer <= 21 and mine < dealer):
                results[player] = "lose"
            elif dealer > 21 or mine > dealer or (mine == 21 and len(hand) == 2 and not natural):
                results[player] = "win"
            else:
                results[player] = "push"
        chips = {p: await Player.ref(p).settle(r) for p, r in results.items()}
        self.hands = {}
        self.publish(RoundOver(self.id, self.rounds, list(self.dealer), dealer, results, chips))
        for player in results:
            if player in self.rounds_left:
                self.rounds_left[player] -= 1
                if self.rounds_left[player] <= 0:
                    await self.leave(player)


def score(cards: list[str]) -> int:
    """A hand's best total: aces count 11 unless that busts."""
    total = aces = 0
    for card in cards:
        rank = card[:-1]
        if rank == "A":
            total, aces = total + 11, aces + 1
        else:
            total += 10 if rank in ("J", "Q", "K") else int(rank)
    while total > 21 and aces:
        total, aces = total - 10, aces - 1
    return total


class Stopped(Exception):
    """The table is deactivating: the dealer thread should end."""


def dealer_loop(stop: threading.Event, table: rio.Ref[Table], pace: float) -> None:
    """The dealer: a plain blocking loop in its own thread, pacing the game.

    Refs called from a thread return ``concurrent.futures.Future``s; each call is a
    turn of the table, queued behind the clients' calls like any other message.
    """

    def ask(call: Future[Any]) -> Any:
        # Wait for the answer, but give up if the table is deactivating: it joins this
        # thread before handling more calls, so waiting blindly could stall it.
        while True:
            try:
                return call.result(timeout=0.1)
            except TimeoutError:
                if stop.is_set():
                    call.cancel()
                    raise Stopped from None

    try:
        while not stop.wait(pace * 4):  # shuffling; a breather between rounds
            players = ask(table.begin_round())
            if not players:
                return  # nobody seated: the dealer goes home (the table decided it)
            for player in players:
                while ask(table.play_turn(player)) and not stop.wait(pace):
                    pass
                if stop.wait(pace):
                    return
            ask(table.finish_round())
    except Stopped:
        return


# In a cluster, players spread over the nodes; tables stay where they are first called.
app = rio.App("black_jack", actor_options={"Player": {"placement": "consistent-hash"}})
