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
  the earlier turns then required to match exactly) at or above ``threshold`` (or the
  threshold of the question's script, ``script_thresholds``); the three nearest entries
  are tried, best first, so a nearer entry the guards reject does not hide the next one.
  Japanese is embedded in its canonical form (numerals as digits, no polite ending:
  ``precision_ja.embedding_text``);
- the **precision guards**: the same numbers, the same named entities and the same
  number of negations in both texts ("2 eggs" is not "3 eggs", "Paris" is not "Rome",
  "is X safe" is not "is X not safe").

With ``max_wrong_hit_rate`` (or a ``bound=WrongHitBound(...)``), the fixed threshold
gives way to per-entry thresholds learned from verified outcomes, and a hit is served
only while the measured wrong-hit rate at its similarity stays under the bound
(``thresholds``; how outcomes are verified off the request's path: ``verification``).
The bound is on the cache's hits as a whole: the scripts' thresholds are chosen
together, so Japanese opens on the pooled confidence once its own few outcomes are
clean, instead of after ~266 of its own (``WrongHitBound(holds_for="stratum")`` bounds
each script alone).
Without a bound (the default) the fixed ``threshold`` decides, as before.

The embedding is computed once per request: for the lookup and, on a miss, for the
store. The embedder runs under ``embed_timeout_seconds``; if it fails or is slow the
cache is bypassed (logged, counted) and, for ``failure_backoff_seconds``, not tried
again, so a dead embedding endpoint never stalls requests.

Backends. ``memory``: entries beside a vector index in this process. ``redis``: entries
shared between gateway processes, each keeping its own index in sync
(``semantic_entries.RedisEntries``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

import anyio
import msgspec
import numpy as np
import structlog

from onion import (
    CacheSelector,
    CallNext,
    Clock,
    Completion,
    ConfigError,
    Context,
    Layer,
    Order,
    Request,
    Response,
    system_clock,
)

from .embedders import Embedder, resolve_embedder
from .exact import CachePolicy, cache_policy, caller_scope, serve_cached, store_when_clean
from .precision import Signature, guards_pass, signature
from .precision_ja import embedding_text
from .semantic_entries import MemoryEntries, RedisEntries, SemanticStats
from .thresholds import EXPLORE, SERVE, AdaptiveThresholds, WrongHitBound
from .vector_index import NearestIndex, make_index
from .verification import Judge, ShadowCheck, ShadowChecks

__all__ = ["SemanticCache", "SemanticStats", "WrongHitBound"]

log = structlog.get_logger("onion.cache")


_SCOPE_FIELDS = tuple(
    f
    for f in Request.__struct_fields__
    if f not in {"messages", "stream", "stream_options", "user", "context", "tools", "tool_choice"}
)
_SCOPE_ENCODER = msgspec.json.Encoder(order="sorted")
# Nearest entries a lookup tries, best first: the nearest is often a stored question that
# differs in a number or a name (the guards reject it) while the next one is the paraphrase.
_CANDIDATES = 3


_CJK = re.compile("[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_JAPANESE = re.compile("[\u3040-\u30ff]")  # kana: Japanese, not Chinese or Korean


def _embedding_input(text: str) -> str:
    """What the embedder reads: Japanese in its canonical form without polite endings
    (``precision_ja.embedding_text``: 三人分 and 3人前 read alike); other text as it is."""
    return embedding_text(text) if _JAPANESE.search(text) else text


def _stratum(text: str) -> str:
    """The bound's stratum of a question: its outcomes are pooled with its script's."""
    return "cjk" if _CJK.search(text) else "latin"


def _entry_key(scope: str, text: str) -> str:
    return hashlib.blake2b(f"{scope}\0{text}".encode(), digest_size=16).hexdigest()


def _threshold(given: float | None, embedder: Embedder) -> float:
    threshold = given if given is not None else embedder.default_threshold
    if threshold is None:
        raise ConfigError(
            f"field 'threshold': required with the {embedder.name!r} embedder: no similarity "
            f"threshold was measured for {getattr(embedder, 'model', 'its model')!r} (each embedding "
            "model has its own scale, so another model's value would make hits and false hits a "
            "guess); measure it with benchmarks/semantic_cache.py --openai-url URL --openai-model NAME"
        )
    return threshold


def _script_thresholds(given: dict[str, float] | None, threshold: float | None, embedder: Embedder) -> dict[str, float]:
    """The threshold per stratum (``"cjk"``, ``"latin"``) that overrides the global one:
    as given, or the embedder's measured ones unless a global ``threshold`` was set."""
    if given is not None:
        unknown = set(given) - {"cjk", "latin"}
        if unknown or not all(isinstance(v, int | float) and 0.0 <= v <= 1.0 for v in given.values()):
            raise ConfigError(
                f"field 'script_thresholds': a table of 'cjk' and/or 'latin' to a similarity in [0, 1], got {given!r}"
            )
        return {k: float(v) for k, v in given.items()}
    if threshold is not None:
        return {}
    return dict(getattr(embedder, "script_thresholds", None) or {})


class SemanticCache(Layer):
    """Answers requests similar in meaning to earlier ones, within one scope.

    Parameters (TOML names): ``threshold`` (default: the embedder's measured
    ``default_threshold``), ``embedder`` (short name, ``module:Class`` or a table with
    ``use``) and ``embedder_params``, ``ttl_seconds``, ``max_entries``,
    ``backend = "memory" | "redis"``, ``redis_url``, ``scope = "caller" | "shared"``,
    ``embed = "conversation" | "last_user"``, ``max_turns``, ``embed_timeout_seconds``,
    ``failure_backoff_seconds``, ``index = "numpy" | "usearch"``, and for Redis
    ``sync_interval_seconds`` (0: read the peers' inserts before every lookup; 0.05 saves
    the round trip on most lookups at the price of seeing peers' entries 50 ms later),
    ``max_wrong_hit_rate`` (a bound on wrong hits per hit, e.g. 0.01; in code also
    ``bound=WrongHitBound(...)`` for the rest of its policy) and
    ``shadow_timeout_seconds`` (how long a shadow check may wait for the upstream) and
    ``verify_rate`` (the share of served hits shadow-checked, 0.05 by default; the
    checks run in ``run_background``, which ``onion serve`` starts), and
    ``script_thresholds`` (``{cjk = 0.8}``: a threshold for questions in one script, where
    an embedder's scale differs; by default the embedder's measured ones, none if
    ``threshold`` is set).
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
        max_wrong_hit_rate: float | None = None,
        shadow_timeout_seconds: float = 30.0,
        verify_rate: float | None = None,
        script_thresholds: dict[str, float] | None = None,
        *,
        bound: WrongHitBound | None = None,
        allow_n: bool = False,
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
        self.threshold: float = _threshold(threshold, self.embedder)
        self.script_thresholds = _script_thresholds(script_thresholds, threshold, self.embedder)
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.policy = cache_policy(policy, scope, allow_n)
        self.embed_mode = embed
        self.max_turns = max_turns
        self.embed_timeout = embed_timeout_seconds
        self.failure_backoff = failure_backoff_seconds
        self.clock = clock or system_clock
        self.stats = SemanticStats()
        self._span_attributes = {"onion.layer": self.name}
        self._index_kind = index
        self._index: NearestIndex | None = None  # built at the first vector: its dim is known then
        self._skip_until = float("-inf")
        if bound is None and max_wrong_hit_rate is not None:
            bound = WrongHitBound(max_wrong_hit_rate=max_wrong_hit_rate)
        if verify_rate is not None:
            if bound is None:
                raise ValueError("verify_rate needs max_wrong_hit_rate: only a bounded cache checks its hits")
            bound = msgspec.structs.replace(bound, verify_rate=verify_rate)
        self.bound = bound
        self.thresholds: AdaptiveThresholds | None = None
        if bound is not None:
            floor = bound.floor if bound.floor is not None else self.threshold - 0.15
            self.thresholds = AdaptiveThresholds(bound, floor, max_entries=max_entries)
            self.judge = Judge(self.embedder, bound.answer_similarity)
        self.shadow = ShadowChecks(bound.verify_rate if bound else 0.0, bound.max_pending if bound else 1)
        self.shadow_timeout = shadow_timeout_seconds
        self.entries: MemoryEntries | RedisEntries = (
            RedisEntries(
                redis_url or "",
                prefix=prefix,
                ttl_seconds=ttl_seconds,
                max_entries=max_entries,
                stats=self.stats,
                sync_interval_seconds=sync_interval_seconds,
                now=self.clock.now,
            )
            if backend == "redis"
            else MemoryEntries()
        )

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
        refresh = request.context.options.refresh
        with request.context.span("semantic_cache lookup", self._span_attributes) as span:
            vector = await self._embed(_embedding_input(text))
            stratum = _stratum(text)
            looked = vector is not None and not refresh  # a refresh stores without looking up
            found = await self._lookup(vector, scope, signature(text), stratum) if looked else None
            if span is not None:
                span.set_attribute("onion.cache.hit", found is not None and found[2] == SERVE)
        if vector is None:
            return await call_next(request)
        if found is not None and found[2] == SERVE:
            self.stats.hits += 1
            self.shadow.offer(ShadowCheck(request, call_next, found[0], found[1], found[3], stratum))
            answer = serve_cached(request, found[3], self.name)
            answer.headers["x-onion-cache-key"] = found[0]
            return answer
        self.stats.misses += 1
        response = await call_next(request)
        if response.cache == "hit":
            return response
        response.cache = "miss"
        response.headers.setdefault("x-onion-cache", "refresh" if refresh else "miss")
        response.headers.setdefault("x-onion-cache-key", _entry_key(scope, text))
        explored = found if found is not None and found[2] == EXPLORE else None

        async def store(answer: Completion) -> None:
            if explored is not None:
                await self._learn(explored[0], explored[1], explored[3], answer, stratum)
            if self.policy.storable(answer):
                await self._store(text, scope, vector, answer, request.model, caller_scope(request, self.policy))

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

    def _forget(self, key: str) -> None:
        self.entries.forget(key)
        if self.thresholds is not None:
            self.thresholds.forget(key)

    def _ensure_index(self, dim: int) -> NearestIndex:
        if self._index is None:
            self._index = make_index(self._index_kind, dim, self.max_entries, clock=self.clock, on_remove=self._forget)
        return self._index

    async def _lookup(
        self, vector: np.ndarray, scope: str, sig: Signature, stratum: str
    ) -> tuple[str, float, str, Completion] | None:
        """The nearest of the ``_CANDIDATES`` nearest entries that is over its threshold
        and passes the guards, as ``(key, similarity, decision, its answer)``; the
        decision is ``SERVE``, or with a bound ``EXPLORE``."""
        index = self._ensure_index(vector.shape[0])
        await self.entries.sync(index)
        many = getattr(index, "search_many", None)
        if many is not None:
            matches = many(vector, scope, _CANDIDATES)
        else:  # an index of the older protocol: its nearest entry only
            match = index.search(vector, scope)
            matches = [match] if match is not None else []
        rejected = False
        for rank, match in enumerate(matches):
            decision = SERVE if match.score >= self.script_thresholds.get(stratum, self.threshold) else "miss"
            if self.thresholds is not None:
                decision = self.thresholds.decide(match.key, match.score, stratum)
            # Only the nearest entry is explored: one behind a rejected nearer one is
            # more often another question (measured on the development rows: 19 wrong
            # outcomes of 441 explored against 6 of 356), and its labels would hold the
            # bound shut at similarities the cache serves right.
            if decision != SERVE and not (decision == EXPLORE and rank == 0):
                continue
            entry = await self.entries.get(match.key)
            if entry is None or entry.scope != scope:
                # Gone from Redis (expired, evicted), or - defence in depth - not this scope.
                index.delete(match.key)
                continue
            if not guards_pass(sig, signature(entry.text)):
                rejected = True
                continue
            if decision == EXPLORE:
                self.stats.explored += 1
            return match.key, match.score, decision, entry.completion
        if rejected:
            self.stats.guard_rejections += 1
        elif matches:
            self.stats.below_threshold += 1
        return None

    async def _learn(self, key: str, similarity: float, stored: Completion, fresh: Completion, stratum: str) -> None:
        """Record whether the entry at ``key`` held the answer the upstream just gave."""
        if self.thresholds is None:
            return
        correct = await self.judge.same(stored, fresh)
        self.thresholds.record(key, similarity, correct, stratum)
        self.stats.verified += 1
        self.stats.verified_wrong += not correct

    async def run_verifier(self) -> None:
        """Shadow-check sampled hits forever (see ``verification``); start it in a task
        group that outlives requests: ``tg.start_soon(cache.run_verifier)``."""
        await self.shadow.run(self._ask_upstream, self._learn_from_shadow)

    async def run_background(self) -> None:
        """What ``onion serve`` runs from start-up to shutdown (``onion.Layer``): the
        verifier when the cache has a bound on wrong hits; nothing otherwise."""
        if self.thresholds is not None and self.shadow.verify_rate > 0:
            await self.run_verifier()

    async def _ask_upstream(self, check: ShadowCheck) -> Completion | None:
        context = Context(caller=check.request.context.caller)
        shadow = msgspec.structs.replace(check.request, context=context, stream=False)
        with anyio.move_on_after(self.shadow_timeout):
            try:
                return await (await check.call_next(shadow)).result()
            except Exception as error:
                log.info("semantic_cache.shadow_failed", error=type(error).__name__)
        return None

    async def _learn_from_shadow(self, check: ShadowCheck, fresh: Completion) -> None:
        await self._learn(check.key, check.similarity, check.served, fresh, check.stratum)

    async def _store(
        self, text: str, scope: str, vector: np.ndarray, completion: Completion, model: str = "", caller: str = ""
    ) -> None:
        key = _entry_key(scope, text)
        index = self._ensure_index(vector.shape[0])
        if self._index is not None and key in self._index:
            self._index.delete(key)  # a refresh replaces the entry: its row is added again
        if await self.entries.put(key, completion, text, scope, vector, model, caller):
            index.add(key, vector, scope, self.ttl_seconds)
            self.stats.stores += 1

    async def purge(self, selector: CacheSelector) -> int:
        """Remove the entries ``selector`` names (``onion.Purgeable``, for ``DELETE
        /admin/cache``): from this process's index, and with Redis from the store every
        process shares (the others drop them at their next lookup). How many."""
        doomed = await self.entries.purge(selector)
        for key in doomed:
            if self._index is not None:
                self._index.delete(key)
            if self.thresholds is not None:
                self.thresholds.forget(key)
        return len(doomed)

    async def ping(self) -> None:
        """Return when the shared store answers (``onion.Pingable``, for ``/readyz``); at
        once for a store in process memory."""
        redis = getattr(self.entries, "redis", None)
        if redis is not None:
            await redis.ping()

    async def aclose(self) -> None:
        """Release the embedder's and Redis's connections."""
        closer = getattr(self.embedder, "aclose", None)
        if closer is not None:
            await closer()
        await self.entries.aclose()
