"""``retry``: try a failed call again, within limits that cannot amplify an outage.

Sits inside ``fallback`` and outside ``circuit_breaker`` (so a retry
sees the breaker open and stops, instead of hammering a failing model); a ``timeout``
outside it bounds all attempts together, one inside it bounds each attempt. What is
retried is a policy over failure classes (``onion.failure_class``): by default
``rate_limited``, ``server_error``, ``connection``, ``cut`` and ``malformed`` streams,
and timeouts (``first_chunk``, ``idle``, ``timeout``) **only when no fallback can take
over**: with another model left in an outer ``fallback`` (``context.alternatives``), a
silent or stalled attempt moves on at once instead of waiting out the same limit again.

Three limits apply to every retry: the number of attempts, a **retry budget** (retries
may be at most a fraction of the recent requests, plus a small reserve), and the
request's deadline (no backoff sleep or attempt that cannot finish in time). Backoff is
exponential with full jitter; an upstream's ``Retry-After`` is honoured, and when it
asks for longer than ``max_delay`` the call is not retried (the error goes to the layer
outside, for example to ``fallback``).

A stream is retried freely until its first chunk reached the caller; after that it is
resumed (see ``resumption.py``) or fails with an explicit error. A request may lower
(or, up to ``max_request_attempts``, raise) its attempts with ``"retries": N`` in its body
or ``x-onion-retries`` (``context.chain``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import anyio
import structlog

from onion import (
    UPSTREAM_FAILURES,
    BadRequest,
    CallNext,
    Clock,
    Layer,
    Order,
    Request,
    Response,
    SystemClock,
    failure_class,
    failure_classes,
    system_clock,
)

from .resumption import ResumeMode, note_resumed, open_resumed, recover_stream, resume_mode

__all__ = ["DEFAULT_MOVE_ON", "DEFAULT_RETRY_ON", "Retry", "RetryBudget", "RetryPolicy"]

_log = structlog.get_logger("onion.retry")


DEFAULT_RETRY_ON = UPSTREAM_FAILURES
"""Failure classes ``retry`` retries by default."""

DEFAULT_MOVE_ON = frozenset({"first_chunk", "idle", "timeout"})
"""Classes not retried on the same model while an outer ``fallback`` has another one."""


class RetryPolicy:
    """Which failures to retry and how long to wait (exponential backoff, full jitter).

    ``retry_on``: the failure classes retried (``DEFAULT_RETRY_ON``); ``move_on``: those
    of them not retried while an outer ``fallback`` has another model to try
    (``DEFAULT_MOVE_ON``: waiting out the same limit again only delays the fallback). A
    ``ProviderError`` its provider marked not retryable (an exhausted quota's 429) is
    never retried. ``retryable(error)``, when given, replaces all of this.

    The delay before retry ``n`` (1-based) is uniform in
    ``[0, min(max_delay, base_delay * 2 ** (n - 1))]``; a ``Retry-After`` from the
    upstream raises it to at least that value, and if that is above ``max_delay`` the
    call is not retried.
    """

    __slots__ = ("attempts", "base_delay", "max_delay", "move_on", "retry_on", "retryable")

    def __init__(
        self,
        attempts: int = 3,
        base_delay: float = 0.2,
        max_delay: float = 8.0,
        retryable: Callable[[BaseException], bool] | None = None,
        *,
        retry_on: frozenset[str] | list[str] = DEFAULT_RETRY_ON,
        move_on: frozenset[str] | list[str] = DEFAULT_MOVE_ON,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if base_delay < 0 or max_delay < 0:
            raise ValueError("delays cannot be negative")
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.retryable = retryable
        self.retry_on = failure_classes(retry_on, "retry_on")
        self.move_on = failure_classes(move_on, "move_on")

    def should_retry(self, error: BaseException, alternatives: int = 0) -> bool:
        """Whether ``error`` is worth another attempt on the same model, with
        ``alternatives`` more models an outer fallback could try instead."""
        if self.retryable is not None:
            return self.retryable(error)
        kind = failure_class(error)
        if kind not in self.retry_on or (alternatives and kind in self.move_on):
            return False
        return getattr(error, "retryable", True) is not False

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

    __slots__ = (
        "_clock",
        "_index",
        "_now",
        "_requests",
        "_retries",
        "_slot",
        "_slot_ends",
        "_slot_seconds",
        "ratio",
        "reserve",
        "window",
    )

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
        # The same reading as system_clock.now without its Python frame (once per request).
        self._now = time.monotonic if type(self._clock) is SystemClock else self._clock.now
        self._slot_seconds = window / slots
        self._requests = [0] * slots
        self._retries = [0] * slots
        self._slot = int(self._now() // self._slot_seconds)
        self._index = self._slot % slots
        self._slot_ends = (self._slot + 1) * self._slot_seconds

    def _advance(self) -> int:
        now = self._now()
        if now < self._slot_ends:
            # Still in the current bucket (or the clock went back): nothing slid out.
            return self._index
        slot = int(now // self._slot_seconds)
        size = len(self._requests)
        # Clear the buckets that slid out of the window since the last call.
        for stale in range(self._slot + 1, min(slot, self._slot + size) + 1):
            self._requests[stale % size] = 0
            self._retries[stale % size] = 0
        self._slot = max(slot, self._slot)
        self._index = self._slot % size
        self._slot_ends = (self._slot + 1) * self._slot_seconds
        return self._index

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
    requests that may be retried), ``retry_on`` and ``move_on`` (failure classes, see
    ``RetryPolicy``), ``max_request_attempts`` (the most attempts a request may ask for
    with ``retries``; default ``attempts``), ``resume`` (``"auto"``, the default: by continuation
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
        retry_on: list[str] | None = None,
        move_on: list[str] | None = None,
        max_request_attempts: int | None = None,
        *,
        policy: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = None,
        clock: Clock | None = None,
        seed: int | None = None,
    ) -> None:
        self.clock = clock or system_clock
        self.policy = policy or RetryPolicy(
            attempts,
            base_delay,
            max_delay,
            retry_on=DEFAULT_RETRY_ON if retry_on is None else retry_on,
            move_on=DEFAULT_MOVE_ON if move_on is None else move_on,
        )
        self.max_request_attempts = max_request_attempts or self.policy.attempts
        self.budget = retry_budget or RetryBudget(budget, clock=self.clock)
        self.resume = resume
        self._rng = random.Random(seed)
        self.retries = 0  # total retries made, for observation

    def acts_on(self) -> str:
        """The failure classes this layer retries, for ``onion check``."""
        policy = self.policy
        if policy.retryable is not None:
            return "retries: what its retryable() accepts"
        moved = sorted(policy.retry_on & policy.move_on)
        text = "retries: " + ", ".join(sorted(policy.retry_on))
        return text + (f" (moves on at once with a fallback left: {', '.join(moved)})" if moved else "")

    def _attempts(self, request: Request) -> int:
        chain = request.context.chain
        if chain is None or chain.retries is None:
            return self.policy.attempts
        asked = chain.retries + 1
        if chain.retries < 0 or asked > self.max_request_attempts:
            raise BadRequest(f"retries must be between 0 and {self.max_request_attempts - 1} here", param="retries")
        return asked

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        # The usual request asks nothing of its own: the policy's attempts, no call to ask.
        chain = request.context.chain
        attempts = self.policy.attempts if chain is None else self._attempts(request)
        self.budget.record_request()
        attempt = 1
        while True:
            try:
                response = await call_next(request)
                break
            except Exception as error:
                await self._before_retry(request, error, attempt, attempts)
            attempt += 1
        if not response.is_stream or attempt >= attempts:
            # No attempt left to recover the stream with: a failure could only be raised
            # again as it is, so its chunks pass with no recovery generator around them.
            return response
        state = _StreamRetry(self, request, call_next, attempt, attempts, response)
        mode = resume_mode(request, self.resume)
        return response.wrap(lambda chunks: recover_stream(chunks, state.reopen, mode=mode))

    async def _before_retry(self, request: Request, error: Exception, attempt: int, attempts: int) -> None:
        """Sleep before the next attempt, or re-raise ``error`` if none may be made."""
        policy = self.policy
        context = request.context
        if attempt >= attempts or not policy.should_retry(error, context.alternatives):
            raise error
        delay = policy.delay(attempt, error, self._rng)
        deadline = context.deadline
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
            attempts=attempts,
            delay_s=round(delay, 3),
            error=type(error).__name__,
            failure=failure_class(error),
            upstream_status=getattr(error, "upstream_status", None),
            request_id=context.request_id,
        )
        if delay > 0:
            await self.clock.sleep(delay)


class _StreamRetry:
    """The retry state of one streamed call, shared with its recovery generator."""

    __slots__ = ("attempt", "attempts", "call_next", "layer", "outer", "request")

    def __init__(
        self, layer: Retry, request: Request, call_next: CallNext, attempt: int, attempts: int, outer: Response
    ) -> None:
        self.layer = layer
        self.request = request
        self.call_next = call_next
        self.attempt = attempt
        self.attempts = attempts
        self.outer = outer  # the response the caller holds

    async def reopen(self, error: BaseException, sent: str) -> Response:
        mode = resume_mode(self.request, self.layer.resume)
        while True:
            if not isinstance(error, Exception):
                raise error
            await self.layer._before_retry(self.request, error, self.attempt, self.attempts)
            self.attempt += 1
            try:
                response = await open_resumed(self.request, sent, mode, self.call_next)
            except Exception as failed:
                error = failed
                continue
            note_resumed(self.outer, response, sent, mode)
            return response
