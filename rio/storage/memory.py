"""In-memory state storage: for tests and ephemeral apps. Nothing survives the process."""

from __future__ import annotations

from typing import Any

from rio.core.codec import decode_state, encode_state
from rio.core.errors import StateConflict
from rio.storage.base import StateStorage, StoredState

__all__ = ["MemoryStorage"]


class MemoryStorage(StateStorage):
    """Keeps states in a dict, with the same version checks as the durable engines.

    Values are stored msgpack-encoded, so they behave like a durable engine's.

    Example::

        app = rio.App(storage="memory://")
    """

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._data: dict[tuple[str, str], StoredState] = {}

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
        self._data[key] = StoredState(encode_state(state), version + 1)
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
