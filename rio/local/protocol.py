"""Messages between the processes of one box: msgspec structs encoded as msgpack arrays.

Each message is a tagged array (the tag is its first element), so one decoder reads
any of them. Call arguments and reply values travel as :class:`msgspec.Raw` and are
decoded a second time with the handler's own annotations: that decode is the
argument check on the receiving side, and rebuilds ``Struct`` messages.

Batches. A ring frame holds one *batch*: every message a process sent to one peer
during one pass of its event loop, as a single msgpack array (``array32`` header
``0xdd`` + big-endian u32 count, then the messages back to back). A sender appends
each message to its batch with :func:`encode_into` (so an unencodable value fails
at the call, not later), seals it with :func:`seal`, and the receiver decodes the
whole batch with one :func:`decode_batch` call. The hot messages may be sent as
plain tuples laid out like their struct (:func:`call_tuple`, :func:`reply_tuple`):
they encode to the same bytes and are decoded as the struct.

Example::

    buf = new_batch()
    encode_into(Exit(), buf)
    encode_into(reply_tuple(7, True, 42), buf)
    seal(buf, 2)
    assert decode_batch(bytes(buf)) == [Exit(), Reply(7, True, msgspec.Raw(b"*"))]
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from rio.core.errors import BadArguments
from rio.core.registry import Handler

__all__ = [
    "BATCH_HEADER",
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
    "call_tuple",
    "decode",
    "decode_args",
    "decode_batch",
    "decode_result",
    "encode",
    "encode_into",
    "new_batch",
    "positional_args",
    "reply_tuple",
    "seal",
]


class Call(msgspec.Struct, array_like=True, tag=1):
    """A call to ``type_name/object_id.method(*args)``.

    ``chain`` is the call chain ending with this target, or empty when it would be
    just the target (a call from outside any turn). ``deadline`` is absolute, on the
    box's monotonic clock (``loop.time()`` reads it in every process of a pool,
    uvloop or not), so time spent waiting in a ring counts: a call whose caller has
    given up is not run.
    """

    req: int
    type_name: str
    object_id: str
    method: str
    deadline: float
    chain: tuple[tuple[str, str], ...]
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
    """Worker to driver: drain finished; ``problems``: what it cut short (see stop_problems)."""

    index: int
    problems: list[str] = []


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
_batch_decoder: msgspec.msgpack.Decoder[list[Message]] = msgspec.msgpack.Decoder(list[Message])
encode = _encoder.encode

#: The start of every batch: a msgpack ``array32`` whose count :func:`seal` fills in.
BATCH_HEADER = b"\xdd\x00\x00\x00\x00"
_CALL_TAG = 1
_REPLY_TAG = 2


def decode(data: bytes) -> Message:
    """Decode one message (raises ``msgspec.DecodeError`` on garbage)."""
    return _decoder.decode(data)


def new_batch() -> bytearray:
    """An empty batch: the array header, with a count of 0 until :func:`seal`."""
    return bytearray(BATCH_HEADER)


def encode_into(msg: Any, buf: bytearray) -> None:
    """Append one message (a struct above, or its tuple) to batch ``buf``.

    On failure (a value msgspec cannot encode) ``buf`` is left as it was and the
    error is raised: ``TypeError``, ``msgspec.EncodeError``, ``OverflowError``...
    """
    mark = len(buf)
    try:
        _encoder.encode_into(msg, buf, -1)
    except BaseException:
        del buf[mark:]
        raise


def seal(buf: bytearray, count: int) -> None:
    """Write the message count of batch ``buf`` into its header."""
    buf[1:5] = count.to_bytes(4, "big")


def decode_batch(data: bytes) -> list[Message]:
    """Decode a sealed batch into its messages, in order (``msgspec.DecodeError`` on garbage)."""
    return _batch_decoder.decode(data)


def call_tuple(
    req: int,
    type_name: str,
    object_id: str,
    method: str,
    deadline: float,
    chain: tuple[tuple[str, str], ...] | list[tuple[str, str]],
    args: tuple[Any, ...] | msgspec.Raw,
) -> tuple[Any, ...]:
    """A :class:`Call` as a plain tuple: the same bytes, cheaper to build.

    ``args`` are the argument values themselves (encoded as an array) or already
    encoded as ``Raw``.
    """
    return (_CALL_TAG, req, type_name, object_id, method, deadline, chain, args)


def reply_tuple(req: int, ok: bool, value: Any) -> tuple[Any, ...]:
    """A :class:`Reply` as a plain tuple; ``value`` is the result itself (or the error dict)."""
    return (_REPLY_TAG, req, ok, value)


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
