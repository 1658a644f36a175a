"""Where the caches keep their answers: in process memory or in Redis.

The exact cache (and the semantic cache, for its entries) talk to a ``CacheStore``: a
small async key -> bytes store with a TTL. Values are encoded by the caller with msgspec,
so what is counted against the byte budget is exactly what is kept.

- ``MemoryStore``: one process; least-recently-used eviction under a bound in **bytes**
  (keys plus values), entries expire after their TTL measured on an injectable clock.
- ``RedisStore``: shared by every gateway process; Redis applies the TTL (``PX``) and its
  own ``maxmemory`` policy bounds the size. The synchronous redis client runs in a worker
  thread so the store works the same under asyncio and trio.
"""

from __future__ import annotations

import fnmatch
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import msgspec

from onion import Clock, Completion, RedisClient, system_clock

__all__ = [
    "CacheStats",
    "CacheStore",
    "MemoryStore",
    "RedisStore",
    "decode_completion",
    "encode_completion",
    "purge_redis",
]

# Per-entry bookkeeping (OrderedDict node, tuple, float) counted against the byte budget
# so that many tiny entries cannot exceed it by their overhead alone.
ENTRY_OVERHEAD = 96
_INF = float("inf")

_ENCODER = msgspec.msgpack.Encoder()
_COMPLETION_DECODER = msgspec.msgpack.Decoder(Completion)


def encode_completion(completion: Completion) -> bytes:
    """A completion as the bytes a store keeps (msgpack)."""
    return _ENCODER.encode(completion)


def decode_completion(data: bytes) -> Completion:
    """The completion ``encode_completion`` encoded."""
    return _COMPLETION_DECODER.decode(data)


class CacheStats(msgspec.Struct):
    """Counters of a cache: lookups that hit or missed, entries stored, evicted, expired."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    evictions: int = 0
    expirations: int = 0
    bypassed: int = 0
    errors: int = 0


@runtime_checkable
class CacheStore(Protocol):
    """An async key -> bytes store with per-entry TTL."""

    stats: CacheStats

    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or ``None`` if absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        """Store ``value`` under ``key`` for ``ttl_seconds`` (``None``: until evicted)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        ...

    async def purge(self, pattern: str) -> int:
        """Remove every key matching the glob ``pattern`` (``*`` any run of characters);
        returns how many."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class MemoryStore:
    """An in-process LRU store bounded in bytes, with TTL on ``clock``.

    ``size_bytes`` never exceeds ``max_bytes``: a value too large to fit is not stored,
    and older entries are evicted (least recently used first) to make room.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, *, clock: Clock | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self.clock = clock or system_clock
        # The system clock's reading without its method's frame (every lookup reads it).
        self._now: Callable[[], float] = time.monotonic if self.clock is system_clock else self.clock.now
        self.stats = CacheStats()
        self.size_bytes = 0
        # key -> (expires_at or inf, value); order = recency, oldest first.
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _cost(key: str, value: bytes) -> int:
        return len(key) + len(value) + ENTRY_OVERHEAD

    def get_now(self, key: str) -> bytes | None:
        """``get`` without awaiting (the memory store never waits)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if expires_at <= self._now():
            self._remove(key, value)
            self.stats.expirations += 1
            return None
        self._entries.move_to_end(key)
        return value

    def set_now(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        """``set`` without awaiting."""
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self.size_bytes -= len(key) + len(old[1]) + ENTRY_OVERHEAD
        cost = len(key) + len(value) + ENTRY_OVERHEAD  # ``_cost``, inline: this runs per miss
        max_bytes = self.max_bytes
        if cost > max_bytes:
            return
        size = self.size_bytes
        while size + cost > max_bytes:
            oldest, (_, oldest_value) = entries.popitem(last=False)
            size -= len(oldest) + len(oldest_value) + ENTRY_OVERHEAD
            self.stats.evictions += 1
        entries[key] = (self._now() + ttl_seconds if ttl_seconds is not None else _INF, value)
        self.size_bytes = size + cost

    def delete_now(self, key: str) -> None:
        """``delete`` without awaiting."""
        entry = self._entries.get(key)
        if entry is not None:
            self._remove(key, entry[1])

    def _remove(self, key: str, value: bytes) -> None:
        del self._entries[key]
        self.size_bytes -= self._cost(key, value)

    async def get(self, key: str) -> bytes | None:
        """The value under ``key``; refreshes its recency."""
        return self.get_now(key)

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        """Store ``value``; evicts least-recently-used entries to stay under ``max_bytes``."""
        self.set_now(key, value, ttl_seconds)

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        self.delete_now(key)

    async def purge(self, pattern: str) -> int:
        """Remove the keys matching the glob ``pattern``; how many."""
        doomed = [key for key in self._entries if fnmatch.fnmatchcase(key, pattern)]
        for key in doomed:
            self.delete_now(key)
        return len(doomed)

    async def aclose(self) -> None:
        """Nothing to release."""


class RedisStore:
    """A store in Redis, shared by every process that uses the same ``url`` and ``prefix``.

    Redis applies the TTL on its own clock; bound its size with Redis's ``maxmemory`` and
    an ``allkeys-lru`` (or ``volatile-lru``) policy. Each operation has ``deadline``
    seconds (``onion.RedisClient``: past it, or while its breaker is open, the call raises
    and the cache serves from upstream instead).
    """

    def __init__(
        self, url: str, *, prefix: str = "onion:cache:", client: RedisClient | None = None, deadline: float = 0.05
    ) -> None:
        self.prefix = prefix
        self.stats = CacheStats()
        self.redis = client or RedisClient(url, timeout=1.0, deadline=deadline)

    async def get(self, key: str) -> bytes | None:
        """The value under ``key`` (Redis drops expired keys itself)."""
        return await self.redis.run(self.redis.sync.get, self.prefix + key)

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        """Store ``value`` with a millisecond TTL."""
        px = max(1, int(ttl_seconds * 1000)) if ttl_seconds is not None else None
        await self.redis.run(lambda: self.redis.sync.set(self.prefix + key, value, px=px))

    async def delete(self, key: str) -> None:
        """Remove ``key``."""
        await self.redis.run(self.redis.sync.delete, self.prefix + key)

    async def purge(self, pattern: str) -> int:
        """Remove the keys matching the glob ``pattern`` from Redis, for every process
        sharing the prefix: ``SCAN`` in batches (each one call within the deadline, so a
        large cache does not hold Redis), ``UNLINK`` what each batch found."""
        return await purge_redis(self.redis, self.prefix + pattern)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()


async def purge_redis(
    redis: RedisClient, match: str, keep: Callable[[list[bytes]], Awaitable[list[bytes]]] | None = None
) -> int:
    """``UNLINK`` every Redis key matching the glob ``match`` (``keep`` may filter each
    batch first, as the semantic cache does by an entry's model and caller); how many."""
    cursor, removed = 0, 0
    while True:
        cursor, keys = await redis.run(lambda c=cursor: redis.sync.scan(c, match=match, count=500))
        if keep is not None and keys:
            keys = await keep(keys)
        if keys:
            removed += await redis.run(redis.sync.unlink, *keys)
        if not cursor:
            return removed


def make_store(
    backend: str,
    *,
    max_bytes: int,
    redis_url: str | None,
    prefix: str,
    clock: Clock | None,
    redis_deadline: float = 0.05,
) -> MemoryStore | RedisStore:
    """The store a layer's ``backend`` / ``redis_url`` parameters name."""
    if backend == "memory":
        return MemoryStore(max_bytes, clock=clock)
    if backend == "redis":
        if not redis_url:
            raise ValueError("backend 'redis' needs redis_url")
        return RedisStore(redis_url, prefix=prefix, deadline=redis_deadline)
    raise ValueError(f"backend must be 'memory' or 'redis', got {backend!r}")
