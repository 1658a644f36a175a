"""Semantic cache: answer a request that means the same as one already answered.

Sits inside the exact cache (identical requests are answered there first, cheaper and
with no risk of a wrong match), inside the input guard and outside the output guard::

    guard.input ─▶ exact_cache ─▶ semantic_cache ─▶ guard.output ─▶ … ─▶ provider

A hit needs, all at once:

- the same **scope**: model, system prompt, sampling parameters (temperature, top_p,
  max tokens, stop, seed, penalties, response_format …) and tenant (the caller by
  default; ``scope="shared"`` to share across callers);
- an eligible request: deterministic by the policy, no tools or tool results, no
  non-text content, at most ``max_turns`` non-system messages;
- cosine similarity of the embedded conversation (or only the last user message, with
  the earlier turns then required to match exactly) at or above ``threshold``;
- the **precision guards**: the same numbers, the same named entities and the same
  number of negations in both texts ("2 eggs" is not "3 eggs", "Paris" is not "Rome",
  "is X safe" is not "is X not safe").

The embedding is computed once per request: for the lookup and, on a miss, for the
store. The embedder runs under ``embed_timeout_seconds``; if it fails or is slow the
cache is bypassed (logged, counted) and, for ``failure_backoff_seconds``, not tried
again, so a dead embedding endpoint never stalls requests.

Backends. ``memory``: entries beside a ``VectorIndex`` in this process. ``redis``:
entries are shared between gateway processes; each process keeps its own index in sync:

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

import hashlib
import re
import time
from typing import Any, Literal

import anyio
import msgspec
import numpy as np
import structlog

from onion import CallNext, Clock, Completion, ConfigError, Layer, Order, Request, Response, system_clock

from .embedders import Embedder, resolve_embedder
from .exact import CachePolicy, caller_scope, serve_cached, store_when_clean
from .vector_index import NearestIndex, make_index

__all__ = ["SemanticCache", "SemanticStats", "Signature", "signature"]

log = structlog.get_logger("onion.cache")


# --- precision guards ------------------------------------------------------------------

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_APOSTROPHE = "\u2019"  # typographic apostrophe, as in "isn\u2019t"
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'\u2019-]*")
_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
_UNITS += " seventeen eighteen nineteen twenty"
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(_UNITS.split())} | {
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "half": "0.5",
    "quarter": "0.25",
    "dozen": "12",
    "twice": "x2",
    "double": "x2",
    "triple": "x3",
    "first": "1",
    "second": "2",
    "third": "3",
    "fourth": "4",
    "fifth": "5",
}
_SENTENCE_ENDS = frozenset(".!?:;\n")
_NEGATION_WORDS = (
    "not no never none nobody nothing neither nor without cannot cant dont doesnt didnt isnt arent wasnt "
    "werent wont wouldnt shouldnt couldnt hasnt havent hadnt"
)
_NEGATIONS = frozenset(_NEGATION_WORDS.split())
# Capitalized words that start sentences or questions and name nothing.
_COMMON_WORDS = (
    "a an the i what which who whom whose how why when where is are was were do does did can could would "
    "should will shall may might must please tell give show explain describe list write summarize define "
    "compare find name make help let translate calculate convert suggest recommend in on at for of to and or "
    "but if my your our their his her its it this that these those there here hi hello hey thanks thank yes "
    "no not ok okay so also then now just"
)
_NOT_ENTITIES = frozenset(_COMMON_WORDS.split())


class Signature(msgspec.Struct, frozen=True):
    """What the precision guards compare: numbers, named entities, negation count, words."""

    numbers: tuple[str, ...]
    entities: frozenset[str]
    negations: int
    words: frozenset[str]


def signature(text: str) -> Signature:
    """The guard signature of ``text`` (cheap: two regex scans, one pass over the words).

    A capitalized word names an entity unless it starts a sentence (where every word is
    capitalized) or is a common word; an all-caps or inner-capital word (``USD``,
    ``iPhone``) names one anywhere. Possessives are dropped (``France's`` -> ``france``).
    """
    numbers = [n.replace(",", "") for n in _NUMBER.findall(text)]
    entities: set[str] = set()
    words: set[str] = set()
    negations = 0
    previous_end = 0
    for match in _WORD.finditer(text):
        raw = match.group()
        sentence_start = previous_end == 0 or any(c in _SENTENCE_ENDS for c in text[previous_end : match.start()])
        previous_end = match.end()
        lower = raw.lower().replace(_APOSTROPHE, "'")
        if lower.endswith("'s"):
            lower = lower[:-2]
        plain = lower.replace("'", "")
        words.add(plain)
        if plain in _NEGATIONS or lower.endswith("n't"):
            negations += 1
        elif plain in _NUMBER_WORDS:
            numbers.append(_NUMBER_WORDS[plain])
        elif plain not in _NOT_ENTITIES and (
            any(c.isupper() for c in raw[1:]) or (raw[0].isupper() and not sentence_start)
        ):
            entities.add(plain)
    return Signature(tuple(sorted(numbers)), frozenset(entities), negations, frozenset(words))


def guards_pass(a: Signature, b: Signature) -> bool:
    """True when nothing cheap says the two texts mean different things.

    An entity must appear in the other text too (in any case: a capitalized word at the
    start of one sentence may be lowercase in the other).
    """
    return a.numbers == b.numbers and a.negations == b.negations and a.entities <= b.words and b.entities <= a.words


# --- entries and counters --------------------------------------------------------------


class Entry(msgspec.Struct, frozen=True):
    """A stored answer with what is needed to match it again."""

    completion: Completion
    text: str
    scope: str
    vector: bytes = b""
    expires_at: float | None = None  # wall clock (time.time()), for Redis peers


_ENTRY_ENCODER = msgspec.msgpack.Encoder()
_ENTRY_DECODER = msgspec.msgpack.Decoder(Entry)


class SemanticStats(msgspec.Struct):
    """Counters: hits, misses, rejected by guard or threshold, bypassed, embedder failures."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    below_threshold: int = 0
    guard_rejections: int = 0
    bypassed: int = 0
    ineligible: int = 0
    embed_failures: int = 0
    errors: int = 0
    resyncs: int = 0


_SCOPE_FIELDS = tuple(
    f
    for f in Request.__struct_fields__
    if f not in {"messages", "stream", "stream_options", "user", "context", "tools", "tool_choice"}
)
_SCOPE_ENCODER = msgspec.json.Encoder(order="sorted")

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


class SemanticCache(Layer):
    """Answers requests similar in meaning to earlier ones, within one scope.

    Parameters (TOML names): ``threshold`` (default: the embedder's measured
    ``default_threshold``), ``embedder`` (short name, ``module:Class`` or a table with
    ``use``) and ``embedder_params``, ``ttl_seconds``, ``max_entries``,
    ``backend = "memory" | "redis"``, ``redis_url``, ``scope = "caller" | "shared"``,
    ``embed = "conversation" | "last_user"``, ``max_turns``, ``embed_timeout_seconds``,
    ``failure_backoff_seconds``, ``index = "numpy" | "usearch"``, and for Redis
    ``sync_interval_seconds`` (0: read the peers' inserts before every lookup; 0.05 saves
    the round trip on most lookups at the price of seeing peers' entries 50 ms later).
    """

    name = "semantic_cache"
    provides = frozenset({"cache", "cache.semantic"})
    ordering = (
        Order("guard.input", "inside", "a request the input guard blocks must never be looked up or stored"),
        Order("guard.output", "outside", "only answers the output guard let through may be stored"),
        Order("cache.exact", "inside", "identical requests are answered by the exact cache first, at no risk"),
    )
    short_circuit = "on a hit: same scope, similarity >= threshold, same numbers, entities and negations"

    def __init__(
        self,
        threshold: float | None = None,
        embedder: str | dict[str, Any] | Embedder = "hashed",
        embedder_params: dict[str, Any] | None = None,
        ttl_seconds: float | None = 3600.0,
        max_entries: int = 10_000,
        backend: Literal["memory", "redis"] = "memory",
        redis_url: str | None = None,
        scope: Literal["caller", "shared"] = "caller",
        embed: Literal["conversation", "last_user"] = "conversation",
        max_turns: int = 4,
        embed_timeout_seconds: float = 0.5,
        failure_backoff_seconds: float = 5.0,
        index: Literal["numpy", "usearch"] = "numpy",
        sync_interval_seconds: float = 0.0,
        *,
        policy: CachePolicy | None = None,
        prefix: str = "onion:semantic:",
        clock: Clock | None = None,
    ) -> None:
        if backend not in ("memory", "redis"):
            raise ValueError(f"backend must be 'memory' or 'redis', got {backend!r}")
        if backend == "redis" and not redis_url:
            raise ValueError("backend 'redis' needs redis_url")
        if max_entries <= 0 or max_turns <= 0:
            raise ValueError("max_entries and max_turns must be positive")
        self.embedder = resolve_embedder(embedder, embedder_params)
        threshold = threshold if threshold is not None else self.embedder.default_threshold
        if threshold is None:
            raise ConfigError(
                f"field 'threshold': required with the {self.embedder.name!r} embedder: no similarity "
                f"threshold was measured for {getattr(self.embedder, 'model', 'its model')!r} (each embedding "
                "model has its own scale, so "
                "another model's value would make hits and false hits a guess); measure it with "
                "benchmarks/semantic_cache.py --openai-url URL --openai-model NAME"
            )
        self.threshold: float = threshold
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.policy = policy or CachePolicy(scope=scope)
        self.embed_mode = embed
        self.max_turns = max_turns
        self.embed_timeout = embed_timeout_seconds
        self.failure_backoff = failure_backoff_seconds
        self.clock = clock or system_clock
        self.stats = SemanticStats()
        self._span_attributes = {"onion.layer": self.name}
        self._index_kind = index
        self._index: NearestIndex | None = None  # built at the first vector: its dim is known then
        self._entries: dict[str, Entry] = {}
        self._skip_until = float("-inf")
        self._prefix = prefix
        self._redis: Any = None
        if backend == "redis":
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
            self._store_script = self._redis.register_script(_STORE_SCRIPT)
        self._last_id: str | None = None
        self._last_n = 0
        self._syncing = False
        self.sync_interval = sync_interval_seconds
        self._synced_at = float("-inf")

    # -- the request path ----------------------------------------------------------------

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        if not self.policy.cacheable(request):
            self.stats.bypassed += 1
            return await call_next(request)
        prepared = self._prepare(request)
        if prepared is None:
            self.stats.ineligible += 1
            return await call_next(request)
        text, scope = prepared
        with request.context.span("semantic_cache lookup", self._span_attributes) as span:
            vector = await self._embed(text)
            completion = None if vector is None else await self._lookup(vector, scope, signature(text))
            if span is not None:
                span.set_attribute("onion.cache.hit", completion is not None)
        if vector is None:
            return await call_next(request)
        if completion is not None:
            self.stats.hits += 1
            return serve_cached(request, completion, self.name)
        self.stats.misses += 1
        response = await call_next(request)
        if response.cache == "hit":
            return response
        response.cache = "miss"
        response.headers.setdefault("x-onion-cache", "miss")

        async def store(answer: Completion) -> None:
            if self.policy.storable(answer):
                await self._store(text, scope, vector, answer)

        return await store_when_clean(response, store)

    def _prepare(self, request: Request) -> tuple[str, str] | None:
        """``(text to embed, scope hash)``, or ``None`` if the request is not eligible."""
        if request.tools or request.tool_choice not in (None, "none"):
            return None
        system: list[str] = []
        turns: list[tuple[str, str]] = []
        for message in request.messages:
            if message.tool_calls or message.tool_call_id or message.role in ("tool", "function"):
                return None
            if not isinstance(message.content, str | None) and any(
                part.get("type") != "text" for part in message.content if isinstance(part, dict)
            ):
                return None
            if message.role in ("system", "developer"):
                system.append(message.text)
            else:
                turns.append((message.role, message.text))
        if not turns or len(turns) > self.max_turns or turns[-1][0] != "user":
            return None
        earlier: list[tuple[str, str]] = []
        if self.embed_mode == "last_user":
            earlier, turns = turns[:-1], turns[-1:]
        text = turns[0][1] if len(turns) == 1 else "\n".join(f"{role}: {said}" for role, said in turns)
        fields = tuple(getattr(request, f) for f in _SCOPE_FIELDS)
        payload = _SCOPE_ENCODER.encode((fields, system, earlier, self.embed_mode))
        digest = hashlib.blake2b(caller_scope(request, self.policy).encode(), digest_size=16)
        digest.update(b"\0")
        digest.update(payload)
        return text, digest.hexdigest()

    async def _embed(self, text: str) -> np.ndarray | None:
        now = self.clock.now()
        if now < self._skip_until:
            self.stats.bypassed += 1
            return None
        failure: str | None = None
        try:
            with anyio.move_on_after(self.embed_timeout) as scope:
                vectors = await self.embedder.embed([text])
            if scope.cancelled_caught:
                failure = "timeout"
        except Exception as error:
            failure = type(error).__name__
        if failure is None and (
            vectors.ndim != 2
            or vectors.shape[0] != 1
            or (self._index is not None and vectors.shape[1] != self._index.dim)
        ):
            # Also a vector of another size than the index's (the endpoint's model changed).
            failure = "bad_shape"
        if failure is not None:
            self.stats.embed_failures += 1
            self._skip_until = self.clock.now() + self.failure_backoff
            log.warning("semantic_cache.embedder_failed", embedder=self.embedder.name, error=failure)
            return None
        return np.asarray(vectors[0], dtype=np.float32)

    def _ensure_index(self, dim: int) -> NearestIndex:
        if self._index is None:
            self._index = make_index(self._index_kind, dim, self.max_entries, clock=self.clock, on_remove=self._forget)
        return self._index

    def _forget(self, key: str) -> None:
        self._entries.pop(key, None)

    async def _lookup(self, vector: np.ndarray, scope: str, sig: Signature) -> Completion | None:
        index = self._ensure_index(vector.shape[0])
        if self._redis is not None:
            await self._sync(index)
        match = index.search(vector, scope)
        if match is None or match.score < self.threshold:
            self.stats.below_threshold += match is not None
            return None
        entry = await self._entry(match.key)
        if entry is None or entry.scope != scope:
            # Gone from Redis (expired, evicted), or - defence in depth - not this scope.
            index.delete(match.key)
            return None
        if not guards_pass(sig, signature(entry.text)):
            self.stats.guard_rejections += 1
            return None
        return entry.completion

    async def _entry(self, key: str) -> Entry | None:
        if self._redis is None:
            return self._entries.get(key)
        try:
            data = await self._redis_call(self._redis.get, self._prefix + "e:" + key)
        except Exception as error:
            self._redis_failed("get", error)
            return None
        return _ENTRY_DECODER.decode(data) if data is not None else None

    async def _store(self, text: str, scope: str, vector: np.ndarray, completion: Completion) -> None:
        key = hashlib.blake2b(f"{scope}\0{text}".encode(), digest_size=16).hexdigest()
        index = self._ensure_index(vector.shape[0])
        if self._redis is None:
            self._entries[key] = Entry(completion, text, scope)
        else:
            expires = time.time() + self.ttl_seconds if self.ttl_seconds is not None else None
            entry = Entry(completion, text, scope, vector.astype(np.float32).tobytes(), expires)
            ttl_ms = int(self.ttl_seconds * 1000) if self.ttl_seconds is not None else 0
            keys = [self._prefix + "log", self._prefix + "version", self._prefix + "e:" + key]
            args = [_ENTRY_ENCODER.encode(entry), ttl_ms, 2 * self.max_entries, key]
            try:
                await self._redis_call(lambda: self._store_script(keys=keys, args=args))
            except Exception as error:
                self._redis_failed("store", error)
                return
        index.add(key, vector, scope, self.ttl_seconds)
        self.stats.stores += 1

    # -- Redis: keeping the local index in sync ------------------------------------------

    async def _redis_call(self, fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)

    def _redis_failed(self, what: str, error: Exception) -> None:
        self.stats.errors += 1
        log.warning("semantic_cache.redis_failed", op=what, error=type(error).__name__)

    async def _sync(self, index: NearestIndex) -> None:
        now = self.clock.now()
        if self._syncing or now - self._synced_at < self.sync_interval:
            # Another task of this process is already fetching, or one did a moment ago:
            # looking up against an index a few milliseconds stale is fine.
            return
        self._syncing = True
        self._synced_at = now
        try:
            fetched = await self._redis_call(self._fetch_updates, index)
        except Exception as error:
            self._redis_failed("sync", error)
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
        stream = self._prefix + "log"
        keys: list[str] = []
        gap = self._last_id is None
        while not gap:
            found = self._redis.xread({stream: self._last_id}, count=1000)
            messages = found[0][1] if found else []
            for message_id, fields in messages:
                n = int(fields[b"n"])
                if n != self._last_n + 1:
                    gap = True
                    break
                self._last_id, self._last_n = message_id.decode(), n
                key = fields[b"k"].decode()
                if key not in index:
                    keys.append(key)
            if len(messages) < 1000:
                break
        if gap:
            self.stats.resyncs += 1
            last = self._redis.xrevrange(stream, count=1)
            self._last_id, self._last_n = (last[0][0].decode(), int(last[0][1][b"n"])) if last else ("0-0", 0)
            prefix = self._prefix + "e:"
            scanned = (k.decode()[len(prefix) :] for k in self._redis.scan_iter(match=prefix + "*", count=1000))
            keys = [k for k in scanned if k not in index]
        fetched: list[tuple[str, bytes | None]] = []
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            fetched.extend(zip(batch, self._redis.mget([self._prefix + "e:" + k for k in batch]), strict=True))
        return fetched

    async def aclose(self) -> None:
        """Release the embedder's and Redis's connections."""
        closer = getattr(self.embedder, "aclose", None)
        if closer is not None:
            await closer()
        if self._redis is not None:
            await self._redis_call(self._redis.close)
