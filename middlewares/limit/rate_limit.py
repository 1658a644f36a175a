"""``rate_limit``: requests per minute and tokens per minute, per caller or global.

Sits near the outside of the onion (inside ``mask_errors`` and the logging/metrics
layers, outside caches only if cached answers should count too). A call that would go
over a limit is rejected with ``RateLimited`` and a ``retry_after`` that is exact: the
time until enough of the window's earlier admissions expire.

Algorithm: a **sliding-window log** (each admission is an entry ``(time, weight)``;
the window's total is kept as a running sum). We chose it over GCRA because
"N per minute" then means what users read: in *any* 60-second window, at most N
requests (and at most the token limit's worth of token reservations) are admitted. GCRA
stores one timestamp per key and is cheaper, but with a burst of N it admits up to ~2N
in some 60-second windows, and it cannot *refund* part of a weighted reservation, which
token reconciliation needs. The log costs one entry per admitted request per window.

Tokens: before the call, an estimate (the prompt as ``onion.prompt_tokens`` counts it,
plus the request's completion limit, or ``default_completion_tokens``) is reserved; when the answer ends
(streams included, via ``on_end``) the entry is reconciled to the real
``usage.total_tokens``. A call that fails before any answer is refunded. Overruns are
charged after the fact (they delay later calls); only reservations are checked.

Backends: ``"memory"`` (one process) and ``"redis"`` (several gateway processes share
one limit; one atomic Lua script checks and reserves every limit of a call; time is the
Redis server's clock, so the processes agree on it). The Redis backend runs the
synchronous redis client in a worker thread (one hop per check), so it works the same
under asyncio and trio. If Redis is unreachable the layer fails open (admits, logs a
warning, at most one line per ``log_every_seconds`` with a count of the ones
suppressed) or closed (rejects with ``RateLimiterUnavailable``, 503) as configured, on either event loop;
the choice is logged when the layer is built.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Literal

import anyio
import anyio.to_thread
import structlog

from onion import (
    AnswerEnd,
    CallNext,
    Clock,
    Layer,
    RateLimited,
    RateLimiterUnavailable,
    Request,
    Response,
    input_tokens,
    system_clock,
)

from .rate_backends import BACKEND_DOWN, MemoryBackend, RateBackend, RedisBackend

__all__ = ["RateLimit", "estimate_tokens"]

_log = structlog.get_logger("onion.rate_limit")


class _DownWarnings:
    """The "backend unreachable" warning, at most one line per ``every`` seconds.

    While Redis is down every request fails the same way; a line per request would flood
    the log at the gateway's request rate. The first failure is logged at once, later ones
    are counted, and the next line (after ``every`` seconds) says how many were suppressed.
    """

    __slots__ = ("clock", "every", "next_at", "suppressed")

    def __init__(self, clock: Clock, every: float) -> None:
        self.clock = clock
        self.every = every
        self.next_at = float("-inf")
        self.suppressed = 0

    def warn(self, event: str, **fields: object) -> None:
        now = self.clock.now()
        if now < self.next_at:
            self.suppressed += 1
            return
        self.next_at = now + self.every
        suppressed, self.suppressed = self.suppressed, 0
        _log.warning(event, suppressed=suppressed, **fields)


def estimate_tokens(request: Request, default_completion_tokens: int = 256) -> int:
    """The tokens to reserve: the prompt counted as ``onion.input_tokens`` counts it (the
    estimate, which errs high: Japanese and emoji count a token per character), plus the
    answer's limit or ``default_completion_tokens`` (none for an embeddings request,
    whose answer costs no tokens)."""
    if request.embedding is not None:
        return input_tokens(request)
    answer = request.answer_tokens_limit
    return input_tokens(request) + (answer if answer is not None else default_completion_tokens)


class RateLimit(Layer):
    """Reject calls over ``requests_per_minute`` / ``tokens_per_minute``.

    TOML: ``requests_per_minute``, ``tokens_per_minute``, ``per`` (``"caller"``: one
    window per ``context.caller`` or ``request.user``; ``"global"``: one for all),
    ``backend`` (``"memory"`` | ``"redis"``), ``redis_url``, ``fail_open``,
    ``window_seconds`` (60), ``default_completion_tokens``, ``key_prefix``,
    ``redis_deadline`` (seconds per Redis operation, 0.05), ``log_every_seconds`` (the
    "backend unreachable" warning at most once per this, with the count of the
    ones suppressed since the last line; 10). A backend that is down, late
    or skipped by its breaker admits the call (``fail_open``) or answers 503
    ``rate_limiter_unavailable`` (``RateLimiterUnavailable``), never 429. For both a
    per-caller and a global limit, stack two ``rate_limit`` layers. Per caller, a
    virtual key's ``rpm``/``tpm`` (``context.key``) replace the layer's limits for that
    key; with ``keys_only = true`` the layer sets no limits of its own and applies only
    the keys' (a key without rpm/tpm passes).
    """

    name = "rate_limit"
    provides = frozenset({"rate_limit"})
    short_circuit = "over a limit (RateLimited with retry_after; nothing sent upstream)"

    def __init__(
        self,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        per: Literal["caller", "global"] = "caller",
        backend: Literal["memory", "redis"] = "memory",
        redis_url: str | None = None,
        fail_open: bool = False,
        window_seconds: float = 60.0,
        default_completion_tokens: int = 256,
        key_prefix: str = "onion:rl",
        redis_deadline: float = 0.05,
        log_every_seconds: float = 10.0,
        keys_only: bool = False,
        *,
        store: RateBackend | None = None,
        estimate: Callable[[Request], int] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if requests_per_minute is None and tokens_per_minute is None and not (keys_only and per == "caller"):
            raise ValueError("set requests_per_minute and/or tokens_per_minute (or keys_only = true)")
        if (requests_per_minute is not None and requests_per_minute < 1) or (
            tokens_per_minute is not None and tokens_per_minute < 1
        ):
            raise ValueError("limits must be positive")
        if store is None and backend == "redis":
            if not redis_url:
                raise ValueError("backend 'redis' needs redis_url")
            store = RedisBackend(redis_url, deadline=redis_deadline)
        self.store: RateBackend = store if store is not None else MemoryBackend(clock)
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.per = per
        self.fail_open = fail_open
        self.window = window_seconds
        self.prefix = f"{key_prefix}:{per}"
        self._estimate = estimate or (lambda r: estimate_tokens(r, default_completion_tokens))
        self._ids = itertools.count()
        self._down = _DownWarnings(clock or system_clock, log_every_seconds)
        _log.info(
            "rate limit ready",
            backend=type(self.store).__name__,
            per=per,
            on_backend_down="admit (fail open)" if fail_open else "reject (fail closed)",
        )

    async def ping(self) -> None:
        """Return when the shared store answers (``onion.Pingable``, for ``/readyz``); at
        once for a store in process memory."""
        redis = getattr(self.store, "redis", None)
        if redis is not None:
            await redis.ping()

    async def aclose(self) -> None:
        """Release the backend's connections (the Redis pool), if it has any."""
        close = getattr(self.store, "aclose", None)
        if close is not None:
            await close()

    def _key(self, request: Request) -> str:
        if self.per == "global":
            return self.prefix
        caller = request.context.caller or request.user or "anonymous"
        return f"{self.prefix}:{caller}"

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        key = self._key(request)
        member = f"{request.context.request_id}:{next(self._ids)}"
        rpm, tpm = self.requests_per_minute, self.tokens_per_minute
        policy = request.context.key
        if policy is not None and self.per == "caller":
            # A virtual key's own limits replace the layer's for that key.
            rpm = policy.rpm if policy.rpm is not None else rpm
            tpm = policy.tpm if policy.tpm is not None else tpm
        limits: list[tuple[str, int, int]] = []
        if rpm is not None:
            limits.append((key + ":req", rpm, 1))
        tokens_key = None
        if tpm is not None:
            tokens_key = key + ":tok"
            # A reservation larger than the whole limit could never pass; cap it.
            limits.append((tokens_key, tpm, min(self._estimate(request), tpm)))
        if not limits:
            return await call_next(request)
        try:
            wait, refused = await self.store.acquire(limits, member, self.window)
        except BACKEND_DOWN as error:
            self._down.warn(
                "rate limit backend unreachable",
                error=type(error).__name__,
                action="admitted (fail open)" if self.fail_open else "rejected (fail closed)",
            )
            if not self.fail_open:
                # Not a 429: the caller is over no limit, the gateway cannot tell.
                detail = f"rate limit backend unreachable ({type(error).__name__}); failing closed"
                raise RateLimiterUnavailable(detail) from None
            return await call_next(request)
        if refused >= 0:
            kind = "requests" if limits[refused][0].endswith(":req") else "tokens"
            raise RateLimited(f"{self.per} {kind} per minute limit reached", retry_after=wait, limit=kind)
        if tokens_key is None:
            return await call_next(request)
        try:
            response = await call_next(request)
        except BaseException:
            # Refund: nothing was answered. Shielded, so a cancelled call still refunds.
            with anyio.CancelScope(shield=True):
                await self._reconcile(tokens_key, member, 0)
            raise
        return await response.on_end(lambda end: self._settle(tokens_key, member, end))

    async def _settle(self, key: str, member: str, end: AnswerEnd) -> None:
        # A stream cut or cancelled before its usage arrived keeps its reservation: what it
        # cost upstream is not known, and the estimate errs high.
        usage = end.completion.usage
        if usage is not None and usage.total_tokens:
            await self._reconcile(key, member, usage.total_tokens)

    async def _reconcile(self, key: str, member: str, tokens: int) -> None:
        try:
            await self.store.adjust(key, member, tokens)
        except BACKEND_DOWN as error:
            self._down.warn("rate limit backend unreachable while reconciling", error=type(error).__name__)
