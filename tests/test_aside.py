"""``run_aside``: work in a worker thread, one at a time per event loop."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from onion import run_aside

pytestmark = pytest.mark.anyio


async def test_it_gives_the_works_value_and_error_from_another_thread(anyio_backend: str) -> None:
    assert await run_aside(threading.get_ident) != threading.get_ident()
    assert await run_aside(divmod, 7, 2) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        await run_aside(divmod, 1, 0)


async def test_one_work_at_a_time_and_the_loop_keeps_running(anyio_backend: str) -> None:
    running, most, ticks = [0], [0], [0]
    lock = threading.Lock()

    def work() -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    async def tick() -> None:
        while True:
            ticks[0] += 1
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as group:
        group.start_soon(tick)
        async with anyio.create_task_group() as works:
            for _ in range(4):
                works.start_soon(run_aside, work)
        group.cancel_scope.cancel()
    assert most[0] == 1  # never two at once
    assert ticks[0] >= 10  # the loop ran meanwhile (0.2 s of work, a tick each 5 ms)


async def test_a_cancelled_caller_returns_without_waiting_for_the_work(anyio_backend: str) -> None:
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.3)
        finished.set()

    started = time.monotonic()
    with anyio.move_on_after(0.05):
        await run_aside(slow)
    assert time.monotonic() - started < 0.25 and not finished.is_set()
    assert finished.wait(2)  # the thread ran to its end
