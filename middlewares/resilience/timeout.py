"""``timeout``: deadlines named by phase, bounding what sits below it.

What it bounds follows from where it sits, as in Polly and Tower:

- **outside** ``retry``/``fallback`` its ``seconds`` bound the whole call, every
  attempt and backoff together (``onion check`` says "total");
- **inside** them it is entered once per attempt, so its ``seconds`` bound one attempt,
  complete or streamed ("attempt"), and a timed-out attempt is a ``Timeout`` the layer
  outside retries or falls back on like any other retryable failure.

The deadline goes on ``request.context.deadline`` (absolute, ``anyio.current_time()``
units; the earliest wins) while the call below runs, and is put back when it ends, so an
attempt's deadline never leaks into the next attempt. The phase limits
(``first_token_seconds``, ``idle_seconds``) go on ``context.phases`` and bound *each
attempt* wherever the layer sits: the stack's handler boundary enforces them (see
``onion._attempt``), so no layer hands them to another.

Cost per call: one cancel scope around opening the call; per chunk of a stream, one
clock read compared with the deadline (the handler boundary cancels a blocked pull), in
the pass over the chunks that ``Response.on_end`` makes anyway (no wrapper of its own).
"""

from __future__ import annotations

from onion import (
    AnswerEnd,
    CallNext,
    Chunk,
    Context,
    Layer,
    PhaseLimits,
    Request,
    Response,
    Timeout,
    async_library,
    loop_clock,
    within,
)

__all__ = ["Deadline"]


class Deadline(Layer):
    """Fail with ``Timeout(phase)`` when the call below takes too long.

    - ``seconds``: the time for everything below (phase ``"total"``): the whole call
      when outside ``retry``/``fallback``, one attempt when inside;
    - ``first_token_seconds``: for streams, each attempt's time to its first chunk
      (phase ``"first_chunk"``); ``None`` disables it;
    - ``idle_seconds``: for streams, the longest gap between two chunks of an attempt
      (``"idle"``); ``None`` disables it;
    - ``answer_seconds``: for complete calls, each attempt's time to its whole answer
      (``"answer"``); ``None`` (the default) disables it.

    An outer, earlier deadline already on the context is kept (the earliest wins), and
    phase limits of nested ``timeout`` layers combine (the tighter of each).
    """

    name = "timeout"
    provides = frozenset({"timeout"})

    def __init__(
        self,
        seconds: float = 30.0,
        first_token_seconds: float | None = 10.0,
        idle_seconds: float | None = 10.0,
        answer_seconds: float | None = None,
    ) -> None:
        for label, value in (
            ("seconds", seconds),
            ("first_token_seconds", first_token_seconds),
            ("idle_seconds", idle_seconds),
            ("answer_seconds", answer_seconds),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"{label} must be positive")
        self.seconds = seconds
        self.first_token_seconds = first_token_seconds
        self.idle_seconds = idle_seconds
        self.answer_seconds = answer_seconds
        limits = (first_token_seconds, idle_seconds, answer_seconds)
        self._phases = PhaseLimits(*limits) if any(value is not None for value in limits) else None
        # What a call cut at its own deadline raises, made once: most calls have no
        # earlier outer deadline, and then need no closure of their own.
        self._late = lambda: _late(seconds)

    def position(self, outside: frozenset[str]) -> str:
        """``"attempt"`` when a ``retry`` or ``fallback`` sits outside this layer (its
        ``seconds`` then bound each attempt), else ``"total"`` (for ``onion check``)."""
        return "attempt" if outside & {"retry", "fallback"} else "total"

    def acts_on(self) -> str:
        """Its limits, for ``onion check``."""
        named = (
            ("first chunk", self.first_token_seconds),
            ("idle", self.idle_seconds),
            ("answer", self.answer_seconds),
        )
        phases = ", ".join(f"{label} {value:g} s" for label, value in named if value is not None)
        return f"deadline {self.seconds:g} s" + (f"; per attempt, wherever it sits: {phases}" if phases else "")

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        context = request.context
        # The backend, asked once for the clock and the deadline (each ask is a fifth of
        # what this layer costs a cache hit).
        library = async_library()
        now = loop_clock(library)  # anyio.current_time's clock, without its backend look-up per read
        start = now()
        outer, outer_phases = context.deadline, context.phases
        deadline = start + self.seconds
        late = self._late
        if outer is not None and outer < deadline:
            deadline = outer
            left = outer - start
            late = lambda: _late(left)  # noqa: E731 (one closure, only here)
        context.deadline = deadline
        mine = self._phases
        if mine is not None:
            context.phases = mine if outer_phases is None else outer_phases.tighter(mine)
        try:
            # One cancel scope's worth (a timer under asyncio) around everything inside.
            response = await within(call_next(request), deadline, late, library=library)
        except BaseException:
            _restore(context, outer, outer_phases)
            raise
        if not response.is_stream:
            context.deadline, context.phases = outer, outer_phases  # _restore's, inline: every complete answer
            return response

        # Kept on the context until the stream ends: a retry that reopens it mid-way must
        # see this deadline (it starts no attempt or backoff that cannot finish in time).
        # A pull that blocks is cancelled at the handler boundary (it holds the deadline),
        # so a chunk that arrives past it (from a layer's own stream) is all that is left.
        def check(chunk: Chunk) -> None:
            if now() > deadline:
                raise Timeout("the stream passed its total deadline", phase="total")

        def restore(end: AnswerEnd) -> None:
            _restore(context, outer, outer_phases)

        return await response.on_end(restore, content=False, held=False, check=check)


def _late(seconds: float) -> Timeout:
    return Timeout(f"no answer within {seconds:.3g} s", phase="total")


def _restore(context: Context, deadline: float | None, phases: PhaseLimits | None) -> None:
    context.deadline, context.phases = deadline, phases
