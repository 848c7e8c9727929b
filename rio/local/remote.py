"""Calls to actors in another process of the box, and the answers to them.

Both the driver and every worker keep one :class:`RemoteCalls`: it encodes a call
once into the batch for the owner's ring, keeps a future with a deadline timer per call,
and resolves it from the :class:`~rio.local.protocol.Reply`. When a worker dies, every
call in flight to it fails at once with :class:`rio.WorkerLost`; calls made while it
restarts wait for it (within their deadline).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
from loguru import logger

from rio.core.deadlines import RunDeadlines
from rio.core.errors import BadArguments, CallTimeout, RemoteError, WorkerLost, error_from_wire
from rio.core.registry import Handler
from rio.local.protocol import Message, Reply, encode, positional_args
from rio.local.transport import Hub

__all__ = ["RemoteCalls", "unencodable"]


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
_Entry = tuple[asyncio.Future[Any], Handler, int, float, Key]
_CALL = 1  # the tag of protocol.Call: calls travel as tuples laid out like it
_wire_decoder = msgspec.msgpack.Decoder(dict[str, Any])


class RemoteCalls:
    """The calls this process has in flight to other processes."""

    def __init__(self, hub: Hub, name: str) -> None:
        self.hub = hub
        self.name = name
        # req -> (future, handler, destination, budget, key)
        self._pending: dict[int, _Entry] = {}
        # Deadlines are watched per run of consecutive calls with one deadline (see
        # RunDeadlines): a call that joins the current run costs one comparison.
        self._next_req = 1
        self._runs = RunDeadlines(self._pending, lambda: self._next_req, self._expire)
        #: Peers that are dead or restarting, with the calls held for them: (req, the
        #: Call with its arguments encoded, deadline).
        self.down: dict[int, list[tuple[int, tuple[Any, ...], float]]] = {}
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
        """
        req = self._next_req
        self._next_req = req + 1
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
        try:
            if dst in self.down:
                body = args if isinstance(args, msgspec.Raw) else msgspec.Raw(encode(args))
                self._hold(dst, req, (*msg[:7], body), deadline)
            else:
                self._hub_send(dst, msg)
        except Exception as e:  # TypeError, EncodeError, OverflowError (an int > 64 bits)...
            if isinstance(args, msgspec.Raw):
                raise
            raise unencodable(handler, args, e) from None
        loop = self._loop
        if loop is None:
            loop = self._loop = self.hub.loop
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending[req] = (fut, handler, dst, budget, key)
        runs = self._runs
        if deadline != runs.at:
            runs.start(loop, req, deadline, budget)
        return fut

    def _hold(self, dst: int, req: int, msg: tuple[Any, ...], deadline: float) -> None:
        held = self.down[dst]
        if len(held) >= 1024:  # drop those whose deadline passed meanwhile
            held[:] = [h for h in held if h[0] in self._pending]
        held.append((req, msg, deadline))

    def on_messages(self, msgs: list[Message], other: Callable[[Message], None]) -> None:
        """Resolve the calls the replies among ``msgs`` answer; hand the rest to ``other``.

        The driver's inbound batches are nearly all replies: this is :meth:`on_reply`
        for a whole batch, its common case inlined. A failure is logged per message.
        """
        pop = self._pending.pop
        for msg in msgs:
            try:
                if msg.__class__ is not Reply:
                    other(msg)
                    continue
                entry = pop(msg.req, None)
                if entry is None:
                    continue  # a late answer after a timeout
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

    def on_reply(self, msg: Reply) -> None:
        """Resolve the call ``msg`` answers (a late answer after a timeout is dropped)."""
        entry = self._pending.pop(msg.req, None)
        if entry is not None and not entry[0].done():
            self._resolve(entry, msg)

    def _resolve(self, entry: _Entry, msg: Reply) -> None:
        fut, handler, _, _, key = entry
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
        fut, handler, dst, budget, key = entry
        if fut.done():
            return
        where = f"{key[0]}/{key[1]}"
        if dst in self.down:  # held since its worker died: it was never sent
            fut.set_exception(
                CallTimeout(
                    f"{where}.{handler.name}() was not sent within {budget:.3g}s: worker "
                    f"{dst} died and is not serving again yet, so the call waited for it "
                    "and never ran"
                )
            )
        else:
            fut.set_exception(
                CallTimeout.unanswered(where, handler.name, budget, f" (worker {dst})")
            )

    # -- a peer dies and comes back --------------------------------------------------

    def peer_down(self, dst: int, pid: int, reason: str) -> int:
        """Fail every call in flight to ``dst`` with WorkerLost and hold new ones.

        Returns how many calls failed.
        """
        if dst not in self.down:
            self.down[dst] = []
            self.deaths[dst] = self.deaths.get(dst, 0) + 1
        failed = 0
        for req, (fut, handler, d, _, key) in list(self._pending.items()):
            if d != dst:
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
        """Send the calls held while ``dst`` restarted (those still waiting).

        Each keeps its deadline: the time it was held counts.
        """
        held = self.down.pop(dst, ())
        now = self.hub.loop.time()
        for req, msg, deadline in held:
            if req in self._pending and deadline > now:  # else its timer fails it
                self._hub_send(dst, msg)

    def life(self, peer: int) -> int:
        """Which life of ``peer`` this is (how many times it died so far)."""
        return self.deaths.get(peer, 0)

    def is_down(self, dst: int) -> bool:
        """True while ``dst`` is dead or restarting."""
        return dst in self.down

    def fail_all(self, exc_factory: Any) -> None:
        """Fail every pending call (the pool is going away)."""
        for req, (fut, _, _, _, _) in list(self._pending.items()):
            del self._pending[req]
            if not fut.done():
                fut.set_exception(exc_factory())
        self._runs.clear()

    def __len__(self) -> int:
        return len(self._pending)
