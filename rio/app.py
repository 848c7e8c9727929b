"""The application object: which actors, which storage, which settings; and running it."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import numbers
import os
import signal
import tomllib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from loguru import logger

from rio.cluster.settings import ClusterSettings
from rio.core.actor import Actor
from rio.core.context import reset_system, set_default_system, system_token
from rio.core.errors import ConfigError
from rio.core.registry import actor_type, all_types
from rio.core.runtime import MAX_QUEUED, Runtime, check_max_queued
from rio.core.system import System
from rio.storage import StateStorage, check_storage_url, storage_from_url

__all__ = ["App", "default_data_dir", "run"]

T = TypeVar("T")
MainFn = Callable[[], Awaitable[Any]]

_APP_KEYS = {
    "name",
    "storage",
    "data_dir",
    "actors",
    "default_timeout",
    "drain_timeout",
    "workers",
    "reminder_poll",
    "max_queued",
}


def default_data_dir() -> Path:
    """Where the embedded default keeps its files: ``$RIO_DATA_DIR`` or ``./.rio``."""
    return Path(os.environ.get("RIO_DATA_DIR") or ".rio")


class App:
    """An application: registered actor types, state storage and settings.

    ``async with app as system`` starts it in the running event loop;
    :meth:`run` (or ``rio run file.py``) starts it, runs its ``main`` if it has one,
    otherwise serves until SIGINT/SIGTERM, then drains.

    Args:
        name: the app's name (logs, default database file name).
        actors: the actor classes this app hosts; None hosts every ``rio.Actor``
            subclass defined in the process.
        storage: a storage URL (``sqlite:///path.db``, ``memory://``, …) or a
            :class:`StateStorage`. Default: SQLite at ``<data_dir>/<name>.db``.
        data_dir: folder for the embedded default (default ``$RIO_DATA_DIR`` or ``.rio``).
        default_timeout: seconds a call may take unless the caller says otherwise.
        drain_timeout: seconds a stop waits for turns, hooks and saves to finish.
        actor_options: per-type overrides by type name, e.g. ``{"Counter": {"idle_ttl": 60}}``
            or ``{"Counter": {"placement": "random"}}`` (a cluster's placement strategy).
        workers: worker processes hosting the actors. None (default): one per core
            (``$RIO_WORKERS`` overrides); 0 keeps every actor in this process, with
            no processes and no serialization at all.
        cluster: make this process a node of a cluster (:class:`rio.ClusterSettings`:
            the membership URL, secret, listen address...); None runs alone.
        reminder_poll: seconds between two reads of the due durable reminders
            (default 1): how late a reminder may fire, and how often the storage is
            asked.
        max_queued: calls that may wait before more are refused with
            :class:`rio.Overloaded` (default 100,000): in one activation's mailbox,
            in a process for their turn to go to another worker (at most 10,000
            calls from one process are in flight to one object), or for a placement
            or connection in a cluster. A program with fewer calls outstanding
            never reaches it; it bounds the memory of callers that start calls
            without awaiting them.

    Example::

        app = rio.App("bank", storage="sqlite:///bank.db")

        @app.main
        async def main() -> None:
            print(await Account.ref("alice").deposit(10))

        if __name__ == "__main__":
            app.run()
    """

    def __init__(
        self,
        name: str = "rio",
        *,
        actors: Iterable[type[Actor[Any]]] | None = None,
        storage: str | StateStorage | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        default_timeout: float = 30.0,
        drain_timeout: float = 30.0,
        actor_options: dict[str, dict[str, Any]] | None = None,
        workers: int | None = None,
        cluster: ClusterSettings | None = None,
        reminder_poll: float = 1.0,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise ConfigError(f"app name {name!r}: use letters, digits, '-', '_' or '.'")
        for setting, value, finite in (
            ("default_timeout", default_timeout, False),  # inf: no deadline
            ("drain_timeout", drain_timeout, False),
            ("reminder_poll", reminder_poll, True),  # a period
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not value > 0
                or (finite and math.isinf(value))
            ):
                raise ConfigError(f"{setting} must be positive seconds, got {value!r}")
        check_max_queued(max_queued)
        self.name = name
        self.actors = None if actors is None else [actor_type(a) for a in actors]
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        if isinstance(storage, str):
            check_storage_url(storage)  # a mistyped URL is refused here, not in each worker
        self.storage_spec = storage
        self.default_timeout = float(default_timeout)
        self.drain_timeout = float(drain_timeout)
        self.reminder_poll = float(reminder_poll)
        self.max_queued = max_queued
        self.idle_ttl: dict[str, float | None] = {}
        self.placement: dict[str, str] = {}
        for type_name, opts in (actor_options or {}).items():
            unknown = set(opts) - {"idle_ttl", "placement"}
            if unknown:
                raise ConfigError(
                    f"actor_options[{type_name!r}]: unknown option(s) "
                    f"{', '.join(sorted(unknown))}; known: idle_ttl, placement"
                )
            if "placement" in opts:
                from rio.cluster.settings import STRATEGIES

                if opts["placement"] not in STRATEGIES:
                    raise ConfigError(
                        f"actor_options[{type_name!r}].placement: unknown strategy "
                        f"{opts['placement']!r}; known: {', '.join(STRATEGIES)}"
                    )
                self.placement[type_name] = opts["placement"]
            if "idle_ttl" in opts:
                ttl = opts["idle_ttl"]
                if ttl is not None and (not isinstance(ttl, int | float) or ttl <= 0):
                    raise ConfigError(
                        f"actor_options[{type_name!r}].idle_ttl must be positive seconds "
                        f"or None, got {ttl!r}"
                    )
                self.idle_ttl[type_name] = None if ttl is None else float(ttl)
        #: A bad ``RIO_WORKERS``, raised at start unless ``configure(workers=...)``
        #: (``rio run --workers``) overrides it first.
        self._workers_error: ConfigError | None = None
        try:
            self.workers = _workers_setting(workers)
        except ConfigError as e:
            if workers is not None:
                raise
            self._workers_error, self.workers = e, _usable_cpus()
        self.cluster = cluster
        self._main: MainFn | None = None
        self._system: System | None = None
        self._token: Any = None
        #: What the last :meth:`stop` cut short or lost (see ``System.stop_problems``);
        #: ``rio run`` exits 1 when it is not empty.
        self.stop_problems: list[str] = []

    # -- building ------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> App:
        """Build an app from a TOML file.

        Example file::

            [app]
            name = "bank"
            storage = "sqlite:///data/bank.db"
            actors = ["examples.bank:Account"]   # import paths; omit to host all
            default_timeout = 10

            [actors.Account]
            idle_ttl = 120        # or "never"
            placement = "random"  # in a cluster

            [cluster]             # optional: run as a cluster node
            url = "redis://db:6379/0"
            port = 7000
            probe_period = 1.0    # any rio.ClusterSettings field
        """
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {str(p)!r} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {e}") from e
        unknown_top = set(raw) - {"app", "actors", "cluster"}
        if unknown_top:
            raise ConfigError(
                f"{p}: unknown section(s) {', '.join(sorted(unknown_top))}; "
                "known: app, actors, cluster"
            )
        cluster = None
        if "cluster" in raw:
            try:
                cluster = msgspec.convert(raw["cluster"], ClusterSettings)
            except msgspec.ValidationError as e:
                raise ConfigError(f"{p} [cluster]: {e}") from None
        app_cfg = dict(raw.get("app", {}))
        unknown = set(app_cfg) - _APP_KEYS
        if unknown:
            raise ConfigError(
                f"{p} [app]: unknown key(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(_APP_KEYS))}"
            )
        actor_paths = app_cfg.pop("actors", None)
        actors = None
        if actor_paths is not None:
            if not isinstance(actor_paths, list):
                raise ConfigError(f"{p} [app].actors must be a list of 'module:Class' strings")
            actors = [_import_actor(s, p) for s in actor_paths]
        options: dict[str, dict[str, Any]] = {}
        for type_name, opts in dict(raw.get("actors", {})).items():
            if not isinstance(opts, dict):
                raise ConfigError(f"{p} [actors.{type_name}] must be a table")
            opts = dict(opts)
            if opts.get("idle_ttl") == "never":
                opts["idle_ttl"] = None
            options[type_name] = opts
        if "data_dir" in app_cfg:
            app_cfg["data_dir"] = str((p.parent / app_cfg["data_dir"]).resolve())
        try:
            return cls(actors=actors, actor_options=options, cluster=cluster, **app_cfg)
        except TypeError as e:
            raise ConfigError(f"{p} [app]: {e}") from e
        except ConfigError as e:
            raise ConfigError(f"{p} [app]: {e}") from None

    def main(self, fn: MainFn) -> MainFn:
        """Decorate the coroutine function that :meth:`run` runs once started."""
        self._main = fn
        return fn

    # -- running -------------------------------------------------------------------------

    def default_storage_url(self) -> str:
        """The embedded default: SQLite at ``<data_dir>/<name>.db``."""
        return f"sqlite:///{(self.data_dir / (self.name + '.db')).absolute()}"

    def make_storage(self) -> StateStorage:
        """The storage engine this app uses (not yet opened)."""
        spec = self.storage_spec
        if isinstance(spec, StateStorage):
            return spec
        return storage_from_url(spec if spec is not None else self.default_storage_url())

    def make_runtime(self, *, poll_reminders: bool = True) -> Runtime:
        """A fresh, unstarted in-process runtime configured from this app.

        With ``poll_reminders`` it fires the storage's durable reminders while it runs.
        """
        return Runtime(
            self.make_storage(),
            types=None if self.actors is None else {a.name for a in self.actors},
            default_timeout=self.default_timeout,
            drain_timeout=self.drain_timeout,
            idle_ttl=self.idle_ttl,
            name=self.name,
            reminder_poll=self.reminder_poll if poll_reminders else None,
            max_queued=self.max_queued,
        )

    @property
    def system(self) -> System | None:
        """The running system, or None."""
        return self._system

    async def start(self) -> System:
        """Start the app in the running event loop and return its system.

        With ``workers`` >= 1 that is a pool of worker processes; with 0, the
        in-process runtime.
        """
        if self._system is not None:
            raise ConfigError(f"app {self.name!r} is already running")
        if self._workers_error is not None:
            raise self._workers_error
        if os.environ.get("RIO_WORKER_INDEX"):
            raise ConfigError(
                f"app {self.name!r} was started inside rio worker process "
                f"{os.environ['RIO_WORKER_INDEX']}: a worker imports your script to find "
                'its actor classes, so start the app under `if __name__ == "__main__":`'
            )
        self._check_actor_options()
        system: System
        if self.workers:
            from rio.local.pool import PoolSystem

            system = PoolSystem(self, self.workers, cluster=self.cluster)
        elif self.cluster is not None:
            from rio.cluster.node import ClusterNode

            system = ClusterNode(self, self.cluster)
        else:
            system = self.make_runtime()
        await system.start()
        self._system = system
        self._token = system_token(system)
        set_default_system(system)
        return system

    def _check_actor_options(self) -> None:
        """Refuse options for a type no actor class registered (a typo would be ignored)."""
        known = set(all_types())  # a placement may be for a type hosted elsewhere
        for type_name in {*self.idle_ttl, *self.placement}:
            if type_name not in known:
                raise ConfigError(
                    f"actor_options names actor type {type_name!r}, which this app has "
                    f"no class for (known: {', '.join(sorted(known)) or 'none'}); use the "
                    "type's name, its class name unless it sets name="
                )

    async def stop(self) -> None:
        """Drain and stop the running system (no-op when not running)."""
        system, self._system = self._system, None
        if system is None:
            return
        try:
            await system.stop()
            self.stop_problems = system.stop_problems()
        finally:
            with contextlib.suppress(ValueError):  # reset from another context: leave it
                reset_system(self._token)
            set_default_system(None)

    async def __aenter__(self) -> System:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve(self, main: MainFn | None = None) -> None:
        """Start; run ``main`` (or ``@app.main``), or serve until a stop signal; then drain.

        SIGINT or SIGTERM while ``main`` runs cancels it and drains just the same:
        turns in flight finish, ``on_deactivate`` hooks run, state is saved.
        """
        fn = main or self._main
        await self._start_until_signal()
        if self._system is None:
            return  # a stop signal came while starting: it was undone
        try:
            await _until_signal(self.name, None if fn is None else fn())
        finally:
            with _forced_by_sigint(self.name):
                await self.stop()

    async def _start_until_signal(self) -> None:
        """Start; SIGINT or SIGTERM meanwhile undoes the start (a cluster node leaves).

        A node killed by the default handler while it started left its row joining,
        and clients waited for it to serve until their deadlines.
        """
        starting = asyncio.ensure_future(self.start())
        signalled = False

        def stop_starting() -> None:
            nonlocal signalled
            if not starting.done():
                logger.info("{}: stop signal received while starting; stopping", self.name)
                signalled = True
                starting.cancel()

        with _on_signals({signal.SIGINT: stop_starting, signal.SIGTERM: stop_starting}):
            try:
                await starting
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not signalled or (task is not None and task.cancelling()):
                    raise  # serve() itself was cancelled (its start was, with it)
                logger.info("{}: start undone", self.name)

    def configure(
        self,
        *,
        storage: str | StateStorage | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        cluster: ClusterSettings | None = None,
        workers: int | None = None,
    ) -> App:
        """Override settings before the app starts; returns the app.

        ``cluster`` makes this process a cluster node (see :class:`ClusterSettings`);
        ``workers`` sets the number of worker processes.

        Example (a script that takes ``--storage`` on its command line)::

            app.configure(storage=args.storage).run()
        """
        if self._system is not None:
            raise ConfigError(f"app {self.name!r} is running; configure it before it starts")
        if storage is not None:
            if isinstance(storage, str):
                storage_from_url(storage)  # refuses a bad URL now, not at start
            elif not isinstance(storage, StateStorage):
                raise ConfigError(
                    f"storage must be a URL or a StateStorage, got {type(storage).__name__}"
                )
            self.storage_spec = storage
        if data_dir is not None:
            self.data_dir = Path(data_dir)
        if cluster is not None:
            self.cluster = cluster.resolved()
        if workers is not None:
            self.workers = _workers_setting(workers)
            self._workers_error = None
        return self

    def run(self, main: MainFn | None = None) -> None:
        """Run the app in a new event loop (uvloop where installed) until done.

        With ``RIO_LOG_LEVEL`` set, the log goes to stderr from that level up (see
        :func:`rio.core.logs.configure_logging`); otherwise loguru is left as it is.
        """
        from rio.core.logs import configure_logging

        configure_logging()
        run(self.serve(main))


@contextlib.contextmanager
def _on_signals(handlers: dict[signal.Signals, Callable[[], object]]) -> Iterator[None]:
    """Handle these signals in the running loop while the block runs (main thread only)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig, handler in handlers.items():
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _until_signal(name: str, main: Awaitable[Any] | None) -> None:
    """Await ``main`` (or forever when None) until SIGINT/SIGTERM; a signal cancels it."""
    stop = asyncio.Event()
    with _on_signals({signal.SIGINT: stop.set, signal.SIGTERM: stop.set}):
        if main is None:
            logger.info("{}: serving; SIGINT or SIGTERM drains and stops", name)
        work = asyncio.ensure_future(main if main is not None else stop.wait())
        waiter = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                logger.info("{}: stop signal received; draining (Ctrl-C again exits at once)", name)
                if not work.done():
                    work.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await work
            else:
                await work  # main's result or exception
        finally:
            waiter.cancel()
            if not work.done():
                work.cancel()


def _forced_by_sigint(name: str) -> contextlib.AbstractContextManager[None]:
    """While the drain runs: SIGINT (a second Ctrl-C) exits at once; SIGTERM is noted."""

    def force() -> None:
        logger.warning(
            "{}: SIGINT during the drain: exiting now (turns still running and unsaved "
            "state are lost)",
            name,
        )
        logger.complete()
        os._exit(130)

    def noted() -> None:
        logger.info("{}: SIGTERM: already draining (SIGINT exits at once)", name)

    return _on_signals({signal.SIGINT: force, signal.SIGTERM: noted})


def run(main: Awaitable[T]) -> T:
    """Run a coroutine to completion on uvloop when installed, else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(main)  # type: ignore[arg-type]
    return uvloop.run(main)  # type: ignore[arg-type]


def _usable_cpus() -> int:
    """The CPUs this process may use (the default number of workers), at least 1.

    Its affinity (taskset, cpusets), capped by a cgroup v2 CPU quota (a container's
    ``--cpus``, rounded up). ``os.cpu_count()`` counts the machine's: a 2-CPU
    container on a 64-core host would start 64 workers.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):  # no cgroup v2 quota here
        pass
    return max(1, count)


def _workers_setting(workers: int | None) -> int:
    if workers is None:
        env = os.environ.get("RIO_WORKERS")
        if env is None:
            return _usable_cpus()
        try:
            workers = int(env)
        except ValueError:
            raise ConfigError(
                f"RIO_WORKERS={env!r}: expected a whole number (0 = in-process)"
            ) from None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"workers must be a whole number >= 0 (0 = in-process), got {workers!r}")
    return workers


def _import_actor(spec: str, source: Path) -> type[Actor[Any]]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{source}: actor {spec!r} must read 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{source}: cannot import {module_name!r} for actor {spec!r}: {e}") from e
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise ConfigError(f"{source}: {spec!r} is not a rio.Actor subclass")
    return cls
