"""msgspec encoders and decoders shared by storage engines and transports.

Decoders are cached per type: building one is far costlier than using it.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from rio.core.errors import StateDecodeError, StateEncodeError

__all__ = [
    "CHECK_LIMIT",
    "ENCODE_ERRORS",
    "PLAIN_TYPES",
    "decode_state",
    "decode_state_json",
    "encode_checked",
    "encode_state",
    "encode_state_json",
    "not_loadable",
]

#: Types of the values a handler answers most, never awaitable: checked before asking
#: a value's type for ``__await__`` (a miss costs a formatted AttributeError).
PLAIN_TYPES = frozenset({int, str, float, bool, type(None), bytes, list, dict, tuple})

#: Encoded states up to this many bytes are checked to load back before they are saved.
CHECK_LIMIT = 1 << 20

#: What encoding a value with msgspec may raise (a type it cannot encode, an int
#: over 64 bits...).
ENCODE_ERRORS = (msgspec.EncodeError, TypeError, ValueError, OverflowError)

_msgpack_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()


@functools.lru_cache(maxsize=1024)
def _msgpack_decoder(state_type: Any) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(state_type)


@functools.lru_cache(maxsize=1024)
def _json_decoder(state_type: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(state_type)


def encode_state(state: Any) -> bytes:
    """Encode a state value as msgpack."""
    return _msgpack_encoder.encode(state)


def encode_state_json(state: Any) -> bytes:
    """Encode a state value as JSON (for engines that store JSON documents)."""
    return _json_encoder.encode(state)


def encode_checked(state: Any, state_type: Any, type_name: str, object_id: str) -> bytes:
    """Encode a state as msgpack, checking first that it would load back as ``state_type``.

    msgspec encodes values as they are, whatever the fields declare, so a state that
    holds a ``str`` in an ``int`` field would save fine and then fail every later
    activation. Encodings up to :data:`CHECK_LIMIT` bytes are decoded as a load
    would; larger ones are not (the check would cost more than the write).

    Raises:
        StateEncodeError: it would not load back, naming msgspec's path to the field.
        msgspec.EncodeError, TypeError, ValueError, OverflowError: it does not encode.
    """
    data = _msgpack_encoder.encode(state)
    if len(data) <= CHECK_LIMIT:
        try:
            _msgpack_decoder(state_type).decode(data)
        except msgspec.DecodeError as e:
            raise not_loadable(e, state_type, type_name, object_id) from None
    return data


def not_loadable(
    e: msgspec.DecodeError, state_type: Any, type_name: str, object_id: str
) -> StateEncodeError:
    """The error for a state whose encoding does not decode as ``state_type`` (``e``)."""
    return StateEncodeError(
        f"{type_name}/{object_id}: the state cannot be saved: it would not load back as "
        f"{_name(state_type)}: {e}; give each field a value of its declared type (nothing "
        "was written)"
    )


def decode_state(data: bytes, state_type: Any, type_name: str, object_id: str) -> Any:
    """Decode msgpack ``data`` into ``state_type``.

    Raises:
        StateDecodeError: naming the actor type, id and msgspec's path to the bad field.
    """
    try:
        return _msgpack_decoder(state_type).decode(data)
    except msgspec.DecodeError as e:
        raise _decode_error(e, state_type, type_name, object_id) from e


def decode_state_json(data: bytes | str, state_type: Any, type_name: str, object_id: str) -> Any:
    """Decode JSON ``data`` into ``state_type``; errors as in :func:`decode_state`."""
    try:
        return _json_decoder(state_type).decode(data)
    except msgspec.DecodeError as e:
        raise _decode_error(e, state_type, type_name, object_id) from e


def _decode_error(
    e: msgspec.DecodeError, state_type: Any, type_name: str, object_id: str
) -> StateDecodeError:
    return StateDecodeError(
        f"stored state of {type_name}/{object_id} does not decode into {_name(state_type)}: {e}. "
        "The stored value was left untouched; migrate it or change the state type "
        "(new fields need defaults)."
    )


def _name(state_type: Any) -> str:
    return str(getattr(state_type, "__qualname__", repr(state_type)))
