"""What the cluster store engines share: argument checks and member row encoding.

Every engine keeps a member as the same ten columns (or hash fields), in
:data:`MEMBER_COLUMNS` order; ``types`` and ``by_type`` travel as JSON text so an
operator can read them with the server's own tools.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from rio.cluster.store import LIVE, TERMINAL, Member, Status
from rio.core.errors import ConfigError

__all__ = [
    "LIVE_SQL",
    "MEMBER_COLUMNS",
    "TERMINAL_SQL",
    "check_update",
    "claiming",
    "decode_member",
    "encode_json",
    "member_values",
    "text",
]

#: A member row's columns, in the order :func:`member_values` and
#: :func:`decode_member` use.
MEMBER_COLUMNS: tuple[str, ...] = (
    "member_id",
    "node",
    "address",
    "incarnation",
    "status",
    "types",
    "activations",
    "by_type",
    "heartbeat",
    "started",
)

#: ``('active', 'draining', 'joining')``: the live statuses as an SQL list.
LIVE_SQL = "(" + ", ".join(f"'{s}'" for s in sorted(LIVE)) + ")"
#: ``('dead', 'left')``: the terminal statuses as an SQL list.
TERMINAL_SQL = "(" + ", ".join(f"'{s}'" for s in sorted(TERMINAL)) + ")"

_UPDATABLE = frozenset({*LIVE, "left"})
_types = msgspec.json.Decoder(list[str])
_by_type = msgspec.json.Decoder(dict[str, int])


def check_update(status: Status | None) -> None:
    """Refuse a status that :meth:`ClusterStore.update` may not set.

    Raises:
        ConfigError: ``status`` is ``"dead"`` (only ``declare_dead`` goes there) or no
            status at all. ConfigError is a ValueError, so either may be caught.

    """
    if status is None or status in _UPDATABLE:
        return
    if status == "dead":
        raise ConfigError(
            "update(status='dead') is refused: declare_dead() is the one way to 'dead' "
            "(it purges the member's placements in the same step)"
        )
    raise ConfigError(
        f"unknown member status {status!r}: expected one of {', '.join(sorted(_UPDATABLE))}"
    )


def encode_json(value: list[str] | dict[str, int]) -> str:
    """``types`` or ``by_type`` as JSON text."""
    return msgspec.json.encode(value).decode()


def member_values(member: Member) -> tuple[Any, ...]:
    """``member``'s column values, in :data:`MEMBER_COLUMNS` order."""
    return (
        member.member_id,
        member.node,
        member.address,
        member.incarnation,
        member.status,
        encode_json(member.types),
        member.activations,
        encode_json(member.by_type),
        float(member.heartbeat),
        float(member.started),
    )


def text(value: str | bytes) -> str:
    """``value`` as ``str`` (UTF-8 ``bytes`` are decoded)."""
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def decode_member(row: Sequence[Any]) -> Member:
    """Build a :class:`Member` from a row in :data:`MEMBER_COLUMNS` order.

    Text may arrive as ``str`` or as UTF-8 ``bytes`` (MySQL's VARBINARY keys, Redis).
    """
    member_id, node, address, incarnation, status, types, activations, by_type, hb, st = row
    return Member(
        member_id=text(member_id),
        node=text(node),
        address=text(address),
        incarnation=int(incarnation),
        status=text(status),  # type: ignore[arg-type]  # written from a Status
        types=_types.decode(types),
        activations=int(activations),
        by_type=_by_type.decode(by_type),
        heartbeat=float(hb),
        started=float(st),
    )


def claiming(keys: Sequence[tuple[str, str]]) -> str:
    """What a claim of ``keys`` is called in an error: its key, or how many and the first."""
    first = f"{keys[0][0]}/{keys[0][1]}"
    if len(keys) == 1:
        return f"claiming {first}"
    return f"claiming {len(keys)} placements ({first} first)"
