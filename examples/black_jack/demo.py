"""Play a few rounds of black-jack at two tables, following each table's stream.

Run it (from the repository root)::

    python examples/black_jack/demo.py                 # or: rio run examples/black_jack/demo.py
    python examples/black_jack/demo.py --rounds 10 --pace 0.2

For each table it subscribes to the table's stream first, seats the players for
``--rounds`` rounds and prints every event the dealer's thread makes the table
publish, until the players have left and the dealer goes home; then it prints the
players' persisted records. With ``--cluster URL`` it joins the cluster as a node (see README).
"""

from __future__ import annotations

import argparse
import asyncio

import msgspec
from app import (
    DealerLeft,
    Left,
    Move,
    Player,
    RoundOver,
    RoundStarted,
    Seated,
    Table,
    TableEvent,
    app,
)

import rio

#: table -> its players, each with the total they stand on.
TABLES = {"green": [("ada", 17), ("bob", 15)], "blue": [("cy", 13), ("dee", 16), ("eve", 18)]}


class Options(msgspec.Struct):
    rounds: int = 3
    pace: float = 0.02  # seconds the dealer waits between moves


OPTIONS = Options()


@app.main
async def main() -> None:
    seen = await asyncio.gather(*(follow(t, seats) for t, seats in TABLES.items()))
    print("== players (persisted: they keep their chips from run to run)")
    for seats in TABLES.values():
        for name, _ in seats:
            p = await Player.ref(name).profile()
            print(f"  {name}: {p.chips} chips (won {p.won}, lost {p.lost}, pushed {p.pushed})")
    for table, (events, rounds) in zip(TABLES, seen, strict=True):
        print(f"table {table}: the subscriber saw {events} events, {rounds} rounds")


async def follow(table_id: str, seats: list[tuple[str, int]]) -> tuple[int, int]:
    """Seat ``seats`` at the table and print its events until its dealer leaves."""
    table = Table.ref(table_id)
    events = rounds = 0
    # Subscribe (and await the confirmation) before anyone sits: no event is missed.
    async with table.subscribe() as stream:
        # Sent at once: the joins queue ahead of the dealer's first move. Each player
        # plays OPTIONS.rounds rounds, then the table stands them up.
        await asyncio.gather(
            *(table.join(n, stand_on, OPTIONS.rounds, OPTIONS.pace) for n, stand_on in seats)
        )
        async for event in stream:
            if isinstance(event, rio.Lagged):  # fell more than the buffer behind
                print(f"[{table_id}] missed {event.missed} events ({event.reason})")
                continue
            events += 1
            print(f"[{table_id}] {describe(event)}")
            if isinstance(event, RoundOver):
                rounds += 1
            elif isinstance(event, DealerLeft):
                break  # leaving the loop unsubscribes
    return events, rounds


def describe(event: TableEvent) -> str:
    match event:
        case Seated(player=player, players=players):
            return f"{player} sits down (seated: {', '.join(players)})"
        case Left(player=player):
            return f"{player} stands up"
        case RoundStarted(round=n, players=players, dealer_shows=card):
            return f"round {n}: dealer shows {card}; playing: {', '.join(players)}"
        case Move(player=player, move=move, cards=cards, total=total):
            verb = {"hit": "hits", "stand": "stands", "bust": "busts"}.get(move, "has " + move)
            return f"  {player} {verb}: {' '.join(cards)} = {total}"
        case RoundOver(round=n, dealer_cards=cards, dealer_total=total, results=results):
            paid = ", ".join(f"{p} {r} ({event.chips[p]} chips)" for p, r in results.items())
            return f"round {n} over: dealer {' '.join(cards)} = {total}; {paid or 'nobody left'}"
        case DealerLeft(rounds=n):
            return f"nobody seated: the dealer goes home after {n} rounds"
    return repr(event)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=OPTIONS.rounds, help="rounds per table")
    parser.add_argument("--pace", type=float, default=OPTIONS.pace, help="dealer's delay (s)")
    parser.add_argument("--cluster", metavar="URL", help="join this cluster as a node")
    parser.add_argument("--secret", help="the cluster secret (default: $RIO_CLUSTER_SECRET)")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    OPTIONS = Options(args.rounds, args.pace)
    if args.cluster:
        # The demo is a node of its own: rio's pub/sub reaches subscribers on the node
        # publishing the events, and a table is placed on the node that first calls it.
        app.configure(cluster=rio.ClusterSettings(url=args.cluster, secret=args.secret or ""))
    app.run()
