"""Which laws a stack keeps by construction, and which need a test (``onion check``).

Reads only what the layers declare (capabilities, ordering constraints, where they may
answer early): a law whose ordering part is enforced by a declared constraint holds by
construction, since ``Stack`` refuses any order that breaks it; a law that holds only by
the current order, or depends on a layer's behaviour (a detector, a stream window),
needs a property test; an order that breaks a law is named with the layers involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from .._stack import LayerInfo, Stack, layer_info
from .laws import (
    BoundedUpstreamCalls,
    CacheServesOnlyCleanAnswers,
    CountedOncePerMetricsLayer,
    InputGuardBlocksBeforeCacheAndUpstream,
    NoProviderPII,
    StreamMatchesComplete,
    UpstreamStreamsClosed,
)
from .probe import provides

__all__ = ["LawStatus", "Verdict", "describe_law_status", "law_status"]

Verdict = Literal["by construction", "needs a test", "broken by this order", "not applicable"]


class LawStatus(msgspec.Struct, frozen=True):
    """One law's standing for one stack: the verdict and why."""

    law: str
    statement: str
    verdict: Verdict
    reason: str


def _with(infos: Sequence[LayerInfo], capability: str) -> list[int]:
    return [i for i, info in enumerate(infos) if provides(info.provides, capability)]


def _declared_outside(outer: LayerInfo, inner: LayerInfo) -> bool:
    """True if a declared constraint keeps ``outer`` outside ``inner``."""
    on_inner = any(o.where == "inside" and o.capability in outer.provides for o in inner.ordering)
    on_outer = any(o.where == "outside" and o.capability in inner.provides for o in outer.ordering)
    return on_inner or on_outer


def _ordering_verdict(
    infos: Sequence[LayerInfo], pairs: list[tuple[int, int]], what: str
) -> tuple[Verdict, str] | None:
    """Check that each ``(outer, inner)`` pair is in that order; ``None`` if all are
    declared, else the verdict for the first pair that is broken or undeclared."""
    undeclared = None
    for outer, inner in pairs:
        if outer > inner:
            return (
                "broken by this order",
                f"{infos[outer].name!r} sits inside {infos[inner].name!r}: {what}",
            )
        if not _declared_outside(infos[outer], infos[inner]) and undeclared is None:
            undeclared = (outer, inner)
    if undeclared is not None:
        outer, inner = undeclared
        return (
            "needs a test",
            f"{infos[outer].name!r} is outside {infos[inner].name!r} now, but no declared constraint keeps it there",
        )
    return None


def _names(infos: Sequence[LayerInfo], indices: Sequence[int]) -> str:
    return ", ".join(repr(infos[i].name) for i in indices)


def _input_guard(infos: Sequence[LayerInfo]) -> tuple[Verdict, str]:
    guards = _with(infos, "guard.input")
    if not guards:
        return "not applicable", "no layer provides guard.input"
    caches = _with(infos, "cache")
    pairs = [(g, c) for g in guards for c in caches]
    found = _ordering_verdict(infos, pairs, "the cache looks up (and may answer) requests the guard would block")
    if found:
        return found
    if caches:
        return (
            "by construction",
            f"every cache is declared inside {_names(infos, guards)}; nothing reaches upstream past it",
        )
    return "by construction", f"{_names(infos, guards)} answers before anything inward runs"


def _cache_clean(infos: Sequence[LayerInfo]) -> tuple[Verdict, str]:
    caches = _with(infos, "cache")
    if not caches:
        return "not applicable", "no layer provides cache"
    guards = _with(infos, "guard.output")
    pairs = [(c, g) for c in caches for g in guards]
    found = _ordering_verdict(infos, pairs, "the cache stores answers before the output guard judges them")
    if found:
        return found
    return (
        "needs a test",
        "output guards are declared inside the cache; storing only whole, finished streams is the cache's "
        "own behaviour: run CacheServesOnlyCleanAnswers",
    )


def _metrics_once(infos: Sequence[LayerInfo]) -> tuple[Verdict, str]:
    meters = _with(infos, "metrics")
    if not meters:
        return "not applicable", "no layer provides metrics"
    repeaters = sorted(set(_with(infos, "retry") + _with(infos, "fallback")))
    early = [i for i, info in enumerate(infos) if info.short_circuit]
    for m in meters:
        for r in repeaters:
            if r < m:
                return "broken by this order", (
                    f"{infos[m].name!r} sits inside {infos[r].name!r}: it counts every attempt, not every request "
                    "(a legitimate choice for per-attempt metrics)"
                )
        for s in early:
            if s < m and s not in meters:
                return "broken by this order", (
                    f"{infos[m].name!r} sits inside {infos[s].name!r}, which may answer early "
                    f"({infos[s].short_circuit}): those requests are not counted"
                )
    undeclared = [(m, r) for m in meters for r in repeaters + early if r not in meters]
    if all(_declared_outside(infos[m], infos[r]) for m, r in undeclared):
        return "by construction", "every metrics layer is declared outside the layers that repeat or answer early"
    return (
        "needs a test",
        "metrics layers are outermost now, but not all of it is declared: run CountedOncePerMetricsLayer",
    )


def _bounded(infos: Sequence[LayerInfo]) -> tuple[Verdict, str]:
    retries = _with(infos, "retry")
    fallbacks = _with(infos, "fallback")
    if not retries and not fallbacks:
        return "by construction", "no layer repeats a call: one request, at most one upstream call"
    if len(retries) > 1:
        return "broken by this order", f"retry layers {_names(infos, retries)} nest: their attempts multiply"
    if len(fallbacks) > 1:
        return "broken by this order", f"fallback layers {_names(infos, fallbacks)} nest: their chains multiply"
    return "needs a test", "each layer's own bound (attempts, models, stream resumption): run BoundedUpstreamCalls"


def _pii(infos: Sequence[LayerInfo]) -> tuple[Verdict, str]:
    guards = _with(infos, "guard.output")
    if not guards:
        return "broken by this order", "no layer provides guard.output: provider text reaches the caller unchecked"
    return "needs a test", (
        f"{_names(infos, guards)} must catch PII split across stream chunks: run NoProviderPII with chunk boundaries "
        "anywhere"
    )


def _streams_closed(infos: Sequence[LayerInfo]) -> tuple[Verdict, str]:
    return "needs a test", "every stream wrapper must close its input: run UpstreamStreamsClosed with early closes"


def _stream_equals(infos: Sequence[LayerInfo]) -> tuple[Verdict, str]:
    changers = [i for i, info in enumerate(infos) if info.buffers]
    extra = f"; layers holding back chunks: {_names(infos, changers)}" if changers else ""
    return "needs a test", "layers that edit text must edit a stream as they edit a whole answer" + extra


_RULES = (
    (InputGuardBlocksBeforeCacheAndUpstream, _input_guard),
    (CacheServesOnlyCleanAnswers, _cache_clean),
    (CountedOncePerMetricsLayer, _metrics_once),
    (BoundedUpstreamCalls, _bounded),
    (NoProviderPII, _pii),
    (UpstreamStreamsClosed, _streams_closed),
    (StreamMatchesComplete, _stream_equals),
)


def law_status(stack: Stack | Sequence[Any]) -> list[LawStatus]:
    """For a ``Stack`` (or a list of layers, outermost first), each law's verdict:
    ``"by construction"``, ``"needs a test"``, ``"broken by this order"`` or
    ``"not applicable"``, with the reason naming the layers involved."""
    infos = stack.infos if isinstance(stack, Stack) else tuple(layer_info(layer) for layer in stack)
    out = []
    for law, rule in _RULES:
        verdict, reason = rule(infos)
        out.append(LawStatus(law.name, law.statement, verdict, reason))
    return out


_MARKS = {"by construction": "✓", "needs a test": "?", "broken by this order": "✗", "not applicable": "-"}


def describe_law_status(stack: Stack | Sequence[Any]) -> str:
    """``law_status`` as text, one law per line, for ``onion check``."""
    lines = ["laws:"]
    for status in law_status(stack):
        lines.append(f"  {_MARKS[status.verdict]} {status.verdict:<21} {status.law}: {status.statement}")
        lines.append(f"      {status.reason}")
    return "\n".join(lines)
