"""rio: virtual actors for Python, local-first, optionally clustered.

Example::

    import msgspec, rio

    class CounterState(msgspec.Struct):
        value: int = 0

    class Counter(rio.Actor[CounterState]):
        async def incr(self, by: int) -> int:
            self.state.value += by
            await self.save()
            return self.state.value

    app = rio.App("demo")

    @app.main
    async def main() -> None:
        print(await Counter.ref("a").incr(1))

    app.run()
"""

from rio._version import __version__
from rio.app import App, run
from rio.cluster.client import ClusterClient, connect
from rio.cluster.settings import ClusterSettings
from rio.core.actor import Actor, reentrant
from rio.core.context import current_system, timeout
from rio.core.errors import (
    ActivationFailed,
    BadArguments,
    CallTimeout,
    ConfigError,
    Deadlock,
    NodeUnreachable,
    NoNodesAvailable,
    NoSystemRunning,
    Overloaded,
    RegistrationError,
    RemoteError,
    RioError,
    StateConflict,
    StateDecodeError,
    StateEncodeError,
    StorageError,
    StorageUnavailable,
    SystemStopping,
    UnknownActorType,
    UnknownMethod,
    WorkerLost,
)
from rio.core.ref import Ref
from rio.core.reminders import Reminder
from rio.core.runtime import RuntimeStats
from rio.core.streams import Lagged, Subscription
from rio.core.system import System
from rio.core.timers import Timer

__all__ = [
    "ActivationFailed",
    "Actor",
    "App",
    "BadArguments",
    "CallTimeout",
    "ClusterClient",
    "ClusterSettings",
    "ConfigError",
    "Deadlock",
    "Lagged",
    "NoNodesAvailable",
    "NoSystemRunning",
    "NodeUnreachable",
    "Overloaded",
    "Ref",
    "RegistrationError",
    "Reminder",
    "RemoteError",
    "RioError",
    "RuntimeStats",
    "StateConflict",
    "StateDecodeError",
    "StateEncodeError",
    "StorageError",
    "StorageUnavailable",
    "Subscription",
    "System",
    "SystemStopping",
    "Timer",
    "UnknownActorType",
    "UnknownMethod",
    "WorkerLost",
    "__version__",
    "connect",
    "current_system",
    "reentrant",
    "run",
    "timeout",
]
