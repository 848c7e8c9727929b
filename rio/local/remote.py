"""Calls to actors in another process of the box, and the answers to them.

Both the driver and every worker keep one :class:`RemoteCalls`: it encodes a call
once into the batch for the owner's ring, keeps a future with a deadline timer per call,
and resolves it from the :class:`~rio.local.protocol.Reply`. When a worker dies, every
call in flight to it fails at once with :class:`rio.WorkerLost`; calls made while it
restarts wait for it (within their deadline).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

import msgspec
from loguru import logger

from rio.core.deadlines import RunDeadlines
from rio.core.errors import (
    BadArguments,
    CallTimeout,
    Overloaded,
    RemoteError,
    RioError,
    WorkerLost,
    error_from_wire,
)
from rio.core.registry import Handler
from rio.core.runtime import MAX_QUEUED
from rio.local.protocol import Message, Reply, encode, positional_args
from rio.local.transport import Hub

__all__ = ["WINDOW", "RemoteCalls", "unencodable"]


def unencodable(handler: Handler, values: tuple[Any, ...], e: Exception) -> BadArguments:
    """Name the argument that cannot cross processes."""
    for name, value in zip(handler.param_names, values, strict=False):
        try:
            encode(value)
        except Exception as inner:
            return BadArguments(
                f"{handler.owner}.{handler.name}(): argument {name!r} cannot cross "
                f"processes: {inner}. Pass msgspec Structs, builtins, or lists and dicts "
                "of them"
            )
    return BadArguments(f"{handler.owner}.{handler.name}(): arguments cannot cross processes: {e}")


Key = tuple[str, str]
# (future, handler, destination, budget, key, bytes of the sent message (-1: not sent yet)
# ... and the object's counter of calls in flight from here (see RemoteCalls._keys)
_Entry = tuple[asyncio.Future[Any], Handler, int, float, Key, int, list[int]]
_CALL = 1  # the tag of protocol.Call: calls travel as tuples laid out like it
_wire_decoder = msgspec.msgpack.Decoder(dict[str, Any])

#: Calls one process keeps in flight to one object (sent, not answered yet) before its
#: callers' further calls to that object wait their turn in :class:`RemoteCalls`.
WINDOW = 10_000
#: Calls, and bytes of encoded calls, one process keeps in flight to another process
#: (a safety net over many objects; one call larger than this still goes, alone).
PROCESS_WINDOW = 100_000
WINDOW_BYTES = 64 << 20
#: Encoded bytes that may wait in one process before more calls are refused; also
#: the bytes of unanswered calls to one worker beyond which a turn's calls are refused.
MAX_QUEUED_BYTES = 256 << 20
# RemoteCalls.send lets a turn's call over MAX_QUEUED_BYTES fall through to the
# window test, which must then fail for it to be refused.
assert WINDOW_BYTES < MAX_QUEUED_BYTES


class _Queue(collections.deque[tuple[int, tuple[Any, ...], float, int]]):
    """Calls waiting to be sent to one object, in the order they were made.

    Each is (req, the Call with its arguments encoded, deadline, their size).
    """

    def __init__(self, dst: int) -> None:
        super().__init__()
        self.dst = dst


class RemoteCalls:
    """The calls this process has in flight to other processes.

    Flow control. At most :data:`WINDOW` calls are in flight from this process to one
    object (and :data:`PROCESS_WINDOW` calls, :data:`WINDOW_BYTES` bytes, to one
    process); further calls made outside any turn (a script, a client) wait their
    turn here, encoded, in order per object, and go as answers come back. So a
    caller that starts calls faster than an object serves them cannot flood its
    worker, while calls to other objects go on at once. Calls made inside a turn
    never wait for a window (an actor's call that waited behind calls that wait on
    that actor would deadlock), nor do the pool's own control calls (``$...``).
    While a process is dead or restarting, every call to it waits here. At most
    ``max_queued`` calls (and :data:`MAX_QUEUED_BYTES`) wait in this process:
    beyond that, a call that would wait is refused at once with :class:`rio.Overloaded`.
    """

    def __init__(self, hub: Hub, name: str, max_queued: int = MAX_QUEUED) -> None:
        self.hub = hub
        self.name = name
        self.max_queued = max_queued
        # req -> _Entry
        self._pending: dict[int, _Entry] = {}
        # Deadlines are watched per run of consecutive calls with one deadline (see
        # RunDeadlines): a call that joins the current run costs one comparison.
        self._next_req = 1
        self._runs = RunDeadlines(self._pending, lambda: self._next_req, self._expire)
        #: Peers that are dead or restarting (their calls wait to be sent).
        self.down: set[int] = set()
        # Per peer: [calls in flight, their bytes]; per object: calls in flight.
        self._out: dict[int, list[int]] = {}
        # [calls in flight] per object, shared by its pending entries; objects with
        # none are swept out when the table grows (see _counter).
        self._keys: dict[Key, list[int]] = {}
        self._swept = 0
        # Calls made outside a turn waiting to be sent, per object; calls made inside
        # a turn held while their peer is down, per peer; how many wait in all (and
        # their bytes), how many of those expired meanwhile (swept when it pays).
        self._queues: dict[Key, _Queue] = {}
        self._held: dict[int, list[tuple[int, tuple[Any, ...], float, int]]] = {}
        self._nwaiting = 0
        self._wbytes = 0
        self._expired = 0
        #: How many times each peer died: a reply owed to a caller from before its
        #: last death must not reach its replacement (see :meth:`life`).
        self.deaths: dict[int, int] = {}
        self.pids: dict[int, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hub_send = hub.send

    def call(
        self,
        dst: int,
        key: Key,
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chain: tuple[Key, ...],
        deadline: float,
        now: float,
    ) -> asyncio.Future[Any]:
        """Send a checked call to process ``dst``; returns the future of its answer."""
        if not handler.wire_ok:
            handler.args_decoder  # noqa: B018 - raises BadArguments naming the handler
        values = positional_args(handler, args, kwargs)
        return self.send(dst, key, handler, values, chain, deadline, now)

    def send(
        self,
        dst: int,
        key: Key,
        handler: Handler,
        args: tuple[Any, ...] | msgspec.Raw,
        chain: tuple[Key, ...] | list[tuple[str, str]],
        deadline: float,
        now: float,
    ) -> asyncio.Future[Any]:
        """Send a call whose arguments are in wire order (or already encoded, as Raw).

        The answer is decoded with ``handler``'s return annotation (a handler whose
        return annotation is ``msgspec.Raw`` gets the encoded answer as it came).

        Raises:
            rio.BadArguments: an argument cannot be encoded (nothing was sent).
            rio.Overloaded: the call would wait and ``max_queued`` calls already wait.
        """
        req = self._next_req
        budget = deadline - now
        nested = len(chain) > 1  # a turn's call
        # A Call; a chain of just the target travels empty (the receiver restores it).
        msg = (
            _CALL,
            req,
            key[0],
            key[1],
            handler.name,
            deadline,
            chain if nested else (),
            args,
        )
        out = self._out.get(dst)
        if out is None:
            out = self._out[dst] = [0, 0]
        counter = self._keys.get(key)
        if counter is None:
            counter = self._counter(key)
        try:
            if dst in self.down:
                self._wait(dst, key, handler, req, msg, deadline, nested)
                size = -1
            elif (
                # A turn's calls never wait for a window (that could deadlock); nor do
                # the pool's own control calls ($stats, $deactivate).
                (nested and out[1] < MAX_QUEUED_BYTES)
                or (
                    counter[0] < WINDOW
                    and out[0] < PROCESS_WINDOW
                    and out[1] < WINDOW_BYTES
                    and (not self._queues or key not in self._queues)
                )
                or handler.name[0] == "$"
            ):
                size = self._hub_send(dst, msg)
                out[0] += 1
                out[1] += size
                counter[0] += 1
            elif nested:
                # A turn that starts calls faster than they are answered is refused.
                raise Overloaded(
                    f"{key[0]}/{key[1]}.{handler.name}() refused: {out[1]} bytes of calls "
                    f"from this process to worker {dst} are still unanswered (at most "
                    f"{MAX_QUEUED_BYTES}); await the calls already made before starting more"
                )
            else:
                self._wait(dst, key, handler, req, msg, deadline, False)
                size = -1
        except RioError:
            raise
        except Exception as e:  # TypeError, EncodeError, OverflowError (an int > 64 bits)...
            if isinstance(args, msgspec.Raw):
                raise
            raise unencodable(handler, args, e) from None
        self._next_req = req + 1
        loop = self._loop
        if loop is None:
            loop = self._loop = self.hub.loop
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending[req] = (fut, handler, dst, budget, key, size, counter)
        runs = self._runs
        if deadline != runs.at:
            runs.start(loop, req, deadline, budget)
        return fut

    def _counter(self, key: Key) -> list[int]:
        """The in-flight counter of ``key`` (new); idle ones are swept as the table grows."""
        keys = self._keys
        if len(keys) >= 4096 and len(keys) >= 2 * self._swept:
            queues = self._queues  # a waiting call keeps its object's counter
            for k in [k for k, c in keys.items() if not c[0] and k not in queues]:
                del keys[k]
            self._swept = len(keys)
        counter = keys[key] = [0]
        return counter

    def _wait(
        self,
        dst: int,
        key: Key,
        handler: Handler,
        req: int,
        msg: tuple[Any, ...],
        deadline: float,
        nested: bool,
    ) -> None:
        """Keep a call until it may be sent (encoded now: the caller may reuse its objects).

        Raises Overloaded when ``max_queued`` calls already wait (a turn's call held
        for a restarting peer and the pool's control calls are never refused).
        """
        args = msg[7]
        body = args if isinstance(args, msgspec.Raw) else msgspec.Raw(encode(args))
        nbytes = len(body)
        if (self._nwaiting >= self.max_queued or self._wbytes + nbytes > MAX_QUEUED_BYTES) and not (
            nested or handler.name[0] == "$"
        ):
            if self._expired * 8 >= self._nwaiting:  # enough expired ones to sweep
                self._prune()
            if self._nwaiting >= self.max_queued or self._wbytes + nbytes > MAX_QUEUED_BYTES:
                if dst in self.down:
                    why = f"worker {dst} is restarting"
                else:
                    why = (
                        f"{self._keys[key][0]} calls to it and {self._out[dst][0]} to "
                        f"worker {dst} are in flight from this process"
                    )
                raise Overloaded(
                    f"{key[0]}/{key[1]}.{handler.name}() refused: {self._nwaiting} calls "
                    f"({self._wbytes} bytes) from {self.name} already wait to be sent "
                    f"({why}); at most max_queued={self.max_queued} calls and "
                    f"{MAX_QUEUED_BYTES} bytes may wait. Await the calls already made "
                    "before starting more"
                )
        item = (req, (*msg[:7], body), deadline, nbytes)
        if nested:
            self._held.setdefault(dst, []).append(item)
        else:
            q = self._queues.get(key)
            if q is None:
                q = self._queues[key] = _Queue(dst)
            q.append(item)
        self._nwaiting += 1
        self._wbytes += nbytes

    def _prune(self) -> None:
        """Drop the waiting calls whose deadline passed (their callers were told)."""
        pending = self._pending
        for key, q in list(self._queues.items()):
            kept = [w for w in q if w[0] in pending]
            if kept:
                q.clear()
                q.extend(kept)
            else:
                del self._queues[key]
        for held in self._held.values():
            held[:] = [w for w in held if w[0] in pending]
        self._count_waiting()

    def _count_waiting(self) -> None:
        items = [w for q in self._queues.values() for w in q]
        items += [w for held in self._held.values() for w in held]
        self._nwaiting = len(items)
        self._wbytes = sum(w[3] for w in items)
        self._expired = 0

    def _pump(self, key: Key, q: _Queue) -> None:
        """Send the calls waiting for ``key`` that its windows take now."""
        dst = q.dst
        if dst in self.down:
            return
        out = self._out[dst]
        pending = self._pending
        now = self.hub.loop.time()
        while q:
            entry = pending.get(q[0][0])
            if entry is not None:
                n = entry[6][0]
                if not (
                    (n < WINDOW and out[0] < PROCESS_WINDOW and out[1] < WINDOW_BYTES)
                    or out[0] == 0
                ):
                    break
            self._release(dst, q.popleft(), out, now)
        if not q:
            del self._queues[key]

    def _pump_dst(self, dst: int) -> None:
        """Send what waits for ``dst`` and fits now: held calls of turns first, all."""
        held = self._held.pop(dst, None)
        if held:
            out = self._out[dst]
            now = self.hub.loop.time()
            for item in held:
                self._release(dst, item, out, now)
        for key, q in list(self._queues.items()):
            if q.dst == dst:
                self._pump(key, q)

    def _release(
        self, dst: int, item: tuple[int, tuple[Any, ...], float, int], out: list[int], now: float
    ) -> None:
        """Send one call taken from a queue (unless it expired, or was cancelled, meanwhile)."""
        req, msg, deadline, nbytes = item
        self._nwaiting -= 1
        self._wbytes -= nbytes
        pending = self._pending
        entry = pending.get(req)
        if entry is None:  # it expired while waiting
            self._expired = max(0, self._expired - 1)
            return
        if entry[0].done() or deadline <= now:  # cancelled by its caller, or due
            del pending[req]
            self._timed_out(entry)
            return
        size = self._hub_send(dst, msg)
        pending[req] = (*entry[:5], size, entry[6])
        out[0] += 1
        out[1] += size
        entry[6][0] += 1

    def _answered(self, entry: _Entry) -> None:
        """Free ``entry``'s place in its windows (if it was sent); send what waits for it."""
        size = entry[5]
        if size < 0:
            return
        dst = entry[2]
        out = self._out[dst]
        out[0] -= 1
        out[1] -= size
        entry[6][0] -= 1
        if self._queues:
            key = entry[4]
            q = self._queues.get(key)
            if q is not None:
                self._pump(key, q)
            if out[0] + 1 >= PROCESS_WINDOW or out[1] + size >= WINDOW_BYTES:
                self._pump_dst(dst)  # the process window held back other objects' calls

    def on_messages(self, msgs: list[Message], other: Callable[[Message], None]) -> None:
        """Resolve the calls the replies among ``msgs`` answer; hand the rest to ``other``.

        The driver's inbound batches are nearly all replies: this is :meth:`on_reply`
        for a whole batch, its common case inlined. A failure is logged per message.
        """
        pop = self._pending.pop
        outs = self._out
        for msg in msgs:
            try:
                if msg.__class__ is not Reply:
                    other(msg)
                    continue
                entry = pop(msg.req, None)
                if entry is None:
                    continue  # a late answer after a timeout
                # What _answered() does, inlined; what waits is sent after the batch.
                out = outs[entry[2]]
                out[0] -= 1
                out[1] -= entry[5]
                entry[6][0] -= 1
                fut = entry[0]
                if fut.done():
                    continue
                if msg.ok:
                    try:
                        fut.set_result(entry[1].result_decoder.decode(msg.value))
                        continue
                    except msgspec.DecodeError:
                        pass
                self._resolve(entry, msg)  # an error, or a value of the wrong type
            except Exception:  # one bad message must never stop this process reading
                logger.opt(exception=True).error("{}: handling a message failed", self.name)
        if self._queues:  # the answers made room: one pass over what waits
            for key, q in list(self._queues.items()):
                self._pump(key, q)

    def on_reply(self, msg: Reply) -> None:
        """Resolve the call ``msg`` answers (a late answer after a timeout is dropped)."""
        entry = self._pending.pop(msg.req, None)
        if entry is None:
            return
        self._answered(entry)
        if not entry[0].done():
            self._resolve(entry, msg)

    def _resolve(self, entry: _Entry, msg: Reply) -> None:
        fut, handler, _, _, key, _, _ = entry
        if msg.ok:
            try:
                fut.set_result(handler.result_decoder.decode(msg.value))
            except msgspec.DecodeError as e:
                fut.set_exception(
                    RemoteError(
                        "msgspec.DecodeError",
                        f"{key[0]}/{key[1]}.{handler.name}() answered a value that does "
                        f"not match its return annotation: {e}",
                    )
                )
        else:
            try:
                err: BaseException = error_from_wire(_wire_decoder.decode(msg.value))
            except msgspec.DecodeError as e:
                err = RemoteError("msgspec.DecodeError", f"unreadable error reply: {e}")
            where = f"{key[0]}/{key[1]}"
            if isinstance(err, CallTimeout) and str(err).startswith(f"{where}.{handler.name}()"):
                # This call's own deadline, seen first by the worker: the same message
                # as when it is seen here first, naming the worker.
                err = CallTimeout.unanswered(where, handler.name, entry[3], f" (worker {entry[2]})")
            fut.set_exception(err)

    def _expire(self, req: int, _budget: float = 0.0) -> None:
        entry = self._pending.pop(req, None)
        if entry is None:
            return
        if entry[5] >= 0:
            self._answered(entry)
        else:
            self._expired += 1  # still in its queue: swept later
        self._timed_out(entry)

    def _timed_out(self, entry: _Entry) -> None:
        """Fail ``entry``'s call with CallTimeout saying whether it was ever sent."""
        fut, handler, dst, budget, key, size, _ = entry
        if fut.done():
            return
        where = f"{key[0]}/{key[1]}"
        if size >= 0:
            fut.set_exception(
                CallTimeout.unanswered(where, handler.name, budget, f" (worker {dst})")
            )
        elif dst in self.down:  # held since its worker died: it was never sent
            fut.set_exception(
                CallTimeout(
                    f"{where}.{handler.name}() was not sent within {budget:.3g}s: worker "
                    f"{dst} died and is not serving again yet, so the call waited for it "
                    "and never ran"
                )
            )
        else:
            fut.set_exception(
                CallTimeout(
                    f"{where}.{handler.name}() was not sent within {budget:.3g}s: it had "
                    f"{entry[6][0]} calls from this process in flight (worker {dst}: "
                    f"{self._out[dst][0]}), served slower than they were made, so the "
                    "call waited its turn and never ran"
                )
            )

    # -- a peer dies and comes back --------------------------------------------------

    def peer_down(self, dst: int, pid: int, reason: str) -> int:
        """Fail every call in flight to ``dst`` with WorkerLost and hold new ones.

        Calls that were waiting for their turn were never sent: they keep waiting,
        for the peer's replacement. Returns how many calls failed.
        """
        if dst not in self.down:
            self.down.add(dst)
            self.deaths[dst] = self.deaths.get(dst, 0) + 1
        failed = 0
        for req, entry in list(self._pending.items()):
            if entry[2] != dst or entry[5] < 0:
                continue
            del self._pending[req]
            self._answered(entry)
            fut, handler, _, _, key, _, _ = entry
            if not fut.done():
                fut.set_exception(
                    WorkerLost(
                        f"worker {dst} (pid {pid}) died ({reason}) before answering "
                        f"{key[0]}/{key[1]}.{handler.name}(); the call may or may not "
                        "have run. The object re-activates from storage on its next call"
                    )
                )
                failed += 1
        self._out[dst] = [0, 0]
        self.hub.reset_peer(dst)
        if failed:
            logger.warning("{}: {} call(s) to worker {} failed: {}", self.name, failed, dst, reason)
        return failed

    def peer_up(self, dst: int) -> None:
        """Send the calls held while ``dst`` restarted (those still waiting), in order.

        Each keeps its deadline: the time it was held counts.
        """
        self.down.discard(dst)
        self._pump_dst(dst)

    def life(self, peer: int) -> int:
        """Which life of ``peer`` this is (how many times it died so far)."""
        return self.deaths.get(peer, 0)

    def is_down(self, dst: int) -> bool:
        """True while ``dst`` is dead or restarting."""
        return dst in self.down

    def fail_all(self, exc_factory: Any) -> None:
        """Fail every pending call (the pool is going away)."""
        self._queues.clear()
        self._held.clear()
        self._count_waiting()
        for req, entry in list(self._pending.items()):
            del self._pending[req]
            fut = entry[0]
            if not fut.done():
                fut.set_exception(exc_factory())
        self._runs.clear()

    def waiting(self) -> int:
        """Calls made but not sent yet (waiting for their turn, or for a restart)."""
        return max(0, self._nwaiting - self._expired)

    def __len__(self) -> int:
        return len(self._pending)
