"""Time as the layers see it, replaceable by a fake clock in tests.

Layers that wait or count over time (backoff, TTLs, rate windows, breaker windows) take a
``clock`` so property tests can run them instantly and deterministically.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "SystemClock", "system_clock"]


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
