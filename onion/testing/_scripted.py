"""A provider that answers from a script, for tests of stacks and layers."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import Any

import anyio
import msgspec

from .._clock import Clock
from .._response import Response
from .._types import Chunk, Completion, Request, Usage

__all__ = ["Fail", "Reply", "ScriptedProvider", "StreamRecord"]


class Reply(msgspec.Struct, frozen=True):
    """Answer with ``text``; streamed as ``chunks`` (default: split after each space).

    ``first_delay`` passes before the first chunk, ``delay`` before each later one.
    """

    text: str = "ok"
    chunks: tuple[str, ...] | None = None
    delay: float = 0.0
    first_delay: float = 0.0
    usage: Usage | None = None
    model: str | None = None
    finish_reason: str = "stop"
    tool_calls: tuple[dict[str, Any], ...] | None = None

    def pieces(self) -> list[str]:
        """The text as the chunks it streams in."""
        if self.chunks is not None:
            return list(self.chunks)
        words = self.text.split(" ")
        return [w + " " for w in words[:-1]] + [words[-1]] if self.text else []


class Fail(msgspec.Struct, frozen=True):
    """Raise ``error``: at once (``after_chunks=None``) or, in a stream, after that many
    chunks of ``reply`` went out (a cut stream). ``delay`` passes before the failure."""

    error: BaseException
    after_chunks: int | None = None
    reply: Reply = Reply("partial answer that will be cut off")
    delay: float = 0.0


Step = Reply | Fail
_OK = Reply("ok")


class StreamRecord(msgspec.Struct):
    """What happened to one streamed answer: chunks produced, whether it ran to its end
    (``completed``) and whether its cleanup ran (``closed``)."""

    request: Request
    produced: int = 0
    completed: bool = False
    closed: bool = False


def _estimate_tokens(request: Request) -> int:
    return sum(len(m.text) // 4 + 1 for m in request.messages)


class ScriptedProvider:
    """A terminal handler that answers from a script and records what it saw.

    ``script`` is a sequence of ``Reply`` / ``Fail`` steps taken one per call (then
    ``default``), or a function ``(request, call_index) -> step``. ``requests`` lists every
    request received; ``streams`` records every streamed answer, so a test can check that
    each was closed. With a ``clock`` (for example a ``FakeClock``) every delay is slept on
    it, so latency costs no real time; without one delays are real (``anyio.sleep``).
    """

    def __init__(
        self,
        script: Iterable[Step] | Callable[[Request, int], Step] = (),
        *,
        default: Step = _OK,
        name: str = "scripted",
        clock: Clock | None = None,
    ) -> None:
        self._fn = script if callable(script) else None
        self._steps = [] if callable(script) else list(script)
        self.default = default
        self.name = name
        self.requests: list[Request] = []
        self.streams: list[StreamRecord] = []
        self._sleep = clock.sleep if clock is not None else anyio.sleep

    @property
    def calls(self) -> int:
        """How many requests reached the provider."""
        return len(self.requests)

    def _next_step(self, request: Request) -> Step:
        index = len(self.requests)
        self.requests.append(request)
        if self._fn is not None:
            return self._fn(request, index)
        return self._steps[index] if index < len(self._steps) else self.default

    async def __call__(self, request: Request) -> Response:
        step = self._next_step(request)
        if isinstance(step, Fail) and (step.after_chunks is None or not request.stream):
            if step.delay:
                await self._sleep(step.delay)
            raise step.error
        reply = step.reply if isinstance(step, Fail) else step
        usage = reply.usage or Usage(_estimate_tokens(request), len(reply.pieces()), 0)
        if not usage.total_tokens:
            usage = Usage(usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens + usage.completion_tokens)
        model = reply.model or request.model
        if not request.stream:
            if reply.first_delay:
                await self._sleep(reply.first_delay)
            completion = Completion(
                content=reply.text,
                model=model,
                finish_reason=reply.finish_reason,
                usage=usage,
                tool_calls=list(reply.tool_calls) if reply.tool_calls else None,
            )
            return Response.complete(completion, served_by=self.name)
        record = StreamRecord(request)
        self.streams.append(record)
        fail = step if isinstance(step, Fail) else None
        chunks = self._stream(reply, usage, model, fail, record)

        async def closed() -> None:
            record.closed = True

        return Response.stream(chunks, served_by=self.name, model=model, on_close=closed)

    async def _stream(
        self, reply: Reply, usage: Usage, model: str, fail: Fail | None, record: StreamRecord
    ) -> AsyncGenerator[Chunk, None]:
        try:
            if reply.first_delay:
                await self._sleep(reply.first_delay)
            for index, piece in enumerate(reply.pieces()):
                if fail is not None and index == fail.after_chunks:
                    if fail.delay:
                        await self._sleep(fail.delay)
                    raise fail.error
                if index and reply.delay:
                    await self._sleep(reply.delay)
                record.produced += 1
                yield Chunk(
                    content=piece, role="assistant" if index == 0 else None, model=model if index == 0 else None
                )
            if fail is not None:
                raise fail.error
            record.produced += 1
            yield Chunk(
                finish_reason=reply.finish_reason,
                usage=usage,
                tool_calls=list(reply.tool_calls) if reply.tool_calls else None,
            )
            record.completed = True
        finally:
            record.closed = True


def each_chunk(fn: Callable[[Chunk], object]) -> Callable[[AsyncIterator[Chunk]], AsyncIterator[Chunk]]:
    """For ``response.wrap``: a wrapper that calls ``fn(chunk)`` on every chunk as it passes
    (a test layer that checks or times chunks: ``return response.wrap(each_chunk(check))``)."""

    async def wrapper(source: AsyncIterator[Chunk]) -> AsyncGenerator[Chunk, None]:
        try:
            async for chunk in source:
                fn(chunk)
                yield chunk
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    return wrapper
