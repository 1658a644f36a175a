"""CPU-heavy work of one call, off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

T = TypeVar("T")

# One thread per event loop: each more would take the GIL from the loop in its turn.
_ASIDE: RunVar[anyio.CapacityLimiter] = RunVar("onion_aside")


async def run_aside(work: Callable[..., T], *args: object) -> T:
    """``work(*args)`` in a worker thread, one at a time per event loop, for work that
    takes long enough to stall every other call of the loop (a scan or decode of
    megabytes: tens of ms and more). The thread shares the GIL, so the loop still gets
    its turn every few milliseconds (Python's switch interval), except during a single C
    call that keeps the GIL. A caller cancelled meanwhile returns at once; the thread
    finishes its work and the result is dropped. Below a few ms of work, call it inline:
    the hop costs about 0.1 ms."""
    limiter = _ASIDE.get(None)
    if limiter is None:
        limiter = anyio.CapacityLimiter(1)
        _ASIDE.set(limiter)
    return await anyio.to_thread.run_sync(work, *args, abandon_on_cancel=True, limiter=limiter)
