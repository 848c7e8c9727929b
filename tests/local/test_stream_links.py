"""The pub/sub link between processes, with a stand-in for the fabric: batching,
backlog drops reported as lag, events rebuilt as their class."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import msgspec
import pytest

import rio
from rio.core.streams import StreamRelay, Streams
from rio.local.protocol import Events, Subscribe, Subscribed, Unsubscribe, decode
from rio.local.streams import BACKLOG, StreamLinks, event_type_name


class LkEvent(msgspec.Struct, frozen=True):
    n: int


class FakeHub:
    """Records what is sent; ``backlog`` is what ``pending_bytes`` answers."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.sent: list[tuple[int, Any]] = []
        self.backlog = 0
        self.got = asyncio.Event()

    def send(self, dst: int, msg: Any) -> None:
        self.sent.append((dst, decode(msgspec.msgpack.encode(msg))))  # as the ring would
        self.got.set()

    def send_encoded(self, dst: int, data: bytes) -> None:
        self.sent.append((dst, decode(data)))
        self.got.set()

    def pending_bytes(self, dst: int) -> int:
        return self.backlog

    def take(self) -> list[tuple[int, Any]]:
        sent, self.sent = self.sent, []
        return sent


def _pair() -> tuple[Streams, FakeHub, StreamLinks]:
    streams = Streams("test")
    streams.start()
    hub = FakeHub()
    links = StreamLinks(streams, hub, 1, 2, lambda p: False, "test")  # type: ignore[arg-type]
    return streams, hub, links


KEY = ("LkTable", "t")


async def test_events_of_one_pass_leave_in_one_message() -> None:
    streams, hub, links = _pair()
    links.on_message(0, Subscribe(7, *KEY))
    assert hub.take() == [(0, Subscribed(7))]
    for n in range(3):
        streams.publish(KEY, LkEvent(n))
    streams.publish(KEY, "a string")
    assert hub.sent == []  # nothing yet: sent at the end of this pass
    await asyncio.sleep(0)
    sent = hub.take()
    assert [(dst, m.link, m.missed, m.event_type) for dst, m in sent] == [
        (0, 7, 0, event_type_name(LkEvent)),
        (0, 7, 0, ""),  # a run of another type: its own message
    ]
    assert msgspec.msgpack.decode(sent[0][1].events, type=list[LkEvent]) == [
        LkEvent(0),
        LkEvent(1),
        LkEvent(2),
    ]


async def test_a_backed_up_ring_drops_events_and_counts_them() -> None:
    streams, hub, links = _pair()
    links.on_message(0, Subscribe(7, *KEY))
    hub.take()
    hub.backlog = BACKLOG + 1
    streams.publish(KEY, LkEvent(1))
    streams.publish(KEY, LkEvent(2))
    await asyncio.sleep(0)
    assert hub.take() == []  # the publisher went on; nothing queued behind the backlog
    hub.backlog = 0
    streams.publish(KEY, LkEvent(3))
    await asyncio.sleep(0)
    [(_, msg)] = hub.take()
    assert (msg.missed, msgspec.msgpack.decode(msg.events)) == (2, [{"n": 3}])


async def test_a_dropped_count_is_sent_even_if_nothing_follows() -> None:
    streams, hub, links = _pair()
    links.on_message(0, Subscribe(7, *KEY))
    hub.take()
    hub.backlog = BACKLOG + 1
    streams.publish(KEY, LkEvent(1))
    await asyncio.sleep(0)
    hub.backlog = 0
    hub.got.clear()
    await asyncio.wait_for(hub.got.wait(), 5)  # the retry, a moment later
    [(_, msg)] = hub.take()
    assert (msg.missed, msgspec.msgpack.decode(msg.events)) == (1, [])


async def test_an_unencodable_event_is_dropped_counted_and_logged(logs: list[str]) -> None:
    streams, hub, links = _pair()
    links.on_message(0, Subscribe(7, *KEY))
    hub.take()
    streams.publish(KEY, LkEvent(1))
    streams.publish(KEY, object())
    streams.publish(KEY, object())
    streams.publish(KEY, LkEvent(2))
    await asyncio.sleep(0)
    sent = [m for _, m in hub.take()]
    assert [(m.missed, m.event_type) for m in sent] == [
        (0, event_type_name(LkEvent)),
        (2, event_type_name(LkEvent)),  # the two objects, reported before the next event
    ]
    assert sum("cannot cross processes and was dropped" in line for line in logs) == 2


async def test_received_events_are_rebuilt_and_lag_is_a_notice() -> None:
    streams = Streams("driver")
    streams.start()
    hub = FakeHub()
    links = StreamLinks(streams, hub, 0, 2, lambda p: False, "driver")  # type: ignore[arg-type]
    sub = streams.subscribe(KEY)
    [(owner, subscribe)] = hub.take()
    assert isinstance(subscribe, Subscribe)
    links.on_message(owner, Subscribed(subscribe.link))
    await sub  # confirmed
    raw = msgspec.Raw(msgspec.msgpack.encode([LkEvent(5)]))
    links.on_message(owner, Events(subscribe.link, 3, event_type_name(LkEvent), raw))
    assert [await anext(sub), await anext(sub)] == [rio.Lagged(3), LkEvent(5)]


async def test_an_unknown_event_class_arrives_as_builtins(logs: list[str]) -> None:
    streams = Streams("driver")
    streams.start()
    hub = FakeHub()
    links = StreamLinks(streams, hub, 0, 2, lambda p: False, "driver")  # type: ignore[arg-type]
    sub = streams.subscribe(KEY)
    [(owner, subscribe)] = hub.take()
    raw = msgspec.Raw(msgspec.msgpack.encode([{"n": 1}]))
    links.on_message(owner, Events(subscribe.link, 0, "nowhere:Gone", raw))
    assert await anext(sub) == {"n": 1}
    assert any("events of type nowhere:Gone arrive as builtins" in line for line in logs)


class _Relay(StreamRelay):
    """What a cluster node keeps for a subscriber on another node: records pushes."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def push(self, event: Any) -> None:
        self.events.append(event)

    def push_many(self, events: list[Any], missed: int) -> None:
        self.events.extend(events)

    def dropped(self, missed: int, lost: bool = False) -> None:
        pass


@pytest.mark.parametrize("how", ["unsubscribes", "dies"])
async def test_a_relay_to_another_node_outlives_a_worker_subscriber(how: str) -> None:
    # A node's main process relays a topic to a client on another node; a subscriber in
    # one of its workers comes and goes. The relay must go on getting what is published.
    streams, _hub, links = _pair()
    relay = _Relay()
    streams.add_relay(KEY, relay)
    links.on_message(0, Subscribe(7, *KEY))
    if how == "unsubscribes":
        links.on_message(0, Unsubscribe(7, *KEY))
    else:
        streams.forget_process(0)
    streams.publish(KEY, LkEvent(1))
    assert relay.events == [LkEvent(1)]


@pytest.mark.parametrize("workers", [1, 3])
async def test_topics_register_with_every_other_process(workers: int) -> None:
    streams = Streams("w1")
    streams.start()
    hub = FakeHub()
    StreamLinks(streams, hub, 1, workers, lambda p: False, "w1")  # type: ignore[arg-type]
    sub = streams.subscribe(("/", "news"))
    assert sorted(dst for dst, _ in hub.take()) == [p for p in range(workers + 1) if p != 1]
    sub.close()  # unsubscribes from each
    assert sorted(dst for dst, _ in hub.take()) == [p for p in range(workers + 1) if p != 1]


@pytest.mark.parametrize("here", ["lk_plain_app", "__rio_app__lk_plain_app", "__main__"])
@pytest.mark.parametrize("there", ["lk_plain_app", "__rio_app__lk_plain_app", "__main__"])
def test_a_class_travels_by_its_file_however_each_end_loaded_it(
    here: str, there: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One file, app.py: `python app.py` runs it as __main__, `rio run app.py` loads it
    # as __rio_app__app, a client imports it as app. Events and errors name its
    # classes the same way whichever of the three each end did.
    import types

    from rio.core.errors import qualified_name
    from rio.local.streams import _resolve, event_type_name

    def module(name: str, cls: type) -> None:
        mod = types.ModuleType(name)
        mod.__file__ = "/srv/lk-plain-app.py" if name == "__main__" else "/srv/lk_plain_app.py"
        setattr(mod, cls.__name__, cls)
        monkeypatch.setitem(sys.modules, name, mod)

    sent = type("LkSent", (Exception,), {"__module__": there})
    module(there, sent)
    name = event_type_name(sent)
    assert name == "lk_plain_app:LkSent"
    remote_type = qualified_name(sent)
    assert remote_type == "lk_plain_app.LkSent"
    mine = type("LkSent", (Exception,), {"__module__": here})
    for gone in {"lk_plain_app", "__rio_app__lk_plain_app", "__main__"} - {here}:
        monkeypatch.delitem(sys.modules, gone, raising=False)
    module(here, mine)
    assert _resolve(name) is mine
    assert _resolve("lk_other:LkSent") is None
    assert qualified_name(mine) == remote_type  # so RemoteError.is_a matches


@pytest.mark.parametrize("script_sends", [True, False])
def test_a_script_run_with_python_m_and_a_process_importing_it_understand_each_other(
    script_sends: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `python -m pkg.app`: its worker processes load the script from its file, with no
    # package, so it names its classes by the file's stem ("app"); a client that does
    # `import pkg.app` names them "pkg.app". Events and RemoteError.is_a must still meet.
    import importlib.machinery
    import types

    from rio.core.errors import RemoteError, qualified_name
    from rio.local.streams import _resolve, event_type_name

    main = types.ModuleType("__main__")
    main.__file__ = "/srv/pkg/app.py"
    main.__spec__ = importlib.machinery.ModuleSpec("pkg.app", None)
    imported = types.ModuleType("pkg.app")
    in_main = type("LkErr", (Exception,), {"__module__": "__main__"})
    in_pkg = type("LkErr", (Exception,), {"__module__": "pkg.app"})
    main.LkErr = in_main  # type: ignore[attr-defined]
    imported.LkErr = in_pkg  # type: ignore[attr-defined]
    sender, receiver = (in_main, in_pkg) if script_sends else (in_pkg, in_main)
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setitem(sys.modules, "pkg.app", imported)
    name = event_type_name(sender)
    remote_type = qualified_name(sender)
    assert name == ("app:LkErr" if script_sends else "pkg.app:LkErr")
    assert remote_type == ("app.LkErr" if script_sends else "pkg.app.LkErr")
    monkeypatch.delitem(sys.modules, sender.__module__)  # the receiver's process
    assert _resolve(name) is receiver
    error = RemoteError(remote_type, "no", "")
    assert error.is_a(receiver)
    assert not error.is_a(ValueError)
