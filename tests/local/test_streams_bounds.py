"""Pub/sub state keyed by names that come off the wire stays bounded."""

from __future__ import annotations

import msgspec

from rio.local import streams


def test_event_decoders_keep_a_bounded_number_of_classes() -> None:
    # Each run of events names its class; a peer naming ever new ones (a bug, or a
    # node of another version) used to grow the cache without end.
    decoders = streams.EventDecoders("t")
    raw = msgspec.Raw(msgspec.msgpack.encode([{"a": 1}]))
    for i in range(streams._MAX_DECODERS * 3):
        assert decoders.decode(f"no.such.Event{i}", raw, "test") == [{"a": 1}]
    assert len(decoders._decoders) <= streams._MAX_DECODERS
    assert decoders.decode("", raw, "test") == [{"a": 1}]
