"""Frames between nodes: a u32 big-endian length, then a msgpack tagged array.

Every frame is one of the structs below, encoded as an array whose first element is
its kind (msgspec's ``tag``), so one decoder reads any of them and refuses any other.
Bodies travel as :class:`msgspec.Raw`: the transport never decodes what it carries.
A :class:`Batch` frame carries the messages a sender queued during one loop pass, so
the receiver decodes them with one call; a lone message travels as a plain frame.

:class:`RecvBuffer` is the receive side: one reusable ``bytearray`` that the socket
reads into (``asyncio.BufferedProtocol``), cut into frames. A frame's length is checked
against the maximum before any room is made for it; each frame handed out is its own
copy, so what a decoded body refers to is never overwritten by the next read.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

__all__ = [
    "BATCH_HEAD",
    "BATCH_OVERHEAD",
    "HEADER_SIZE",
    "KINDS",
    "Batch",
    "Call",
    "Failure",
    "Frame",
    "FrameTooLarge",
    "Oneway",
    "Ping",
    "Pong",
    "RecvBuffer",
    "Reply",
    "Request",
    "decode",
    "describe_bad_frame",
    "encode_frame",
    "seal_batch",
]

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size


class Request(msgspec.Struct, array_like=True, tag=1):
    """A request ``id`` whose answer is a :class:`Reply` or a :class:`Failure`."""

    id: int
    body: msgspec.Raw


class Reply(msgspec.Struct, array_like=True, tag=2):
    """The value that answers request ``id``."""

    id: int
    body: msgspec.Raw


class Failure(msgspec.Struct, array_like=True, tag=3):
    """The error that answers request ``id`` (see :func:`rio.core.errors.error_to_wire`)."""

    id: int
    error: dict[str, Any]


class Oneway(msgspec.Struct, array_like=True, tag=4):
    """A message that wants no answer."""

    body: msgspec.Raw


class Ping(msgspec.Struct, array_like=True, tag=5):
    """A keep-alive probe; the peer answers :class:`Pong` with the same id."""

    id: int


class Pong(msgspec.Struct, array_like=True, tag=6):
    """The answer to :class:`Ping` ``id``."""

    id: int


class Call(msgspec.Struct, array_like=True, tag=7):
    """A request ``id`` to run ``type_name/object_id.method(*args)``, answered like a Request.

    The hot request of a cluster, in a frame of its own so it is decoded once: a
    node serves it with the ``on_call`` handler. ``budget`` is the seconds left
    to the caller's deadline; ``chain`` the call chain ending with the target
    (empty when it is just the target); ``args`` the arguments in parameter order.
    """

    id: int
    type_name: str
    object_id: str
    method: str
    budget: float
    chain: tuple[tuple[str, str], ...]
    args: msgspec.Raw


Message = Request | Reply | Failure | Oneway | Ping | Pong | Call


class Batch(msgspec.Struct, array_like=True, tag=8):
    """Messages sent during one loop pass, in one frame: decoded with one call.

    A sender appends messages to an open batch (after :data:`BATCH_HEAD`) and seals
    it with :func:`seal_batch` before writing.
    """

    msgs: list[Message]


Frame = Message | Batch
#: Message kind (the tag) -> name, for log lines.
KINDS = {
    1: "Request",
    2: "Reply",
    3: "Failure",
    4: "Oneway",
    5: "Ping",
    6: "Pong",
    7: "Call",
    8: "Batch",
}

_decoder: msgspec.msgpack.Decoder[Frame] = msgspec.msgpack.Decoder(Frame)
_loose = msgspec.msgpack.Decoder()
_encode_into = msgspec.msgpack.Encoder().encode_into
_pack_into = HEADER.pack_into
_PLACEHOLDER = bytes(HEADER_SIZE)
decode = _decoder.decode


class FrameTooLarge(ValueError):
    """An outgoing frame's body is over the size limit (nothing of it was queued)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes is over max_frame_size ({limit})")
        self.size = size
        self.limit = limit


def encode_frame(out: bytearray, message: Any, limit: int) -> None:
    """Append ``message`` to ``out`` as one frame.

    ``message`` is a tuple laid out like the structs above (kind first), the fastest
    thing msgspec encodes; bodies are :class:`msgspec.Raw` or anything encodable.

    Raises:
        FrameTooLarge: the body is over ``limit`` bytes (``out`` is left as it was).
        msgspec.EncodeError, TypeError: something in ``message`` cannot be encoded.
    """
    start = len(out)
    out += _PLACEHOLDER
    try:
        _encode_into(message, out, -1)
    except BaseException:
        del out[start:]
        raise
    size = len(out) - start - HEADER_SIZE
    if size > limit:
        del out[start:]
        raise FrameTooLarge(size, limit)
    _pack_into(out, start, size)


#: The start of an open batch frame: the u32 length, then ``[8, <array32 header>]``,
#: length and message count to be filled in by :func:`seal_batch`.
BATCH_HEAD = bytes(HEADER_SIZE) + b"\x92\x08\xdd" + bytes(4)
#: Bytes a batch frame's body has besides its messages.
BATCH_OVERHEAD = len(BATCH_HEAD) - HEADER_SIZE
_COUNT_AT = HEADER_SIZE + 3


def seal_batch(out: bytearray, start: int, count: int) -> None:
    """Fill in the length and message count of the batch frame opened at ``out[start]``.

    An empty batch is removed; a batch of one becomes a plain frame of that message.
    """
    if count <= 1:
        if not count:
            del out[start:]
            return
        del out[start + HEADER_SIZE : start + len(BATCH_HEAD)]
    else:
        _pack_into(out, start + _COUNT_AT, count)
    _pack_into(out, start, len(out) - start - HEADER_SIZE)


def describe_bad_frame(frame: bytes | bytearray, error: msgspec.DecodeError) -> str:
    """Why ``frame`` was refused, for the log line (the error path: speed is no concern)."""
    try:
        value = _loose.decode(frame)
    except msgspec.DecodeError as e:
        return f"malformed frame ({len(frame)} bytes, not msgpack: {e})"
    if isinstance(value, list) and value:
        kind = value[0]
        if isinstance(kind, int) and not isinstance(kind, bool) and kind not in KINDS:
            return f"unknown message kind {kind!r} (this node knows {sorted(KINDS)})"
    return f"malformed frame ({len(frame)} bytes): {error}"


class RecvBuffer:
    """A reusable receive buffer cut into length-prefixed frames.

    Args:
        size: its steady size in bytes; it grows for one larger frame at a time and
            shrinks back once that frame is consumed.
        limit: the largest frame body accepted; a longer length prefix is refused
            before anything is allocated for it.
    """

    __slots__ = ("_buf", "_min_free", "_size", "_view", "end", "limit", "start")

    def __init__(self, size: int, limit: int) -> None:
        self._size = size
        self._min_free = max(1024, size // 8)
        self.limit = limit
        self._buf = bytearray(size)
        self._view = memoryview(self._buf)
        self.start = 0
        self.end = 0

    def get_buffer(self) -> memoryview:
        """Where the next read lands (never empty)."""
        return self._view[self.end :]

    def pending(self) -> int:
        """Bytes received and not consumed yet."""
        return self.end - self.start

    def peek(self, limit: int) -> bytes:
        """Up to ``limit`` of the bytes received and not consumed yet (a copy)."""
        return bytes(self._view[self.start : min(self.end, self.start + limit)])

    def take(self, n: int) -> bytes | None:
        """The next ``n`` bytes, or None (nothing consumed) when fewer have arrived.

        For the unframed bytes before the first frame (the handshake): what follows
        them is not read as a frame length, so an unauthenticated peer cannot make
        the buffer grow.
        """
        if self.end - self.start < n:
            return None
        data = bytes(self._view[self.start : self.start + n])
        self.start += n
        self.make_room(0)
        return data

    def resize(self, size: int) -> None:
        """Change the steady size (after the handshake: from a small buffer to the full one)."""
        self._size = size
        self._min_free = max(1024, size // 8)
        self._replace(max(size, self.end - self.start), self.peek(self.end - self.start))
        self.end -= self.start
        self.start = 0

    def frames(self, budget: int | None = None) -> tuple[list[bytearray], str | None]:
        """The complete frames received, and why to stop reading if a length is refused.

        With a ``budget``, frames stop once they add up to that many bytes (at least
        one is returned); the rest stay here for a later call (see :meth:`ready`).
        After an error, the frames before the bad one are still returned; the buffer
        is then useless and the connection must close.
        """
        buf = self._buf
        start, end = self.start, self.end
        stop_at = end if budget is None else start + budget
        out: list[bytearray] = []
        unpack = HEADER.unpack_from
        while end - start >= HEADER_SIZE and start < stop_at:
            (n,) = unpack(buf, start)
            if n > self.limit:
                self.start = start
                return out, (
                    f"frame of {n} bytes is over max_frame_size ({self.limit}); raise "
                    "max_frame_size on every node if such messages are meant"
                )
            stop = start + HEADER_SIZE + n
            if stop > end:
                break
            out.append(buf[start + HEADER_SIZE : stop])
            start = stop
        self.start = start
        self.make_room()
        return out, None

    def ready(self) -> bool:
        """Whether a complete frame is buffered (one :meth:`frames` left for later)."""
        have = self.end - self.start
        if have < HEADER_SIZE:
            return False
        n: int = HEADER.unpack_from(self._buf, self.start)[0]
        return have - HEADER_SIZE >= n

    def partial(self) -> str:
        """What an incomplete tail is, for a "truncated frame" log line."""
        have = self.end - self.start
        if have < HEADER_SIZE:
            return f"{have} byte(s) of a {HEADER_SIZE}-byte frame header"
        (n,) = HEADER.unpack_from(self._buf, self.start)
        return f"{have - HEADER_SIZE} of the {n} bytes of a frame"

    def make_room(self, need: int | None = None) -> None:
        """Reset, compact or grow so the next read has room and the current frame fits.

        ``need`` is how many bytes from ``start`` must fit; None reads it from the
        pending frame's length prefix.
        """
        start, end, size = self.start, self.end, len(self._buf)
        if start == end:
            self.start = self.end = 0
            if size > self._size:
                self._replace(self._size, b"")
            return
        have = end - start
        if need is None:
            need = HEADER_SIZE
            if have >= HEADER_SIZE:
                (n,) = HEADER.unpack_from(self._buf, start)
                if n > self.limit:  # frames() reports it; never allocate for it
                    return
                need += n
        need = max(need, have + 1)  # and room for at least one more byte
        if start + need <= size and (size - end >= self._min_free or start == 0):
            return
        tail = self._view[start:end].tobytes()  # a copy: the move may overlap
        cap = max(self._size, need)
        if cap != size:
            self._replace(cap, tail)
        else:
            self._buf[:have] = tail
        self.start, self.end = 0, have

    def _replace(self, cap: int, tail: bytes) -> None:
        # The old buffer is dropped, not released: a read may still hold a slice of it.
        self._buf = bytearray(cap)
        self._buf[: len(tail)] = tail
        self._view = memoryview(self._buf)
