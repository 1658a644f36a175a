"""A one-line progress bar on stderr for ``onion eval`` (stdout stays for the table).

Small on purpose: a redraw at most every 0.1 s, nothing drawn when stderr is not a
terminal unless asked, so CI logs stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """Counts finished samples and failures and redraws one line: bar, counts, elapsed."""

    def __init__(self, total: int, *, stream: TextIO | None = None, enabled: bool | None = None, width: int = 28):
        self.total = max(0, total)
        self.done = 0
        self.failed = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.width = width
        self._started = time.monotonic()
        self._drawn_at = 0.0

    def advance(self, passed: bool) -> None:
        """Record one finished sample."""
        self.done += 1
        if not passed:
            self.failed += 1
        now = time.monotonic()
        if self.enabled and (now - self._drawn_at >= 0.1 or self.done >= self.total):
            self._drawn_at = now
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def line(self) -> str:
        """The current line, without the carriage return."""
        filled = self.width * self.done // self.total if self.total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.monotonic() - self._started
        return f"eval [{bar}] {self.done}/{self.total} samples, {self.failed} failed, {elapsed:.1f}s"

    def close(self) -> None:
        """End the line so later output starts on a fresh one."""
        if self.enabled and self.done:
            self.stream.write("\n")
            self.stream.flush()
