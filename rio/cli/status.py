"""``rio status --cluster URL``: the members of a cluster and what they host."""

from __future__ import annotations

import time

import msgspec

from rio.cluster.store import Member, cluster_store_from_url, require_existing

__all__ = ["ClusterStatus", "cluster_status", "format_status"]


class ClusterStatus(msgspec.Struct, frozen=True):
    """What ``rio status`` reports (also as JSON with ``--json``)."""

    members: list[Member]
    placements: dict[str, int]
    read_at: float


async def cluster_status(url: str) -> ClusterStatus:
    """Read the membership table and the placement counts at ``url``.

    Raises:
        ConfigError: ``url`` is malformed, or names an SQLite file that does not
            exist (a mistyped path is not made into an empty cluster).
        StorageError: the store cannot be read.
    """
    store = cluster_store_from_url(url)
    require_existing(store, url)
    await store.open()
    try:
        members = await store.members()
        placements = await store.placement_counts()
    finally:
        await store.close()
    members.sort(key=lambda m: (m.status not in ("active", "joining", "draining"), m.node))
    return ClusterStatus(members, placements, time.time())


def format_status(status: ClusterStatus, *, all_members: bool = False) -> str:
    """A table of the members (live ones only unless ``all_members``)."""
    rows = [m for m in status.members if all_members or m.live]
    header = ("node", "status", "address", "heartbeat", "activations", "placements", "by type")
    lines: list[tuple[str, ...]] = [header]
    for m in rows:
        age = status.read_at - m.heartbeat
        by_type = ", ".join(f"{t} {n}" for t, n in sorted(m.by_type.items())) or "-"
        lines.append(
            (
                m.node,
                m.status,
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
    live = sum(1 for m in status.members if m.live)
    gone = len(status.members) - live
    out.append(f"\n{live} live member(s)" + (f", {gone} dead or left" if gone else ""))
    if not rows:
        out.insert(0, "no live members")
    return "\n".join(line.rstrip() for line in out) + "\n"
