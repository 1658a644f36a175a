"""Stream recovery shared by ``retry`` and ``fallback`` (private).

A streamed answer is *committed* once its first chunk reached the caller. Before that a
failed attempt is simply replaced by a new one. After it, the only honest recovery is
**resumption**:

- ``"auto"`` (default): by continuation where the upstream can continue an assistant
  prefix, else by re-issue. The recovery request is the plain request; while it is being
  opened, ``context.resume`` holds the text sent and the request's messages. A provider
  that can continue a prefix (Anthropic; an OpenAI-compatible upstream configured with
  ``continue_final_message``, as vLLM) sends the text as the final assistant message,
  replays it in front of the continuation and marks its answer
  ``response.resumed = "continue"``; any other provider ignores the marker and answers
  in full. Either way the new stream is a whole answer to the plain request, so it is
  spliced like a re-issue: what was sent must be reproduced exactly (it is, when
  replayed), and only what follows is forwarded. Layers in between (caches, guards,
  token counters) see a whole answer to the request they were given, and the marker is
  gone once the attempt is open: it cannot reach a later attempt, another request or a
  cache key.
- ``"reissue"``: send the same request again and forward only what follows the text
  already sent, once the new stream has reproduced that text exactly. If it diverges,
  the stream fails with an explicit ``ProviderError`` (never a silent truncation or a
  spliced answer).
- ``"continue"``: for upstreams known to accept an assistant prefix (Anthropic prefill,
  vLLM's ``continue_final_message``), send the request with the sent text as a final
  assistant message and forward everything the upstream continues with.
- ``"off"``: never resume; a cut after commit fails the stream with the error.

The mode is the layer's ``resume`` parameter, overridden per request by
``request.context.options.resume``. Chunks with tool calls are never resumed.

A stalled or silent attempt is no special case here: the stack's handler boundary ends
it with a ``Timeout`` of phase ``first_chunk`` or ``idle`` (see ``onion._attempt``), and
it is recovered like a cut. Per chunk this module does plain work only: no cancel scope,
no clock read, no allocation beyond the forwarded chunk (a chunk is re-built only while
a resumed attempt replays text already sent).

A resumption in ``auto`` mode that the upstream refuses (an OpenAI-compatible
fallback that rejects an assistant prefill with a 400) is tried once more as a plain
re-issue on the same model.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import anyio
import msgspec

from onion import Chunk, Message, ProviderError, Request, Response, ResumeMode, ResumePrefix, failure_class

__all__ = [
    "close_source",
    "note_resumed",
    "open_resumed",
    "recover_stream",
    "resume_mode",
    "resume_request",
]

_MODES = frozenset({"auto", "reissue", "continue", "off"})

Reopen = Callable[[BaseException, str], Awaitable[Response]]
"""``reopen(error, sent_text)``: the next attempt's response, or raise to give up."""


async def open_resumed(
    request: Request, sent: str, mode: ResumeMode, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Open the attempt that recovers a stream after ``sent`` text went out.

    In ``auto`` mode the resume marker is on the context only while the attempt opens
    (a provider reads it before its first await), then the previous value is restored.
    """
    request = resume_request(request, sent, mode)
    if mode != "auto" or not sent:
        return await call_next(request)
    context = request.context
    previous = context.resume
    context.resume = ResumePrefix(sent, request.messages)
    try:
        return await call_next(request)
    except ProviderError as error:
        # Only a refusal of the prefix itself: a 400 to a request sent without one (the
        # provider cannot prefill, or the layer below already answered it plainly) would
        # come back again, and a second call past the retry budget is one too many.
        if not error.prefilled or failure_class(error) != "invalid_request":
            raise
        # The upstream refused the prefill (not every OpenAI-compatible server accepts an
        # assistant prefix): re-issue the plain request instead; the splice checks it.
        context.resume = previous
        return await call_next(request)
    finally:
        context.resume = previous


def note_resumed(outer: Response | None, reopened: Response, sent: str, mode: ResumeMode) -> None:
    """Record on the caller's response how its stream was resumed (``response.resumed``)."""
    if outer is not None and sent and outer is not reopened:
        outer.resumed = reopened.resumed or ("continue" if mode == "continue" else "reissue")


def resume_request(request: Request, sent: str, mode: ResumeMode) -> Request:
    """The request that recovers a stream after ``sent`` text went out."""
    if not sent or mode != "continue":
        return request
    # Anthropic rejects an assistant prefix that ends in whitespace; the whitespace already
    # sent is dropped again from the start of the continuation (see ``recover_stream``).
    messages = [*request.messages, Message("assistant", sent.rstrip())]
    # vLLM's chat template switches; providers that prefill natively ignore them.
    extra = {**request.extra, "continue_final_message": True, "add_generation_prompt": False}
    return msgspec.structs.replace(request, messages=messages, extra=extra)


def resume_mode(request: Request, default: ResumeMode) -> ResumeMode:
    """The per-request override, if valid, else the layer's mode."""
    mode = request.context.options.resume
    return mode if mode in _MODES else default


def finished(source: object) -> bool:
    """True for an async generator that already ran to its end (nothing to clean up)."""
    return getattr(source, "ag_frame", True) is None


async def close_source(source: AsyncIterator[Chunk]) -> None:
    """Close ``source``, shielded so a cancelled caller still runs the producer's cleanup.

    A generator that already finished is skipped: a shielded scope costs as much as the
    rest of a short stream's overhead.
    """
    aclose = getattr(source, "aclose", None)
    if aclose is not None and not finished(source):
        with anyio.CancelScope(shield=True):
            await aclose()


def _diverged(missing: int) -> ProviderError:
    return ProviderError(
        f"the resumed stream diverged from the text already sent ({missing} characters not reproduced)",
        retryable=False,
        public_message="the answer was cut off and could not be resumed",
        failure="cut",
    )


async def recover_stream(
    first: AsyncIterator[Chunk],
    reopen: Reopen,
    *,
    mode: ResumeMode,
) -> AsyncGenerator[Chunk, None]:
    """Forward the ``first`` attempt's chunks; on a failure, ask ``reopen`` for the next attempt and
    continue from what the caller already has. Owns every attempt's stream."""
    sent: list[str] = []
    committed = False
    tool_calls_sent = False
    skip = ""  # text the current attempt must reproduce before anything is forwarded
    spaces = 0  # trailing whitespace already sent that a continuation may repeat
    named: str | None = None  # the model of a new attempt, until a forwarded chunk names it
    source = first
    while True:
        error: BaseException
        try:
            pull = source.__anext__
            while True:
                try:
                    chunk = await pull()
                except StopAsyncIteration:
                    if skip:
                        raise _diverged(len(skip)) from None
                    return
                if chunk.model:
                    named = chunk.model
                if skip:
                    skip, chunk = _after_skip(chunk, skip)
                    if chunk is None:
                        continue
                elif spaces and chunk.content:
                    spaces, chunk = _after_spaces(chunk, spaces)
                if chunk.content:
                    sent.append(chunk.content)
                if chunk.tool_calls:
                    tool_calls_sent = True
                if named is not None:
                    # The tail names the model that produced it, even when the chunk that
                    # said so lay inside the replayed text.
                    if chunk.model != named:
                        chunk = msgspec.structs.replace(chunk, model=named)
                    named = None
                committed = True
                yield chunk
        except Exception as caught:  # this attempt failed; decide outside the handler
            error = caught
        finally:
            await close_source(source)
        if committed and (mode == "off" or tool_calls_sent):
            raise error
        text = "".join(sent) if committed else ""
        reopened = await reopen(error, text)
        named = (reopened.model or None) if committed else None
        source = aiter(reopened)
        skip = text if mode != "continue" else ""  # auto: a continuation replays the sent text
        spaces = len(text) - len(text.rstrip()) if mode == "continue" else 0


def _after_skip(chunk: Chunk, skip: str) -> tuple[str, Chunk | None]:
    """Match ``chunk`` against ``skip``, the sent text the new attempt must reproduce.

    Returns the text still to reproduce and the chunk cut to what is new (``None`` while
    the chunk lies inside already-sent text). Raises ``ProviderError`` on divergence.
    """
    text = chunk.content
    n = min(len(skip), len(text))
    if text[:n] != skip[:n]:
        raise _diverged(len(skip))
    skip = skip[n:]
    if skip:
        if chunk.finish_reason is not None:
            raise _diverged(len(skip))
        return skip, None
    rest = text[n:]
    if not rest and chunk.finish_reason is None and chunk.usage is None and not chunk.tool_calls:
        return "", None
    return "", msgspec.structs.replace(chunk, content=rest, role=None)


def _after_spaces(chunk: Chunk, spaces: int) -> tuple[int, Chunk]:
    """Drop up to ``spaces`` leading whitespace characters a continuation repeats."""
    text = chunk.content
    stripped = text.lstrip()
    drop = min(spaces, len(text) - len(stripped))
    if not drop:
        return 0, chunk
    rest = text[drop:]
    return (spaces - drop if not rest else 0), msgspec.structs.replace(chunk, content=rest)
