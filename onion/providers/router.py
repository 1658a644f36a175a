"""The router: the handler at the centre of the onion that picks a provider by model.

A model name goes to the provider that lists it; ``provider/model`` picks a provider
explicitly (the prefix is removed before the call); a name no provider lists goes to the
first provider (in order) with a glob that matches it (``models = ["gpt-*", "o[1-9]*"]``,
``fnmatch`` rules, case-sensitive); a provider that lists no models serves any name no
other provider claims. An unknown model is ``ModelNotFound`` (404) naming the model.
Only names listed as such are balanced over deployments: a glob routes to one provider.

Several deployments per model: every provider listing a model serves it, each with its
``weight`` (``Router(providers, weights={"east": 3, "west": 1})``; config: ``weight`` in
``[[providers]]``, default 1). ``HealthTable`` (``balance.py``) picks one per call by
weighted least-request and ejects deployments that keep failing. Within one call the
router tries a second deployment once when the first failed *before producing any
answer* (a retryable ``ProviderError``: 5xx, 429, connection error, or a ``Timeout``):
nothing was billed, so nothing is billed twice. Then it raises the last error unchanged,
so ``retry`` and ``fallback`` outside work as before (their next call picks afresh, away
from the deployment that failed). A stream that fails after it began is counted against
its deployment but never retried here (it may be committed: rule 6). Each extra attempt
counts in ``context.attempts``. The answer names its deployment in the
``x-onion-deployment`` header (and ``served_by``, the provider's name).
"""

from __future__ import annotations

import contextlib
import fnmatch
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import anyio
import msgspec
import structlog

from .._redis import RedisClient
from .._response import Response
from .._types import Chunk, Request
from ..errors import CircuitOpen, ConfigError, ModelNotFound, ProviderError, Timeout
from .balance import EjectionPolicy, HealthTable, SharedHealth, Verdict

_log = structlog.get_logger("onion.router")

__all__ = ["Provider", "Router"]


@runtime_checkable
class Provider(Protocol):
    """A terminal handler with a ``name`` and the ``models`` it serves: names, or globs
    (``"gpt-*"``) for the names no provider lists; empty: any name no other one claims."""

    name: str
    models: tuple[str, ...]

    async def __call__(self, request: Request, /) -> Response: ...


class Router:
    """Routes each request to a provider by its ``model``; itself a handler.

    ``Router([east, west], weights={"east": 3})``: both serve the models they both list,
    east three times as often while both are healthy (see the module docstring).
    ``policy`` shapes ejection (``EjectionPolicy``); ``redis`` (a URL or ``RedisClient``)
    shares calls in flight and ejections with other workers, re-read at most every
    ``refresh_seconds``; ``clock`` (wall time) and ``rng`` are for tests.
    """

    name = "router"

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        weights: Mapping[str, float] | None = None,
        policy: EjectionPolicy | None = None,
        redis: RedisClient | str | None = None,
        refresh_seconds: float = 0.5,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if not providers:
            raise ConfigError("the router needs at least one provider")
        self.providers: dict[str, Provider] = {}
        self._by_model: dict[str, Provider] = {}
        self._all_by_model: dict[str, list[Provider]] = {}
        self._catch_all: Provider | None = None
        # (glob, provider) in configuration order, and what they resolved (names are few;
        # a flood of new ones empties it rather than growing it).
        self._patterns: list[tuple[str, Provider]] = []
        self._matched: dict[str, Provider | None] = {}
        for provider in providers:
            if provider.name in self.providers:
                raise ConfigError(f"two providers are named {provider.name!r}")
            self.providers[provider.name] = provider
            for model in provider.models:
                if is_pattern(model):
                    self._patterns.append((model, provider))
                    continue
                self._by_model.setdefault(model, provider)
                self._all_by_model.setdefault(model, []).append(provider)
            if not provider.models and self._catch_all is None:
                self._catch_all = provider
        weights = dict(weights or {})
        for name in weights:
            if name not in self.providers:
                raise ConfigError(f"weights: no provider is named {name!r}", field="weight")
        self.health = HealthTable(
            {name: weights.get(name, 1.0) for name in self.providers},
            policy,
            groups=[[p.name for p in group] for group in self._all_by_model.values()],
            clock=clock,
            rng=rng,
        )
        # Only models with several deployments are balanced; the others keep the one path.
        self._balanced = {m: [p.name for p in group] for m, group in self._all_by_model.items() if len(group) > 1}
        self._owns_redis = isinstance(redis, str)
        if isinstance(redis, str):
            redis = RedisClient(redis, timeout=0.2)
        self.shared = SharedHealth(redis, policy=self.health.policy) if redis is not None else None
        self._refresh_seconds = refresh_seconds
        self._refreshed_at = -float("inf")
        self._streaks: set[str] = set()  # deployments whose shared failure streak may be > 0

    def route(self, model: str) -> tuple[Provider, str]:
        """The provider for ``model`` and the model name to send it."""
        provider = self._by_model.get(model)
        if provider is not None:
            return provider, model
        prefix, slash, rest = model.partition("/")
        if slash and rest:
            explicit = self.providers.get(prefix)
            if explicit is not None and (not explicit.models or serves(explicit.models, rest)):
                return explicit, rest
        if self._patterns:
            matched = self._matched.get(model, False)
            if matched is False:
                matched = next((p for glob, p in self._patterns if fnmatch.fnmatchcase(model, glob)), None)
                if len(self._matched) >= 4096:
                    self._matched.clear()
                self._matched[model] = matched
            if matched is not None:
                return matched, model
        if self._catch_all is not None:
            return self._catch_all, model
        raise ModelNotFound(model if len(model) <= 200 else model[:200] + "…")

    def patterns(self) -> list[tuple[str, str]]:
        """``(glob, provider name)`` for every glob a provider lists, in order."""
        return [(glob, provider.name) for glob, provider in self._patterns]

    def models(self) -> list[tuple[str, str]]:
        """``(model, provider name)`` for every model a provider lists by name, in order
        (globs: ``patterns``)."""
        return [(model, provider.name) for model, provider in self._by_model.items()]

    def deployments(self, model: str) -> list[Provider]:
        """Every provider that lists ``model``, in configuration order.

        A name no provider lists resolves as ``route`` does (explicit prefix, then the
        catch-all); an unknown model is ``ModelNotFound``.
        """
        listed = self._all_by_model.get(model)
        if listed:
            return list(listed)
        return [self.route(model)[0]]

    def healthy_deployments(self, model: str) -> list[Provider]:
        """The deployments of ``model`` not currently ejected, in configuration order
        (probing ones included: they take calls). Never empty for a known model: the
        router never ejects every deployment of a model."""
        deployments = self.deployments(model)
        healthy = [p for p in deployments if not self.health.ejected(p.name)]
        return healthy or deployments

    def ready_deployments(self, model: str) -> list[Provider]:
        """The deployments of ``model`` that are neither ejected nor failing
        (``HealthTable.failing``); empty when every one is down. ``/readyz`` reads it:
        unlike ``healthy_deployments`` it tells a model whose only upstream is down."""
        return [p for p in self.deployments(model) if not self.health.failing(p.name)]

    async def __call__(self, request: Request) -> Response:
        names = self._balanced.get(request.model)
        if names is None:
            provider, model = self.route(request.model)
            if model != request.model:
                request = msgspec.structs.replace(request, model=model)
            # One deployment: no pick, but its verdicts are kept (readiness reads them).
            return await self._attempt(provider.name, request, balanced=False)
        await self._refresh()
        first = self.health.pick(names)
        assert first is not None  # a balanced model has two deployments or more
        try:
            return await self._attempt(first, request)
        except Exception as error:
            # Another deployment once, only for a failure that produced no answer.
            second = self.health.pick(names, exclude=first) if _failure(error) else None
            if second is None:
                raise
            _log.debug("deployment failed, trying another", deployment=first, next=second, error=type(error).__name__)
            request.context.attempts += 1
            return await self._attempt(second, request)

    async def _attempt(self, name: str, request: Request, *, balanced: bool = True) -> Response:
        provider = self.providers[name]
        self.health.started(name)
        started = time.monotonic()  # waits are measured on it (anyio's clock costs more per read)
        try:
            response = await provider(request)
        except BaseException as error:
            with anyio.CancelScope(shield=True):
                await self._finish(name, _verdict(error, request, started, True))
            raise
        if balanced:
            response.headers["x-onion-deployment"] = name
        if response.is_stream:
            response.wrap(lambda chunks: self._watch(name, request, chunks, started))
        else:
            await self._finish(name, "ok")
        return response

    async def _watch(
        self, name: str, request: Request, chunks: AsyncIterator[Chunk], started: float
    ) -> AsyncGenerator[Chunk, None]:
        # The stream's verdict when it ends: read to its end, failed, or stopped by the
        # caller (no verdict, unless a deadline or phase limit cut a wait: a stall).
        waiting_since: float | None = started  # None while the consumer holds a chunk
        first = True
        try:
            async for chunk in chunks:
                first, waiting_since = False, None
                yield chunk
                waiting_since = time.monotonic()
        except BaseException as error:
            # Shielded so a cancelled caller still closes the upstream and settles the
            # count; only here: a shield costs a little on every call where none is needed.
            with anyio.CancelScope(shield=True):
                try:
                    await chunks.aclose()  # type: ignore[attr-defined]
                finally:
                    await self._finish(name, _verdict(error, request, waiting_since, first))
            raise
        try:
            await chunks.aclose()  # type: ignore[attr-defined]
        finally:
            await self._finish(name, "ok")

    async def _finish(self, name: str, verdict: Verdict) -> None:
        shared, health = self.shared, self.health
        shared_failures = None
        if shared is not None and verdict != "none":
            try:
                if verdict == "failed":
                    shared_failures = await shared.failed(name)
                    self._streaks.add(name)
                elif name in self._streaks:  # only the first success after failures writes
                    self._streaks.discard(name)
                    await shared.recovered(name)
            except Exception:
                shared_failures = None  # Redis is down or slow: the local book decides
        if health.finished(name, verdict, shared_failures):
            state = health.state(name)
            _log.warning("deployment ejected", deployment=name, until=state.ejected_until, ejections=state.ejections)
            if shared is not None:
                with contextlib.suppress(Exception):  # the other workers will find out on their own
                    await shared.eject(name, state.ejected_until, state.ejections)

    async def share_health(self) -> None:
        """Publish this worker's calls in flight and read every worker's, with their
        ejections (the router does it before a pick at most every ``refresh_seconds``)."""
        shared = self.shared
        if shared is None:
            return
        now = self.health.clock()
        self._refreshed_at = now
        try:
            snapshot = await shared.share(self.health.in_flight(), now)
        except Exception:
            return  # Redis is down or slow: the local book decides
        for name, (in_flight, until, ejections, failures) in snapshot.items():
            self.health.merge(name, in_flight, until, ejections)
            if failures:
                self._streaks.add(name)

    async def _refresh(self) -> None:
        if self.shared is not None and self.health.clock() - self._refreshed_at >= self._refresh_seconds:
            await self.share_health()

    async def aclose(self) -> None:
        """Close every provider's connections (and the Redis pool the router opened)."""
        for provider in self.providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()
        if self.shared is not None and self._owns_redis:
            await self.shared.redis.aclose()

    def __repr__(self) -> str:
        return f"Router({list(self.providers.values())!r})"


def _failure(error: BaseException | None) -> bool:
    """A failure of the deployment: a retryable upstream error (5xx, 429, connection
    error, cut stream) or a timeout; not the caller's 4xx, not an open circuit."""
    if isinstance(error, Timeout):
        return True
    return isinstance(error, ProviderError) and error.retryable and not isinstance(error, CircuitOpen)


_SLACK = 0.005  # seconds: a limit that fired "now" is a few ms past, by the clock we read


def _cut_by_a_limit(request: Request, waiting_since: float, first: bool) -> bool:
    """Whether a cancelled wait was cut by the request's deadline or by a phase limit
    (first chunk, idle) of a ``timeout`` outside: then the deployment stalled.
    ``waiting_since`` is ``time.monotonic()``; deadlines are in anyio's clock."""
    context = request.context
    now = anyio.current_time()
    if context.deadline is not None and now >= context.deadline - _SLACK:
        return True
    phases = context.phases
    if phases is None:
        return False
    # Read loosely: the hand-off between timeout and retry may grow or shed fields.
    scope = getattr(phases, "scope", None)
    if scope is not None and now >= scope.deadline - _SLACK:
        return True
    limit = getattr(phases, "first_chunk" if first else "idle", None)
    return limit is not None and time.monotonic() - waiting_since >= limit * 0.95


def _verdict(error: BaseException | None, request: Request, waiting_since: float | None, first: bool) -> Verdict:
    """``failed`` for a deployment's failure; ``none`` for the caller's doing (its 4xx, a
    cancel, a stop while it held a chunk: ``waiting_since`` is ``None``)."""
    if _failure(error):
        return "failed"
    if waiting_since is not None and isinstance(error, (GeneratorExit, anyio.get_cancelled_exc_class())):
        return "failed" if _cut_by_a_limit(request, waiting_since, first) else "none"
    return "none"


def is_pattern(model: str) -> bool:
    """Whether a provider's ``models`` entry is a glob (``*``, ``?`` or ``[``) rather than a name."""
    return "*" in model or "?" in model or "[" in model


def serves(models: Sequence[str], model: str) -> bool:
    """Whether ``models`` (names and globs, as a provider lists them) include ``model``."""
    return model in models or any(is_pattern(glob) and fnmatch.fnmatchcase(model, glob) for glob in models)
