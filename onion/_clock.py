"""Time as the layers see it, replaceable by a fake clock in tests.

Layers that wait or count over time (backoff, TTLs, rate windows, breaker windows) take a
``clock`` so property tests can run them instantly and deterministically.
"""

from __future__ import annotations

import asyncio
import sys
import time
from asyncio import _get_running_loop
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import anyio

try:  # what anyio itself asks; trio depends on it, so without it only asyncio can run
    from sniffio import current_async_library_cvar as _library_cvar
    from sniffio import thread_local as _library_thread
except ImportError:  # pragma: no cover - sniffio comes with trio
    _library_cvar = _library_thread = None

__all__ = ["Clock", "SystemClock", "async_library", "loop_clock", "system_clock"]


# The asyncio loop last found running with no other library named: while it runs, the
# answer is known from one C call (``_get_running_loop``). anyio runs on asyncio or trio,
# never on both in one thread at once, so a running loop is asyncio's. (Threads with loops
# of their own may replace it: each then looks up again, never gets another's answer.)
_asyncio_loop: asyncio.AbstractEventLoop | None = None


def async_library() -> str:
    """The running async library's name (``"asyncio"``, ``"trio"``), for code running in
    one: what ``sniffio`` answers, without its final look for an asyncio task (a library
    other than asyncio says its name where sniffio reads it; anyio runs on no third)."""
    global _asyncio_loop
    loop = _get_running_loop()
    if loop is not None and loop is _asyncio_loop:
        return "asyncio"
    name = "asyncio"
    if _library_thread is not None:
        name = _library_thread.name or _library_cvar.get() or name  # type: ignore[union-attr]
    if loop is not None and name == "asyncio":
        _asyncio_loop = loop
    return name  # type: ignore[no-any-return]


def loop_clock() -> Callable[[], float]:
    """The running event loop's clock, the one ``anyio.current_time`` reads (deadlines
    are on it). A layer that reads it per chunk looks it up once: ``anyio.current_time``
    finds the backend again on every read."""
    loop = _get_running_loop()
    if loop is not None and loop is _asyncio_loop:
        return loop.time
    library = async_library()
    if library == "asyncio":
        return asyncio.get_running_loop().time
    trio = sys.modules.get("trio") if library == "trio" else None
    return trio.current_time if trio is not None else anyio.current_time  # type: ignore[no-any-return]


@runtime_checkable
class Clock(Protocol):
    """``now()`` in seconds (monotonic) and ``sleep(seconds)``."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``anyio.sleep``."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


system_clock = SystemClock()
"""The shared default clock."""
