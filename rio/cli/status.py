"""``rio status --cluster URL``: the members of a cluster and what they host."""

from __future__ import annotations

import time

import msgspec

from rio.cluster.store import Member, cluster_store_from_url, require_existing

__all__ = ["SILENT_AFTER", "ClusterStatus", "cluster_status", "format_status"]

#: A live member whose heartbeat is older than this many seconds is shown as silent:
#: it was killed or cut off, and has not been declared dead (yet, or there is no one
#: left to declare it). Fifteen default heartbeat periods: well above any sane one.
SILENT_AFTER = 30.0


class ClusterStatus(msgspec.Struct, frozen=True):
    """What ``rio status`` reports (also as JSON with ``--json``)."""

    members: list[Member]
    placements: dict[str, int]
    read_at: float
    #: Member ids whose row says live but whose heartbeat is over SILENT_AFTER old.
    silent: list[str] = []


async def cluster_status(url: str) -> ClusterStatus:
    """Read the membership table and the placement counts at ``url``.

    Raises:
        ConfigError: ``url`` is malformed, or names an SQLite file that does not
            exist (a mistyped path is not made into an empty cluster).
        StorageError: the store cannot be read.
    """
    store = cluster_store_from_url(url)
    require_existing(store, url)
    await store.open_existing()
    try:
        members = await store.members()
        placements = await store.placement_counts()
    finally:
        await store.close()
    members.sort(key=lambda m: (m.status not in ("active", "joining", "draining"), m.node))
    now = time.time()
    silent = [m.member_id for m in members if m.live and now - m.heartbeat > SILENT_AFTER]
    return ClusterStatus(members, placements, now, silent)


def format_status(status: ClusterStatus, *, all_members: bool = False) -> str:
    """A table of the members (live ones only unless ``all_members``)."""
    rows = [m for m in status.members if all_members or m.live]
    header = ("node", "status", "address", "heartbeat", "activations", "placements", "by type")
    lines: list[tuple[str, ...]] = [header]
    silent = set(status.silent)
    for m in rows:
        age = status.read_at - m.heartbeat
        by_type = ", ".join(f"{t} {n}" for t, n in sorted(m.by_type.items())) or "-"
        lines.append(
            (
                m.node,
                f"{m.status} (silent)" if m.member_id in silent else m.status,
                m.address,
                f"{age:.1f}s ago",
                str(m.activations),
                str(status.placements.get(m.member_id, 0)),
                by_type,
            )
        )
    widths = [max(len(r[i]) for r in lines) for i in range(len(header) - 1)]
    out = []
    for r in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    live = sum(1 for m in status.members if m.live and m.member_id not in silent)
    gone = sum(1 for m in status.members if not m.live)
    summary = f"\n{live} live member(s)"
    if silent:
        summary += (
            f", {len(silent)} silent (no heartbeat for over {SILENT_AFTER:g}s: stopped or "
            "cut off, not declared dead yet)"
        )
    out.append(summary + (f", {gone} dead or left" if gone else ""))
    if not rows:
        out.insert(0, "no live members")
    return "\n".join(line.rstrip() for line in out) + "\n"
