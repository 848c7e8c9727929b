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
# (future, handler, destination, budget, key, bytes of the sent message; -1 not sent yet)
_Entry = tuple[asyncio.Future[Any], Handler, int, float, Key, int]
_CALL = 1  # the tag of protocol.Call: calls travel as tuples laid out like it
_wire_decoder = msgspec.msgpack.Decoder(dict[str, Any])

#: Calls one process keeps in flight to another (sent, not answered yet) before its
#: callers' further calls wait their turn in :class:`RemoteCalls` (flow control).
WINDOW = 10_000
#: The same window in bytes of encoded calls (one call larger than this still goes,
#: alone).
WINDOW_BYTES = 64 << 20
#: Encoded bytes that may wait for one process before more calls are refused.
MAX_QUEUED_BYTES = 256 << 20


class _Queue(collections.deque[tuple[int, tuple[Any, ...], float, int]]):
    """Calls waiting to be sent to one process, in the order they were made.

    Each is (req, the Call with its arguments encoded, deadline, their size).
    """

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0
        #: Entries whose call expired while waiting (dropped when the queue is pruned).
        self.expired = 0


class RemoteCalls:
    """The calls this process has in flight to other processes.

    Flow control. At most :data:`WINDOW` calls (and :data:`WINDOW_BYTES`) are in
    flight to one process; further calls made outside any turn (a script, a client,
    a timer) wait their turn here, in order, encoded, and go as answers come back,
    so a caller that starts calls faster than their target serves them cannot
    flood that process's mailboxes. Calls made inside a turn never wait for the
    window (an actor's call that waited behind calls that wait on it would
    deadlock). While a process is dead or restarting, every call to it waits here.
    At most ``max_queued`` calls (and :data:`MAX_QUEUED_BYTES`) wait for one
    process: beyond that, a call is refused at once with :class:`rio.Overloaded`.
    """

    def __init__(self, hub: Hub, name: str, max_queued: int = MAX_QUEUED) -> None:
        self.hub = hub
        self.name = name
        self.max_queued = max_queued
        # req -> (future, handler, destination, budget, key, size)
        self._pending: dict[int, _Entry] = {}
        # Deadlines are watched per run of consecutive calls with one deadline (see
        # RunDeadlines): a call that joins the current run costs one comparison.
        self._next_req = 1
        self._runs = RunDeadlines(self._pending, lambda: self._next_req, self._expire)
        #: Peers that are dead or restarting (their calls wait in ``_queues``).
        self.down: set[int] = set()
        # Per peer: [calls in flight, their bytes]; and the calls waiting to be sent.
        self._out: dict[int, list[int]] = {}
        self._queues: dict[int, _Queue] = {}
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
            rio.Overloaded: the call would wait and ``max_queued`` calls already wait
                for ``dst``.
        """
        req = self._next_req
        budget = deadline - now
        # A Call; a chain of just the target travels empty (the receiver restores it).
        msg = (
            _CALL,
            req,
            key[0],
            key[1],
            handler.name,
            deadline,
            chain if len(chain) > 1 else (),
            args,
        )
        out = self._out.get(dst)
        if out is None:
            out = self._out[dst] = [0, 0]
        try:
            if dst in self._queues:
                waits = len(chain) <= 1 or dst in self.down
            else:
                waits = len(chain) <= 1 and (out[0] >= WINDOW or out[1] >= WINDOW_BYTES)
            if waits:
                body = args if isinstance(args, msgspec.Raw) else msgspec.Raw(encode(args))
                self._wait(dst, key, handler, req, (*msg[:7], body), deadline, len(body))
                size = -1
            else:
                size = self._hub_send(dst, msg)
                out[0] += 1
                out[1] += size
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
        self._pending[req] = (fut, handler, dst, budget, key, size)
        runs = self._runs
        if deadline != runs.at:
            runs.start(loop, req, deadline, budget)
        return fut

    def _wait(
        self,
        dst: int,
        key: Key,
        handler: Handler,
        req: int,
        msg: tuple[Any, ...],
        deadline: float,
        nbytes: int,
    ) -> None:
        """Queue a call for ``dst`` until it may be sent; Overloaded when the queue is full."""
        q = self._queues.get(dst)
        if q is None:
            q = self._queues[dst] = _Queue()
        if len(q) >= self.max_queued or q.nbytes + nbytes > MAX_QUEUED_BYTES:
            if q.expired * 8 >= len(q):  # enough expired ones to be worth a sweep
                self._prune(q)
            if q and (len(q) >= self.max_queued or q.nbytes + nbytes > MAX_QUEUED_BYTES):
                why = (
                    f"worker {dst} is restarting"
                    if dst in self.down
                    else f"worker {dst} already has {self._out[dst][0]} calls in flight "
                    "from this process"
                )
                raise Overloaded(
                    f"{key[0]}/{key[1]}.{handler.name}() refused: {len(q)} calls "
                    f"({q.nbytes} bytes) already wait to be sent to worker {dst} ({why}); "
                    f"at most max_queued={self.max_queued} calls and "
                    f"{MAX_QUEUED_BYTES} bytes may wait. Await the calls already made "
                    "before starting more"
                )
        q.append((req, msg, deadline, nbytes))
        q.nbytes += nbytes

    def _prune(self, q: _Queue) -> None:
        pending = self._pending
        kept = [w for w in q if w[0] in pending]
        q.clear()
        q.extend(kept)
        q.nbytes = sum(w[3] for w in kept)
        q.expired = 0

    def _pump(self, dst: int) -> None:
        """Send the calls waiting for ``dst`` that fit in its window now."""
        q = self._queues.get(dst)
        if q is None or dst in self.down:
            return
        out = self._out[dst]
        pending = self._pending
        now = self.hub.loop.time()
        send = self._hub_send
        while q and (out[0] == 0 or (out[0] < WINDOW and out[1] < WINDOW_BYTES)):
            req, msg, deadline, nbytes = q.popleft()
            q.nbytes -= nbytes
            entry = pending.get(req)
            if entry is None:  # it expired while waiting
                q.expired = max(0, q.expired - 1)
                continue
            if deadline <= now:  # due: fail it now (its timer will find it gone)
                del pending[req]
                self._timed_out(entry)
                continue
            size = send(dst, msg)
            pending[req] = (*entry[:5], size)
            out[0] += 1
            out[1] += size
        if not q:
            del self._queues[dst]

    def _pump_all(self) -> None:
        for dst in list(self._queues):
            self._pump(dst)

    def _answered(self, entry: _Entry) -> None:
        """Free ``entry``'s place in its destination's window (it was sent)."""
        size = entry[5]
        if size >= 0:
            out = self._out[entry[2]]
            out[0] -= 1
            out[1] -= size

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
                size = entry[5]
                if size >= 0:
                    out = outs[entry[2]]
                    out[0] -= 1
                    out[1] -= size
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
        if self._queues:
            self._pump_all()

    def on_reply(self, msg: Reply) -> None:
        """Resolve the call ``msg`` answers (a late answer after a timeout is dropped)."""
        entry = self._pending.pop(msg.req, None)
        if entry is None:
            return
        self._answered(entry)
        if not entry[0].done():
            self._resolve(entry, msg)
        if self._queues:
            self._pump(entry[2])

    def _resolve(self, entry: _Entry, msg: Reply) -> None:
        fut, handler, _, _, key, _ = entry
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
        dst = entry[2]
        if entry[5] >= 0:
            self._answered(entry)
            if self._queues:
                self._pump(dst)
        else:
            q = self._queues.get(dst)
            if q is not None:
                q.expired += 1
        self._timed_out(entry)

    def _timed_out(self, entry: _Entry) -> None:
        """Fail ``entry``'s call with CallTimeout saying whether it was ever sent."""
        fut, handler, dst, budget, key, size = entry
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
                    f"{where}.{handler.name}() was not sent within {budget:.3g}s: worker "
                    f"{dst} had {self._out[dst][0]} calls from this process in flight "
                    "(it serves them slower than they are made), so the call waited "
                    "its turn and never ran"
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
        if dst not in self._queues:
            self._queues[dst] = _Queue()
        self._out[dst] = [0, 0]
        failed = 0
        for req, (fut, handler, d, _, key, size) in list(self._pending.items()):
            if d != dst or size < 0:
                continue
            del self._pending[req]
            if not fut.done():
                fut.set_exception(
                    WorkerLost(
                        f"worker {dst} (pid {pid}) died ({reason}) before answering "
                        f"{key[0]}/{key[1]}.{handler.name}(); the call may or may not "
                        "have run. The object re-activates from storage on its next call"
                    )
                )
                failed += 1
        self.hub.reset_peer(dst)
        if failed:
            logger.warning("{}: {} call(s) to worker {} failed: {}", self.name, failed, dst, reason)
        return failed

    def peer_up(self, dst: int) -> None:
        """Send the calls held while ``dst`` restarted (those still waiting), in order.

        Each keeps its deadline: the time it was held counts.
        """
        self.down.discard(dst)
        self._pump(dst)

    def life(self, peer: int) -> int:
        """Which life of ``peer`` this is (how many times it died so far)."""
        return self.deaths.get(peer, 0)

    def is_down(self, dst: int) -> bool:
        """True while ``dst`` is dead or restarting."""
        return dst in self.down

    def fail_all(self, exc_factory: Any) -> None:
        """Fail every pending call (the pool is going away)."""
        self._queues.clear()
        for req, entry in list(self._pending.items()):
            del self._pending[req]
            fut = entry[0]
            if not fut.done():
                fut.set_exception(exc_factory())
        self._runs.clear()

    def waiting(self) -> int:
        """Calls made but not sent yet (waiting for their turn, or for a restart)."""
        return sum(max(0, len(q) - q.expired) for q in self._queues.values())

    def __len__(self) -> int:
        return len(self._pending)
