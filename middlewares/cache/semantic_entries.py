"""Where the semantic cache keeps its entries: in this process, or in Redis shared by
every gateway process (each keeping its own vector index in sync).

Redis, step by step:

1. a store runs one Lua script that increments ``{prefix}version`` to ``n``, writes the
   entry (answer, text, scope, vector, wall-clock expiry) under ``{prefix}e:{key}`` with
   a TTL, and appends ``(n, key)`` to the stream ``{prefix}log`` (trimmed to about
   twice ``max_entries``);
2. before a lookup a process reads the stream after the last id it saw (non-blocking
   ``XREAD``), fetches the new entries with one ``MGET`` and adds their vectors to its
   index; if the ``n`` it reads is not one past the last it saw, the stream was trimmed
   past it and it reloads everything with ``SCAN``;
3. a hit is confirmed with ``GET``: an entry that Redis expired or evicted is dropped
   from the local index and the lookup counts as a miss. So Redis is the truth, the
   local index only a fast way to find a candidate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
import numpy as np
import structlog

from onion import CacheSelector, Completion, RedisClient

from .stores import CacheStats, purge_redis
from .vector_index import NearestIndex

__all__ = ["Entry", "MemoryEntries", "RedisEntries", "SemanticStats"]

log = structlog.get_logger("onion.cache")


class Entry(msgspec.Struct, frozen=True):
    """A stored answer with what is needed to match it again."""

    completion: Completion
    text: str
    scope: str
    vector: bytes = b""
    expires_at: float | None = None  # wall clock (time.time()), for Redis peers
    # What a purge selects by (``onion.CacheSelector``): the model asked for and the
    # caller (``""`` when the cache is shared); the scope above is only their hash.
    model: str = ""
    caller: str = ""

    def selected(self, selector: CacheSelector) -> bool:
        """Whether ``selector``'s model and scope (a caller) name this entry."""
        return (selector.model is None or selector.model == self.model) and (
            selector.scope is None or selector.scope == self.caller
        )


_ENTRY_ENCODER = msgspec.msgpack.Encoder()
_ENTRY_DECODER = msgspec.msgpack.Decoder(Entry)


class SemanticStats(CacheStats):
    """A cache's counters, and the semantic cache's own: lookups below the threshold or
    rejected by a precision guard, ineligible requests, embedder failures, full reloads of
    the local index from Redis (``resyncs``); with a bound, the candidates explored
    (answered upstream to learn) and the outcomes verified (and how many were wrong)."""

    below_threshold: int = 0
    guard_rejections: int = 0
    ineligible: int = 0
    embed_failures: int = 0
    resyncs: int = 0
    explored: int = 0
    verified: int = 0
    verified_wrong: int = 0


class MemoryEntries:
    """Entries in this process's memory, beside its index (which bounds and expires them)."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> set[str]:
        """The keys held now."""
        return set(self._entries)

    def forget(self, key: str) -> None:
        """Drop ``key`` (the index evicted or expired it)."""
        self._entries.pop(key, None)

    async def sync(self, index: NearestIndex) -> None:
        """Nothing to do: no other process adds entries."""

    async def get(self, key: str) -> Entry | None:
        """The entry under ``key``, if the index still holds it."""
        return self._entries.get(key)

    async def put(
        self,
        key: str,
        completion: Completion,
        text: str,
        scope: str,
        vector: np.ndarray,
        model: str = "",
        caller: str = "",
    ) -> bool:
        """Keep an entry; always succeeds."""
        self._entries[key] = Entry(completion, text, scope, model=model, caller=caller)
        return True

    async def purge(self, selector: CacheSelector) -> list[str]:
        """The keys of the entries ``selector`` names, dropped here (the caller drops
        them from its index)."""
        doomed = [
            key
            for key, entry in self._entries.items()
            if (selector.key is None or key == selector.key) and entry.selected(selector)
        ]
        for key in doomed:
            del self._entries[key]
        return doomed

    async def aclose(self) -> None:
        """Nothing to release."""


_STORE_SCRIPT = """
local n = redis.call('INCR', KEYS[2])
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[3], ARGV[1])
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'n', n, 'k', ARGV[4])
return n
"""


class RedisEntries:
    """Entries in Redis, shared with every process on the same ``prefix`` (see module doc).

    Failures are counted in ``stats.errors`` and logged; the lookup or store is skipped,
    never the request.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        ttl_seconds: float | None,
        max_entries: int,
        stats: SemanticStats,
        sync_interval_seconds: float = 0.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = RedisClient(url, timeout=2.0)
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.stats = stats
        self.sync_interval = sync_interval_seconds
        self._now = now
        self._store_script = self.redis.script(_STORE_SCRIPT)
        self._last_id: str | None = None
        self._last_n = 0
        self._syncing = False
        self._synced_at = float("-inf")

    def forget(self, key: str) -> None:
        """Nothing to drop locally: Redis expires entries itself."""

    def _failed(self, what: str, error: Exception) -> None:
        self.stats.errors += 1
        log.warning("semantic_cache.redis_failed", op=what, error=type(error).__name__)

    async def get(self, key: str) -> Entry | None:
        """The entry under ``key``, or ``None`` if Redis expired or evicted it (or failed)."""
        try:
            data = await self.redis.run(self.redis.sync.get, self.prefix + "e:" + key)
        except Exception as error:
            self._failed("get", error)
            return None
        return _ENTRY_DECODER.decode(data) if data is not None else None

    async def put(
        self,
        key: str,
        completion: Completion,
        text: str,
        scope: str,
        vector: np.ndarray,
        model: str = "",
        caller: str = "",
    ) -> bool:
        """Store an entry and log it for the peers; ``False`` if Redis failed."""
        ttl = self.ttl_seconds
        expires = time.time() + ttl if ttl is not None else None
        entry = Entry(completion, text, scope, vector.astype(np.float32).tobytes(), expires, model, caller)
        ttl_ms = int(ttl * 1000) if ttl is not None else 0
        keys = [self.prefix + "log", self.prefix + "version", self.prefix + "e:" + key]
        args = [_ENTRY_ENCODER.encode(entry), ttl_ms, 2 * self.max_entries, key]
        try:
            await self.redis.run(lambda: self._store_script(keys=keys, args=args))
        except Exception as error:
            self._failed("store", error)
            return False
        return True

    async def sync(self, index: NearestIndex) -> None:
        """Add the peers' new entries to ``index`` (at most every ``sync_interval``)."""
        now = self._now()
        if self._syncing or now - self._synced_at < self.sync_interval:
            # Another task of this process is already fetching, or one did a moment ago:
            # looking up against an index a few milliseconds stale is fine.
            return
        self._syncing = True
        self._synced_at = now
        try:
            fetched = await self.redis.run(self._fetch_updates, index)
        except Exception as error:
            self._failed("sync", error)
            return
        finally:
            self._syncing = False
        # The index is changed here, in the event loop's thread, never in the worker.
        wall = time.time()
        for key, data in fetched:
            if data is None or key in index:
                continue
            entry = _ENTRY_DECODER.decode(data)
            if len(entry.vector) != 4 * index.dim:
                continue  # written by a peer with another embedder under the same prefix
            ttl = entry.expires_at - wall if entry.expires_at is not None else None
            if ttl is None or ttl > 0:
                index.add(key, np.frombuffer(entry.vector, dtype=np.float32), entry.scope, ttl)

    def _fetch_updates(self, index: NearestIndex) -> list[tuple[str, bytes | None]]:
        """Worker thread, Redis I/O only: the entries logged since the last id seen
        (all entries after a gap in the log), as ``(key, encoded entry)``."""
        keys = self._logged_keys(index)
        if keys is None:
            keys = self._all_keys(index)
        client = self.redis.sync
        fetched: list[tuple[str, bytes | None]] = []
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            fetched.extend(zip(batch, client.mget([self.prefix + "e:" + k for k in batch]), strict=True))
        return fetched

    def _logged_keys(self, index: NearestIndex) -> list[str] | None:
        """The keys logged since the last id seen; ``None`` after a gap in the log."""
        if self._last_id is None:
            return None
        stream = self.prefix + "log"
        keys: list[str] = []
        while True:
            found = self.redis.sync.xread({stream: self._last_id}, count=1000)
            messages = found[0][1] if found else []
            for message_id, fields in messages:
                n = int(fields[b"n"])
                if n != self._last_n + 1:
                    return None
                self._last_id, self._last_n = message_id.decode(), n
                key = fields[b"k"].decode()
                if key not in index:
                    keys.append(key)
            if len(messages) < 1000:
                return keys

    def _all_keys(self, index: NearestIndex) -> list[str]:
        """Every entry's key not in ``index`` (after a gap: the log was trimmed past us)."""
        self.stats.resyncs += 1
        client = self.redis.sync
        last = client.xrevrange(self.prefix + "log", count=1)
        self._last_id, self._last_n = (last[0][0].decode(), int(last[0][1][b"n"])) if last else ("0-0", 0)
        prefix = self.prefix + "e:"
        scanned = (k.decode()[len(prefix) :] for k in client.scan_iter(match=prefix + "*", count=1000))
        return [k for k in scanned if k not in index]

    async def purge(self, selector: CacheSelector) -> list[str]:
        """Delete from Redis the entries ``selector`` names, for every process: each
        batch ``SCAN`` finds is read and filtered by model and caller before ``UNLINK``.
        The peers' indexes drop a purged key at their next lookup of it (a hit is
        confirmed with ``GET``). The keys deleted."""
        if selector.key is not None and not selector.key.isalnum():
            return []
        doomed: list[str] = []
        entry_prefix = self.prefix + "e:"

        async def keep(names: list[bytes]) -> list[bytes]:
            values = await self.redis.run(self.redis.sync.mget, names)
            chosen = [
                name
                for name, value in zip(names, values, strict=True)
                if value is not None and _ENTRY_DECODER.decode(value).selected(selector)
            ]
            doomed.extend(name.decode()[len(entry_prefix) :] for name in chosen)
            return chosen

        await purge_redis(self.redis, entry_prefix + (selector.key or "*"), keep)
        return doomed

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()
