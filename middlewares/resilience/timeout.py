"""``timeout``: deadlines for everything below it, named by phase.

Sits outside ``retry`` and ``fallback`` so that its *total* deadline bounds every attempt
together. It writes the absolute deadline on ``request.context.deadline`` (in
``anyio.current_time()`` units) so inner layers never start an attempt or a backoff
sleep that cannot finish, and it hands the per-attempt stream limits (time to the first
chunk, idle time between chunks) to the innermost ``retry``/``fallback`` layer, which
treats a stall as a cut stream and recovers it. Without such a layer it enforces those
limits itself.

Cancel scopes wrap ``call_next`` and each single pull of a chunk, never a ``yield``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import anyio

from onion import CallNext, Chunk, Layer, Order, PhaseLimits, Request, Response, Timeout

from .resumption import close_source

__all__ = ["Deadline"]


class Deadline(Layer):
    """Fail with ``Timeout(phase)`` when the call below takes too long.

    - ``seconds``: total time for the whole call, stream included (phase ``"total"``).
    - ``first_token_seconds``: for streams, time until the first chunk
      (phase ``"first_chunk"``); ``None`` disables it.
    - ``idle_seconds``: for streams, the longest gap between two chunks (``"idle"``).

    An outer, earlier deadline already on the context is kept (the earliest wins).
    """

    name = "timeout"
    provides = frozenset({"timeout"})
    ordering = (
        Order("retry", "outside", "the total deadline must bound all attempts together, not restart with each"),
        Order("fallback", "outside", "the total deadline must bound the whole fallback chain"),
    )

    def __init__(
        self,
        seconds: float = 30.0,
        first_token_seconds: float | None = 10.0,
        idle_seconds: float | None = 10.0,
    ) -> None:
        for label, value in (("seconds", seconds), ("first_token_seconds", first_token_seconds)):
            if value is not None and value <= 0:
                raise ValueError(f"{label} must be positive")
        if idle_seconds is not None and idle_seconds <= 0:
            raise ValueError("idle_seconds must be positive")
        self.seconds = seconds
        self.first_token_seconds = first_token_seconds
        self.idle_seconds = idle_seconds

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        context = request.context
        start = anyio.current_time()
        deadline = start + self.seconds
        if context.deadline is None or deadline < context.deadline:
            context.deadline = deadline
        deadline = context.deadline
        # This layer (or the retry/fallback it hands its phases to) cancels every pull at
        # the deadline, so providers need no scope of their own for it.
        context.deadline_guarded = deadline
        if not request.stream:
            with anyio.move_on_after(deadline - start) as scope:
                response = await call_next(request)
            if scope.cancelled_caught:
                raise Timeout(f"no answer within {self.seconds:.3g} s", phase="total")
            if response.is_stream:
                response.wrap(lambda chunks: self._guard(chunks, deadline, None, start))
            return response
        limits = PhaseLimits(self.first_token_seconds, self.idle_seconds, deadline)
        context.phases = limits
        first_deadline = deadline
        if self.first_token_seconds is not None:
            first_deadline = min(deadline, start + self.first_token_seconds)
        with anyio.CancelScope(deadline=first_deadline) as scope:
            limits.scope = scope
            response = await call_next(request)
        limits.scope = None
        if scope.cancelled_caught:
            phase = "total" if first_deadline >= deadline else "first_chunk"
            raise Timeout(f"no answer within {first_deadline - start:.3g} s", phase=phase)
        if limits.owner is not None:
            # The owner (an inner retry/fallback) enforces every limit on each chunk.
            return response
        return response.wrap(lambda chunks: self._guard(chunks, deadline, limits, start))

    async def _guard(
        self, source: AsyncIterator[Chunk], deadline: float, phases: PhaseLimits | None, start: float
    ) -> AsyncGenerator[Chunk, None]:
        try:
            first = True
            while True:
                limit, phase = deadline, "total"
                if phases is not None:
                    gap = phases.first_chunk if first else phases.idle
                    if gap is not None:
                        since = start if first else anyio.current_time()
                        if since + gap < limit:
                            limit, phase = since + gap, "first_chunk" if first else "idle"
                # One pull per scope; the scope is closed before the chunk is yielded.
                with anyio.CancelScope(deadline=limit) as scope:
                    try:
                        chunk = await source.__anext__()
                    except StopAsyncIteration:
                        return
                if scope.cancelled_caught:
                    raise Timeout(f"stream exceeded its {phase} deadline", phase=phase)
                first = False
                yield chunk
        finally:
            await close_source(source)
