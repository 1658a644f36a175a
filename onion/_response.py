"""One response type for complete and streamed answers.

A ``Response`` holds either a finished ``Completion`` or an async iterator of
``Chunk``\\ s. Both are read the same way: ``await response.result()`` gives the final
completion (consuming a stream), ``async for chunk in response`` gives chunks (a complete
answer is one chunk). A layer changes the chunks with ``wrap`` and runs code when the
answer ends with ``on_end``, the one lifecycle hook: it reports the final answer, how it
ended (finished, failed, cut, cancelled, closed before its first read) and when its first
chunk passed. Neither buffers. Every wrapper owns its input and closes it in
``finally``, so closing the outermost response (or cancelling the task reading it) runs
the producer's cleanup and releases the upstream connection. A response closed before
anyone read it still runs every wrapper's cleanup, as for a cancelled stream.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Literal, Protocol

import anyio
import msgspec

from ._types import Choice, Chunk, Completion, Usage
from .errors import CANCELLED, outcome

__all__ = ["Accumulator", "AnswerEnd", "EndCallback", "Response", "tool_call_deltas"]


class _Choice:
    """The running state of one choice while its chunks arrive."""

    __slots__ = (
        "annotations",
        "audio",
        "choice_extra",
        "extra",
        "finish_reason",
        "logprobs",
        "parts",
        "refusal",
        "role",
        "tool_calls",
    )

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] | None = None
        self.finish_reason: str | None = None
        self.role = "assistant"
        self.refusal: list[str] | None = None
        self.logprobs: dict[str, Any] | None = None
        self.annotations: list[Any] | None = None
        self.audio: dict[str, Any] | None = None
        self.extra: dict[str, Any] | None = None
        self.choice_extra: dict[str, Any] | None = None

    def _merge_tool_calls(self, deltas: list[dict[str, Any]]) -> None:
        calls = self.tool_calls if self.tool_calls is not None else {}
        self.tool_calls = calls
        for position, delta in enumerate(deltas):
            index = delta.get("index", position)
            call = calls.get(index)
            if call is None:
                call = calls[index] = {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            for key, value in delta.items():
                if key == "function":
                    function = call["function"]
                    for name, piece in (value or {}).items():
                        if name in ("name", "arguments"):
                            function[name] += piece or ""
                        else:
                            function[name] = piece
                elif key != "index" and (value or key not in ("id", "type")):
                    call[key] = value

    def _merge_logprobs(self, logprobs: dict[str, Any]) -> None:
        merged = self.logprobs if self.logprobs is not None else {}
        self.logprobs = merged
        for key, value in logprobs.items():
            if isinstance(value, list) and isinstance(merged.get(key), list):
                merged[key] = [*merged[key], *value]
            elif value is not None or key not in merged:
                merged[key] = list(value) if isinstance(value, list) else value

    def _merge_audio(self, audio: dict[str, Any]) -> None:
        merged = self.audio if self.audio is not None else {}
        self.audio = merged
        for key, value in audio.items():
            if key in ("data", "transcript") and isinstance(value, str):
                merged[key] = merged.get(key, "") + value
            else:
                merged[key] = value

    def choice(self, index: int) -> Choice:
        tool_calls = [self.tool_calls[i] for i in sorted(self.tool_calls)] if self.tool_calls else None
        refusal = "".join(self.refusal) if self.refusal is not None else None
        text = "".join(self.parts)
        content = None if not text and (tool_calls or refusal) else text
        return Choice(
            index,
            content,
            self.role,
            tool_calls,
            self.finish_reason,
            refusal,
            self.logprobs,
            self.annotations,
            self.audio,
            self.extra or {},
            self.choice_extra or {},
        )


class Accumulator:
    """Builds a ``Completion`` from chunks: text joined, tool-call deltas merged, refusal,
    logprobs, annotations and audio pieces joined, each choice (``Chunk.index``) apart."""

    __slots__ = (
        "_first",
        "_others",
        "chunks",
        "created",
        "extra",
        "id",
        "model",
        "service_tier",
        "system_fingerprint",
        "usage",
    )

    def __init__(self) -> None:
        self._first = _Choice()
        self._others: dict[int, _Choice] | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.system_fingerprint: str | None = None
        self.service_tier: str | None = None
        self.extra: dict[str, Any] | None = None
        self.chunks = 0
        self.id = ""  # the first answer's (a stream resumed or fallen back keeps its id)
        self.created = 0

    def add(self, chunk: Chunk) -> None:
        """Fold one chunk into the running answer."""
        self.chunks += 1
        if chunk.index:
            others = self._others if self._others is not None else {}
            self._others = others
            part = others.get(chunk.index)
            if part is None:
                part = others[chunk.index] = _Choice()
        else:
            part = self._first
        # The choice's part, here rather than in a method of ``_Choice``: one call fewer
        # per chunk for every watch that gathers the answer.
        content = chunk.content
        if content:
            part.parts.append(content)
        if chunk.tool_calls:
            part._merge_tool_calls(chunk.tool_calls)
        if chunk.finish_reason is not None:
            part.finish_reason = chunk.finish_reason
        if chunk.role:
            part.role = chunk.role
        if chunk.refusal is not None:
            if part.refusal is None:
                part.refusal = []
            part.refusal.append(chunk.refusal)
        if chunk.logprobs is not None:
            part._merge_logprobs(chunk.logprobs)
        if chunk.annotations is not None:
            part.annotations = [*(part.annotations or ()), *chunk.annotations]
        if chunk.audio is not None:
            part._merge_audio(chunk.audio)
        if chunk.delta_extra:
            part.extra = {**(part.extra or {}), **chunk.delta_extra}
        if chunk.choice_extra:  # the latest value of each (a stop_reason set on the last chunk)
            part.choice_extra = {**(part.choice_extra or {}), **chunk.choice_extra}
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.model:
            self.model = chunk.model
        if chunk.system_fingerprint is not None:
            self.system_fingerprint = chunk.system_fingerprint
        if chunk.service_tier is not None:
            self.service_tier = chunk.service_tier
        if chunk.extra:
            self.extra = {**(self.extra or {}), **chunk.extra}
        if chunk.id and not self.id:
            self.id, self.created = chunk.id, chunk.created or 0

    @property
    def text(self) -> str:
        """The text of choice 0 received so far."""
        return "".join(self._first.parts)

    @property
    def finish_reason(self) -> str | None:
        """Choice 0's finish reason, once it arrived."""
        return self._first.finish_reason

    @property
    def role(self) -> str:
        return self._first.role

    def completion(self, model: str = "") -> Completion:
        """The answer as a ``Completion``."""
        first = self._first.choice(0)
        completion = Completion(
            model=self.model or model,
            usage=self.usage,
            system_fingerprint=self.system_fingerprint,
            service_tier=self.service_tier,
            extra=self.extra or {},
            id=self.id,
            created=self.created,
        )
        others = [self._others[i].choice(i) for i in sorted(self._others)] if self._others else []
        return completion.with_choices([first, *others])


def tool_call_deltas(tool_calls: list[dict[str, Any]], piece_chars: int = 0) -> list[list[dict[str, Any]]]:
    """Whole tool calls as OpenAI streams them: each call's first delta carries its
    ``index``, ``id``, ``type`` and name (and any other field), its arguments follow in
    deltas of ``piece_chars`` characters (``0``: all in the first), each with ``index``."""
    out: list[list[dict[str, Any]]] = []
    for index, call in enumerate(tool_calls):
        function = dict(call.get("function") or {})
        arguments = function.get("arguments") or ""
        cut = len(arguments) if piece_chars <= 0 else 0
        head = {"index": index, "id": call.get("id", ""), "type": call.get("type", "function")}
        head.update((k, v) for k, v in call.items() if k not in ("index", "id", "type", "function"))
        head["function"] = {**function, "arguments": arguments[:cut]}
        out.append([head])
        step = max(1, piece_chars)
        for start in range(cut, len(arguments), step):
            out.append([{"index": index, "function": {"arguments": arguments[start : start + step]}}])
    return out


def completion_chunk(completion: Completion) -> Chunk:
    """A complete answer as one chunk (how a complete response reads as a stream); the
    choices after the first are not in it (``completion_chunks`` gives every one)."""
    return Chunk(
        content=completion.content,
        role=completion.role,
        tool_calls=_indexed(completion.tool_calls),
        finish_reason=completion.finish_reason,
        usage=completion.usage,
        model=completion.model or None,
        refusal=completion.refusal,
        logprobs=completion.logprobs,
        annotations=completion.annotations,
        audio=completion.audio,
        system_fingerprint=completion.system_fingerprint,
        service_tier=completion.service_tier,
        extra=completion.extra,
        delta_extra=completion.message_extra,
        choice_extra=completion.choice_extra,
        id=completion.id or None,
        created=completion.created or None,
    )


def completion_chunks(completion: Completion) -> list[Chunk]:
    """A complete answer as chunks, one per choice: the first carries the usage."""
    chunks = [completion_chunk(completion)]
    for choice in completion.other_choices or ():
        chunks.append(_choice_chunk(choice, choice.content or ""))
    return chunks


def _choice_chunk(choice: Choice, content: str) -> Chunk:
    return Chunk(
        content=content,
        role=choice.role,
        tool_calls=_indexed(choice.tool_calls),
        finish_reason=choice.finish_reason,
        index=choice.index,
        refusal=choice.refusal,
        logprobs=choice.logprobs,
        annotations=choice.annotations,
        audio=choice.audio,
        delta_extra=choice.extra,
        choice_extra=choice.choice_extra,
    )


def _indexed(tool_calls: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if not tool_calls:
        return tool_calls
    return [call if "index" in call else {"index": i, **call} for i, call in enumerate(tool_calls)]


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

    @property
    def ag_frame(self) -> object:
        # Read as an async generator's: ``None`` once nothing is left to close (the
        # producer ran to its end, no ``on_close`` pending), so a wrapper skips the
        # shielded close it would otherwise open.
        if self._on_close is not None:
            return True
        return getattr(self._chunks, "ag_frame", True)

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


async def _chunks(chunks: list[Chunk]) -> AsyncGenerator[Chunk, None]:
    for chunk in chunks:
        yield chunk


async def _replay(completion: Completion, piece_chars: int) -> AsyncGenerator[Chunk, None]:
    # Shaped as OpenAI streams: the first delta of each choice has its role, the text and
    # the tool calls' arguments come in pieces (each tool-call delta with its index), the
    # last delta of each choice has its finish reason, and the usage comes once, last.
    model = completion.model or None
    choices = completion.all_choices()
    last = choices[-1].index
    for choice in choices:
        text = choice.content or ""
        index = choice.index
        head = _choice_chunk(choice, text[:piece_chars])
        head.tool_calls, head.finish_reason, head.model = None, None, model
        head.system_fingerprint, head.service_tier = completion.system_fingerprint, completion.service_tier
        head.extra = completion.extra
        if choice is choices[0]:  # the answer's first chunk names it, with its prompt's usage
            head.id, head.created = completion.id or None, completion.created or None
            usage = completion.usage
            if usage is not None:
                prompt = usage.prompt_tokens
                head.prompt_usage = msgspec.structs.replace(usage, completion_tokens=0, total_tokens=prompt)
        if choice.content is None and not head.content:
            head.content = ""
        yield head
        model = None
        for start in range(piece_chars, len(text), piece_chars):
            yield Chunk(content=text[start : start + piece_chars], index=index)
        for deltas in tool_call_deltas(choice.tool_calls or [], piece_chars):
            yield Chunk(tool_calls=deltas, index=index)
        yield Chunk(finish_reason=choice.finish_reason, index=index, usage=completion.usage if index == last else None)


def _as_chunks(completion: Completion) -> AsyncIterator[Chunk]:
    if completion.other_choices:
        return _chunks(completion_chunks(completion))
    return _one(completion_chunk(completion))


_NOTHING = Completion(finish_reason=None)


class AnswerEnd:
    """How an answer ended, as ``Response.on_end`` reports it (once per answer).

    - ``completion``: the answer as it passed this point: whole when ``ok``; what had
      arrived when the stream failed, was cut or was cancelled (possibly empty).
    - ``error``: the failure; ``None`` when the answer finished or the consumer stopped.
    - ``cancelled``: the consumer closed the stream early or its task was cancelled
      (also when it was closed before its first read).
    - ``first_chunk_at``: clock time the first chunk passed (``None`` for a complete
      answer, or when no chunk passed); ``ended_at``: clock time the answer ended.
    - ``chunks``: how many chunks passed.
    - ``held``: seconds the consumer held chunks (from handing one out to asking for the
      next): time that was neither the gateway's nor the upstream's (``0.0`` when every
      ``on_end`` of the watch said ``held=False``).
    - ``chunk_times``: each chunk's arrival time, when ``on_end(..., chunk_times=True)``.
    - ``failure``: what ended the answer, for ``onion.outcome`` and ``onion.error_type``:
      the error, a ``GeneratorExit`` standing for a consumer that stopped, ``None`` when
      ok. Set once here: metrics, the log line and the tracing span each read it per answer.
    """

    __slots__ = (
        "cancelled",
        "chunk_times",
        "chunks",
        "completion",
        "ended_at",
        "error",
        "failure",
        "first_chunk_at",
        "held",
    )

    def __init__(
        self,
        completion: Completion,
        error: BaseException | None = None,
        *,
        cancelled: bool = False,
        first_chunk_at: float | None = None,
        ended_at: float = 0.0,
        chunks: int = 0,
        held: float = 0.0,
        chunk_times: list[float] | None = None,
    ) -> None:
        self.completion = completion
        self.error = error
        self.cancelled = cancelled
        self.failure: BaseException | None = error if error is not None or not cancelled else GeneratorExit()
        self.first_chunk_at = first_chunk_at
        self.ended_at = ended_at
        self.chunks = chunks
        self.held = held
        self.chunk_times = chunk_times

    @classmethod
    def failed(cls, error: BaseException, at: float) -> AnswerEnd:
        """The end of a call that raised before any answer (``call_next`` failed)."""
        return cls(_NOTHING, error, ended_at=at)

    @property
    def ok(self) -> bool:
        """The answer finished cleanly (a complete answer, or a stream read to its end)."""
        return self.error is None and not self.cancelled

    @property
    def outcome(self) -> str:
        """``ok``, ``cancelled``, or the error's class (``onion.outcome``): ``timeout`` …"""
        return CANCELLED if self.cancelled else outcome(self.error)

    def __repr__(self) -> str:
        return f"<AnswerEnd {self.outcome} chunks={self.chunks}>"


EndCallback = Callable[[AnswerEnd], Awaitable[None] | None]
"""What ``Response.on_end`` calls, once, when the answer ends (it may be async)."""


async def _report(callbacks: list[EndCallback], end: AnswerEnd) -> None:
    # Every callback runs even if one fails (each is a different layer's bookkeeping);
    # the first failure is raised after the others ran.
    failure: Exception | None = None
    for fn in callbacks:
        try:
            result = fn(end)
            if result is not None and inspect.isawaitable(result):  # most callbacks are plain
                await result
        except Exception as error:
            failure = failure or error
    if failure is not None:
        raise failure


class _Tally:
    """What a watch keeps when no callback reads the answer's text (``on_end(...,
    content=False)``): its usage, model, choice 0's finish reason and the chunk count."""

    __slots__ = ("chunks", "finish_reason", "model", "usage")

    def __init__(self) -> None:
        self.chunks = 0
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.usage: Usage | None = None

    def add(self, chunk: Chunk) -> None:
        self.chunks += 1
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.model:
            self.model = chunk.model
        if chunk.finish_reason is not None and not chunk.index:
            self.finish_reason = chunk.finish_reason

    def completion(self, model: str = "") -> Completion:
        return Completion(model=self.model or model, usage=self.usage, finish_reason=self.finish_reason)


class PullTap(Protocol):
    """Core only (``onion._attempt``): one attempt's limits on the pulls of its stream,
    checked by the watch that reads the stream (``Response._bound``), as plain calls
    around each pull instead of an async generator of their own.

    ``before()`` runs before each pull (arms the pull's limit), ``after(chunk)`` after one
    that returned (disarms it; raises if the limit passed while the pull swallowed the
    cancellation), ``cut(error)`` when the pull raised (the error to raise instead, or
    ``None``), ``stop()`` once, when the stream ends in any way.
    """

    def before(self) -> None: ...

    def after(self, chunk: Chunk) -> None: ...

    def cut(self, error: BaseException) -> BaseException | None: ...

    def stop(self) -> None: ...


class _Watch:
    """The state of one ``on_end`` wrapper. Layers that call ``on_end`` one after another
    with nothing wrapped in between share it: they would see the same chunks, so one
    pass over them serves every callback. It builds the answer only when one of them
    reads its content."""

    __slots__ = ("callbacks", "checks", "chunk_times", "content", "held", "model", "now", "started", "tap", "top")

    def __init__(self, now: Callable[[], float], model: str, tap: PullTap | None = None) -> None:
        self.callbacks: list[EndCallback] = []
        self.checks: list[Callable[[Chunk], object]] = []
        self.now = now
        self.model = model
        self.chunk_times = False
        self.content = False
        self.held = False
        self.started = False
        self.tap = tap
        self.top: AsyncIterator[Chunk] | None = None

    async def run(self, source: AsyncIterator[Chunk]) -> AsyncGenerator[Chunk, None]:
        now = self.now
        self.started = True
        tap = self.tap
        # The producer's own ``__anext__``, not ``_Producer``'s (one call fewer per chunk):
        # it can be cut only before its stream was read (``Response.aclose`` of an unread
        # response), and then its own raises ``GeneratorExit`` as it must.
        pull = source._chunks.__anext__ if type(source) is _Producer and not source._cut else source.__anext__
        acc: Accumulator | _Tally = Accumulator() if self.content else _Tally()
        times: list[float] | None = [] if self.chunk_times else None
        # Read the clock per chunk only for what a callback asked for: the first chunk's
        # time always, each chunk's and the consumer's holding time on request.
        timed = self.held or times is not None
        check = self.checks[0] if len(self.checks) == 1 else (self._check_all if self.checks else None)
        first_at: float | None = None
        held = 0.0
        pending: float | None = None  # when the chunk the consumer holds was handed out
        try:
            while True:
                if tap is None:
                    try:
                        chunk = await pull()
                    except StopAsyncIteration:
                        break
                else:
                    # The attempt's limits around the pull, as plain calls (see ``PullTap``).
                    tap.before()
                    try:
                        chunk = await pull()
                    except StopAsyncIteration:
                        break
                    except BaseException as error:
                        late = tap.cut(error)
                        if late is None:
                            raise
                        raise late from None
                    tap.after(chunk)
                if check is not None:
                    check(chunk)
                if timed:
                    at = now()
                    if first_at is None:
                        first_at = at
                    if times is not None:
                        times.append(at)
                    acc.add(chunk)
                    pending = at
                    yield chunk
                    held += now() - pending
                    pending = None
                else:
                    if first_at is None:
                        first_at = now()
                    acc.add(chunk)
                    yield chunk
        except BaseException as caught:
            if tap is not None:
                tap.stop()
            if pending is not None:  # closed while the consumer held a chunk
                held += now() - pending
            stopped = isinstance(caught, (GeneratorExit, anyio.get_cancelled_exc_class()))
            with anyio.CancelScope(shield=True):
                await _aclose(source)
                end = AnswerEnd(acc.completion(self.model), None if stopped else caught, cancelled=stopped)
                await _report(self._take(), self._timed(end, first_at, acc.chunks, held, times))
            raise
        if tap is None:
            await _aclose(source)
        else:
            tap.stop()
            # In place of the attempt's own generator, which closed the producer shielded
            # (a provider's ``on_close`` releasing its connection must run whole): a
            # producer with nothing left to close needs no scope.
            if getattr(source, "ag_frame", True) is not None:
                with anyio.CancelScope(shield=True):
                    await _aclose(source)
        # Outside the try: a failing callback is not reported to the others as a stream error.
        end = AnswerEnd(acc.completion(self.model))
        await _report(self._take(), self._timed(end, first_at, acc.chunks, held, times))

    def _take(self) -> list[EndCallback]:
        # The callbacks run once; dropped as they run, since a callback that refers to its
        # response (most layers' do) would otherwise keep the finished stream, its
        # generators and chunks, in a cycle for the garbage collector.
        callbacks, self.callbacks = self.callbacks, []
        self.checks = []
        return callbacks

    def _check_all(self, chunk: Chunk) -> None:
        for check in self.checks:
            check(chunk)

    def _timed(
        self, end: AnswerEnd, first_at: float | None, chunks: int, held: float, times: list[float] | None
    ) -> AnswerEnd:
        end.first_chunk_at, end.ended_at, end.chunks, end.held, end.chunk_times = (
            first_at,
            self.now(),
            chunks,
            held,
            times,
        )
        return end


class Response:
    """An answer, complete or streaming, behind one interface.

    What layers record about an answer, each a declared field:

    - ``served_by``: the layer or provider that produced it (``exact_cache``,
      ``input_guard``, a provider's name);
    - ``model``: the model that answered (after a fallback, the model that did);
    - ``provider``: the API the upstream spoke (``openai``, ``anthropic``; set by the
      provider, ``gen_ai.provider.name`` in metrics and traces);
    - ``cache``: ``"hit"`` when a cache answered, ``"miss"`` when one looked and stored,
      ``None`` when no cache was asked;
    - ``fallback``: the later model of a fallback chain that answered, else ``None``;
    - ``resumed``: how a cut stream was recovered (``"continue"`` or ``"reissue"``);
    - ``headers``: extra HTTP headers the server adds to the answer.

    ``attrs`` is free-form room for third-party layers' notes; no built-in uses it.
    """

    __slots__ = (
        "_chunks",
        "_completion",
        "_consumed",
        "_ended",
        "_ended_clock",
        "_producer",
        "_watch",
        "attrs",
        "cache",
        "fallback",
        "headers",
        "model",
        "provider",
        "resumed",
        "served_by",
    )

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
        self._watch: _Watch | None = None
        self._ended: AnswerEnd | None = None
        self._ended_clock: Callable[[], float] | None = None
        self.served_by = served_by
        self.model = model or (completion.model if completion is not None else "")
        self.provider = ""
        self.cache: Literal["hit", "miss"] | None = None
        self.fallback: str | None = None
        self.resumed: str | None = None
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
            return _as_chunks(self._completion)
        return self._take()

    def _take(self) -> AsyncIterator[Chunk]:
        if self._consumed or self._chunks is None:
            raise RuntimeError("this response's stream has already been read")
        self._consumed = True
        return self._chunks

    def _source(self) -> AsyncIterator[Chunk]:
        if self._completion is not None:
            return _as_chunks(self._completion)
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

    def _bound(self, tap: PullTap) -> None:
        """Core only: read the stream through a watch whose pulls ``tap`` bounds (one
        attempt's limits at the handler, ``onion._attempt``). The ``on_end`` calls that
        follow with nothing wrapped in between share that watch: the limits cost no
        generator of their own."""
        watch = self._watch = _Watch(time.perf_counter, self.model, tap)
        self._chunks = watch.top = watch.run(self._source())
        self._completion = None

    def replace_completion(self, completion: Completion) -> Response:
        """Put ``completion`` in place of a complete answer (a layer that rewrites it, as a
        guard that redacts); every other field of the response stays."""
        if self._completion is None:
            raise RuntimeError("replace_completion needs a complete answer; wrap a stream instead")
        self._completion = completion
        return self

    async def on_end(
        self,
        fn: EndCallback,
        *,
        now: Callable[[], float] | None = None,
        chunk_times: bool = False,
        content: bool = True,
        held: bool = True,
        check: Callable[[Chunk], object] | None = None,
    ) -> Response:
        """Run ``fn(end)`` once when the answer ends, with an ``AnswerEnd``: the answer,
        how it ended and when its first chunk passed. A complete answer calls it at once.

        ``now`` is the clock the times are read from (default ``time.perf_counter``; a
        layer with an injectable clock passes its own); ``chunk_times`` also records each
        chunk's arrival. ``content=False`` says ``fn`` reads no text of a streamed answer:
        ``end.completion`` then holds only its model, usage and finish reason (what
        metrics and a breaker read), and the stream's text is not gathered for it.
        ``held=False`` says ``fn`` reads no ``end.held`` (two clock reads per chunk
        spared). ``check(chunk)``, for a stream, runs on each chunk as it arrives, before
        it passes on: what it raises ends the stream with that error (a deadline checked
        per chunk, with no wrapper of its own). Successive ``on_end`` calls with nothing
        wrapped in between share one pass over the chunks.
        """
        clock = now or time.perf_counter
        if self._completion is not None:
            # The common case of a complete answer: one call, nothing wrapped. It ended when
            # it was first handed to a layer, so every layer on the same clock shares one end.
            end = self._ended
            if end is None or end.completion is not self._completion or self._ended_clock is not clock:
                end = self._ended = AnswerEnd(self._completion, ended_at=clock())
                self._ended_clock = clock
            result = fn(end)
            if result is not None and inspect.isawaitable(result):
                await result
            return self
        watch = self._watch
        if watch is not None and watch.tap is not None and not watch.callbacks and not watch.started:
            # The attempt's bounded pulls (``_bound``) read no clock for callbacks yet: the
            # first layer watching takes them over with its own, as if it had wrapped them.
            watch.now = clock
        if (
            watch is None
            or watch.top is not self._chunks
            or watch.now is not clock
            or (
                watch.started
                and (
                    (content and not watch.content)
                    or (chunk_times and not watch.chunk_times)
                    or (held and not watch.held)
                    or check is not None
                )
            )
        ):
            watch = self._watch = _Watch(clock, self.model)
            self._chunks = watch.top = watch.run(self._source())
        watch.callbacks.append(fn)
        if check is not None:
            watch.checks.append(check)
        watch.chunk_times = watch.chunk_times or chunk_times
        watch.content = watch.content or content
        watch.held = watch.held or held
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
