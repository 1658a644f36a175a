"""Incremental parsing of Server-Sent Events, as upstream LLM APIs stream them.

Bytes arrive in arbitrary pieces; ``SSEDecoder.feed`` returns the complete events seen
so far as ``(event, data)`` pairs and keeps the unfinished tail. Only the fields LLM APIs
use are read (``event:`` and ``data:``); comments (``: ping``) and ids are skipped.
"""

from __future__ import annotations

__all__ = ["SSEDecoder", "SSEOverflow"]

_MAX_PENDING = 8 * 1024 * 1024


class SSEOverflow(ValueError):
    """An event grew past the size limit without ending: the stream is not SSE."""


class SSEDecoder:
    """Turns byte pieces into ``(event_name_or_None, data_bytes)`` events."""

    __slots__ = ("_data", "_event", "_tail")

    def __init__(self) -> None:
        self._tail = b""
        self._event: str | None = None
        self._data: bytes | None = None

    def feed(self, piece: bytes) -> list[tuple[str | None, bytes]]:
        """Add ``piece``; return the events it completed, in order."""
        buffer = self._tail + piece if self._tail else piece
        lines = buffer.split(b"\n")
        self._tail = lines.pop()
        if len(self._tail) > _MAX_PENDING:
            raise SSEOverflow("an SSE line exceeded 8 MiB")
        events: list[tuple[str | None, bytes]] = []
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:
                if self._data is not None:
                    events.append((self._event, self._data))
                self._event = None
                self._data = None
            elif line.startswith(b"data:"):
                value = line[6:] if line[5:6] == b" " else line[5:]
                self._data = value if self._data is None else self._data + b"\n" + value
            elif line.startswith(b"event:"):
                self._event = line[6:].strip().decode("utf-8", "replace")
        return events
