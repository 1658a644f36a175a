"""Exact cache: answer a request that was already answered, word for word.

Sits inside the input guard (a blocked request is never looked up or stored) and outside
the output guard (only what the output guard let through is stored)::

    guard.input ─▶ exact_cache ─▶ semantic_cache ─▶ guard.output ─▶ … ─▶ provider

The key is a BLAKE2b hash of every field that changes the answer (model, messages,
tools, sampling parameters, ``extra`` …; not ``stream``, ``stream_options``, ``user`` or
the context) plus a scope: the caller by default, so an answer never crosses from one
API key to another unless the policy says ``shared``. By default only deterministic
requests are cached (temperature 0 or unset, ``n`` unset or 1). A streamed miss passes
through chunk by chunk and is stored only when it ended cleanly; a hit is replayed as a
stream to a streaming caller and returned complete otherwise.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from typing import Any, Literal

import msgspec
import structlog

from onion import AnswerEnd, CacheSelector, CallNext, Clock, Completion, Layer, Order, Request, Response

from .stores import CacheStats, MemoryStore, decode_completion, encode_completion, make_store

__all__ = [
    "CachePolicy",
    "ExactCache",
    "caller_scope",
    "entry_key",
    "purge_pattern",
    "request_key",
    "serve_cached",
    "store_when_clean",
]

log = structlog.get_logger("onion.cache")

# Fields that never change the answer: transport (stream, stream_options), identity
# (user: it is part of the scope instead) and the per-request context.
_NOT_ANSWER_CHANGING = frozenset({"stream", "stream_options", "user", "context"})
_KEY_FIELDS = tuple(f for f in Request.__struct_fields__ if f not in _NOT_ANSWER_CHANGING)
# The same tuple as ``tuple(getattr(request, f) for f in _KEY_FIELDS)``, read in C.
_key_values = operator.attrgetter(*_KEY_FIELDS)
# JSON rather than msgpack because it takes ints of any size; sorted keys make the
# encoding canonical: {"a":1,"b":2} and {"b":2,"a":1} hash alike.
_KEY_ENCODER = msgspec.json.Encoder(order="sorted")
_KEY_VERSION = b"onion-exact-v1\0"


class CachePolicy(msgspec.Struct, frozen=True):
    """Which requests a cache may answer and store.

    - ``max_temperature``: requests sampled hotter than this are not cached (unset counts
      as cacheable, like 0, because most callers who leave it unset want one answer).
    - ``allow_n``: cache requests that ask for several choices (``n`` > 1).
    - ``scope``: ``"caller"`` (default) keys entries by ``context.caller`` or ``user``;
      ``"shared"`` lets every caller share answers.
    - ``store_empty``: store answers with no text and no tool calls.
    """

    max_temperature: float = 0.0
    allow_n: bool = False
    scope: Literal["caller", "shared"] = "caller"
    store_empty: bool = False

    def cacheable(self, request: Request) -> bool:
        """Whether this request may be looked up and stored."""
        if not request.context.options.cache:
            return False
        if request.temperature is not None and request.temperature > self.max_temperature:
            return False
        return self.allow_n or request.n is None or request.n <= 1

    def storable(self, completion: Completion) -> bool:
        """Whether an answer that ended cleanly is worth keeping."""
        if completion.finish_reason == "content_filter":
            return False
        return self.store_empty or bool(completion.content or completion.tool_calls or completion.embeddings)


def cache_policy(policy: CachePolicy | None, scope: str, allow_n: bool) -> CachePolicy:
    """The policy a cache runs with: ``policy``, or one from the flat ``scope`` and
    ``allow_n`` parameters (what TOML sets); giving both is refused, since one would be
    silently ignored."""
    if policy is None:
        return CachePolicy(scope=scope, allow_n=allow_n)  # type: ignore[arg-type]
    if scope != "caller" or allow_n:
        raise ValueError("set scope and allow_n inside policy, or without policy, not both")
    return policy


def caller_scope(request: Request, policy: CachePolicy) -> str:
    """The tenant an entry belongs to: the caller (or ``user``), or ``""`` when shared."""
    if policy.scope == "shared":
        return ""
    return request.context.caller or request.user or ""


def request_key(request: Request, scope: str) -> str:
    """The canonical hash of everything in ``request`` that changes the answer, in ``scope``."""
    digest = _scope_digest(scope).copy()
    digest.update(_KEY_ENCODER.encode(_key_values(request)))
    return digest.hexdigest()


class _Scope:
    """What the keys of one scope share: the hash state after the version and the scope
    (a copy of it takes a request's fields: the same digest as hashing all of it anew, at
    a third of the cost, since most of a short request's hash is setting up its state),
    the tags of the models asked for in it, and the keys of its recent short requests."""

    __slots__ = ("digest", "keys", "tags")

    def __init__(self, scope: str) -> None:
        self.digest = hashlib.blake2b(_KEY_VERSION + scope.encode() + b"\0", digest_size=20)
        self.tags: dict[str, str] = {}
        # By the encoded fields (bytes, which the garbage collector never walks): a
        # repeated request (a hit, a client's retry) skips the hash, whose finishing step
        # is most of a short key's cost.
        self.keys: dict[bytes, str] = {}


@functools.lru_cache(maxsize=4096)  # a few callers
def _scope(scope: str) -> _Scope:
    return _Scope(scope)


def _scope_digest(scope: str) -> Any:
    """The hash state of ``scope`` (copy it before use)."""
    return _scope(scope).digest


@functools.lru_cache(maxsize=4096)  # a few callers and models, hashed once each
def _tag(text: str) -> str:
    # 12 hex digits: a glob can select by it (hex holds no glob characters), and two
    # models or callers sharing one only make a purge remove more, never less.
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


# The keys kept, over every scope, and the longest encoded fields kept: the fields of a
# long prompt are hashed anyway to be looked up, so keeping them gains little.
_KEPT_KEYS = 4096
_KEPT_PAYLOAD = 1024
_kept = 0


def entry_key(request: Request, scope: str) -> str:
    """The key an answer is stored under: ``<scope tag>.<model tag>.<request_key>``, so
    that a purge can select a caller's or a model's entries by pattern (``purge_pattern``)."""
    global _kept
    state = _scope(scope)
    payload = _KEY_ENCODER.encode(_key_values(request))
    key = state.keys.get(payload)
    if key is not None:
        return key
    digest = state.digest.copy()  # request_key's, inline: this runs per request
    digest.update(payload)
    model = request.model
    tags = state.tags.get(model)
    if tags is None:
        if len(state.tags) >= _KEPT_KEYS:
            state.tags.clear()
        tags = state.tags[model] = f"{_tag(scope)}.{_tag(model)}."
    key = tags + digest.hexdigest()
    if len(payload) <= _KEPT_PAYLOAD:
        if _kept >= _KEPT_KEYS:
            # Every scope's keys at once (a scope the cache dropped took its keys with it).
            _scope.cache_clear()
            _kept = 0
            state = _scope(scope)
        state.keys[payload] = key
        _kept += 1
    return key


def purge_pattern(selector: CacheSelector) -> str | None:
    """The glob over ``entry_key`` keys that a selector names (``None``: a ``key`` that is
    not one of this cache's keys, so nothing matches)."""
    if selector.key is not None:
        parts = selector.key.split(".")
        if len(parts) != 3 or not all(part.isalnum() for part in parts):
            return None
        scope_tag, model_tag, _ = parts
        if selector.scope is not None and scope_tag != _tag(selector.scope):
            return None
        if selector.model is not None and model_tag != _tag(selector.model):
            return None
        return selector.key
    scope = "*" if selector.scope is None else _tag(selector.scope)
    model = "*" if selector.model is None else _tag(selector.model)
    return f"{scope}.{model}.*"


def serve_cached(request: Request, completion: Completion, served_by: str) -> Response:
    """A stored answer as the caller asked for it: replayed as a stream, or complete."""
    if request.stream:
        response = Response.replay(completion, served_by=served_by)
    else:
        # What ``Response.complete`` builds, without its classmethod's second call (a
        # fifth of a hit's own instructions in this layer).
        response = Response(completion, served_by=served_by)
    response.cache = "hit"
    response.headers["x-onion-cache"] = "hit"
    return response


async def store_when_clean(response: Response, store: Any) -> Response:
    """Arrange for ``store(completion)`` to run only if the answer ends cleanly.

    A complete answer is stored at once; a stream when its last chunk has been read.
    A stream that fails (an upstream error, a ``GuardrailViolation`` from an inner
    output guard), is closed early or is cancelled is not stored.
    """

    async def on_end(end: AnswerEnd) -> None:
        if end.ok:
            await store(end.completion)

    return await response.on_end(on_end)


class ExactCache(Layer):
    """Answers repeated requests from a store (memory LRU bounded in bytes, or Redis).

    Parameters (TOML names): ``ttl_seconds``, ``max_bytes`` (memory backend),
    ``backend = "memory" | "redis"``, ``redis_url``, ``redis_deadline`` (seconds per Redis
    operation, 0.05; a late or skipped Redis is a miss, never an error), ``scope``,
    ``allow_n`` (also cache requests with ``n`` > 1; off: they ask for different samples)
    or instead of those two a ``policy`` table (``CachePolicy``'s fields); in code also
    ``clock``.
    A request skips the cache when ``request.context.options.cache`` is ``False``, and
    skips only the lookup when ``options.refresh`` is set (``x-onion-cache: refresh``):
    the fresh answer replaces the stored one. Answers carry ``x-onion-cache-key``, the
    key ``DELETE /admin/cache?key=...`` removes (``purge``).
    ``stats`` counts hits, misses, stores, evictions, expirations, bypasses and errors.
    """

    name = "exact_cache"
    provides = frozenset({"cache", "cache.exact"})
    ordering = (
        Order("guard.input", "inside", "a request the input guard blocks must never be looked up or stored"),
        Order("guard.output", "outside", "only answers the output guard let through may be stored"),
    )
    short_circuit = "on a hit: the same answer-changing fields in the same scope, within the TTL"

    def __init__(
        self,
        ttl_seconds: float | None = 3600.0,
        max_bytes: int = 64 * 1024 * 1024,
        backend: Literal["memory", "redis"] = "memory",
        redis_url: str | None = None,
        scope: Literal["caller", "shared"] = "caller",
        redis_deadline: float = 0.05,
        *,
        allow_n: bool = False,
        policy: CachePolicy | None = None,
        prefix: str = "onion:exact:",
        clock: Clock | None = None,
    ) -> None:
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self.ttl_seconds = ttl_seconds
        self.policy = cache_policy(policy, scope, allow_n)
        self.store = make_store(
            backend, max_bytes=max_bytes, redis_url=redis_url, prefix=prefix, clock=clock, redis_deadline=redis_deadline
        )
        self.stats: CacheStats = self.store.stats
        # The store in process memory, answered without awaiting (``None``: Redis).
        self._memory = self.store if isinstance(self.store, MemoryStore) else None
        self._span_attributes = {"onion.layer": self.name}

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        if not self.policy.cacheable(request):
            self.stats.bypassed += 1
            return await call_next(request)
        key = entry_key(request, caller_scope(request, self.policy))
        context = request.context
        refresh = context.options.refresh
        memory = self._memory
        if not refresh:
            if memory is not None and context.tracer is None:
                data = memory.get_now(key)  # nothing to trace, nothing to wait for
            else:
                with context.span("exact_cache lookup", self._span_attributes) as span:
                    data = await self._get(key)
                    if span is not None:
                        span.set_attribute("onion.cache.hit", data is not None)
            if data is not None:
                self.stats.hits += 1
                answer = serve_cached(request, decode_completion(data), self.name)
                answer.headers["x-onion-cache-key"] = key
                return answer
        self.stats.misses += 1
        response = await call_next(request)
        if response.cache == "hit":
            # An inner (semantic) cache answered: an approximate answer is not pinned
            # under this exact key.
            return response
        response.cache = "miss"
        headers = response.headers
        headers["x-onion-cache"] = "refresh" if refresh else "miss"
        headers["x-onion-cache-key"] = key

        if memory is not None:
            completion = response.completion
            if completion is not None:
                # A complete answer has ended already: stored now, with no callback.
                if self.policy.storable(completion):
                    memory.set_now(key, encode_completion(completion), self.ttl_seconds)
                    self.stats.stores += 1
                return response

            # The memory store never waits: a plain callback, no coroutine per answer.
            def store_now(end: AnswerEnd) -> None:
                if end.ok and self.policy.storable(end.completion):
                    memory.set_now(key, encode_completion(end.completion), self.ttl_seconds)
                    self.stats.stores += 1

            return await response.on_end(store_now)

        async def store(completion: Completion) -> None:
            if self.policy.storable(completion):
                await self._set(key, encode_completion(completion))

        return await store_when_clean(response, store)

    async def _get(self, key: str) -> bytes | None:
        if isinstance(self.store, MemoryStore):
            return self.store.get_now(key)
        try:
            return await self.store.get(key)
        except Exception as error:
            # A broken cache must not fail the request: answer from upstream instead.
            self.stats.errors += 1
            log.warning("exact_cache.get_failed", error=type(error).__name__)
            return None

    async def _set(self, key: str, value: bytes) -> None:
        try:
            await self.store.set(key, value, self.ttl_seconds)
        except Exception as error:
            self.stats.errors += 1
            log.warning("exact_cache.set_failed", error=type(error).__name__)
            return
        self.stats.stores += 1

    async def purge(self, selector: CacheSelector) -> int:
        """Remove the entries ``selector`` names (``onion.Purgeable``, for ``DELETE
        /admin/cache``); with Redis, for every process sharing the store. How many."""
        pattern = purge_pattern(selector)
        return 0 if pattern is None else await self.store.purge(pattern)

    async def ping(self) -> None:
        """Return when the shared store answers (``onion.Pingable``, for ``/readyz``); at
        once for a store in process memory."""
        redis = getattr(self.store, "redis", None)
        if redis is not None:
            await redis.ping()

    async def aclose(self) -> None:
        """Release the store's connections."""
        await self.store.aclose()
