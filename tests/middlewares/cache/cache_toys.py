"""Test guards the cache tests put around a cache, to check what it looks up and stores."""

from __future__ import annotations

from onion import CallNext, Chunk, GuardrailViolation, Layer, Request, Response
from onion.testing import each_chunk


class BadWordGuard(Layer):
    """A test output guard: raises on any chunk containing ``bad``."""

    name = "test_output_guard"
    provides = frozenset({"guard.output"})

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)

        def check(chunk: Chunk) -> None:
            if "bad" in chunk.content:
                raise GuardrailViolation(stage="output", rule="bad-word")

        if response.completion is not None:  # a complete answer stays complete
            check(Chunk(content=response.completion.content))
            return response
        return response.wrap(each_chunk(check))


class ForbiddenWordGuard(Layer):
    """A test input guard: blocks a last message containing ``forbidden``."""

    name = "test_input_guard"
    provides = frozenset({"guard.input"})

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        if "forbidden" in request.messages[-1].text:
            raise GuardrailViolation(stage="input", rule="forbidden")
        return await call_next(request)
