"""Servers that take the connection and then say nothing: bounded waits, clear errors.

A port typo that lands on another kind of server, or a network partition that drops
packets instead of resetting connections, must fail calls with StorageUnavailable
within ``connect_timeout`` / ``command_timeout``, never hang them; and once the
network heals the engine works again with nothing lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import msgspec
import pytest

from rio.core.errors import StorageUnavailable
from rio.storage import StateStorage, storage_from_url

from .conftest import Backend


class Counter(msgspec.Struct):
    n: int = 0


def _via(url: str, port: int, **options: str) -> str:
    """``url`` with its host and port replaced by 127.0.0.1:``port``, plus ``options``."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    netloc_new = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
    query = "&".join([parts.query, *(f"{k}={v}" for k, v in options.items())]).lstrip("&")
    return urlunsplit(parts._replace(netloc=netloc_new, query=query))


@contextlib.asynccontextmanager
async def _silent_server() -> AsyncIterator[int]:
    """A listener that accepts connections and never sends a byte."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in held:
            w.close()
        await server.wait_closed()


class _Partition:
    """A TCP relay to a real server that can stop passing bytes both ways (and resume)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await src.read(65536):
                await self.flowing.wait()  # cut off: held here, neither lost nor passed
                dst.write(data)
                await dst.drain()
        dst.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            self.flowing.set()
            server.close()
            for task in list(self._tasks):
                task.cancel()
            for w in self._writers:
                w.close()
            await server.wait_closed()


@contextlib.asynccontextmanager
async def _behind_partition(
    backend: Backend, command_timeout: str
) -> AsyncIterator[tuple[StateStorage, _Partition]]:
    """An open storage on ``backend`` whose connections cross a :class:`_Partition`."""
    prefix = backend.new_prefix()
    parts = urlsplit(backend.base_url)
    partition = _Partition((parts.hostname or "127.0.0.1", parts.port or 0))
    try:
        async with partition.serving() as port:
            url = _via(backend.url(prefix), port, command_timeout=command_timeout)
            storage = storage_from_url(url)
            await storage.open()
            try:
                yield storage, partition
            finally:
                partition.flowing.set()
                await storage.close()
    finally:
        await backend.drop(prefix)


@pytest.mark.slow
async def test_a_server_that_never_answers_fails_the_open_within_connect_timeout(
    net_backend: Backend,
) -> None:
    async with _silent_server() as port:
        url = _via(net_backend.url(net_backend.new_prefix()), port, connect_timeout="0.5")
        storage = storage_from_url(url)
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match=r"no answer within 0\.5s \(connect_timeout\)"):
            await storage.open()
        assert time.monotonic() - started < 5
        await storage.close()


@pytest.mark.slow
async def test_a_cut_off_server_fails_calls_within_command_timeout_and_loses_nothing(
    net_backend: Backend,
) -> None:
    async with _behind_partition(net_backend, "0.5") as (storage, partition):
        assert await storage.save("P", "x", Counter(1), Counter, 0) == 1
        partition.flowing.clear()
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match=r"saving P/x got no answer within 0\.5s"):
            await storage.save("P", "x", Counter(2), Counter, 1)
        with pytest.raises(StorageUnavailable, match="command_timeout"):
            await storage.load("P", "x", Counter)
        assert time.monotonic() - started < 5
        partition.flowing.set()  # healed: the cut-off write may have landed
        got = await storage.load("P", "x", Counter)
        assert got is not None
        assert (got.value.n, got.version) in ((1, 1), (2, 2))
        assert await storage.save("P", "x", Counter(9), Counter, got.version) == got.version + 1


@pytest.mark.slow
async def test_a_save_in_cleanup_after_a_cancellation_still_gets_the_storage_error(
    net_backend: Backend,
) -> None:
    # Code that saves its progress in `except CancelledError:` runs in a task already
    # cancelling: a cut-off server must still fail that save with StorageUnavailable,
    # and the task's own cancellation must be left as it was.
    async with _behind_partition(net_backend, "0.3") as (storage, partition):
        assert await storage.save("P", "c", Counter(1), Counter, 0) == 1
        outcome: list[str] = []
        started = asyncio.Event()

        async def worker() -> None:
            started.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                try:
                    await storage.save("P", "c", Counter(2), Counter, 1)
                except StorageUnavailable as e:
                    outcome.append(str(e))
                task = asyncio.current_task()
                assert task is not None
                outcome.append(f"cancelling={task.cancelling()}")
                raise

        task = asyncio.ensure_future(worker())
        await started.wait()
        partition.flowing.clear()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(outcome) == 2, outcome
        assert "got no answer within 0.3s (command_timeout)" in outcome[0]
        assert outcome[1] == "cancelling=1"
