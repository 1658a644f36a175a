"""While ``onion serve`` runs its loop, sniffio is told the thread runs asyncio (as trio's
own ``run`` does for trio), and the thread's previous answer is back afterwards."""

from __future__ import annotations

import asyncio

import anyio
import pytest
import sniffio

from onion.server._runner import _named_library


def test_the_thread_is_named_while_serving_and_restored_after() -> None:
    assert sniffio.thread_local.name is None
    with _named_library("asyncio"):
        assert sniffio.thread_local.name == "asyncio"
        assert sniffio.current_async_library() == "asyncio"
    assert sniffio.thread_local.name is None
    with pytest.raises(sniffio.AsyncLibraryNotFoundError):
        sniffio.current_async_library()


def test_restored_when_the_server_fails() -> None:
    with pytest.raises(RuntimeError), _named_library("asyncio"):
        raise RuntimeError("the server stopped")
    assert sniffio.thread_local.name is None


def test_anyio_works_on_asyncio_under_the_name() -> None:
    async def main() -> float:
        with anyio.move_on_after(5) as scope:
            await anyio.sleep(0.001)
        assert not scope.cancelled_caught
        with anyio.CancelScope() as cancelled:
            cancelled.cancel()
            await anyio.sleep(1)
        assert cancelled.cancelled_caught
        return anyio.current_time()

    with _named_library("asyncio"):
        assert asyncio.run(main()) > 0


def test_worker_threads_are_not_named() -> None:
    # The name is per thread: sync code in anyio's worker threads is not "in" asyncio.
    async def main() -> str | None:
        return await anyio.to_thread.run_sync(lambda: sniffio.thread_local.name)

    with _named_library("asyncio"):
        assert asyncio.run(main()) is None
