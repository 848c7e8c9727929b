"""In-memory state storage: for tests and ephemeral apps. Nothing survives the process."""

from __future__ import annotations

from typing import Any

from rio.core.codec import decode_state, encode_checked
from rio.core.errors import StateConflict
from rio.storage.base import StateStorage, StoredReminder, StoredState, to_ms

__all__ = ["MemoryStorage"]


class MemoryStorage(StateStorage):
    """Keeps states in a dict, with the same version checks as the durable engines.

    Values are stored msgpack-encoded, so they behave like a durable engine's.

    Example::

        app = rio.App(storage="memory://")
    """

    process_local = True

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._data: dict[tuple[str, str], StoredState] = {}
        #: (type, id, name) -> (period in seconds, due in whole milliseconds)
        self._reminders: dict[tuple[str, str, str], tuple[float, int]] = {}

    async def open(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        """Nothing to release; the data stays while this object lives."""

    async def load(self, type_name: str, object_id: str, state_type: Any) -> StoredState | None:
        """Return the stored state or None."""
        stored = self._data.get((type_name, object_id))
        if stored is None:
            return None
        return StoredState(
            decode_state(stored.value, state_type, type_name, object_id), stored.version
        )

    async def save(
        self,
        type_name: str,
        object_id: str,
        state: Any,
        state_type: Any,
        expected_version: int,
    ) -> int:
        """Compare-and-set the state."""
        key = (type_name, object_id)
        current = self._data.get(key)
        version = current.version if current is not None else 0
        if version != expected_version:
            raise StateConflict(
                f"{type_name}/{object_id}: stored version is {version}, "
                f"the writer expected {expected_version}"
            )
        # Stored encoded, as a durable engine would: later changes to the live state
        # object are not "saved" by accident, and unencodable states fail here too.
        self._data[key] = StoredState(
            encode_checked(state, state_type, type_name, object_id), version + 1
        )
        return version + 1

    async def delete(self, type_name: str, object_id: str, expected_version: int) -> None:
        """Compare-and-delete the state."""
        key = (type_name, object_id)
        current = self._data.get(key)
        version = current.version if current is not None else 0
        if version != expected_version:
            raise StateConflict(
                f"{type_name}/{object_id}: stored version is {version}, "
                f"the deleter expected {expected_version}"
            )
        self._data.pop(key, None)

    async def upsert_reminder(
        self, type_name: str, object_id: str, name: str, period: float, next_due: float
    ) -> None:
        """Create or replace one reminder."""
        self._reminders[(type_name, object_id, name)] = (float(period), to_ms(next_due))

    async def delete_reminder(self, type_name: str, object_id: str, name: str) -> bool:
        """Remove one reminder; False when there was none."""
        return self._reminders.pop((type_name, object_id, name), None) is not None

    async def list_reminders(self, type_name: str, object_id: str) -> list[StoredReminder]:
        """The reminders of one object, by name."""
        return sorted(
            StoredReminder(t, i, n, period, due / 1000)
            for (t, i, n), (period, due) in self._reminders.items()
            if t == type_name and i == object_id
        )

    async def due_reminders(self, now: float, limit: int) -> list[StoredReminder]:
        """The reminders due at ``now``, earliest first."""
        cutoff = to_ms(now)
        due = sorted(
            (due, key, period) for key, (period, due) in self._reminders.items() if due <= cutoff
        )
        return [StoredReminder(*key, period, d / 1000) for d, key, period in due[:limit]]

    async def advance_reminder(
        self, type_name: str, object_id: str, name: str, expected_due: float, new_due: float
    ) -> bool:
        """Compare-and-set one reminder's due time."""
        key = (type_name, object_id, name)
        found = self._reminders.get(key)
        if found is None or found[1] != to_ms(expected_due):
            return False
        self._reminders[key] = (found[0], to_ms(new_due))
        return True
