"""Whether a state can be stored as a JSON document that reloads as the same value.

Used by engines with a native JSON column (PostgreSQL's ``jsonb``). A state type is
JSON-able when msgspec's type tree holds only JSON-safe types — structs, strings,
ints, bools, lists, dicts, enums, date/time, UUID, decimal. ``bytes``, ``Any`` and
custom or raw types are not: JSON cannot say what they were, and ``jsonb`` cannot
say whether a number was an ``int`` or a ``float`` (``int | float``). Floats are
checked per value, because msgspec writes NaN and infinity as ``null``; strings holding NUL are
refused per value too (``jsonb`` cannot store them).
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from rio.core.codec import CHECK_LIMIT, ENCODE_ERRORS, decode_state_json, encode_state_json

__all__ = ["json_document"]

_NEVER, _ALWAYS, _CHECK_FLOATS = 0, 1, 2


def json_document(state: Any, state_type: Any) -> bytes | None:
    """Return the JSON document to store for ``state``, or None to store msgpack."""
    try:
        plan = _json_plan(state_type)
    except TypeError:  # an unhashable type annotation: decide without the cache
        plan = _json_plan.__wrapped__(state_type)
    if plan == _NEVER:
        return None
    try:
        doc = encode_state_json(state)
    except ENCODE_ERRORS:
        return None
    if b"\\u0000" in doc:  # jsonb cannot hold NUL characters
        return None
    # msgspec writes NaN and infinity as null: keep JSON only if nothing changed.
    nulls = plan == _CHECK_FLOATS and b"null" in doc
    if nulls or len(doc) <= CHECK_LIMIT:
        try:  # a value of the wrong type too: msgpack then, whose check has the last word
            loaded = decode_state_json(doc, state_type, "", "")
        except Exception:
            return None
        if nulls and loaded != state:
            return None
    return doc


@functools.lru_cache(maxsize=1024)
def _json_plan(state_type: Any) -> int:
    try:
        info = msgspec.inspect.type_info(state_type)
    except Exception:
        return _NEVER
    found: set[str] = set()
    _walk(info, found, set())
    if found & {"bytes", "opaque"}:
        return _NEVER
    return _CHECK_FLOATS if "float" in found else _ALWAYS


def _walk(t: msgspec.inspect.Type, found: set[str], seen: set[int]) -> None:
    ins = msgspec.inspect
    if id(t) in seen:
        return
    seen.add(id(t))
    if isinstance(t, ins.BytesType | ins.ByteArrayType | ins.MemoryViewType):
        found.add("bytes")
    elif isinstance(t, ins.AnyType | ins.ExtType | ins.RawType | ins.CustomType):
        found.add("opaque")  # JSON cannot say what these were
    elif isinstance(t, ins.FloatType):
        found.add("float")
    elif isinstance(t, ins.Metadata):
        _walk(t.type, found, seen)
    elif isinstance(t, ins.UnionType):
        if any(isinstance(m, ins.FloatType) for m in t.types) and any(
            _int_like(m) for m in t.types
        ):
            found.add("opaque")  # jsonb writes 2.0 as 2: which of the two it was is lost
        for member in t.types:
            _walk(member, found, seen)
    elif isinstance(t, ins.ListType | ins.SetType | ins.FrozenSetType | ins.VarTupleType):
        _walk(t.item_type, found, seen)
    elif isinstance(t, ins.TupleType):
        for item in t.item_types:
            _walk(item, found, seen)
    elif isinstance(t, ins.DictType):
        _walk(t.key_type, found, seen)
        _walk(t.value_type, found, seen)
    elif isinstance(t, ins.StructType | ins.DataclassType | ins.TypedDictType | ins.NamedTupleType):
        for f in t.fields:
            _walk(f.type, found, seen)


def _int_like(t: msgspec.inspect.Type) -> bool:
    """Whether values of ``t`` are written as JSON integers (an int, an int enum...)."""
    ins = msgspec.inspect
    if isinstance(t, ins.Metadata):
        return _int_like(t.type)
    if isinstance(t, ins.IntType):
        return True
    if isinstance(t, ins.EnumType):
        return issubclass(t.cls, int)
    if isinstance(t, ins.LiteralType):
        return any(isinstance(v, int) for v in t.values)
    return False
