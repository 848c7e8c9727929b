"""Messages between the processes of one box: msgspec structs encoded as msgpack arrays.

Each message is a tagged array (the tag is its first element), so one decoder reads
any of them. Call arguments and reply values travel as :class:`msgspec.Raw` and are
decoded a second time with the handler's own annotations: that decode is the
argument check on the receiving side, and rebuilds ``Struct`` messages.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from rio.core.errors import BadArguments
from rio.core.registry import Handler

__all__ = [
    "STREAM_MESSAGES",
    "Call",
    "Down",
    "Drain",
    "Drained",
    "Events",
    "Exit",
    "Message",
    "Ready",
    "Reply",
    "ResetDone",
    "Subscribe",
    "Subscribed",
    "Unsubscribe",
    "Up",
    "decode",
    "decode_args",
    "decode_result",
    "encode",
    "positional_args",
]


class Call(msgspec.Struct, array_like=True, tag=1):
    """A call to ``type_name/object_id.method(*args)``."""

    req: int
    type_name: str
    object_id: str
    method: str
    budget: float
    chain: list[tuple[str, str]]
    args: msgspec.Raw


class Reply(msgspec.Struct, array_like=True, tag=2):
    """The answer to :class:`Call` ``req``: a value, or an error dict when not ``ok``."""

    req: int
    ok: bool
    value: msgspec.Raw


class Ready(msgspec.Struct, array_like=True, tag=3):
    """Worker to driver: worker ``index`` (generation ``gen``) serves."""

    index: int
    gen: int
    pid: int
    problems: list[str] = []
    #: Set (an encoded rio error) when the worker could not start, e.g. its storage.
    error: dict[str, Any] | None = None


class Down(msgspec.Struct, array_like=True, tag=4):
    """Driver to workers: worker ``index`` died; fail calls to it and reset its rings."""

    index: int
    gen: int
    pid: int
    reason: str


class ResetDone(msgspec.Struct, array_like=True, tag=5):
    """Worker to driver: my rings with worker ``index`` are reset."""

    index: int
    gen: int
    by: int


class Up(msgspec.Struct, array_like=True, tag=6):
    """Driver to workers: worker ``index`` serves again as generation ``gen``."""

    index: int
    gen: int
    pid: int


class Drain(msgspec.Struct, array_like=True, tag=7):
    """Driver to worker: refuse outside calls, finish turns, deactivate everything."""


class Drained(msgspec.Struct, array_like=True, tag=8):
    """Worker to driver: drain finished."""

    index: int


class Exit(msgspec.Struct, array_like=True, tag=9):
    """Driver to worker: close storage and exit."""


class Subscribe(msgspec.Struct, array_like=True, tag=10):
    """To a process where a stream may be published: send its events here, tagged ``link``."""

    link: int
    type_name: str
    object_id: str


class Unsubscribe(msgspec.Struct, array_like=True, tag=11):
    """To a process where a stream may be published: stop sending events tagged ``link``."""

    link: int
    type_name: str
    object_id: str


class Subscribed(msgspec.Struct, array_like=True, tag=12):
    """The answer to :class:`Subscribe` ``link``: registered."""

    link: int


class Events(msgspec.Struct, array_like=True, tag=13):
    """Events published here for the subscribing process's log ``link``, oldest first.

    ``events`` is a msgpack array of values of one type, named by ``event_type``
    (``module:qualname``; empty for builtins). ``missed`` events were dropped before
    these because that process fell behind.
    """

    link: int
    missed: int
    event_type: str
    events: msgspec.Raw


Message = (
    Call
    | Reply
    | Ready
    | Down
    | ResetDone
    | Up
    | Drain
    | Drained
    | Exit
    | Subscribe
    | Unsubscribe
    | Subscribed
    | Events
)
#: The messages :class:`rio.local.streams.StreamLinks` handles.
STREAM_MESSAGES = (Events, Subscribe, Unsubscribe, Subscribed)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)
encode = _encoder.encode


def decode(data: bytes) -> Message:
    """Decode one message (raises ``msgspec.DecodeError`` on garbage)."""
    return _decoder.decode(data)


def positional_args(
    handler: Handler, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """All of a checked call's arguments, in parameter order, defaults filled in."""
    names = handler.param_names
    if not kwargs and len(args) == len(names):
        return args
    out = list(args)
    for name in names[len(args) :]:
        if name in kwargs:
            out.append(kwargs[name])
        elif name in handler.defaults:
            out.append(handler.defaults[name])
        else:  # pragma: no cover - handler.check already refused this
            raise BadArguments(f"{handler.owner}.{handler.name}(): missing argument {name!r}")
    return tuple(out)


_INDEX = re.compile(r"`\$\[(\d+)\]")


def decode_args(handler: Handler, raw: bytes) -> tuple[Any, ...]:
    """Decode arguments with the handler's annotations.

    Raises:
        BadArguments: naming the handler and the parameter, with msgspec's reason.
    """
    try:
        values: tuple[Any, ...] = handler.args_decoder.decode(raw)
        return values
    except msgspec.DecodeError as e:
        text = str(e)
        names = handler.param_names
        m = _INDEX.search(text)
        if m and int(m.group(1)) < len(names):
            where = f"argument {names[int(m.group(1))]!r}: "
            text = text[: m.start()].rstrip(" -") if text[: m.start()].strip() else text
        else:
            where = ""
        raise BadArguments(f"{handler.owner}.{handler.name}(): {where}{text}") from None


def decode_result(handler: Handler, raw: bytes) -> Any:
    """Decode a reply value with the handler's return annotation."""
    return handler.result_decoder.decode(raw)
