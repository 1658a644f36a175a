"""``retry``: try a failed call again, within limits that cannot amplify an outage.

Sits inside ``fallback`` and ``timeout`` and outside ``circuit_breaker`` (so a retry
sees the breaker open and stops, instead of hammering a failing model). Only errors the
policy calls retryable are retried: by default ``ProviderError(retryable=True)`` and a
stream's per-attempt stall (``Timeout`` of phase ``first_chunk`` or ``idle``).

Three limits apply to every retry: the number of attempts, a **retry budget** (retries
may be at most a fraction of the recent requests, plus a small reserve), and the
request's deadline (no backoff sleep or attempt that cannot finish in time). Backoff is
exponential with full jitter; an upstream's ``Retry-After`` is honoured, and when it
asks for longer than ``max_delay`` the call is not retried (the error goes to the layer
outside, for example to ``fallback``).

A stream is retried freely until its first chunk reached the caller; after that it is
resumed (see ``middlewares/_resume.py``) or fails with an explicit error.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import anyio
import structlog

from onion import CallNext, Clock, Layer, Order, ProviderError, Request, Response, Timeout, system_clock

from .resumption import (
    PhaseLimits,
    ResumeMode,
    claim_phases,
    note_resumed,
    open_attempt,
    open_resumed,
    owned,
    recover_stream,
    resume_mode,
)

__all__ = ["Retry", "RetryBudget", "RetryPolicy"]

_log = structlog.get_logger("onion.retry")


def default_retryable(error: BaseException) -> bool:
    """Retryable provider errors and per-attempt stream stalls."""
    if isinstance(error, ProviderError):
        return error.retryable
    return isinstance(error, Timeout) and error.phase in ("first_chunk", "idle")


class RetryPolicy:
    """Which errors to retry and how long to wait (exponential backoff, full jitter).

    The delay before retry ``n`` (1-based) is uniform in
    ``[0, min(max_delay, base_delay * 2 ** (n - 1))]``; a ``Retry-After`` from the
    upstream raises it to at least that value, and if that is above ``max_delay`` the
    call is not retried.
    """

    __slots__ = ("attempts", "base_delay", "max_delay", "retryable")

    def __init__(
        self,
        attempts: int = 3,
        base_delay: float = 0.2,
        max_delay: float = 8.0,
        retryable: Callable[[BaseException], bool] = default_retryable,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if base_delay < 0 or max_delay < 0:
            raise ValueError("delays cannot be negative")
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.retryable = retryable

    def delay(self, retry: int, error: BaseException, rng: random.Random) -> float | None:
        """Seconds to wait before retry number ``retry``, or ``None``: do not retry."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (retry - 1)))
        wait = rng.uniform(0.0, ceiling)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None and retry_after > wait:
            if retry_after > self.max_delay:
                return None
            wait = retry_after
        return wait


class RetryBudget:
    """Retries allowed as a fraction of recent requests (Finagle/Tower style).

    Over a sliding ``window`` (in ``slots`` buckets), retries may not exceed
    ``ratio * requests + reserve``. ``reserve`` lets a quiet service still retry.
    """

    __slots__ = ("_clock", "_requests", "_retries", "_slot", "_slot_seconds", "ratio", "reserve", "window")

    def __init__(
        self,
        ratio: float = 0.2,
        *,
        window: float = 10.0,
        reserve: int = 10,
        clock: Clock | None = None,
        slots: int = 10,
    ) -> None:
        if ratio < 0:
            raise ValueError("budget cannot be negative")
        self.ratio = ratio
        self.window = window
        self.reserve = reserve
        self._clock = clock or system_clock
        self._slot_seconds = window / slots
        self._requests = [0] * slots
        self._retries = [0] * slots
        self._slot = int(self._clock.now() // self._slot_seconds)

    def _advance(self) -> int:
        slot = int(self._clock.now() // self._slot_seconds)
        size = len(self._requests)
        # Clear the buckets that slid out of the window since the last call.
        for stale in range(self._slot + 1, min(slot, self._slot + size) + 1):
            self._requests[stale % size] = 0
            self._retries[stale % size] = 0
        self._slot = max(slot, self._slot)
        return self._slot % size

    def record_request(self) -> None:
        """Count one request (each call of the layer, not each attempt)."""
        self._requests[self._advance()] += 1

    def try_withdraw(self) -> bool:
        """Take one retry from the budget, if there is one left."""
        index = self._advance()
        if sum(self._retries) + 1 > self.ratio * sum(self._requests) + self.reserve:
            return False
        self._retries[index] += 1
        return True


class Retry(Layer):
    """Retry retryable failures with backoff, within attempts, a budget and the deadline.

    TOML: ``attempts``, ``base_delay``, ``max_delay``, ``budget`` (fraction of recent
    requests that may be retried), ``resume`` (``"auto"``, the default: by continuation
    where the provider can continue an assistant prefix, else by re-issue; ``"reissue"``,
    ``"continue"``, ``"off"``).
    In code, pass ``policy=RetryPolicy(...)`` and/or ``retry_budget=RetryBudget(...)``.
    """

    name = "retry"
    provides = frozenset({"retry"})
    ordering = (
        Order("circuit_breaker", "outside", "a retry must see an open circuit and stop, not hammer a failing model"),
    )

    def __init__(
        self,
        attempts: int = 3,
        base_delay: float = 0.2,
        max_delay: float = 8.0,
        budget: float = 0.2,
        resume: ResumeMode = "auto",
        *,
        policy: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = None,
        clock: Clock | None = None,
        seed: int | None = None,
    ) -> None:
        self.clock = clock or system_clock
        self.policy = policy or RetryPolicy(attempts, base_delay, max_delay)
        self.budget = retry_budget or RetryBudget(budget, clock=self.clock)
        self.resume = resume
        self._rng = random.Random(seed)
        self.retries = 0  # total retries made, for observation

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        self.budget.record_request()
        phases = claim_phases(request, self) if request.stream else None
        attempt = 1
        while True:
            try:
                if phases is None:
                    response = await call_next(request)
                else:
                    response = await open_attempt(request, call_next, phases, self)
                break
            except Exception as error:
                await self._before_retry(request, error, attempt)
            attempt += 1
        if not response.is_stream:
            return response
        phases = owned(phases, self)
        state = _StreamRetry(self, request, call_next, phases, attempt, response)
        mode = resume_mode(request, self.resume)
        return response.wrap(lambda chunks: recover_stream(chunks, state.reopen, mode=mode, phases=phases))

    async def _before_retry(self, request: Request, error: Exception, attempt: int) -> None:
        """Sleep before the next attempt, or re-raise ``error`` if none may be made."""
        policy = self.policy
        if attempt >= policy.attempts or not policy.retryable(error):
            raise error
        delay = policy.delay(attempt, error, self._rng)
        deadline = request.context.deadline
        if delay is None or (deadline is not None and anyio.current_time() + delay >= deadline):
            raise error
        if not self.budget.try_withdraw():
            raise error
        self.retries += 1
        # A warning, so an outage shows in the logs before it shows in the error rate. The
        # kind of error and its status only: an upstream's message may carry internals.
        _log.warning(
            "retrying",
            model=request.model,
            attempt=attempt + 1,
            attempts=policy.attempts,
            delay_s=round(delay, 3),
            error=type(error).__name__,
            upstream_status=getattr(error, "upstream_status", None),
            request_id=request.context.request_id,
        )
        if delay > 0:
            await self.clock.sleep(delay)


class _StreamRetry:
    """The retry state of one streamed call, shared with its recovery generator."""

    __slots__ = ("attempt", "call_next", "layer", "outer", "phases", "request")

    def __init__(
        self,
        layer: Retry,
        request: Request,
        call_next: CallNext,
        phases: PhaseLimits | None,
        attempt: int,
        outer: Response,
    ) -> None:
        self.layer = layer
        self.request = request
        self.call_next = call_next
        self.phases = phases
        self.attempt = attempt
        self.outer = outer  # the response the caller holds

    async def reopen(self, error: BaseException, sent: str) -> Response:
        mode = resume_mode(self.request, self.layer.resume)
        while True:
            if not isinstance(error, Exception):
                raise error
            await self.layer._before_retry(self.request, error, self.attempt)
            self.attempt += 1
            try:
                response = await open_resumed(self.request, sent, mode, self.call_next, self.phases, self.layer)
            except Exception as failed:
                error = failed
                continue
            note_resumed(self.outer, response, sent, mode)
            return response
