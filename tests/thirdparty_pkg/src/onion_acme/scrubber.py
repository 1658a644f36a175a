"""SecretScrubber: removes API-key-like strings from answers, streamed or complete.

A third-party layer written only against onion's public API. It declares what it
provides (``guard.output``) and where it must sit (inside any cache, so a cache stores
only scrubbed answers); onion checks both when a stack is built, as for a built-in.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator

from onion import PROTOCOL_VERSION, CallNext, Chunk, Layer, Order, Request, Response

_SECRET = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}")
# A secret never contains whitespace, so text up to the last whitespace can be judged;
# at most this many characters wait for the next chunk.
_MAX_HELD = 256


class SecretScrubber(Layer):
    """Replaces API-key-like strings (``sk-...``) in answers with ``placeholder``."""

    name = "acme_secret_scrubber"
    provides = frozenset({"guard.output"})
    ordering = (Order("cache", "inside", "a cache must store only scrubbed answers"),)
    buffers = f"the last unfinished word of a stream (at most {_MAX_HELD} characters)"
    onion_protocol = PROTOCOL_VERSION

    def __init__(self, placeholder: str = "[redacted]") -> None:
        self.placeholder = placeholder

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced."""
        return _SECRET.sub(self.placeholder, text)

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        if not response.is_stream:
            completion = await response.result()
            completion.content = self.scrub(completion.content)
            return response
        return response.wrap(self._scrub_stream)

    async def _scrub_stream(self, source: AsyncIterator[Chunk]) -> AsyncGenerator[Chunk, None]:
        held = ""
        try:
            async for chunk in source:
                held += chunk.content
                cut = len(held) if len(held) > _MAX_HELD else max(held.rfind(" "), held.rfind("\n")) + 1
                ready, held = held[:cut], held[cut:]
                if chunk.finish_reason is not None and held:
                    ready, held = ready + held, ""
                chunk.content = self.scrub(ready)
                yield chunk
            if held:
                yield Chunk(content=self.scrub(held))
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
