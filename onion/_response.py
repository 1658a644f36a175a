"""One response type for complete and streamed answers.

A ``Response`` holds either a finished ``Completion`` or an async iterator of
``Chunk``\\ s. Both are read the same way: ``await response.result()`` gives the final
completion (consuming a stream), ``async for chunk in response`` gives chunks (a complete
answer is one chunk). Layers wrap the chunk iterator in place with ``wrap``, ``observe``,
``map`` and ``on_end``; none of them buffers. Every wrapper owns its input and closes it
in ``finally``, so closing the outermost response (or cancelling the task reading it)
runs the producer's cleanup and releases the upstream connection. A response closed
before anyone read it still runs every wrapper's cleanup, as for a cancelled stream.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import anyio

from ._types import Chunk, Completion, Usage

__all__ = ["Accumulator", "EndCallback", "Response"]

EndCallback = Callable[[Completion | None, BaseException | None], Awaitable[None] | None]
"""Called once when an answer ends: ``(completion, None)`` when it finished cleanly,
``(None, error)`` when the producer failed, ``(None, None)`` when the consumer closed it
early or was cancelled."""


class Accumulator:
    """Builds a ``Completion`` from chunks: text joined, tool-call deltas merged."""

    __slots__ = ("_parts", "_tool_calls", "chunks", "finish_reason", "model", "role", "usage")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._tool_calls: dict[int, dict[str, Any]] | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.role = "assistant"
        self.chunks = 0

    def add(self, chunk: Chunk) -> None:
        """Fold one chunk into the running answer."""
        self.chunks += 1
        if chunk.content:
            self._parts.append(chunk.content)
        if chunk.tool_calls:
            self._merge_tool_calls(chunk.tool_calls)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.model:
            self.model = chunk.model
        if chunk.role:
            self.role = chunk.role

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    def _merge_tool_calls(self, deltas: list[dict[str, Any]]) -> None:
        calls = self._tool_calls if self._tool_calls is not None else {}
        self._tool_calls = calls
        for position, delta in enumerate(deltas):
            index = delta.get("index", position)
            call = calls.get(index)
            if call is None:
                call = calls[index] = {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            if delta.get("id"):
                call["id"] = delta["id"]
            if delta.get("type"):
                call["type"] = delta["type"]
            function = delta.get("function") or {}
            if function.get("name"):
                call["function"]["name"] += function["name"]
            if function.get("arguments"):
                call["function"]["arguments"] += function["arguments"]

    def completion(self, model: str = "") -> Completion:
        """The answer as a ``Completion``."""
        tool_calls = [self._tool_calls[i] for i in sorted(self._tool_calls)] if self._tool_calls else None
        return Completion(
            content=self.text,
            model=self.model or model,
            role=self.role,
            tool_calls=tool_calls,
            finish_reason=self.finish_reason,
            usage=self.usage,
        )


def completion_chunk(completion: Completion) -> Chunk:
    """A complete answer as one chunk (how a complete response reads as a stream)."""
    return Chunk(
        content=completion.content,
        role=completion.role,
        tool_calls=completion.tool_calls,
        finish_reason=completion.finish_reason,
        usage=completion.usage,
        model=completion.model or None,
    )


async def _aclose(source: AsyncIterator[Chunk]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()


class _Producer:
    """The innermost stage of every stream: the producer's chunks, plus what must run when
    the stream is closed even if it was never started (``on_close``).

    ``__anext__`` hands out the producer's own awaitable, so reading through it costs no
    extra frame. After ``cut()`` it raises ``GeneratorExit`` instead: the wrappers above it
    then end as for a consumer that went away.
    """

    __slots__ = ("_chunks", "_cut", "_on_close")

    def __init__(self, chunks: AsyncIterator[Chunk], on_close: Callable[[], Awaitable[object]] | None) -> None:
        self._chunks = chunks
        self._on_close = on_close
        self._cut = False

    def __aiter__(self) -> _Producer:
        return self

    def __anext__(self) -> Awaitable[Chunk]:
        if self._cut:
            return _closed()
        return self._chunks.__anext__()

    async def aclose(self) -> None:
        on_close, self._on_close = self._on_close, None
        try:
            await _aclose(self._chunks)
        finally:
            if on_close is not None:
                await on_close()

    async def cut(self) -> None:
        self._cut = True
        await self.aclose()


async def _closed() -> Chunk:
    raise GeneratorExit


async def _one(chunk: Chunk) -> AsyncGenerator[Chunk, None]:
    yield chunk


async def _replay(completion: Completion, piece_chars: int) -> AsyncGenerator[Chunk, None]:
    text = completion.content
    model = completion.model or None
    yield Chunk(role=completion.role, content=text[:piece_chars], model=model)
    for start in range(piece_chars, len(text), piece_chars):
        yield Chunk(content=text[start : start + piece_chars])
    yield Chunk(tool_calls=completion.tool_calls, finish_reason=completion.finish_reason, usage=completion.usage)


async def _observe(source: AsyncIterator[Chunk], fn: Callable[[Chunk], object]) -> AsyncGenerator[Chunk, None]:
    try:
        async for chunk in source:
            fn(chunk)
            yield chunk
    finally:
        await _aclose(source)


async def _map(source: AsyncIterator[Chunk], fn: Callable[[Chunk], Chunk | None]) -> AsyncGenerator[Chunk, None]:
    try:
        async for chunk in source:
            mapped = fn(chunk)
            if mapped is not None:
                yield mapped
    finally:
        await _aclose(source)


async def _call_end(fn: EndCallback, completion: Completion | None, error: BaseException | None) -> None:
    result = fn(completion, error)
    if inspect.isawaitable(result):
        await result


async def _on_end(source: AsyncIterator[Chunk], fn: EndCallback, model: str) -> AsyncGenerator[Chunk, None]:
    acc = Accumulator()
    finished = False
    try:
        async for chunk in source:
            acc.add(chunk)
            yield chunk
        finished = True
    except BaseException as error:
        with anyio.CancelScope(shield=True):
            await _call_end(
                fn, None, None if isinstance(error, (GeneratorExit, anyio.get_cancelled_exc_class())) else error
            )
        raise
    finally:
        await _aclose(source)
    if finished:
        # Outside the try: a failing callback must not be reported to itself as a
        # stream error.
        await _call_end(fn, acc.completion(model), None)


class Response:
    """An answer, complete or streaming, behind one interface.

    ``served_by`` names the layer or provider that produced it; ``model`` the model that
    answered; ``headers`` are extra HTTP headers the server adds; ``attrs`` holds notes
    from layers (for example ``{"cache": "hit"}``).
    """

    __slots__ = ("_chunks", "_completion", "_consumed", "_producer", "attrs", "headers", "model", "served_by")

    def __init__(
        self,
        completion: Completion | None = None,
        chunks: AsyncIterator[Chunk] | None = None,
        *,
        served_by: str = "",
        model: str = "",
        on_close: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        if (completion is None) == (chunks is None):
            raise ValueError("a Response needs exactly one of completion or chunks")
        self._completion = completion
        self._producer = _Producer(chunks, on_close) if chunks is not None else None
        self._chunks: AsyncIterator[Chunk] | None = self._producer
        self._consumed = False
        self.served_by = served_by
        self.model = model or (completion.model if completion is not None else "")
        self.headers: dict[str, str] = {}
        self.attrs: dict[str, Any] = {}

    @classmethod
    def complete(cls, completion: Completion, *, served_by: str = "") -> Response:
        """A finished answer."""
        return cls(completion, served_by=served_by)

    @classmethod
    def stream(
        cls,
        chunks: AsyncIterator[Chunk],
        *,
        served_by: str = "",
        model: str = "",
        on_close: Callable[[], Awaitable[object]] | None = None,
    ) -> Response:
        """A streaming answer; ``chunks`` should be an async generator (it gets closed).

        ``on_close`` runs once when the stream ends or is closed, also when it is closed
        before its first chunk was read, where a generator's own ``finally`` never runs:
        a producer that opened a connection before its generator started releases it there.
        """
        return cls(chunks=chunks, served_by=served_by, model=model, on_close=on_close)

    @classmethod
    def replay(cls, completion: Completion, *, served_by: str = "", piece_chars: int = 48) -> Response:
        """A stored answer replayed as a stream of ``piece_chars``-sized chunks."""
        return cls(chunks=_replay(completion, max(1, piece_chars)), served_by=served_by, model=completion.model)

    @property
    def is_stream(self) -> bool:
        """True while the answer is an unread chunk iterator."""
        return self._chunks is not None

    @property
    def completion(self) -> Completion | None:
        """The finished answer, or ``None`` if it is still a stream."""
        return self._completion

    async def result(self) -> Completion:
        """The final answer. Reads and closes a stream; afterwards the response is complete."""
        if self._completion is not None:
            return self._completion
        chunks = self._take()
        acc = Accumulator()
        try:
            async for chunk in chunks:
                acc.add(chunk)
        finally:
            await _aclose(chunks)
        self._chunks = None
        self._completion = acc.completion(self.model)
        self.model = self.model or self._completion.model
        return self._completion

    def __aiter__(self) -> AsyncIterator[Chunk]:
        if self._completion is not None:
            return _one(completion_chunk(self._completion))
        return self._take()

    def _take(self) -> AsyncIterator[Chunk]:
        if self._consumed or self._chunks is None:
            raise RuntimeError("this response's stream has already been read")
        self._consumed = True
        return self._chunks

    def _source(self) -> AsyncIterator[Chunk]:
        if self._completion is not None:
            return _one(completion_chunk(self._completion))
        if self._consumed or self._chunks is None:
            raise RuntimeError("this response's stream has already been read")
        return self._chunks

    def wrap(self, fn: Callable[[AsyncIterator[Chunk]], AsyncIterator[Chunk]]) -> Response:
        """Replace the chunks with ``fn(chunks)``. ``fn`` must close its input when done.

        A complete answer is wrapped as a one-chunk stream; ``result()`` folds it back.
        """
        self._chunks = fn(self._source())
        self._completion = None
        return self

    def observe(self, fn: Callable[[Chunk], object]) -> Response:
        """Call ``fn(chunk)`` for each chunk as it passes (a complete answer is one chunk)."""
        if self._completion is not None:
            fn(completion_chunk(self._completion))
            return self
        self._chunks = _observe(self._source(), fn)
        return self

    def map(self, fn: Callable[[Chunk], Chunk | None]) -> Response:
        """Replace each chunk with ``fn(chunk)``; ``None`` drops it."""
        return self.wrap(lambda source: _map(source, fn))

    async def on_end(self, fn: EndCallback) -> Response:
        """Run ``fn(completion, error)`` when the answer ends (at once if complete)."""
        if self._completion is not None:
            await _call_end(fn, self._completion, None)
            return self
        self._chunks = _on_end(self._source(), fn, self.model)
        return self

    async def aclose(self) -> None:
        """Close the stream, running every wrapper's and the producer's cleanup."""
        if self._chunks is None:
            return
        chunks, self._chunks = self._chunks, None
        unread, self._consumed = not self._consumed, True
        producer = self._producer
        try:
            if unread and producer is not None and chunks is not producer:
                # Nobody read it, so no wrapper has started and none would run its cleanup
                # (a metrics count, a span, a breaker's trial, a token settlement). Cut the
                # producer and pull once: each wrapper sees its source end as cancelled.
                await producer.cut()
                with contextlib.suppress(GeneratorExit, Exception):
                    await chunks.__anext__()
            await _aclose(chunks)
        finally:
            if producer is not None:
                await producer.aclose()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        kind = "stream" if self._chunks is not None else "complete"
        return f"<Response {kind} model={self.model!r} served_by={self.served_by!r}>"
