"""Time as the layers see it, replaceable by a fake clock in tests.

Layers that wait or count over time (backoff, TTLs, rate windows, breaker windows) take a
``clock`` so property tests can run them instantly and deterministically.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import anyio

try:  # what anyio itself asks; trio depends on it, so without it only asyncio can run
    from sniffio import current_async_library_cvar as _library_cvar
    from sniffio import thread_local as _library_thread
except ImportError:  # pragma: no cover - sniffio comes with trio
    _library_cvar = _library_thread = None

__all__ = ["Clock", "SystemClock", "async_library", "loop_clock", "system_clock"]


def async_library() -> str:
    """The running async library's name (``"asyncio"``, ``"trio"``), for code running in
    one: what ``sniffio`` answers, without its final look for an asyncio task (a library
    other than asyncio says its name where sniffio reads it; anyio runs on no third)."""
    if _library_thread is not None:
        name = _library_thread.name or _library_cvar.get()  # type: ignore[union-attr]
        if name:
            return name  # type: ignore[no-any-return]
    return "asyncio"


def loop_clock(library: str | None = None) -> Callable[[], float]:
    """The running event loop's clock, the one ``anyio.current_time`` reads (deadlines
    are on it). A layer that reads it per chunk looks it up once: ``anyio.current_time``
    finds the backend again on every read. ``library``: the running library's name
    (``async_library()``), when the caller has it already."""
    if library is None:
        library = async_library()
    if library == "asyncio":
        return asyncio_clock(asyncio.get_running_loop())
    trio = sys.modules.get("trio") if library == "trio" else None
    if trio is None:
        return anyio.current_time
    # ``trio.current_time`` finds the run's clock on every read (three calls); the clock
    # is the run's for as long as it lasts, so its own reading serves instead.
    try:
        return trio._core._run.GLOBAL_RUN_CONTEXT.runner.clock.current_time  # type: ignore[no-any-return]
    except AttributeError:  # another trio layout
        return trio.current_time  # type: ignore[no-any-return]


def asyncio_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time`` as ``loop_clock`` reads it, for code that has the loop already."""
    # The stock loop's ``time`` is ``time.monotonic`` behind a Python method: read it
    # directly (a loop that keeps its own time, as a test's fake one, is read as is).
    return time.monotonic if type(loop).time is _STOCK_TIME else loop.time


_STOCK_TIME = asyncio.BaseEventLoop.time


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
