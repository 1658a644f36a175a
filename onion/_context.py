"""What travels with a request but is never sent upstream: ``Context`` and the typed
parts of the contract between layers.

Layers share data through declared fields, never through string keys: the deadline and
the per-attempt phase limits (set by ``timeout``), the resume prefix (set by a
recovering ``retry``/``fallback`` for the provider), what the guards found, what
trimming dropped, how many attempts reached the provider, the incoming trace context
(set by the server) and the tracing hook (set by a tracing layer). ``state`` is left as
scratch space for third-party layers; no built-in reads or writes another layer's data
there.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal, Protocol

import msgspec

from ._policy import KeyPolicy

__all__ = [
    "Context",
    "GuardFindings",
    "PhaseLimits",
    "RequestChain",
    "RequestOptions",
    "ResumeMode",
    "ResumePrefix",
    "SpanHook",
    "TrimReport",
]

ResumeMode = Literal["auto", "reissue", "continue", "off"]
"""How ``retry`` and ``fallback`` recover a stream after its first chunk went out."""

# A random per-process prefix and a counter: unique across processes, and far cheaper
# per request than uuid4 (which reads the OS random source every time).
_ID_PREFIX = "req_" + os.urandom(6).hex()
# The prefix and the counter's next value in (at least) eight hex digits, as
# ``f"{_ID_PREFIX}{n:08x}"`` spells it; built in C (no Python frame per request: every
# request's context calls it).
_new_request_id: Callable[[], str] = map((_ID_PREFIX + "%08x").__mod__, itertools.count(1)).__next__


class RequestChain(msgspec.Struct, frozen=True):
    """What a caller asked of the resilience layers for this one request (never sent
    upstream): ``fallbacks``, the models to try after the requested one, in order, and
    ``retries``, the most attempts per model. ``fallback`` and ``retry`` honour them
    only within their allowlists (``allow_request_fallbacks``, ``max_request_attempts``)
    and refuse the rest with a 400 naming the field."""

    fallbacks: tuple[str, ...] | None = None
    retries: int | None = None


class RequestOptions(msgspec.Struct, frozen=True):
    """Per-request switches set by the caller or the server (frozen: replace, not mutate).

    - ``cache``: ``False`` makes every cache pass the request by (no lookup, no store);
      the server sets it for ``Cache-Control: no-cache`` and ``x-onion-cache: off``.
    - ``resume``: overrides the ``resume`` mode of ``retry`` and ``fallback``.
    - ``refresh``: caches skip the lookup but store the new answer in place of the old
      (the server sets it for ``x-onion-cache: refresh``).
    """

    cache: bool = True
    resume: ResumeMode | None = None
    refresh: bool = False


_DEFAULT_OPTIONS = RequestOptions()


class PhaseLimits:
    """Per-attempt stream limits (seconds) written by ``timeout`` on ``context.phases``.

    ``first_chunk``: from the start of an attempt to its first chunk; ``idle``: the longest
    gap between two chunks; ``answer``: for a complete (non-streamed) call, from the start
    of an attempt to its whole answer. They bound each *attempt*, wherever the ``timeout`` layer
    sits: the stack's handler boundary (one call there is one attempt) enforces them, so
    a ``retry`` or ``fallback`` between the two sees a stalled attempt as a ``Timeout``
    of that phase and recovers it like any other failure. Nested ``timeout`` layers
    combine by taking the tighter limit of each phase. Immutable: a layer that changes
    them puts a new one on the context and restores the old one when it is done.
    """

    __slots__ = ("answer", "first_chunk", "idle")

    def __init__(self, first_chunk: float | None, idle: float | None, answer: float | None = None) -> None:
        self.first_chunk = first_chunk
        self.idle = idle
        self.answer = answer

    def tighter(self, other: PhaseLimits) -> PhaseLimits:
        """These limits combined with another layer's (the smaller of each phase)."""
        return PhaseLimits(
            _smaller(self.first_chunk, other.first_chunk),
            _smaller(self.idle, other.idle),
            _smaller(self.answer, other.answer),
        )

    def __repr__(self) -> str:
        return f"PhaseLimits(first_chunk={self.first_chunk!r}, idle={self.idle!r}, answer={self.answer!r})"


def _smaller(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


class ResumePrefix(msgspec.Struct, frozen=True):
    """Set on ``context.resume`` by a recovering ``retry``/``fallback`` only while it
    reopens a stream in ``resume = "auto"`` mode: the ``text`` already sent and the
    ``messages`` of the request it was sent for. A provider that can continue an
    assistant prefix sends the text as one and replays it in front of the continuation,
    so its answer reads as a whole answer to the plain request."""

    text: str
    messages: list[Any]  # the request's ``Message`` list (typed loosely: ``_types`` imports this module)


class GuardFindings(msgspec.Struct):
    """What the guards found in this request (``context.findings``), for metrics and logs.

    - ``flags``: names of the input rules that matched with outcome ``flag``;
    - ``redactions``: detector name -> how many matches the output guard redacted or
      blocked.
    """

    flags: list[str] = msgspec.field(default_factory=list)
    redactions: dict[str, int] = msgspec.field(default_factory=dict)


class TrimReport(msgspec.Struct, frozen=True):
    """What ``trim_context`` did (``context.trimmed``): messages dropped, prompt tokens kept."""

    dropped: int
    prompt_tokens: int


class SpanHook(Protocol):
    """What a tracing layer puts on ``context.tracer``: opens a child span of the request's
    span around a layer's work."""

    def span(self, name: str, attributes: Mapping[str, Any] | None) -> AbstractContextManager[Any]:
        """A context manager around the work; it yields the span (``None`` if none)."""
        ...


# Reusable: the untraced path allocates nothing per call.
_UNTRACED: AbstractContextManager[Any] = nullcontext(None)


class Context(msgspec.Struct):
    """Per-request state that travels with a request but is never sent upstream.

    A context is shared by every copy of a request made with
    ``msgspec.structs.replace``, so a retry sees what outer layers recorded.

    Set by the caller or the server:

    - ``request_id``: unique id, shown to users in safe error messages and in logs.
    - ``caller``: identity of the client (API key name, ``user``), used for rate limits,
      cache scopes and metrics.
    - ``team``: the caller's team (a virtual key's team), for team budgets and spend.
    - ``key``: the caller's virtual key (``KeyPolicy``: allowed models, rpm/tpm, budget),
      set by the server's key check; ``rate_limit`` and ``budget`` read its limits.
    - ``options``: per-request switches (``RequestOptions``: cache off, resume mode).
    - ``trace_headers``: the incoming W3C trace context (``traceparent``,
      ``tracestate``, ``baggage``), set by the server for a tracing layer to continue;
      never other headers.

    Set by layers, read by others:

    - ``deadline``: absolute time in ``anyio.current_time()`` units, or ``None``
      (``timeout``; the earliest deadline wins).
    - ``deadline_guarded``: the deadline the stack's handler boundary enforces around
      every pull of this attempt: a provider need not add a cancel scope of its own for it.
    - ``phases``: per-attempt first-chunk and idle limits (``PhaseLimits``, ``timeout``),
      enforced on each attempt at the stack's handler boundary.
    - ``alternatives``: how many more models an outer ``fallback`` can still try (a
      ``retry`` inside it moves on at once on a silent or stalled attempt when one can).
    - ``chain``: the per-request fallback chain and retry count (``RequestChain``), set by
      the server from the body extension ``fallbacks`` / header ``x-onion-fallbacks``.
    - ``resume``: the prefix a provider may continue (``ResumePrefix``), only while a
      recovering ``retry``/``fallback`` reopens a stream.
    - ``findings``: what the guards found (``GuardFindings``; ``None`` until one did).
    - ``trimmed``: what ``trim_context`` dropped (``TrimReport``; ``None`` if nothing).
    - ``tracer``: the tracing hook (``SpanHook``); use ``context.span(...)``.

    Kept by the core:

    - ``trace``: names of the layers entered, in order (a retry appears twice).
    - ``attempts``: how many times the stack's handler (the provider) was called.
    - ``upstream_seconds``: time spent waiting for upstreams (providers add to it), so
      the gateway's own overhead is the total minus this.
    - ``state``: free-form scratch space for third-party layers, keyed by layer name.
    """

    request_id: str = msgspec.field(default_factory=_new_request_id)
    caller: str | None = None
    team: str | None = None
    key: KeyPolicy | None = None
    deadline: float | None = None
    trace: list[str] = msgspec.field(default_factory=list)
    options: RequestOptions = _DEFAULT_OPTIONS
    state: dict[str, Any] = msgspec.field(default_factory=dict)
    upstream_seconds: float = 0.0
    attempts: int = 0
    trace_headers: dict[str, str] | None = None
    deadline_guarded: float | None = None
    phases: PhaseLimits | None = None
    alternatives: int = 0
    chain: RequestChain | None = None
    resume: ResumePrefix | None = None
    findings: GuardFindings | None = None
    trimmed: TrimReport | None = None
    tracer: SpanHook | None = None

    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
        """A child span of the request's span around a layer's work::

            with request.context.span("cache lookup", self._span_attributes) as span:
                hit = await store.get(key)
                if span is not None:
                    span.set_attribute("onion.cache.hit", hit is not None)

        Without a tracing layer around it, a reusable no-op that yields ``None``: pass
        ``attributes`` built once (not per call) and the untraced path allocates nothing.
        """
        tracer = self.tracer
        return _UNTRACED if tracer is None else tracer.span(name, attributes)

    def guard_findings(self) -> GuardFindings:
        """``findings``, created on first use (a guard that found something calls this)."""
        findings = self.findings
        if findings is None:
            findings = self.findings = GuardFindings()
        return findings
