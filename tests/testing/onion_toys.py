"""Small toy layers for testing the testing kit, some with deliberate bugs.

Each declares capabilities like a real layer; the ``Bare*`` and ``Chunkwise*``
variants drop a constraint or carry a bug the laws must find.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import anyio

from onion import (
    AnswerEnd,
    CallNext,
    Chunk,
    Clock,
    Completion,
    GuardrailViolation,
    Layer,
    Order,
    ProviderError,
    Request,
    Response,
    system_clock,
)

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def run(fn: Callable[[], Awaitable[Any]], backend: str = "asyncio") -> Any:
    """Run an async function to completion (for sync hypothesis tests)."""
    return anyio.run(fn, backend=backend)


class ToyInputGuard(Layer):
    """Blocks requests whose messages contain a banned word."""

    name = "toy_input_guard"
    provides = frozenset({"guard.input"})
    short_circuit = "a message contains a banned word"

    def __init__(self, banned: tuple[str, ...] = ("forbidden",)) -> None:
        self.banned = banned

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        for message in request.messages:
            text = message.text.lower()
            if any(word in text for word in self.banned):
                raise GuardrailViolation("banned word in input", stage="input", rule="banned_word")
        return await call_next(request)


async def _closing(source: AsyncIterator[Chunk]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()


class ToyCache(Layer):
    """Exact cache keyed by model and messages. ``store_partial`` is the bug of storing
    what a failed stream produced."""

    name = "toy_cache"
    provides = frozenset({"cache"})
    short_circuit = "an identical request was answered before"
    ordering = (Order("guard.input", "inside", "a blocked request is never looked up or stored"),)

    def __init__(self, *, store_partial: bool = False) -> None:
        self.store: dict[Any, str] = {}
        self.store_partial = store_partial
        self.hits = 0

    def _key(self, request: Request) -> Any:
        return request.model, tuple((m.role, m.text) for m in request.messages)

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        key = self._key(request)
        if key in self.store:
            self.hits += 1
            completion = Completion(content=self.store[key], model=request.model)
            if request.stream:
                return Response.replay(completion, served_by=self.name, piece_chars=5)
            return Response.complete(completion, served_by=self.name)
        response = await call_next(request)
        if not response.is_stream:
            self.store[key] = (await response.result()).content
            return response
        return response.wrap(lambda source: self._fill(source, key))

    async def _fill(self, source: AsyncIterator[Chunk], key: Any) -> AsyncGenerator[Chunk, None]:
        parts: list[str] = []
        try:
            async for chunk in source:
                parts.append(chunk.content)
                yield chunk
        except Exception:
            if self.store_partial:
                self.store[key] = "".join(parts)
            raise
        finally:
            await _closing(source)
        self.store[key] = "".join(parts)


class BareCache(ToyCache):
    """The toy cache without its ordering constraint."""

    name = "bare_cache"
    ordering = ()


class ToyOutputGuard(Layer):
    """Redacts e-mail addresses and blocks answers with a banned word. A stream is
    judged token by token (whitespace-delimited), holding back at most one token."""

    name = "toy_output_guard"
    provides = frozenset({"guard.output"})
    buffers = "one whitespace-delimited token (at most 256 characters)"
    short_circuit = "the answer contains a banned word"
    ordering = (Order("cache", "inside", "the cache stores only what the output guard let through"),)

    def __init__(self, banned: tuple[str, ...] = ("surprises",)) -> None:
        self.banned = banned

    def _judge(self, text: str) -> str:
        lowered = text.lower()
        for word in self.banned:
            if word in lowered:
                raise GuardrailViolation("banned word in answer", stage="output", rule="banned_word")
        return EMAIL.sub("[email]", text)

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        if not response.is_stream:
            completion = await response.result()
            completion.content = self._judge(completion.content)
            return response
        return response.wrap(self._filter)

    async def _filter(self, source: AsyncIterator[Chunk]) -> AsyncGenerator[Chunk, None]:
        held = ""
        try:
            async for chunk in source:
                held += chunk.content
                cut = max(held.rfind(" "), held.rfind("\n")) + 1
                if len(held) > 256:
                    cut = len(held)
                ready, held = held[:cut], held[cut:]
                chunk.content = self._judge(ready)
                if chunk.content or chunk.finish_reason or chunk.role:
                    yield chunk
            if held:
                yield Chunk(content=self._judge(held))
        finally:
            await _closing(source)


class ChunkwiseOutputGuard(ToyOutputGuard):
    """The bug: judges each chunk alone, so data split across chunks slips through."""

    name = "chunkwise_output_guard"
    buffers = None

    async def _filter(self, source: AsyncIterator[Chunk]) -> AsyncGenerator[Chunk, None]:
        try:
            async for chunk in source:
                chunk.content = self._judge(chunk.content)
                yield chunk
        finally:
            await _closing(source)


class BareOutputGuard(ToyOutputGuard):
    """The toy output guard without its ordering constraint."""

    name = "bare_output_guard"
    ordering = ()


class ToyRetry(Layer):
    """Retries retryable provider errors raised before an answer is returned."""

    name = "toy_retry"
    provides = frozenset({"retry"})

    def __init__(self, attempts: int = 3, clock: Clock | None = None) -> None:
        self.attempts = attempts
        self.clock = clock or system_clock

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        for attempt in range(self.attempts):
            try:
                return await call_next(request)
            except ProviderError as error:
                if not error.retryable or attempt == self.attempts - 1:
                    raise
                await self.clock.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")


class ToyFallback(Layer):
    """Tries each model in turn when the previous one fails."""

    name = "toy_fallback"
    provides = frozenset({"fallback"})
    ordering = (Order("retry", "outside", "each model gets its own retries"),)

    def __init__(self, models: tuple[str, ...] = ("m", "backup")) -> None:
        self.models = models

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        import msgspec

        error: ProviderError | None = None
        for model in self.models:
            try:
                return await call_next(msgspec.structs.replace(request, model=model))
            except ProviderError as caught:
                error = caught
        assert error is not None
        raise error


class ToyMetrics(Layer):
    """Counts requests and how they ended."""

    name = "toy_metrics"
    provides = frozenset({"metrics"})

    def __init__(self) -> None:
        self.requests = 0
        self.ended = 0

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        self.requests += 1
        try:
            response = await call_next(request)
        except Exception:
            self.ended += 1
            raise
        return await response.on_end(self._end)

    def _end(self, end: AnswerEnd) -> None:
        self.ended += 1


class LeakyStream(Layer):
    """The bug: wraps a stream without closing its input when the reader stops early."""

    name = "leaky_stream"

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        return response.wrap(self._leak)

    async def _leak(self, source: AsyncIterator[Chunk]) -> AsyncGenerator[Chunk, None]:
        async for chunk in source:
            yield chunk
