"""Where ``rate_limit`` keeps its windows: in process memory, or in Redis shared by every
gateway process.

Both keep a **sliding-window log** (see ``rate_limit``): each admission is an entry
``(time, weight)`` and a window's total is a running sum, so a token reservation can be
reconciled to the real usage later. ``MemoryBackend`` is exact and does no I/O;
``RedisBackend`` runs one atomic Lua script per check on the Redis server's clock, so
several processes agree on one limit.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from onion import Clock, RedisClient, system_clock

__all__ = ["BACKEND_DOWN", "MemoryBackend", "RateBackend", "RedisBackend"]


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
    """Shared windows in Redis, through ``onion.RedisClient`` (a worker thread per call).

    Each ``acquire`` / ``adjust`` is one Lua script call (``EVALSHA``, reloaded if the
    server lost it), so one thread hop per call, and it works the same under asyncio and
    trio. ``client`` may be a ``RedisClient`` shared with other layers.
    """

    def __init__(self, url: str, *, client: RedisClient | None = None, deadline: float = 0.05) -> None:
        self.redis = client or RedisClient(url, timeout=1.0, deadline=deadline)
        self._acquire = self.redis.script(_ACQUIRE)
        self._adjust = self.redis.script(_ADJUST)

    @staticmethod
    def _keys(key: str) -> list[str]:
        # One hash tag per limit key keeps its three keys in one Redis Cluster slot.
        return [f"{{{key}}}:log", f"{{{key}}}:w", f"{{{key}}}:total"]

    async def acquire(self, limits: list[tuple[str, int, int]], member: str, window: float) -> tuple[float, int]:
        keys: list[str] = []
        args: list[Any] = [int(window * 1000), member]
        for key, limit, cost in limits:
            keys.extend(self._keys(key))
            args.extend((limit, cost))
        wait_ms, refused = await self.redis.run(self._acquire, keys, args)
        return int(wait_ms) / 1000, int(refused)

    async def adjust(self, key: str, member: str, weight: int) -> None:
        await self.redis.run(self._adjust, self._keys(key), [member, weight])

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()


BACKEND_DOWN: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, OSError)
try:  # redis's own connection errors do not all derive from the builtins
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import TimeoutError as _RedisTimeoutError

    BACKEND_DOWN = (*BACKEND_DOWN, _RedisConnectionError, _RedisTimeoutError)
except ImportError:  # pragma: no cover - redis is an optional dependency
    pass
