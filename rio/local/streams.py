"""Pub/sub between the processes of one box: the :class:`~rio.core.streams.StreamLink`.

An object's stream is published in the worker hosting the object
(:func:`owner_of`); a process with subscribers to it sends that worker one
:class:`Subscribe`. A topic may be published anywhere, so a process with
subscribers to it sends every other process (driver and workers) one
:class:`Subscribe`. A process publishing sends each event once per subscribed
process, batched: everything published during one pass of the event loop leaves in
one :class:`Events` message per subscribed process and stream (per run of one event
type); the receiving process appends them to the log its subscribers share.

Events travel as msgpack with their class named (``module:qualname``); the
receiving process decodes them into that class when it has it (workers import the
modules that define the actors, where event types usually live too; a file that
``rio run`` loaded is found under its plain name or as the main script too), else
into builtins, with a warning.

Publishers never wait: when more than :data:`BACKLOG` bytes already wait to enter a
process's ring, events for it are dropped and counted, and the count reaches its
subscribers as a :class:`rio.Lagged` notice. A subscribing process that dies is
forgotten by every publisher's process; when a worker that publishes a stream dies,
that stream's subscribers get a ``Lagged(0, "lost")`` notice and their subscriptions
are renewed with the replacement worker.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec
from loguru import logger

from rio.core.modules import local_names, travel_name
from rio.core.streams import TOPIC, StreamKey, StreamLink, Streams
from rio.local.config import owner_of
from rio.local.protocol import (
    Events,
    Subscribe,
    Subscribed,
    Unsubscribe,
    encode,
)
from rio.local.transport import Hub

__all__ = ["BACKLOG", "EventDecoders", "StreamLinks", "event_runs", "event_type_name"]

#: Bytes waiting to enter a process's ring beyond which events for it are dropped.
BACKLOG = 8 << 20
#: Seconds until a dropped-events count is retried when nothing else goes that way.
RETRY = 0.05

_BUILTINS = (int, float, str, bytes, bool, type(None), list, dict, tuple)
_type_names: dict[type, str] = dict.fromkeys(_BUILTINS, "")


def event_type_name(cls: type) -> str:
    """How an event's class travels: ``module:qualname``; empty for builtins."""
    name = _type_names.get(cls)
    if name is None:
        name = _type_names[cls] = f"{travel_name(cls.__module__)}:{cls.__qualname__}"
    return name


_ANY_LIST: msgspec.msgpack.Decoder[list[Any]] = msgspec.msgpack.Decoder(list[Any])


def _resolve(name: str) -> type | None:
    module_name, _, qualname = name.partition(":")
    for mod in local_names(module_name):
        module = sys.modules.get(mod) if mod else None
        obj: Any = module
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, type):
            return obj
    return None


def event_runs(events: list[Any]) -> list[tuple[str, list[Any]]]:
    """``events`` as runs of one class each, in order: ``[(event_type_name, run)...]``."""
    first = type(events[0])
    if all(type(e) is first for e in events):
        return [(event_type_name(first), events)]
    runs: list[tuple[str, list[Any]]] = []
    for e in events:
        name = event_type_name(type(e))
        if runs and runs[-1][0] == name:
            runs[-1][1].append(e)
        else:
            runs.append((name, [e]))
    return runs


#: Event classes an :class:`EventDecoders` keeps decoders for before it starts afresh.
_MAX_DECODERS = 1024


class EventDecoders:
    """Rebuilds arriving runs of events as their class (one cached decoder per class).

    A class this process cannot find (not imported, or not at module level) decodes
    into builtins, with one warning per class.

    Args:
        name: a label for logs.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._decoders: dict[str, msgspec.msgpack.Decoder[list[Any]]] = {"": _ANY_LIST}

    def decode(self, type_name: str, raw: msgspec.Raw, where: object) -> list[Any] | None:
        """The events of ``raw``; None (logged, naming ``where``) when unreadable."""
        decoder = self._decoders.get(type_name)
        if decoder is None:
            if len(self._decoders) >= _MAX_DECODERS:  # names come off the wire: bounded
                self._decoders = {"": _ANY_LIST}
            decoder = self._decoders[type_name] = self._decoder_for(type_name)
        try:
            return decoder.decode(raw)
        except msgspec.DecodeError as e:
            logger.error("{}: events for {} could not be decoded: {}", self.name, where, e)
            return None

    def _decoder_for(self, type_name: str) -> msgspec.msgpack.Decoder[list[Any]]:
        cls = _resolve(type_name)
        if cls is not None:
            try:
                return msgspec.msgpack.Decoder(list[cls])  # type: ignore[valid-type]
            except TypeError:
                pass
        logger.warning(
            "{}: events of type {} arrive as builtins: this process cannot find that class "
            "(define event types at module level, in a module the app imports)",
            self.name,
            type_name,
        )
        return _ANY_LIST

    @staticmethod
    def count(raw: msgspec.Raw) -> int:
        """How many events ``raw`` holds (0 when unreadable)."""
        try:
            return len(_ANY_LIST.decode(raw))
        except msgspec.DecodeError:
            return 0


def _events(link_id: int, missed: int, event_type: str, events: Any) -> Events:
    return Events(link_id, missed, event_type, events)


class StreamLinks(StreamLink):
    """One process's end of pub/sub across the box.

    Args:
        streams: this process's streams.
        hub: this process's end of the fabric.
        me: this process's index (0: the driver).
        nworkers: workers in the pool.
        is_down: whether a process is dead or restarting.
        name: a label for logs.
    """

    def __init__(
        self,
        streams: Streams,
        hub: Hub,
        me: int,
        nworkers: int,
        is_down: Callable[[int], bool],
        name: str,
    ) -> None:
        self.streams = streams
        self.hub = hub
        self.me = me
        self.n = nworkers
        self.is_down = is_down
        self.name = name
        self._out: dict[tuple[int, int], list[Any]] = {}
        self._missed: dict[tuple[int, int], int] = {}
        self._everyone_else = tuple(p for p in range(nworkers + 1) if p != me)
        self._scheduled = False
        self._retry_armed = False
        self._decoders = EventDecoders(name)
        streams.link = self

    # -- StreamLink ------------------------------------------------------------------

    def peers(self, key: StreamKey) -> tuple[int, ...]:
        """A topic: every other process; an object: the worker hosting it, unless this one."""
        if key[0] == TOPIC:
            return self._everyone_else
        owner = owner_of(key, self.n)
        return () if owner == self.me else (owner,)

    def reachable(self, peer: int) -> bool:
        """Whether ``peer`` serves (not dead or restarting)."""
        return not self.is_down(peer)

    def subscribe(self, peer: int, link_id: int, key: StreamKey) -> None:
        """Send :class:`Subscribe` to ``peer``."""
        self.hub.send(peer, Subscribe(link_id, key[0], key[1]))

    def unsubscribe(self, peer: int, link_id: int, key: StreamKey) -> None:
        """Send :class:`Unsubscribe` to ``peer`` unless it is down."""
        if not self.is_down(peer):
            self.hub.send(peer, Unsubscribe(link_id, key[0], key[1]))

    def deliver(self, dst: int, link_id: int, event: Any) -> None:
        """Queue ``event`` for log ``link_id`` in ``dst``; sent at the end of this pass."""
        batch = self._out.get((dst, link_id))
        if batch is None:
            self._out[(dst, link_id)] = [event]
            if not self._scheduled:
                self._schedule()
        else:
            batch.append(event)

    # -- sending ---------------------------------------------------------------------

    def _schedule(self) -> None:
        self._scheduled = True
        self.hub.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        out, self._out = self._out, {}
        if self.streams.closed:  # stopping: the other processes are going too
            self._missed.clear()
            return
        for (dst, link_id), events in out.items():
            key = (dst, link_id)
            missed = self._missed.pop(key, 0)
            if self.is_down(dst):
                continue
            if self.hub.pending_bytes(dst) > BACKLOG:
                self._missed[key] = missed + len(events)
                continue
            self._send_runs(dst, events, missed, partial(_events, link_id))
        if self._missed and not self._retry_armed:
            self._retry_armed = True
            self.hub.loop.call_later(RETRY, self._retry)

    def _retry(self) -> None:
        """Send dropped-events counts that no later batch carried."""
        self._retry_armed = False
        for key in self._missed:
            self._out.setdefault(key, [])
        if not self._scheduled:
            self._schedule()

    def _send_runs(
        self,
        dst: int,
        events: list[Any],
        missed: int,
        make: Callable[[int, str, Any], Events],
    ) -> None:
        """Send ``events`` as one message per run of one type; the first carries ``missed``."""
        if not events:
            self.hub.send(dst, make(missed, "", []))
            return
        for name, run in event_runs(events):
            try:
                data = encode(make(missed, name, run))
            except Exception:  # some event cannot be encoded: send the others
                good = [e for e in run if self._encodable(e)]
                missed += len(run) - len(good)
                if not good:
                    continue
                data = encode(make(missed, name, good))
            self.hub.send_encoded(dst, data)
            missed = 0
        if missed:
            self.hub.send(dst, make(missed, "", []))

    def _encodable(self, event: Any) -> bool:
        try:
            encode(event)
        except Exception as e:
            logger.error(
                "{}: a published {} cannot cross processes and was dropped: {}",
                self.name,
                type(event).__qualname__,
                e,
            )
            return False
        return True

    # -- receiving -------------------------------------------------------------------

    def on_message(self, src: int, msg: Any) -> None:
        """Handle one of :data:`~rio.local.protocol.STREAM_MESSAGES` from process ``src``."""
        if isinstance(msg, Events):
            events = self._decoders.decode(msg.event_type, msg.events, f"log {msg.link}")
            if events is None:
                self.streams.receive(msg.link, [], msg.missed + self._decoders.count(msg.events))
            else:
                self.streams.receive(msg.link, events, msg.missed)
        elif isinstance(msg, Subscribe):
            self.streams.add_remote((msg.type_name, msg.object_id), src, msg.link)
            self.hub.send(src, Subscribed(msg.link))
        elif isinstance(msg, Unsubscribe):
            self.streams.remove_remote((msg.type_name, msg.object_id), src, msg.link)
        elif isinstance(msg, Subscribed):
            self.streams.confirmed(msg.link, src)

    # -- peers die and come back -----------------------------------------------------

    def peer_down(self, peer: int) -> None:
        """Process ``peer`` died: forget its subscriptions, tell subscribers of its streams."""
        self._out = {k: v for k, v in self._out.items() if k[0] != peer}
        self._missed = {k: v for k, v in self._missed.items() if k[0] != peer}
        self.streams.forget_process(peer)
        self.streams.peer_lost(peer)

    def peer_up(self, peer: int) -> None:
        """Process ``peer`` serves again: renew the subscriptions it lost."""
        self.streams.peer_back(peer)
