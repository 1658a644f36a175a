"""A fake clock: time moves only when told to, or when something sleeps on it."""

from __future__ import annotations

import anyio

__all__ = ["FakeClock"]


class FakeClock:
    """A ``Clock`` for tests. ``sleep`` advances the time at once (and yields to other
    tasks), so backoff, TTL and rate windows run instantly and deterministically."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("time cannot go backwards")
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(max(0.0, seconds))
        await anyio.lowlevel.checkpoint()
