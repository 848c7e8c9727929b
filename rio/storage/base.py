"""The state storage interface every engine implements.

A stored state is a value of the actor's declared state type plus an integer
version. Versions start at 1 and grow by one on each write. Every write names the
version it read (``0`` for "nothing stored yet"); when another writer got there first
the write fails with :class:`rio.StateConflict` and nothing is overwritten. There is
no last-writer-wins path in any engine.

Engines also keep the objects' durable reminders (:meth:`StateStorage.upsert_reminder`
and the methods after it): one row per ``(type, id, name)`` with its period and the
time it is next due, in seconds since the epoch, stored to the millisecond. Pollers in
several processes share them through :meth:`StateStorage.advance_reminder`, a
compare-and-set on the due time, so each firing is taken by exactly one of them.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

__all__ = ["StateStorage", "StoredReminder", "StoredState", "to_ms"]


class StoredState(NamedTuple):
    """A loaded state and the version it was stored under."""

    value: Any
    version: int


class StoredReminder(NamedTuple):
    """A durable reminder as stored: whose it is, its name, its period, when it is due."""

    type_name: str
    object_id: str
    name: str
    #: Seconds between firings.
    period: float
    #: When it is next due, in seconds since the epoch (``time.time()``), to the millisecond.
    next_due: float


def to_ms(seconds: float) -> int:
    """A time in seconds as the whole milliseconds engines store and compare."""
    return round(seconds * 1000)


class StateStorage(abc.ABC):
    """Where actor state lives. One instance per process, shared by its activations.

    Implementations must be safe to call concurrently from many tasks of one event
    loop, and must make :meth:`save` atomic with respect to other processes writing
    the same key (compare-and-set on ``expected_version``).
    """

    #: The URL this engine was opened from, password masked (for messages and logs).
    url: str = ""
    #: True when what is stored is seen by this process only (memory): each worker
    #: process then fires its own reminders, instead of the pool's driver.
    process_local: bool = False

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the schema. Idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent."""

    @abc.abstractmethod
    async def load(self, type_name: str, object_id: str, state_type: Any) -> StoredState | None:
        """Return the stored state of ``(type_name, object_id)``, or None when none is stored.

        Raises:
            StateDecodeError: the stored bytes do not decode into ``state_type``.
            StorageError: the engine failed.
        """

    @abc.abstractmethod
    async def save(
        self,
        type_name: str,
        object_id: str,
        state: Any,
        state_type: Any,
        expected_version: int,
    ) -> int:
        """Write ``state`` if the stored version is still ``expected_version``.

        ``expected_version`` 0 means the caller saw nothing stored. Returns the new
        version (``expected_version + 1``).

        Raises:
            StateConflict: another writer changed the stored version.
            StorageError: the engine failed; the write may or may not have happened.
        """

    @abc.abstractmethod
    async def delete(self, type_name: str, object_id: str, expected_version: int) -> None:
        """Remove the stored state if its version is still ``expected_version``.

        Deleting something not stored with ``expected_version`` 0 is a no-op.

        Raises:
            StateConflict: the stored version differs.
        """

    # -- durable reminders ---------------------------------------------------------

    @abc.abstractmethod
    async def upsert_reminder(
        self, type_name: str, object_id: str, name: str, period: float, next_due: float
    ) -> None:
        """Create or replace reminder ``name`` of ``(type_name, object_id)``.

        ``period`` is in seconds; ``next_due`` in seconds since the epoch, stored to
        the millisecond. Replacing one sets both.
        """

    @abc.abstractmethod
    async def delete_reminder(self, type_name: str, object_id: str, name: str) -> bool:
        """Remove reminder ``name`` of ``(type_name, object_id)``; False when there was none."""

    @abc.abstractmethod
    async def list_reminders(self, type_name: str, object_id: str) -> list[StoredReminder]:
        """The reminders of ``(type_name, object_id)``, sorted by name."""

    @abc.abstractmethod
    async def due_reminders(self, now: float, limit: int) -> list[StoredReminder]:
        """Up to ``limit`` reminders of any object due at ``now`` (``next_due <= now``).

        The earliest due come first.
        """

    @abc.abstractmethod
    async def advance_reminder(
        self, type_name: str, object_id: str, name: str, expected_due: float, new_due: float
    ) -> bool:
        """Set the reminder's due time to ``new_due`` if it is still ``expected_due``.

        The comparison is on whole milliseconds (:func:`to_ms`) and atomic against
        other processes: of several pollers advancing the same firing, one gets True.
        False when the reminder is gone or its due time changed.
        """

    async def __aenter__(self) -> StateStorage:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
