"""A small bank: persisted balances, actor-to-actor calls, and errors that travel.

Run it (twice, to see the balances persist)::

    python examples/bank.py
    python examples/bank.py --storage memory://     # start from nothing every time

What it shows:

* ``Account`` actors keep a balance in storage (``await self.save()``).
* A ``Bank`` actor moves money by calling accounts from inside its handlers, with
  the same refs a script uses (``Account.ref("alice").withdraw(...)``).
* ``Account.withdraw`` raises ``InsufficientFunds``. rio carries it back to every
  caller up the chain (Account -> Bank -> this script) as ``rio.RemoteError``,
  with the remote type name, message and traceback text; ``e.is_a(...)`` tests it.
* A batch of transfers sent at once is handled one at a time by the Bank, without
  a lock, and the audit finds the total unchanged.
"""

import argparse
import asyncio
from pathlib import Path

import msgspec

import rio

# -- the actors ------------------------------------------------------------------------


class InsufficientFunds(Exception):
    """An account was asked for more money than it holds."""


class Balance(msgspec.Struct):
    cents: int = 0


class Account(rio.Actor[Balance]):
    """One customer's account. Amounts are integer cents: no float rounding."""

    async def deposit(self, cents: int) -> int:
        if cents <= 0:
            raise ValueError(f"deposit must be positive, got {cents}")
        self.state.cents += cents
        await self.save()
        return self.state.cents

    async def withdraw(self, cents: int) -> int:
        if cents > self.state.cents:
            # A plain Python exception: the caller receives it as rio.RemoteError.
            raise InsufficientFunds(
                f"{self.id} has {money(self.state.cents)}, cannot withdraw {money(cents)}"
            )
        self.state.cents -= cents
        await self.save()
        return self.state.cents

    async def balance(self) -> int:
        return self.state.cents


class Ledger(msgspec.Struct):
    accounts: list[str] = []  # msgspec copies empty defaults: no shared-list surprise
    deposited: int = 0  # cents that entered the bank from outside
    transfers: int = 0
    refused: int = 0


class Audit(msgspec.Struct):
    balances: dict[str, int]
    total: int
    deposited: int


class Bank(rio.Actor[Ledger]):
    """A branch: opens accounts, moves money between them, audits the books."""

    async def open_account(self, owner: str, initial_cents: int) -> bool:
        """Open ``owner``'s account with a first deposit; False if it was already open."""
        if owner in self.state.accounts:
            return False
        if initial_cents:
            await Account.ref(owner).deposit(initial_cents)
        self.state.accounts.append(owner)
        self.state.deposited += initial_cents
        await self.save()
        return True

    async def transfer(self, src: str, dst: str, cents: int) -> None:
        # The Bank handles one transfer at a time (turn-based), so two transfers never
        # interleave here. Each actor's save is atomic on its own, but this is not a
        # distributed transaction: a crash between the two calls below would lose the
        # money in flight. A real bank records the transfer first and replays it.
        try:
            await Account.ref(src).withdraw(cents)
        except rio.RemoteError as e:
            if e.is_a(InsufficientFunds):
                self.state.refused += 1
                await self.save()
            raise  # the script that asked sees the same error, intact
        await Account.ref(dst).deposit(cents)
        self.state.transfers += 1
        await self.save()

    async def audit(self) -> Audit:
        # Ask every account at once; they answer in parallel.
        refs = [Account.ref(owner) for owner in self.state.accounts]
        balances = await asyncio.gather(*(ref.balance() for ref in refs))
        by_owner = dict(zip(self.state.accounts, balances, strict=True))
        return Audit(by_owner, sum(balances), self.state.deposited)

    async def counts(self) -> tuple[int, int]:
        return self.state.transfers, self.state.refused


def money(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


# -- the program ------------------------------------------------------------------------

app = rio.App("bank")


@app.main
async def main() -> None:
    bank = Bank.ref("main-street")

    print("== opening accounts")
    for owner, initial in (("alice", 100_00), ("bob", 50_00), ("carol", 0)):
        opened = await bank.open_account(owner, initial)
        note = f"opened with {money(initial)}" if opened else "already open"
        print(f"  {owner}: {note}, balance {money(await Account.ref(owner).balance())}")

    print("== transfers")
    # A round trip: everyone ends where they started, whatever the stored balances.
    for src, dst, cents in (
        ("alice", "bob", 30_00),
        ("bob", "carol", 30_00),
        ("carol", "alice", 30_00),
    ):
        await transfer(bank, src, dst, cents)

    # Twenty transfers sent at once: the Bank queues them and runs them in turn.
    batch = [bank.transfer("alice", "bob", 1_00) for _ in range(10)]
    batch += [bank.transfer("bob", "alice", 1_00) for _ in range(10)]
    await asyncio.gather(*batch)
    print(f"  {len(batch)} transfers of {money(1_00)} sent at once: all done")

    print("== an overdraft")
    bob_has = await Account.ref("bob").balance()
    try:
        await bank.transfer("bob", "alice", bob_has + 1)
    except rio.RemoteError as e:
        # The handler's exception, carried across Account -> Bank -> here.
        print(f"  refused: {e}")
        print(f"  e.remote_type = {e.remote_type!r}")
        print(f"  e.is_a(InsufficientFunds) = {e.is_a(InsufficientFunds)}")
    else:
        raise SystemExit("bug: the overdraft went through")

    print("== audit")
    audit = await bank.audit()
    for owner, cents in audit.balances.items():
        print(f"  {owner:>6}: {money(cents)}")
    transfers, refused = await bank.counts()
    print(f"  transfers done: {transfers}, refused: {refused} (all runs)")
    print(f"  total held: {money(audit.total)}, total deposited: {money(audit.deposited)}")
    if audit.total != audit.deposited:
        raise SystemExit("totals NOT conserved: money appeared or vanished")
    print("totals conserved")


async def transfer(bank: rio.Ref[Bank], src: str, dst: str, cents: int) -> None:
    try:
        await bank.transfer(src, dst, cents)
    except rio.RemoteError as e:
        if not e.is_a(InsufficientFunds):
            raise
        print(f"  {src} -> {dst} {money(cents)}: refused ({e.remote_message})")
    else:
        print(f"  {src} -> {dst} {money(cents)}: done")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", help="folder for the SQLite file (default: $RIO_DATA_DIR or .rio)"
    )
    parser.add_argument("--storage", metavar="URL", help="a storage URL, e.g. memory://")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    # `app` is built with defaults so `rio run examples/bank.py` finds it; the flags
    # override them before it starts.
    if args.data_dir:
        app.data_dir = Path(args.data_dir)
    if args.storage:
        app.storage_spec = args.storage
    app.run()
