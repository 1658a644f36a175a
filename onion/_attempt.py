"""One attempt's limits, enforced where an attempt happens: at the stack's handler.

Each call of the stack's handler (the provider) is one attempt, whatever layers sit
above it. So the per-attempt limits a ``timeout`` layer puts on the context
(``context.phases``: time to the first chunk, longest gap between chunks) and the
deadline in force when the attempt starts (``context.deadline``) are enforced here, once,
for every stack: a ``retry`` or ``fallback`` above sees a silent or stalled attempt as a
``Timeout`` of that phase and recovers it like any other failure, with no hand-off
between layers. Providers need no cancel scope of their own for the deadline
(``context.deadline_guarded`` says it is enforced).

Costs: nothing when no limit is set; otherwise one cancel scope to open the attempt and,
for a stream, one per pull from the handler (a blocked read can only be abandoned by
cancelling it), never held across a ``yield``, plus one clock read per chunk.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import anyio

from ._context import PhaseLimits
from ._response import Response
from ._types import Chunk, Request
from .errors import Timeout

__all__ = ["bounded_attempt"]


async def bounded_attempt(
    handler: Callable[[Request], Awaitable[Response]],
    request: Request,
    phases: PhaseLimits | None,
    deadline: float | None,
) -> Response:
    """``handler(request)`` within ``deadline`` and, for a stream, ``phases``."""
    start = anyio.current_time()
    first = idle = None
    if phases is not None:
        if request.stream:
            first, idle = phases.first_chunk, phases.idle
        elif phases.answer is not None:
            # A complete answer arrives in one piece: its limit is the whole answer's.
            first = phases.answer
    until, phase = deadline, "total"
    if first is not None and (until is None or start + first < until):
        until, phase = start + first, "first_chunk" if request.stream else "answer"
    request.context.deadline_guarded = deadline
    if until is None:
        response = await handler(request)
    else:
        with anyio.CancelScope(deadline=until) as scope:
            response = await handler(request)
        if scope.cancelled_caught:
            raise Timeout(f"the attempt passed its {phase} limit ({until - start:.3g} s) before answering", phase=phase)
    if response.is_stream and (deadline is not None or first is not None or idle is not None):
        response.wrap(lambda chunks: _bounded_chunks(chunks, start, first, idle, deadline))
    return response


async def _bounded_chunks(
    source: AsyncIterator[Chunk], start: float, first: float | None, idle: float | None, deadline: float | None
) -> AsyncGenerator[Chunk, None]:
    """Forward ``source``; each pull is cancelled at the earlier of the deadline and its
    phase limit (from the attempt's start until the first chunk with content, a tool call
    or a finish reason; from the previous chunk after it)."""
    pull = source.__anext__
    gap, since, phase = first, start, "first_chunk"
    try:
        while True:
            # Plain comparisons (no allocation): the earlier of the deadline and the phase limit.
            until, label = deadline, "total"
            if gap is not None and (until is None or since + gap < until):
                until, label = since + gap, phase
            if until is None:
                try:
                    chunk = await pull()
                except StopAsyncIteration:
                    return
            else:
                with anyio.CancelScope(deadline=until) as scope:
                    try:
                        chunk = await pull()
                    except StopAsyncIteration:
                        return
                if scope.cancelled_caught:
                    raise Timeout(f"the stream passed its {label} limit", phase=label)
            yield chunk
            if phase == "first_chunk" and not (chunk.content or chunk.tool_calls or chunk.finish_reason):
                continue  # a role-only opening chunk is no token: the first-chunk limit holds
            if idle is not None:
                since = anyio.current_time()
            gap, phase = idle, "idle"
    finally:
        aclose = getattr(source, "aclose", None)
        # A generator that ran to its end needs no close (a shielded scope costs as
        # much as a short stream's other overhead).
        if aclose is not None and getattr(source, "ag_frame", True) is not None:
            with anyio.CancelScope(shield=True):
                await aclose()
