"""Who is in the cluster: a view every process keeps, and the agent every node runs.

:class:`MembershipView` rereads the membership table every ``refresh`` seconds (or asks
a seed node, for a client given no store) and tells listeners when members appear or
leave. A view that cannot reach the store keeps its last answer: losing the store for
a while stops no node from serving what it hosts.

:class:`MembershipAgent` is a node's part in Orleans' failure detection: it registers the
node under a fresh incarnation, heartbeats its row, and probes the ``probe_targets``
members after it on a ring ordered by member id (so each member is watched by a few
others and the cost grows with N, not N²). After ``missed_probes`` failed probes in a
row it records a suspicion; when ``votes`` distinct members suspected a member within
``suspicion_window``, the one that completes the vote declares it dead, which purges
its placements. A node that reads its own row as dead exits: a dead incarnation never
comes back, and a restarted node joins as a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from loguru import logger

from rio.cluster.settings import ClusterSettings
from rio.cluster.store import ClusterStore, Member
from rio.core.background import cancel_and_wait
from rio.core.errors import ConfigError, RioError, StorageError

__all__ = ["MembershipAgent", "MembershipView", "ring_successors"]

Fetch = Callable[[], Awaitable[list[Member]]]


#: Seconds without a heartbeat after which a joining row is not waited for (the
#: default: five heartbeats at the default period).
STALE_JOINING = 10.0


class MembershipView:
    """The members a process knows of, refreshed in the background.

    Args:
        fetch: returns every member row (the store's :meth:`ClusterStore.members`, or
            a seed node's answer).
        refresh: seconds between rereads.
        name: for log lines.
    """

    def __init__(
        self, fetch: Fetch, refresh: float, name: str, stale_after: float = STALE_JOINING
    ) -> None:
        self._fetch = fetch
        self.refresh_period = refresh
        self.name = name
        #: A joining row whose heartbeat is older than this (seconds) is no longer
        #: waited for: its node died while starting, and may never be declared dead
        #: when it was the only one.
        self.stale_after = stale_after
        #: Per member: its last heartbeat value read, and when (this process's clock)
        #: a read found it changed: a heartbeat seen moving is fresh whatever the
        #: writer's clock says.
        self._beats: dict[str, tuple[float, float]] = {}
        self.members: dict[str, Member] = {}
        #: Members that answer calls, by id.
        self.live: dict[str, Member] = {}
        #: Members that take new activations (``active``), per hosted type.
        self._accepting: dict[str, list[Member]] = {}
        self._all_accepting: list[Member] = []
        self._on_gone: list[Callable[[str], None]] = []
        self._on_joined: list[Callable[[str], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._failed_since: float | None = None
        self.loaded = False
        #: How many reads of the table were applied so far.
        self.generation = 0

    def on_gone(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(member_id)`` when a member turns dead or leaves."""
        self._on_gone.append(callback)

    def on_joined(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(member_id)`` when a member appears live (after the first read)."""
        self._on_joined.append(callback)

    async def start(self) -> None:
        """Read the table once (raising if that fails), then keep refreshing."""
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def refresh(self) -> None:
        """Reread the table now."""
        rows = await self._fetch()
        self.apply(rows)

    def apply(self, rows: list[Member]) -> None:
        """Take ``rows`` as the current table."""
        old_live = self.live
        self.members = {m.member_id: m for m in rows}
        self.live = {m.member_id: m for m in rows if m.live}
        accepting = sorted((m for m in rows if m.status == "active"), key=lambda m: m.member_id)
        self._all_accepting = accepting
        by_type: dict[str, list[Member]] = {}
        for m in accepting:
            for t in m.types:
                by_type.setdefault(t, []).append(m)
        self._accepting = by_type
        self.loaded = True
        self.generation += 1
        now = time.monotonic()
        beats = self._beats
        self._beats = {
            m.member_id: (
                m.heartbeat,
                # first read: not seen moving yet (its own time may still say fresh)
                float("-inf")
                if m.member_id not in beats
                else (now if beats[m.member_id][0] != m.heartbeat else beats[m.member_id][1]),
            )
            for m in rows
            if m.status == "joining"
        }
        for gone in old_live.keys() - self.live.keys():
            self._tell(self._on_gone, gone)
        for joined in self.live.keys() - old_live.keys():
            self._tell(self._on_joined, joined)
        self._changed.set()
        self._changed = asyncio.Event()

    def _tell(self, listeners: list[Callable[[str], None]], member_id: str) -> None:
        for cb in listeners:
            try:
                cb(member_id)
            except Exception as e:  # a listener's bug must not stop the view
                logger.opt(exception=e).error("{}: membership listener failed", self.name)

    async def changed(self) -> None:
        """Wait for the next refresh."""
        await self._changed.wait()

    def accepting(self, type_name: str) -> list[Member]:
        """Members that take new activations of ``type_name`` (sorted by id)."""
        return self._accepting.get(type_name, [])

    def joining(self, type_name: str) -> bool:
        """Whether a member that hosts ``type_name`` is still joining (soon to serve it)."""
        return any(
            m.status == "joining" and type_name in m.types and self._beating(m)
            for m in self.live.values()
        )

    def _beating(self, m: Member) -> bool:
        """Whether ``m``'s heartbeat is recent by its own clock, or was seen moving lately."""
        if time.time() - m.heartbeat < self.stale_after:
            return True
        seen = self._beats.get(m.member_id)
        return seen is not None and time.monotonic() - seen[1] < self.stale_after

    def all_accepting(self) -> list[Member]:
        """Members that take new activations of any type (sorted by id)."""
        return self._all_accepting

    def is_live(self, member_id: str) -> bool:
        """Whether ``member_id`` still answers calls, as of the last refresh."""
        return member_id in self.live

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_period)
            try:
                await self.refresh()
                if self._failed_since is not None:
                    logger.info("{}: membership store reachable again", self.name)
                    self._failed_since = None
            except (RioError, OSError) as e:
                if self._failed_since is None:
                    self._failed_since = time.monotonic()
                    logger.warning(
                        "{}: cannot reread the membership table ({}); serving with the "
                        "last known members",
                        self.name,
                        e,
                    )
            except Exception as e:  # a bug must not end the refreshes for good
                logger.opt(exception=e).error("{}: rereading the membership failed", self.name)


def ring_successors(members: list[Member], me: str, count: int) -> list[Member]:
    """The ``count`` live members after ``me`` on a ring ordered by hashed member id."""

    def point(m: Member) -> bytes:
        return hashlib.blake2b(m.member_id.encode(), digest_size=8).digest()

    ring = sorted((m for m in members if m.live or m.member_id == me), key=point)
    ids = [m.member_id for m in ring]
    if me not in ids:
        return [m for m in ring if m.member_id != me][:count]
    start = ids.index(me)
    out = []
    for i in range(1, len(ring)):
        m = ring[(start + i) % len(ring)]
        if m.member_id != me:
            out.append(m)
        if len(out) == count:
            break
    return out


#: ``probe(member) -> True`` when the member answered as itself within the timeout.
Probe = Callable[[Member, float], Awaitable[bool]]


class MembershipAgent:
    """A node's membership duties: join, heartbeat, probe, suspect, declare dead, leave.

    Args:
        store: the cluster store (open).
        settings: the node's cluster settings.
        member: this node's row, to register.
        view: the view to keep fresh (its listeners see deaths this agent declares).
        probe: asks a member to answer as itself.
        stats: returns ``(activations, per type)`` for heartbeats.
        on_dead: called when this node reads its own row as dead (the default exits).
    """

    def __init__(
        self,
        store: ClusterStore,
        settings: ClusterSettings,
        member: Member,
        view: MembershipView,
        probe: Probe,
        stats: Callable[[], tuple[int, dict[str, int]]],
        on_dead: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.member = member
        self.me = member.member_id
        self.view = view
        self._probe = probe
        self._stats = stats
        self._on_dead = on_dead or _exit_dead
        self._misses: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.status = member.status
        self._store_down_since: float | None = None
        #: When this node last read its own row as live (asked for it, on a clock that
        #: counts suspended time): a row missing sooner than ``prune_after / 2`` after
        #: that was not pruned; the store lost it.
        self._row_seen = _uptime()
        self._asked = self._row_seen

    async def join(self) -> None:
        """Register as ``joining`` and supersede older incarnations of this node name.

        An older incarnation is this node's own past (a restart) when it no longer
        answers a probe: it is declared dead. One that answers is another node that
        runs under the same name: joining is refused, and that node keeps running.

        Raises:
            rio.ConfigError: a live node answers under this node's name.
        """
        await self.store.register(self.member)
        name = self.member.node
        older = [
            m
            for m in await self.store.members()
            if m.node == name and m.incarnation < self.member.incarnation and m.live
        ]
        if older:
            await self.view.refresh()  # to dial them
        for m in older:
            if await self._probe(m, self.settings.probe_timeout):
                with contextlib.suppress(RioError, OSError):
                    await self.store.update(self.me, status="left")
                raise ConfigError(
                    f"node name {name!r} is taken: member {m.member_id} at {m.address} "
                    "is alive and answers under it. Give each node its own name "
                    "(--node / ClusterSettings(node=...)), or stop that node first"
                )
            if await self.store.declare_dead(m.member_id):
                logger.info("{}: declared my previous incarnation {} dead", self.me, m.member_id)
        await self.view.refresh()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeat()),
            loop.create_task(self._probe_loop()),
        ]

    async def activate(self) -> None:
        """Mark this node ``active``: it takes new activations from now on."""
        await self._set_status("active")

    async def drain(self) -> None:
        """Mark this node ``draining``: others stop placing objects here."""
        await self._set_status("draining")

    async def leave(self) -> None:
        """Stop duties and mark this node ``left`` (after it released its placements)."""
        await self.stop()
        with contextlib.suppress(RioError, OSError):
            await self.store.update(self.me, status="left")
        self.status = "left"

    async def stop(self) -> None:
        """Stop heartbeats and probes (the row stays as it is)."""
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks)

    async def _set_status(self, status: Any) -> None:
        row = await self.store.update(self.me, status=status)
        self.status = status
        if row is not None and row.status == "dead":
            self._dead()
        with contextlib.suppress(RioError, OSError):
            await self.view.refresh()

    def _dead(self, why: str | None = None) -> None:
        why = why or (
            "the cluster declared this node dead (it missed its probes, or a newer "
            f"incarnation of node {self.member.node!r} did not reach it and replaced it)"
        )
        logger.critical(
            "{}: {}; a dead incarnation never comes back, so it stops now (restart it to rejoin)",
            self.me,
            why,
        )
        self._on_dead()

    def _gone(self, row: Member | None) -> bool:
        """True, once this node is stopping, when its own ``row`` says dead or was pruned.

        A row read as live is noted; a missing row that :meth:`_store_lost` explains
        is not a verdict (False: the heartbeat registers it again).
        """
        if row is None:
            if self._store_lost():
                return False
            # Not seen live for longer than pruning waits: it may have been declared
            # dead and pruned meanwhile, so no placement can be trusted to name it.
            self._dead(
                "this node's row is gone from the membership store, and this node had "
                f"not read it for over {self.settings.prune_after / 2:g} s (it may have "
                "been declared dead and pruned meanwhile)"
            )
            return True
        if row.status == "dead":
            self._dead()
            return True
        self._row_seen = self._asked
        return False

    def _store_lost(self) -> bool:
        """Whether this node's missing row can only mean the store lost its data.

        Only a dead row is pruned, and only ``prune_after`` after its last heartbeat;
        a node that read its row live more recently than half that would have read
        the verdict first. So the store was wiped, restarted empty (a Redis without
        persistence) or restored from an older copy.
        """
        return _uptime() - self._row_seen < self.settings.prune_after / 2

    async def _register_again(self) -> None:
        """Write this node's row back into a store that lost it (same incarnation)."""
        row = msgspec.structs.replace(self.member, status=self.status, heartbeat=time.time())
        self._asked = _uptime()
        with contextlib.suppress(ConfigError):  # written back meanwhile: as good
            await self.store.register(row)
        self._row_seen = self._asked
        logger.warning(
            "{}: the membership store lost this node's row (a wiped or restarted store); "
            "registered it again, still serving. Placements it held are lost with it: "
            "an object hosted here may be activated elsewhere too until one of the two "
            "saves (the other then gets StateConflict and deactivates)",
            self.me,
        )
        with contextlib.suppress(RioError, OSError):
            await self.view.refresh()

    async def _heartbeat(self) -> None:
        period = self.settings.heartbeat_period
        last_prune = 0.0
        while True:
            activations, by_type = self._stats()
            try:
                self._asked = _uptime()
                row = await self.store.update(
                    self.me, heartbeat=time.time(), activations=activations, by_type=by_type
                )
                if self._store_down_since is not None:
                    logger.info("{}: membership store reachable again", self.me)
                    self._store_down_since = None
                if self._gone(row):
                    return
                if row is None:  # the store lost it (see _gone)
                    await self._register_again()
                now = time.time()
                if now - last_prune > 60:
                    last_prune = now
                    await self.store.prune(now - self.settings.prune_after)
            except (StorageError, OSError) as e:
                if self._store_down_since is None:
                    self._store_down_since = time.monotonic()
                    logger.warning(
                        "{}: cannot heartbeat into the membership store ({}); still "
                        "serving what this node hosts",
                        self.me,
                        e,
                    )
            except Exception as e:  # a bug must not end the heartbeats for good
                logger.opt(exception=e).error("{}: a heartbeat failed", self.me)
            await asyncio.sleep(period)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.probe_period)
            try:
                await self._probe_round()
            except Exception as e:  # a bug must not end the probes for good
                logger.opt(exception=e).error("{}: a probe round failed", self.me)

    async def _probe_round(self) -> None:
        s = self.settings
        targets = ring_successors(list(self.view.live.values()), self.me, s.probe_targets)
        if not targets:
            return
        results = await asyncio.gather(
            *(self._probe(m, s.probe_timeout) for m in targets), return_exceptions=True
        )
        for m, ok in zip(targets, results, strict=True):
            if ok is True:
                self._misses.pop(m.member_id, None)
                continue
            misses = self._misses.get(m.member_id, 0) + 1
            self._misses[m.member_id] = misses
            if misses >= s.missed_probes:
                await self._suspect(m)
        for gone in self._misses.keys() - self.view.live.keys():
            del self._misses[gone]

    async def _suspect(self, m: Member) -> None:
        s = self.settings
        try:
            votes = await self.store.suspect(m.member_id, self.me, time.time(), s.suspicion_window)
            # Every live member but the suspect, less those that stopped heartbeating
            # (dead too, undeclared: two of three nodes lost at once must not leave the
            # survivor waiting forever for a second vote).
            fresh = time.time() - max(s.suspicion_window, 3 * s.heartbeat_period)
            voters = max(
                1,
                sum(
                    1
                    for v in self.view.live.values()
                    if v.member_id != m.member_id
                    and (v.member_id == self.me or v.heartbeat >= fresh)
                ),
            )
            if votes >= min(s.votes, voters):
                # A member declared dead itself (the other side of a partition won)
                # must not declare anyone: it would take the survivors down with it.
                self._asked = _uptime()
                row = await self.store.update(self.me, heartbeat=time.time())
                if self._gone(row) or row is None:  # no verdicts from a store that lost data
                    return
                if await self.store.declare_dead(m.member_id):
                    logger.warning(
                        "{}: declared {} ({}) dead after {} suspicion(s)",
                        self.me,
                        m.member_id,
                        m.address,
                        votes,
                    )
                await self.view.refresh()
        except (StorageError, OSError) as e:
            logger.warning("{}: cannot record a suspicion of {}: {}", self.me, m.member_id, e)


def _uptime() -> float:
    """Seconds on a clock that keeps counting while the machine is suspended.

    A node frozen past ``prune_after`` (a suspended VM) must see that much time
    pass, or it would take its pruned row for a store that lost its data.
    """
    return time.clock_gettime(time.CLOCK_BOOTTIME) if _BOOTTIME else time.monotonic()


_BOOTTIME = hasattr(time, "CLOCK_BOOTTIME")


def _exit_dead() -> None:
    os._exit(70)


def new_incarnation() -> int:
    """A number larger than any earlier incarnation of a node on this clock."""
    return time.time_ns() // 1000
