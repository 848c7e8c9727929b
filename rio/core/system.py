"""The interface every running system offers: in-process, worker pool, cluster."""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
from typing import TYPE_CHECKING, Any

from rio.core.errors import ConfigError
from rio.core.registry import Handler, actor_type, lookup_type
from rio.core.streams import DEFAULT_BUFFER, TOPIC, Streams, Subscription

if TYPE_CHECKING:
    import msgspec

    from rio.core.actor import Actor
    from rio.core.ref import Ref

__all__ = ["System", "key_of", "streams_of"]


class System(abc.ABC):
    """A running rio system: what ``async with app as system`` gives you.

    Refs route their calls through it. The in-process runtime, the worker pool and
    (later) the cluster client all implement this interface.

    Example::

        async with app as system:
            ref = system.ref(Counter, "a")
            await ref.incr(1)
            await system.deactivate(Counter, "a")
    """

    name: str
    default_timeout: float

    def stop_problems(self) -> list[str]:
        """What the last stop cut short or lost; empty when it drained completely.

        Turns cancelled at the drain timeout, a worker that died before it drained:
        their state not saved yet is lost.
        """
        return []

    def ref(self, actor: type[Actor[Any]] | str, object_id: str | int) -> Ref[Any]:
        """A ref bound to this system; ``actor`` is a class or a registered type name."""
        from rio.core.ref import new_ref

        info = lookup_type(actor) if isinstance(actor, str) else actor_type(actor)
        return new_ref(info, object_id, self)

    @abc.abstractmethod
    def call(
        self,
        key: tuple[str, str],
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """Send one call; return an awaitable of its answer (refs call this)."""

    def call_from_thread(
        self,
        loop: asyncio.AbstractEventLoop,
        key: tuple[str, str],
        handler: Handler,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> concurrent.futures.Future[Any]:
        """:meth:`call` from a thread other than ``loop``'s: hop onto the loop first."""

        async def call() -> Any:
            return await self.call(key, handler, args, kwargs, timeout)

        return asyncio.run_coroutine_threadsafe(call(), loop)

    def subscribe(self, topic: str, *, buffer: int = DEFAULT_BUFFER) -> Subscription[Any]:
        """Subscribe to the named topic: ``async for event in system.subscribe("news")``.

        Events published after this call reach the subscription, in each publisher's
        order; ``await`` it first to be sure every process that may publish it knows.
        A subscriber more than ``buffer`` events behind skips the oldest and gets a
        :class:`rio.Lagged` notice saying how many it missed. From a thread other
        than the event loop's it returns a confirmed subscription to iterate with a
        plain ``for``.

        Example::

            async with system.subscribe("scores") as scores:
                async for score in scores:
                    print(score)
        """
        return streams_of(self).subscribe((TOPIC, _topic(topic)), buffer)

    def publish(self, event: Any, *, topic: str) -> None:
        """Publish ``event`` on the named topic (as :meth:`rio.Actor.publish` does).

        Example::

            system.publish(Announcement("maintenance at 5"), topic="news")
        """
        streams_of(self).publish_topic(_topic(topic), event)

    @abc.abstractmethod
    async def deactivate(
        self, actor: type[Actor[Any]] | str | Ref[Any], object_id: Any = None
    ) -> bool:
        """Deactivate one actor after its current turn; False when it was not active."""

    @abc.abstractmethod
    def stats(self) -> msgspec.Struct:
        """An immutable snapshot of the system's activity."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Start serving."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Drain (finish turns, run hooks, save) and stop."""

    @property
    @abc.abstractmethod
    def running(self) -> bool:
        """True between start and stop."""


def key_of(actor: type[Actor[Any]] | str | Ref[Any], object_id: Any) -> tuple[str, str]:
    """The ``(type name, id)`` an operator call names."""
    from rio.core.ref import Ref

    if isinstance(actor, Ref):
        return actor._rio_key
    info = lookup_type(actor) if isinstance(actor, str) else actor_type(actor)
    return (info.name, str(object_id))


def streams_of(system: System) -> Streams:
    """The pub/sub streams of ``system``'s process.

    Raises:
        ConfigError: the system does not offer pub/sub.
    """
    streams = getattr(system, "streams", None)
    if not isinstance(streams, Streams):
        raise ConfigError(f"{type(system).__name__} {system.name!r} does not offer pub/sub")
    return streams


def _topic(topic: str) -> str:
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"a topic is a non-empty str, got {topic!r}")
    return topic
