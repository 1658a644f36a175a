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

Tokens: before the call, an estimate (prompt characters / 4 plus the request's
completion limit, or ``default_completion_tokens``) is reserved; when the answer ends
(streams included, via ``on_end``) the entry is reconciled to the real
``usage.total_tokens``. A call that fails before any answer is refunded. Overruns are
charged after the fact (they delay later calls); only reservations are checked.

Backends: ``"memory"`` (one process) and ``"redis"`` (several gateway processes share
one limit; one atomic Lua script checks and reserves every limit of a call; time is the
Redis server's clock, so the processes agree on it). The Redis backend runs the
synchronous redis client in a worker thread (one hop per check), so it works the same
under asyncio and trio. If Redis is unreachable the layer fails open (admits, logs a
warning) or closed (rejects with ``RateLimited``) as configured, on either event loop;
the choice is logged when the layer is built.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, Protocol

import anyio
import anyio.to_thread
import structlog

from onion import CallNext, Clock, Completion, Layer, RateLimited, Request, Response, system_clock

__all__ = ["MemoryBackend", "RateBackend", "RateLimit", "RedisBackend", "estimate_tokens"]

_log = structlog.get_logger("onion.rate_limit")


class RateBackend(Protocol):
    """Where the windows live. ``limits`` is ``[(key, limit, cost), ...]``; all or none
    are reserved under ``member``. Returns ``(0, -1)`` when admitted, else the seconds to
    wait and the index of the limit that refused."""

    async def acquire(self, limits: list[tuple[str, int, int]], member: str, window: float) -> tuple[float, int]: ...

    async def adjust(self, key: str, member: str, weight: int) -> None: ...


class _Log:
    """One key's window: entries ``[time, weight]`` in admission order (a deque, so
    expiring the oldest is O(1)), an index by member for reconciliation, and the total."""

    __slots__ = ("by_member", "entries", "total")

    def __init__(self) -> None:
        self.entries: deque[list[Any]] = deque()  # [time, weight, member]
        self.by_member: dict[str, list[Any]] = {}
        self.total = 0

    def add(self, member: str, at: float, weight: int) -> None:
        entry = [at, weight, member]
        self.entries.append(entry)
        self.by_member[member] = entry
        self.total += weight

    def prune(self, horizon: float) -> None:
        entries = self.entries
        while entries and entries[0][0] <= horizon:
            _, weight, member = entries.popleft()
            del self.by_member[member]
            self.total -= weight

    def wait(self, need: int, now: float, window: float) -> float:
        """Seconds until at least ``need`` weight has expired."""
        freed = 0
        for at, weight, _ in self.entries:
            freed += weight
            if freed >= need:
                # Clamped: float rounding must not report more than one window.
                return min(window, max(0.0, at + window - now))
        return window


class MemoryBackend:
    """The in-process backend (the default): exact, no I/O.

    Windows of callers that went quiet are dropped by a sweep every ``sweep_every``
    acquisitions, so memory follows the active callers, not every caller ever seen.
    """

    def __init__(self, clock: Clock | None = None, *, sweep_every: int = 4096) -> None:
        self.clock = clock or system_clock
        self._logs: dict[str, _Log] = {}
        self._sweep_every = sweep_every
        self._until_sweep = sweep_every

    def __len__(self) -> int:
        return len(self._logs)

    def _sweep(self, horizon: float) -> None:
        for key in list(self._logs):
            log = self._logs[key]
            log.prune(horizon)
            if not log.entries:
                del self._logs[key]

    async def acquire(self, limits: list[tuple[str, int, int]], member: str, window: float) -> tuple[float, int]:
        now = self.clock.now()
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self._until_sweep = self._sweep_every
            self._sweep(now - window)
        logs = []
        wait, refused = 0.0, -1
        for index, (key, limit, cost) in enumerate(limits):
            log = self._logs.get(key)
            if log is None:
                log = self._logs[key] = _Log()
            log.prune(now - window)
            logs.append(log)
            if log.total + cost > limit:
                seconds = log.wait(log.total + cost - limit, now, window)
                if seconds > wait:
                    wait, refused = seconds, index
        if refused >= 0:
            return wait, refused
        for log, (_, _, cost) in zip(logs, limits, strict=True):
            if cost > 0:
                log.add(member, now, cost)
        return 0.0, -1

    async def adjust(self, key: str, member: str, weight: int) -> None:
        log = self._logs.get(key)
        entry = log.by_member.get(member) if log is not None else None
        if entry is not None and log is not None:
            log.total += weight - entry[1]
            entry[1] = weight


# KEYS: per limit (zset of member->time ms, hash of member->weight, running total).
# ARGV: window ms, member, then per limit: limit, cost. Returns {wait_ms, index}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local member = ARGV[2]
local n = #KEYS / 3
local totals = {}
local wait, refused = 0, -1
for i = 1, n do
  local z, h, tk = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local limit, cost = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local total = tonumber(redis.call('GET', tk) or '0')
  while true do
    local old = redis.call('ZRANGEBYSCORE', z, '-inf', now - window, 'LIMIT', 0, 500)
    if #old == 0 then break end
    local weights = redis.call('HMGET', h, unpack(old))
    for j = 1, #old do total = total - tonumber(weights[j] or '0') end
    redis.call('ZREM', z, unpack(old))
    redis.call('HDEL', h, unpack(old))
  end
  if total < 0 then total = 0 end
  redis.call('SET', tk, total, 'PX', window * 2)
  totals[i] = total
  if total + cost > limit then
    local need, freed, seconds = total + cost - limit, 0, window
    local entries = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
    for j = 1, #entries, 2 do
      freed = freed + tonumber(redis.call('HGET', h, entries[j]) or '0')
      if freed >= need then
        seconds = tonumber(entries[j + 1]) + window - now
        break
      end
    end
    if seconds > wait then wait, refused = seconds, i - 1 end
  end
end
if refused >= 0 then return {wait, refused} end
for i = 1, n do
  local cost = tonumber(ARGV[2 + 2 * i])
  if cost > 0 then
    local z, h, tk = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
    redis.call('ZADD', z, now, member)
    redis.call('HSET', h, member, cost)
    redis.call('SET', tk, totals[i] + cost, 'PX', window * 2)
    redis.call('PEXPIRE', z, window * 2)
    redis.call('PEXPIRE', h, window * 2)
  end
end
return {0, -1}
"""

# KEYS: zset, hash, total. ARGV: member, new weight. Only an entry still in the window changes.
_ADJUST = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('INCRBY', KEYS[3], tonumber(ARGV[2]) - tonumber(old))
return 1
"""


class RedisBackend:
    """Shared windows in Redis, through the synchronous redis client in a worker thread.

    Each ``acquire`` / ``adjust`` is one Lua script call (``EVALSHA``, reloaded if the
    server lost it), so one thread hop per call, and it works the same under asyncio and
    trio. ``client`` may be any synchronous ``redis.Redis`` (thread-safe connection pool).
    """

    def __init__(self, url: str, *, client: Any = None) -> None:
        import redis

        self.client = client or redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._adjust = self.client.register_script(_ADJUST)

    @staticmethod
    def _keys(key: str) -> list[str]:
        # One hash tag per limit key keeps its three keys in one Redis Cluster slot.
        return [f"{{{key}}}:log", f"{{{key}}}:w", f"{{{key}}}:total"]

    @staticmethod
    async def _run(fn: Callable[..., Any], *args: Any) -> Any:
        # Abandoned on cancel (like the caches' RedisStore): the socket timeout ends the thread.
        return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)

    async def acquire(self, limits: list[tuple[str, int, int]], member: str, window: float) -> tuple[float, int]:
        keys: list[str] = []
        args: list[Any] = [int(window * 1000), member]
        for key, limit, cost in limits:
            keys.extend(self._keys(key))
            args.extend((limit, cost))
        wait_ms, refused = await self._run(self._acquire, keys, args)
        return int(wait_ms) / 1000, int(refused)

    async def adjust(self, key: str, member: str, weight: int) -> None:
        await self._run(self._adjust, self._keys(key), [member, weight])

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._run(self.client.close)


def estimate_tokens(request: Request, default_completion_tokens: int = 256) -> int:
    """A cheap upper-leaning estimate: ~4 characters a token, plus the answer's limit."""
    prompt = sum(len(m.text) for m in request.messages) // 4 + 4 * len(request.messages)
    answer = request.answer_tokens_limit
    return prompt + (answer if answer is not None else default_completion_tokens)


_BACKEND_DOWN: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, OSError)
try:  # redis's own connection errors do not all derive from the builtins
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import TimeoutError as _RedisTimeoutError

    _BACKEND_DOWN = (*_BACKEND_DOWN, _RedisConnectionError, _RedisTimeoutError)
except ImportError:  # pragma: no cover - redis is an optional dependency
    pass


class RateLimit(Layer):
    """Reject calls over ``requests_per_minute`` / ``tokens_per_minute``.

    TOML: ``requests_per_minute``, ``tokens_per_minute``, ``per`` (``"caller"``: one
    window per ``context.caller`` or ``request.user``; ``"global"``: one for all),
    ``backend`` (``"memory"`` | ``"redis"``), ``redis_url``, ``fail_open``,
    ``window_seconds`` (60), ``default_completion_tokens``, ``key_prefix``. For both a
    per-caller and a global limit, stack two ``rate_limit`` layers.
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
        *,
        store: RateBackend | None = None,
        estimate: Callable[[Request], int] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if requests_per_minute is None and tokens_per_minute is None:
            raise ValueError("set requests_per_minute and/or tokens_per_minute")
        if (requests_per_minute is not None and requests_per_minute < 1) or (
            tokens_per_minute is not None and tokens_per_minute < 1
        ):
            raise ValueError("limits must be positive")
        if store is None and backend == "redis":
            if not redis_url:
                raise ValueError("backend 'redis' needs redis_url")
            store = RedisBackend(redis_url)
        self.store: RateBackend = store if store is not None else MemoryBackend(clock)
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.per = per
        self.fail_open = fail_open
        self.window = window_seconds
        self.prefix = f"{key_prefix}:{per}"
        self._estimate = estimate or (lambda r: estimate_tokens(r, default_completion_tokens))
        self._ids = itertools.count()
        _log.info(
            "rate limit ready",
            backend=type(self.store).__name__,
            per=per,
            on_backend_down="admit (fail open)" if fail_open else "reject (fail closed)",
        )

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
        limits: list[tuple[str, int, int]] = []
        if self.requests_per_minute is not None:
            limits.append((key + ":req", self.requests_per_minute, 1))
        tokens_key = None
        if self.tokens_per_minute is not None:
            tokens_key = key + ":tok"
            # A reservation larger than the whole limit could never pass; cap it.
            limits.append((tokens_key, self.tokens_per_minute, min(self._estimate(request), self.tokens_per_minute)))
        try:
            wait, refused = await self.store.acquire(limits, member, self.window)
        except _BACKEND_DOWN as error:
            _log.warning(
                "rate limit backend unreachable",
                error=type(error).__name__,
                action="admitted (fail open)" if self.fail_open else "rejected (fail closed)",
            )
            if not self.fail_open:
                raise RateLimited("rate limit backend unreachable; failing closed", retry_after=1.0) from None
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
        completion = response.completion
        if completion is not None:  # complete: reconcile now, without wrapping anything
            await self._settle(tokens_key, member, completion)
            return response
        return await response.on_end(lambda completion, error: self._settle(tokens_key, member, completion))

    async def _settle(self, key: str, member: str, completion: Completion | None) -> None:
        if completion is not None and completion.usage is not None and completion.usage.total_tokens:
            await self._reconcile(key, member, completion.usage.total_tokens)

    async def _reconcile(self, key: str, member: str, tokens: int) -> None:
        try:
            await self.store.adjust(key, member, tokens)
        except _BACKEND_DOWN as error:
            _log.warning("rate limit backend unreachable while reconciling", error=type(error).__name__)
