"""A worker process: one event loop (uvloop), one in-process runtime, one end of the fabric.

Started by :class:`rio.local.pool.PoolSystem` as ``python -m rio.local.worker`` with
its :class:`~rio.local.config.WorkerConfig` in the environment. Calls between actors
of this worker skip the fabric entirely (and encoding); calls to actors owned by
another worker go through that worker's ring.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from asyncio import Future
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from rio.core.context import set_default_system
from rio.core.errors import RemoteError, SystemStopping, UnknownActorType, error_to_wire
from rio.core.registry import ActorType, Handler, lookup_type
from rio.core.runtime import Runtime
from rio.core.system import System, key_of
from rio.core.turns import ACTIVE
from rio.local.config import WorkerConfig, import_modules, owner_of
from rio.local.protocol import (
    STREAM_MESSAGES,
    Call,
    Down,
    Drain,
    Drained,
    Exit,
    Message,
    Ready,
    Reply,
    ResetDone,
    Up,
    decode_args,
)
from rio.local.remote import RemoteCalls
from rio.local.streams import StreamLinks
from rio.local.transport import Fabric, Hub
from rio.storage import storage_from_url

if TYPE_CHECKING:
    from rio.cluster.node import ClusterLink

__all__ = ["WorkerSystem", "main"]

DEACTIVATE = "$deactivate"
#: The driver asks a worker for its activation counts (cluster heartbeats).
STATS = "$stats"
_REPLY = 2  # the tag of protocol.Reply: replies travel as tuples laid out like it
_NO_KWARGS: dict[str, Any] = {}  # shared, never written to


def _now(loop: asyncio.AbstractEventLoop) -> float:
    """The time to hold a call's deadline against, on the box's monotonic clock.

    A caller's deadline is its ``loop.time()``; uvloop's reads up to a millisecond
    behind (and is taken once per loop pass), so a call its caller has just given
    up on would still look due. The later of the two readings is never behind.
    """
    return max(loop.time(), time.monotonic())


class WorkerSystem(System):
    """The system inside a worker: local calls run here, others go to their owner."""

    def __init__(self, cfg: WorkerConfig, runtime: Runtime, fabric: Fabric) -> None:
        self.cfg = cfg
        self.me = cfg.index
        self.n = cfg.nworkers
        self.name = f"{cfg.app.name}/worker-{cfg.index}"
        self.default_timeout = cfg.app.default_timeout
        self.runtime = runtime
        runtime.system = self
        self.hub = Hub(
            fabric,
            cfg.index,
            cfg.doorbells,
            self.on_messages,
            spin=cfg.spin,
            recheck=cfg.recheck,
            on_corrupt=_ring_corrupted,
        )
        self.remote = RemoteCalls(self.hub, self.name, cfg.app.max_queued)
        self.streams = runtime.streams
        self.links = StreamLinks(
            runtime.streams, self.hub, self.me, self.n, self.remote.is_down, self.name
        )
        self.exit = asyncio.Event()
        self._draining: asyncio.Future[None] | None = None
        # (type, method) -> (handler, its arguments' decode, its positional count)
        self._handlers: dict[tuple[str, str], tuple[Handler, Callable[[bytes], Any], int]] = {}
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        #: Set when the pool is a cluster node.
        self.link: ClusterLink | None = None

    # -- System ----------------------------------------------------------------------

    def call(
        self,
        key: tuple[str, str],
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """Run locally when this worker owns ``key``, else send it to the owner."""
        if threading.get_ident() != self._thread_id:  # a thread: hop to the loop first
            return self.call_from_thread(self._loop, key, handler, args, kwargs, timeout)
        owner = owner_of(key, self.n)
        rt = self.runtime
        link = self.link
        if link is None:
            if owner == self.me:
                return rt.call(key, handler, args, kwargs, timeout)
        elif owner == self.me and not link.placement.draining:  # draining: see ClusterNode
            act = rt._acts.get(key)
            if act is not None and act._rio_status == ACTIVE:
                return rt.call(key, handler, args, kwargs, timeout)
        args, kwargs = handler.check(args, kwargs)
        chain, deadline, now = rt.call_context(key, handler, timeout)
        if link is not None:
            return link.router.call(key, handler, args, kwargs, chain, deadline, now)
        return self.remote.call(owner, key, handler, args, kwargs, chain, deadline, now)

    def local_route(
        self,
        key: tuple[str, str],
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chain: tuple[tuple[str, str], ...],
        deadline: float,
        now: float,
    ) -> asyncio.Future[Any]:
        """Run a call on this box: here when this worker owns ``key``, else at its owner."""
        owner = owner_of(key, self.n)
        if owner == self.me:
            return self.runtime.deliver(key, handler, args, kwargs, chain, deadline, now)
        return self.remote.call(owner, key, handler, args, kwargs, chain, deadline, now)

    async def deactivate(self, actor: Any, object_id: Any = None) -> bool:
        """Deactivate an actor hosted here (operators call the driver's pool)."""
        return await self.runtime.deactivate_key(key_of(actor, object_id))

    def stats(self) -> msgspec.Struct:
        """The runtime statistics of this worker."""
        return self.runtime.stats()

    async def start(self) -> None:
        """Workers are started by :func:`serve`."""

    async def stop(self) -> None:
        """Workers are stopped by the driver's Drain and Exit."""
        self.exit.set()

    @property
    def running(self) -> bool:
        """True until the driver says exit."""
        return not self.exit.is_set()

    # -- messages --------------------------------------------------------------------

    def on_messages(self, src: int, msgs: list[Message]) -> None:
        """Handle a batch of (decoded) messages from process ``src``, in order.

        The common case, a call to a handler this worker has seen before, is handled
        right here (one arrival time for the whole batch); anything else goes
        through :meth:`on_message`.
        """
        handlers = self._handlers
        runtime = self.runtime
        deliver = runtime.deliver
        send = self.hub.send
        down = self.remote.down
        reply = self._reply
        life = self.remote.life(src)
        now = _now(self._loop)
        for msg in msgs:
            try:
                if msg.__class__ is not Call or runtime._stopping:
                    self.on_message(src, msg)
                    continue
                entry = handlers.get((msg.type_name, msg.method))
                if entry is None:
                    self.on_message(src, msg)
                    continue
                handler, decode, npos = entry
                try:
                    values = decode(msg.args)
                except msgspec.DecodeError:
                    self.on_message(src, msg)  # answers BadArguments naming the argument
                    continue
                key = (msg.type_name, msg.object_id)
                chain = msg.chain or (key,)
                try:
                    # plain: a turn that finishes at once gives its value, not a future
                    if len(values) == npos:
                        fut = deliver(
                            key, handler, values, _NO_KWARGS, chain, msg.deadline, now, True
                        )
                    else:
                        args, kwargs = handler.split_wire_args(values)
                        fut = deliver(key, handler, args, kwargs, chain, msg.deadline, now, True)
                except BaseException as e:  # a handler raising CancelledError at once, too
                    self._send_error(src, msg.req, e)
                    if not isinstance(e, Exception | asyncio.CancelledError):
                        raise
                    continue
                if not isinstance(fut, Future):  # the answer itself
                    if src not in down:
                        try:
                            send(src, (_REPLY, msg.req, True, fut))
                        except Exception as e:  # TypeError, EncodeError, OverflowError...
                            self._send_error(src, msg.req, self._unsendable(msg, e))
                elif fut.done():  # failed at once (or an awaitable answer, refused there)
                    reply(src, life, msg, fut)
                else:
                    fut.add_done_callback(partial(reply, src, life, msg))
            except Exception:  # one bad message must never stop this process reading
                logger.opt(exception=True).error(
                    "{}: handling a message from process {} failed", self.name, src
                )

    def on_message(self, src: int, msg: Message) -> None:
        """Dispatch one (decoded) message from process ``src``."""
        if isinstance(msg, Call):
            self._on_call(src, msg)
        elif isinstance(msg, Reply):
            self.remote.on_reply(msg)
        elif isinstance(msg, STREAM_MESSAGES):
            self.links.on_message(src, msg)
        elif isinstance(msg, Down):
            self.remote.peer_down(msg.index, msg.pid, msg.reason)
            self.links.peer_down(msg.index)
            self.hub.send(0, ResetDone(msg.index, msg.gen, self.me))
        elif isinstance(msg, Up):
            self.links.peer_up(msg.index)  # subscriptions first: held calls may publish
            self.remote.peer_up(msg.index)
        elif isinstance(msg, Drain):
            self._draining = asyncio.ensure_future(self._drain())
        elif isinstance(msg, Exit):
            self.exit.set()

    def _on_call(self, src: int, msg: Call) -> None:
        key = (msg.type_name, msg.object_id)
        try:
            if msg.method == DEACTIVATE:
                fut: asyncio.Future[Any] = asyncio.ensure_future(self.runtime.deactivate_key(key))
            elif msg.method == STATS:
                st = self.runtime.stats()
                fut = self._loop.create_future()
                fut.set_result([st.activations, st.by_type])
            else:
                entry = self._handlers.get((msg.type_name, msg.method))
                if entry is None:
                    handler = _lookup(msg.type_name, self.me).handler(msg.method)
                    decode = handler.args_decoder.decode  # BadArguments for *args handlers
                    self._handlers[(msg.type_name, msg.method)] = (
                        handler,
                        decode,
                        handler.n_positional,
                    )
                else:
                    handler = entry[0]
                args, kwargs = handler.split_wire_args(decode_args(handler, msg.args))
                chain = msg.chain or (key,)
                if len(chain) == 1 and self.runtime._stopping and self.link is None:
                    raise SystemStopping(
                        f"{self.name} is stopping: call to {key[0]}/{key[1]}.{msg.method}() refused"
                    )
                now = _now(self._loop)
                fut = self.runtime.deliver(key, handler, args, kwargs, chain, msg.deadline, now)
        except BaseException as e:  # a handler raising CancelledError at once lands here too
            self._send_error(src, msg.req, e)
            if not isinstance(e, Exception | asyncio.CancelledError):
                raise
            return
        life = self.remote.life(src)
        if fut.done():
            self._reply(src, life, msg, fut)
        else:
            fut.add_done_callback(partial(self._reply, src, life, msg))

    def _reply(self, src: int, life: int, msg: Call, fut: asyncio.Future[Any]) -> None:
        if src in self.remote.down or self.remote.life(src) != life:
            return  # the caller died; its replacement did not ask
        if fut.cancelled():
            self._send_error(src, msg.req, SystemStopping(f"{self.name}: the call was cancelled"))
            return
        exc = fut.exception()
        if exc is not None:
            self._send_error(src, msg.req, exc)
            return
        try:
            self.hub.send(src, (_REPLY, msg.req, True, fut.result()))  # a Reply
        except Exception as e:  # TypeError, EncodeError, OverflowError (an int > 64 bits)...
            self._send_error(src, msg.req, self._unsendable(msg, e))

    def _unsendable(self, msg: Call, e: Exception) -> RemoteError:
        return RemoteError(
            "msgspec.EncodeError",
            f"{msg.type_name}/{msg.object_id}.{msg.method}() returned a value that "
            f"cannot cross processes: {e}",
        )

    def _send_error(self, src: int, req: int, exc: BaseException) -> None:
        self.hub.send(src, (_REPLY, req, False, error_to_wire(exc)))

    async def _drain(self) -> None:
        link = self.link
        if link is not None:
            link.placement.draining = True
        await self.runtime.drain()
        if link is not None:
            await link.placement.flush()
        self.hub.send(0, Drained(self.me, self.runtime.stop_problems()))


def _lookup(type_name: str, me: int) -> ActorType:
    try:
        return lookup_type(type_name)
    except UnknownActorType as e:
        raise UnknownActorType(
            f"{e} (in worker {me}, which found actor classes by importing the modules "
            "that define them: a class defined inside a function or created at run "
            "time cannot be found there; define it at module level, or use workers=0)"
        ) from None


def _ring_corrupted(src: int) -> None:
    # What was shared with that process cannot be trusted: end this worker, so its
    # supervisor fails its calls with WorkerLost and starts it afresh on reset rings.
    logger.complete()
    os._exit(70)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the driver dies, however it dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


async def serve(cfg: WorkerConfig, problems: list[str] | None = None) -> None:
    """Run one worker until the driver says exit (or dies)."""
    loop = asyncio.get_running_loop()
    # The driver holds the write end of this pipe and never writes: EOF means it died.
    loop.add_reader(cfg.lifeline, os._exit, 0)
    if os.getppid() == 1:  # the driver died before we got here
        os._exit(0)
    fabric = Fabric(cfg.nworkers + 1, cfg.capacity, fd=cfg.fabric_fd)
    app = cfg.app
    storage = storage_from_url(app.storage)
    runtime = Runtime(
        storage,
        types=None if app.types is None else set(app.types),
        default_timeout=app.default_timeout,
        drain_timeout=app.drain_timeout,
        idle_ttl=app.idle_ttl,
        name=f"{app.name}/worker-{cfg.index}",
        # The driver fires reminders kept in shared storage; memory is each worker's own.
        reminder_poll=app.reminder_poll if storage.process_local else None,
        max_queued=app.max_queued,
    )
    system = WorkerSystem(cfg, runtime, fabric)
    system.hub.start()
    try:
        await runtime.start()
        if cfg.cluster is not None:
            from rio.cluster.node import ClusterLink

            table = dict(app.placement)
            default = cfg.cluster.placement
            link = ClusterLink(
                cfg.cluster,
                cfg.member_id,
                lambda t: table.get(t, default),
                system.local_route,
                f"{cfg.member_id}/worker-{cfg.index}",
                app.max_queued,
            )
            link.attach_streams(runtime.streams)  # subscribers here reach other nodes
            await link.start()
            runtime.placement = link.placement
            system.link = link
    except Exception as e:  # tell the driver why, then wait to be stopped
        system.hub.send(0, Ready(cfg.index, cfg.gen, os.getpid(), error=error_to_wire(e)))
        await system.exit.wait()
        return
    set_default_system(system)
    system.hub.send(0, Ready(cfg.index, cfg.gen, os.getpid(), problems or []))
    await system.exit.wait()
    await runtime.drain()
    if system.link is not None:
        await system.link.stop()
    await runtime.close()
    system.hub.close()


def _left_to_the_driver(signum: int, frame: object) -> None:
    """A stop signal sent to a worker: the driver stops the workers (see :func:`main`)."""


def main() -> None:
    """Entry point of ``python -m rio.local.worker``."""
    _die_with_parent()
    # The driver decides when to stop: a terminal's Ctrl-C, and a service manager's
    # SIGTERM to every process of the app (systemd's default), are for it alone. The
    # worker still dies with it (the lifeline pipe, the parent-death signal). A handler
    # that does nothing, not SIG_IGN: an ignored signal stays ignored in the programs
    # an actor starts (subprocess.Popen...), whose terminate() would then do nothing.
    signal.signal(signal.SIGINT, _left_to_the_driver)
    signal.signal(signal.SIGTERM, _left_to_the_driver)
    from rio.core.logs import configure_logging

    configure_logging()  # as the driver was told (RIO_LOG_LEVEL), if it was
    cfg = msgspec.json.decode(os.environ.pop("RIO_WORKER_CONFIG"), type=WorkerConfig)
    sys.path[:] = cfg.sys_path
    sys.argv[:] = cfg.argv  # module-level code of the user's script may read it
    problems = import_modules(cfg.modules)
    from rio.app import run

    run(serve(cfg, problems))


if __name__ == "__main__":
    main()
