"""The driver's side of a worker pool: start, route to, supervise and stop N workers.

Placement on one box is a stable hash of ``(type, id)`` (:func:`owner_of`), computed
the same in every process, so any process routes a call with no lookup.

Supervision. Each worker is watched through a pidfd, so its death is seen at once
(kill -9, segfault, ``os._exit``, the OOM killer). Calls in flight to it fail with
:class:`rio.WorkerLost`; every other process is told to forget its rings with the
dead one; then a new worker takes the same index, and calls made meanwhile wait for
it (within their deadlines). Workers die with the driver: each holds the read end of
a pipe whose write end only the driver has, and asks the kernel for SIGKILL when its
parent dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from threading import get_ident
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from rio.core.context import CALLER_DEADLINE
from rio.core.errors import ConfigError, RioError, SystemStopping, WorkerLost, error_from_wire
from rio.core.registry import Handler
from rio.core.reminders import Reminders
from rio.core.streams import Streams
from rio.core.system import System, key_of
from rio.local.config import AppSettings, WorkerConfig, actor_modules, owner_of
from rio.local.protocol import (
    STREAM_MESSAGES,
    Down,
    Drain,
    Drained,
    Exit,
    Message,
    Ready,
    Reply,
    ResetDone,
    Up,
    encode,
)
from rio.local.remote import RemoteCalls
from rio.local.streams import StreamLinks
from rio.local.transport import DEFAULT_CAPACITY, Fabric, Hub
from rio.local.worker import DEACTIVATE
from rio.storage import storage_from_url

if TYPE_CHECKING:
    from rio.app import App
    from rio.cluster.node import PoolNode
    from rio.cluster.settings import ClusterSettings

__all__ = ["PoolStats", "PoolSystem"]

START_TIMEOUT = 60.0
#: A worker that dies again within this many seconds of starting is restarted after
#: a backoff that doubles each time (0.5 s up to 30 s): one object that crashes its
#: worker whenever it activates must not make the pool restart workers in a loop.
CRASH_WINDOW = 10.0
#: Keys whose owning worker the driver remembers (the cache is emptied when full).
OWNER_CACHE = 1 << 16


class PoolStats(msgspec.Struct, frozen=True):
    """A snapshot of a worker pool."""

    workers: int
    #: Each worker's pid, 0 while it is dead or restarting.
    pids: list[int]
    restarts: int
    #: Calls from this process not answered yet (``queued`` included).
    in_flight: int
    #: Pub/sub streams this process subscribes to.
    streams: int = 0
    #: Subscriptions in this process.
    subscribers: int = 0
    #: Relays this node keeps for subscribers on other cluster nodes.
    relays: int = 0
    #: Calls from this process waiting to be sent: for their turn while their object
    #: (or worker) has as many in flight as it may take, or for a worker that restarts.
    queued: int = 0


class _Worker:
    __slots__ = (
        "early_deaths",
        "exited",
        "gen",
        "index",
        "pidfd",
        "proc",
        "ready",
        "restarting",
        "started",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.gen = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.pidfd = -1
        self.ready: asyncio.Future[Ready] | None = None
        self.exited = asyncio.Event()
        self.restarting = False
        self.started = 0.0  # monotonic time of its last spawn
        self.early_deaths = 0  # deaths in a row within CRASH_WINDOW of starting


class PoolSystem(System):
    """Actors in N worker processes; this process (the driver) only calls them.

    Built by :class:`rio.App` when ``workers`` is 1 or more.
    """

    def __init__(
        self,
        app: App,
        workers: int,
        *,
        capacity: int = DEFAULT_CAPACITY,
        spin: float = 0.0002,
        recheck: float = 0.02,
        cluster: ClusterSettings | None = None,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"a worker pool needs at least one worker, got {workers}")
        storage = app.storage_spec
        if storage is not None and not isinstance(storage, str):
            raise ConfigError(
                "worker processes open storage from a URL: pass storage='sqlite:///…' "
                "(or another URL) instead of a StateStorage object, or use workers=0"
            )
        self.app = app
        self.name = app.name
        self.default_timeout = app.default_timeout
        self.n = workers
        self.capacity = capacity
        self.spin = spin
        self.recheck = recheck
        self._settings = AppSettings(
            name=app.name,
            storage=storage or app.default_storage_url(),
            types=None if app.actors is None else [a.name for a in app.actors],
            default_timeout=app.default_timeout,
            drain_timeout=app.drain_timeout,
            idle_ttl=app.idle_ttl,
            placement=app.placement,
            reminder_poll=app.reminder_poll,
            max_queued=app.max_queued,
        )
        self.cluster = cluster.resolved() if cluster is not None else None
        self.node: PoolNode | None = None
        self._workers = [_Worker(i) for i in range(1, workers + 1)]
        self._started = False
        self._stopping = False
        self._restarts = 0
        self._restart_lock: asyncio.Lock | None = None
        self._resets: dict[tuple[int, int], set[int]] = {}
        self._reset_events: dict[tuple[int, int], asyncio.Event] = {}
        self._drained: dict[int, asyncio.Event] = {}
        #: Workers that died while the pool stopped, before they drained.
        self.lost_drains = 0
        self._stop_problems: list[str] = []
        self._tasks: set[asyncio.Future[None]] = set()
        self.streams = Streams(app.name, app.default_timeout)
        #: Fires the durable reminders (storage shared with the workers, opened here
        #: for this alone); None when the storage is each worker's own (memory).
        self.reminders: Reminders | None = None
        self._owners: dict[tuple[str, str], int] = {}

    # -- start -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until each serves."""
        self._modules = actor_modules()
        interactive = [n for n, path in self._modules if n == "__main__" and path is None]
        if interactive:
            raise ConfigError(
                f"{self.name}: actor classes defined interactively (a REPL or notebook) "
                "cannot run in worker processes, which import them from a file: put them "
                "in a module, or use App(workers=0)"
            )
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._restart_lock = asyncio.Lock()
        nprocs = self.n + 1
        self.fabric = Fabric(nprocs, self.capacity)
        self.fabric.reset_all()
        self.doorbells = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(nprocs)]
        self._lifeline_r, self._lifeline_w = os.pipe()
        self.hub = Hub(
            self.fabric,
            0,
            self.doorbells,
            self._on_messages,
            spin=self.spin,
            recheck=self.recheck,
            on_corrupt=self._ring_corrupted,
        )
        self.remote = RemoteCalls(self.hub, self.name, self.app.max_queued)
        self.links = StreamLinks(self.streams, self.hub, 0, self.n, self.remote.is_down, self.name)
        self.hub.start()
        self.streams.start()
        try:
            if self.cluster is not None:
                from rio.cluster.node import PoolNode

                self.node = PoolNode(self, self.cluster)
                await self.node.join()
            for w in self._workers:
                self._spawn(w)
            async with asyncio.timeout(START_TIMEOUT):
                for w in self._workers:
                    assert w.ready is not None
                    ready = await w.ready
                    if ready.error is not None:
                        raise error_from_wire(ready.error)
                    if ready.problems:
                        raise ConfigError(
                            f"{self.name}: worker {w.index} cannot load your actor classes: "
                            + "; ".join(ready.problems)
                        )
            if self.node is not None:  # after its join grace: a stop meanwhile undoes all
                await self.node.activate()
        except BaseException:
            self._stopping = True  # no restarts: this pool never served
            for w in self._workers:  # the first failure is raised; the rest are moot
                if w.ready is not None:
                    if w.ready.done() and not w.ready.cancelled():
                        w.ready.exception()
                    else:
                        w.ready.cancel()
            await self._kill_all()
            if self.node is not None:
                await self.node.abort()
            self._close_fds()
            raise
        self._started = True
        for w in self._workers:
            # Died after its Ready, while start() still waited (for others, for the
            # node): supervision was not on yet, so it takes over now.
            if w.proc is not None and w.proc.poll() is not None:
                self._on_exit(w, w.gen)
        try:
            await self._start_reminders()
        except BaseException:
            await self.stop()
            raise
        logger.debug("{}: {} workers serving", self.name, self.n)

    async def _start_reminders(self) -> None:
        storage = storage_from_url(self._settings.storage)
        if storage.process_local:
            return  # each worker fires the reminders of its own memory
        await storage.open()
        self.reminders = Reminders(
            storage,
            self,
            poll=self.app.reminder_poll,
            timeout=self.default_timeout,
            name=self.name,
        )
        self.reminders.start()

    def _spawn(self, w: _Worker) -> None:
        w.gen += 1
        w.started = time.monotonic()
        cfg = WorkerConfig(
            index=w.index,
            gen=w.gen,
            nworkers=self.n,
            fabric_fd=self.fabric.fd,
            capacity=self.capacity,
            doorbells=self.doorbells,
            lifeline=self._lifeline_r,
            modules=self._modules,
            sys_path=list(sys.path),
            argv=list(sys.argv),
            app=self._settings,
            spin=self.spin,
            recheck=self.recheck,
            cluster=self.cluster,
            member_id=self.node.member_id if self.node is not None else "",
        )
        env = dict(os.environ)
        env["RIO_WORKER_CONFIG"] = msgspec.json.encode(cfg).decode()
        env["RIO_WORKER_INDEX"] = str(w.index)
        w.ready = self._loop.create_future()
        w.exited = asyncio.Event()
        w.proc = subprocess.Popen(
            # -P: the working folder does not go first on sys.path, so a user file
            # named like a module (rio.py, json.py) cannot shadow it in the worker.
            [sys.executable, "-P", "-m", "rio.local.worker"],
            pass_fds=[self.fabric.fd, self._lifeline_r, *self.doorbells],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C reaches the driver only
        )
        w.pidfd = os.pidfd_open(w.proc.pid)
        self._loop.add_reader(w.pidfd, partial(self._on_exit, w, w.gen))

    # -- calls -------------------------------------------------------------------------

    def call(
        self,
        key: tuple[str, str],
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """Send a call to the worker that owns ``key``."""
        if get_ident() != self._thread_id:
            return self.call_from_thread(self._loop, key, handler, args, kwargs, timeout)
        if self._stopping or not self._started:
            raise SystemStopping(
                f"{self.name} is {'stopping' if self._stopping else 'not started'}: call to "
                f"{key[0]}/{key[1]}.{handler.name}() refused"
            )
        args, kwargs = handler.check(args, kwargs)
        now = self._loop.time()
        deadline = now + (timeout or self.default_timeout)  # fresh_deadline(), inlined
        outer = CALLER_DEADLINE.get()
        if outer is not None and outer < deadline:
            deadline = outer
        if self.node is not None:
            return self.node.link.router.call(key, handler, args, kwargs, (key,), deadline, now)
        dst = self._owners.get(key)
        if dst is None:
            dst = self._owner(key)
        if kwargs or len(args) != len(handler.param_names) or not handler.wire_ok:
            return self.remote.call(dst, key, handler, args, kwargs, (key,), deadline, now)
        return self.remote.send(dst, key, handler, args, (key,), deadline, now)

    def _owner(self, key: tuple[str, str]) -> int:
        """``owner_of(key)``, remembered (up to :data:`OWNER_CACHE` keys)."""
        owners = self._owners
        if len(owners) >= OWNER_CACHE:
            owners.clear()
        dst = owners[key] = owner_of(key, self.n)
        return dst

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
        """Run a call in the worker of this box that owns ``key``."""
        return self.remote.call(
            owner_of(key, self.n), key, handler, args, kwargs, chain, deadline, now
        )

    async def deactivate(self, actor: Any, object_id: Any = None) -> bool:
        """Deactivate one actor (in whichever worker hosts it) after its current turn."""
        key = key_of(actor, object_id)
        if self.node is not None:
            return await self.node.deactivate(key)
        return await self.deactivate_here(key)

    async def deactivate_here(self, key: tuple[str, str]) -> bool:
        """Deactivate ``key`` if a worker of this box hosts it."""
        handler = Handler(owner=key[0], name=DEACTIVATE, fn=_deactivate_stub, reentrant=True)
        handler.prepare()
        now = self._loop.time()
        dst = owner_of(key, self.n)
        result = await self.remote.call(
            dst, key, handler, (), {}, (key,), now + self.default_timeout, now
        )
        return bool(result)

    def stats(self) -> PoolStats:
        """Workers, their pids, restarts so far, calls in flight from this process."""
        # 0 while a worker is dead or restarting: its last pid names no process.
        pids = [
            w.proc.pid
            if w.proc is not None and not w.restarting and not self.remote.is_down(i)
            else 0
            for i, w in enumerate(self._workers, 1)
        ]
        streams, subscribers = self.streams.stats()
        relays = len(self.node.relays) if self.node is not None else 0
        return PoolStats(
            self.n,
            pids,
            self._restarts,
            len(self.remote),
            streams,
            subscribers,
            relays,
            self.remote.waiting(),
        )

    @property
    def running(self) -> bool:
        """True between start and stop."""
        return self._started and not self._stopping

    def worker_pid(self, index: int) -> int:
        """The pid of worker ``index`` (1-based), for tests and operators."""
        proc = self._workers[index - 1].proc
        return proc.pid if proc is not None else 0

    def owner(self, key: tuple[str, str]) -> int:
        """The worker index that owns ``key``."""
        return owner_of(key, self.n)

    # -- messages ----------------------------------------------------------------------

    def _on_messages(self, src: int, msgs: list[Message]) -> None:
        self.remote.on_messages(msgs, partial(self._on_message, src))

    def _on_message(self, src: int, msg: Message) -> None:
        if isinstance(msg, Reply):
            self.remote.on_reply(msg)
        elif isinstance(msg, STREAM_MESSAGES):
            self.links.on_message(src, msg)
        elif isinstance(msg, Ready):
            w = self._workers[msg.index - 1]
            if msg.gen == w.gen and w.ready is not None and not w.ready.done():
                w.ready.set_result(msg)
        elif isinstance(msg, ResetDone):
            done = self._resets.get((msg.index, msg.gen))
            if done is not None:
                done.add(msg.by)
                self._recheck_resets()
        elif isinstance(msg, Drained):
            self._stop_problems.extend(f"worker {msg.index}: {p}" for p in msg.problems)
            ev = self._drained.get(msg.index)
            if ev is not None:
                ev.set()

    def _recheck_resets(self) -> None:
        """Let each restart go on once every live worker confirmed forgetting the dead one."""
        for key, done in self._resets.items():
            if done >= self._live_except(key[0]):
                self._reset_events[key].set()

    def _live_except(self, index: int) -> set[int]:
        return {
            w.index for w in self._workers if w.index != index and not self.remote.is_down(w.index)
        }

    def _broadcast(self, msg: Any, *, skip: int = 0) -> None:
        data = encode(msg)
        for w in self._workers:
            if w.index != skip and not self.remote.is_down(w.index):
                self.hub.send_encoded(w.index, data)

    # -- supervision -------------------------------------------------------------------

    def _on_exit(self, w: _Worker, gen: int) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(w.pidfd)
        with contextlib.suppress(OSError):
            os.close(w.pidfd)
        w.pidfd = -1
        proc = w.proc
        assert proc is not None
        code = proc.wait()
        w.exited.set()
        reason = _describe_exit(code)
        if w.ready is not None and not w.ready.done():
            w.ready.set_exception(
                WorkerLost(f"worker {w.index} (pid {proc.pid}) {reason} while starting")
            )
        if not self._started or gen != w.gen or w.restarting:
            return  # a failed start: start() or the restart loop handles it
        if self._stopping:
            # Dying while the pool stops: fail its calls and stop waiting for its drain.
            self.remote.peer_down(w.index, proc.pid, reason)
            self.links.peer_down(w.index)
            self._recheck_resets()
            drained = self._drained.get(w.index)
            if drained is None or not drained.is_set():
                # Not asked to drain yet, or asked and not done: its turns in flight and
                # unsaved state are lost, and the operator must hear of it.
                logger.error(
                    "{}: worker {} (pid {}) {} while the pool stopped, before it drained: "
                    "its turns in flight and state not saved yet are lost",
                    self.name,
                    w.index,
                    proc.pid,
                    reason,
                )
                self.lost_drains += 1
                self._stop_problems.append(f"worker {w.index} {reason} before it drained")
            if drained is not None:
                drained.set()
            return
        logger.error(
            "{}: worker {} (pid {}) {}; restarting it", self.name, w.index, proc.pid, reason
        )
        self.remote.peer_down(w.index, proc.pid, reason)
        self.links.peer_down(w.index)
        self._recheck_resets()  # a worker that was still to confirm a reset never will
        w.restarting = True
        task = asyncio.ensure_future(self._restart(w, proc.pid, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self, w: _Worker, pid: int, reason: str) -> None:
        """Bring worker ``w`` back: others forget it, then new processes until one serves.

        A worker that keeps failing to start, or dies again within
        :data:`CRASH_WINDOW` of starting, is retried with exponential backoff (up to
        30 s); calls to it wait meanwhile, each within its own deadline.
        """
        lock = self._restart_lock
        assert lock is not None
        try:
            async with lock:
                if self._stopping:
                    return
                await self._forget(w, pid, reason)
            ran = time.monotonic() - w.started
            w.early_deaths = w.early_deaths + 1 if ran < CRASH_WINDOW else 0
            # The first at once (a kill -9 is no crash loop), then 0.5 s, 1 s... 30 s.
            delay = min(30.0, 0.5 * 2 ** (w.early_deaths - 2)) if w.early_deaths > 1 else 0.0
            if delay:
                logger.error(
                    "{}: worker {} died {:.1f}s after it started; restarting it in {:.1f}s "
                    "(an object that crashes its worker as it activates keeps doing so)",
                    self.name,
                    w.index,
                    ran,
                    delay,
                )
            while not self._stopping:
                if delay:  # backing off: other workers restart meanwhile
                    await asyncio.sleep(delay)
                    if self._stopping:
                        return
                async with lock:
                    self._restarts += 1
                    self._spawn(w)
                    assert w.ready is not None
                    try:
                        async with asyncio.timeout(START_TIMEOUT):
                            ready = await w.ready
                        if ready.error is not None:
                            raise error_from_wire(ready.error)
                        if ready.problems:
                            raise ConfigError("; ".join(ready.problems))
                    except (TimeoutError, RioError) as e:
                        delay = min(30.0, max(0.5, delay * 2))
                        logger.error(
                            "{}: worker {} did not restart ({}: {}); retrying in {:.1f}s",
                            self.name,
                            w.index,
                            type(e).__name__,
                            e,
                            delay,
                        )
                        await self._kill(w)
                        continue
                    if self._stopping:
                        return
                    assert w.proc is not None
                    if w.proc.poll() is not None:  # died right after its Ready
                        delay = min(30.0, max(0.5, delay * 2))
                        logger.error(
                            "{}: worker {} exited as it started ({}); retrying in {:.1f}s",
                            self.name,
                            w.index,
                            _describe_exit(w.proc.returncode),
                            delay,
                        )
                        continue
                    # Workers that died while this one was down (or back off still)
                    # were forgotten by the others, not by this new process: it forgets
                    # them now. None of them runs (they spawn under this lock, later).
                    for other in self._workers:
                        if other is not w and self.remote.is_down(other.index):
                            gone = other.proc.pid if other.proc is not None else 0
                            down = Down(other.index, other.gen, gone, "it is restarting")
                            self.hub.send(w.index, down)
                    self.links.peer_up(w.index)  # subscriptions first: held calls may publish
                    self.remote.peer_up(w.index)
                    self._broadcast(Up(w.index, w.gen, ready.pid), skip=w.index)
                    logger.info(
                        "{}: worker {} serves again (pid {})", self.name, w.index, ready.pid
                    )
                    return
        finally:
            w.restarting = False

    async def _forget(self, w: _Worker, pid: int, reason: str) -> None:
        """Have every other worker fail its calls to ``w`` and reset its rings with it."""
        key = (w.index, w.gen)
        others = self._live_except(w.index)
        self._resets[key] = set()
        ev = self._reset_events[key] = asyncio.Event()
        try:
            if others:
                self._broadcast(Down(w.index, w.gen, pid, reason), skip=w.index)
                try:
                    async with asyncio.timeout(10.0):
                        await ev.wait()
                except TimeoutError:
                    logger.warning(
                        "{}: workers {} did not confirm forgetting worker {}; restarting anyway",
                        self.name,
                        sorted(others - self._resets[key]),
                        w.index,
                    )
        finally:
            del self._resets[key], self._reset_events[key]

    def _ring_corrupted(self, index: int) -> None:
        # The ring from that worker cannot be read: restart it (supervision resets it).
        w = self._workers[index - 1]
        if w.proc is not None and w.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGKILL)

    async def _kill(self, w: _Worker) -> None:
        if w.proc is not None and w.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGKILL)
            await self._loop.run_in_executor(None, w.proc.wait)

    # -- stop --------------------------------------------------------------------------

    def stop_problems(self) -> list[str]:
        """See :meth:`rio.System.stop_problems`."""
        return list(self._stop_problems)

    async def stop(self) -> None:
        """Drain every worker (turns finish, hooks run, state saved), then stop them."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        reminders = self.reminders
        if reminders is not None:
            reminders.halt()  # no new firings; those in flight land during the drain
        if self.node is not None:
            await self.node.drain()
        for task in list(self._tasks):  # a restart in progress stops here
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        live = [w for w in self._workers if not self.remote.is_down(w.index)]
        self._drained = {w.index: asyncio.Event() for w in live}
        for w in live:
            self.hub.send(w.index, Drain())
        try:
            async with asyncio.timeout(self.app.drain_timeout + 5.0):
                for w in live:
                    await self._drained[w.index].wait()
        except TimeoutError:
            logger.warning("{}: workers did not drain in time; stopping them", self.name)
            self._stop_problems.append("workers did not drain in time: stopped")
        if reminders is not None:  # their turns ran: reschedule them
            await reminders.stop(5.0)
        if self.node is not None:
            await self.node.leave()
        self.streams.close()  # after the drain: events of on_deactivate hooks got through
        for w in self._workers:  # every live process, restarted or not
            if w.proc is not None and w.proc.poll() is None:
                self.hub.send(w.index, Exit())
        try:
            async with asyncio.timeout(5.0):
                for w in self._workers:
                    if w.proc is not None and w.pidfd >= 0:
                        await w.exited.wait()
        except TimeoutError:
            logger.warning("{}: workers did not exit in time; killing them", self.name)
        await self._kill_all()
        self.remote.fail_all(lambda: SystemStopping(f"{self.name} stopped"))
        if self.node is not None:
            await self.node.close()
        if reminders is not None:
            await reminders.storage.close()
        self._close_fds()

    async def _kill_all(self) -> None:
        for w in self._workers:
            if w.proc is not None and w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGKILL)
                await asyncio.get_running_loop().run_in_executor(None, w.proc.wait)

    def _close_fds(self) -> None:
        self.hub.close()
        for w in self._workers:
            if w.pidfd >= 0:
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_reader(w.pidfd)
                with contextlib.suppress(OSError):
                    os.close(w.pidfd)
                w.pidfd = -1
        for fd in (*self.doorbells, self._lifeline_r, self._lifeline_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fabric.close()


async def _deactivate_stub(self: Any) -> bool:  # pragma: no cover - never called
    """Stands for the built-in deactivate call (its annotations type the reply)."""
    return False


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"
