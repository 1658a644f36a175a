"""Spans for attributes onion builds itself, handed to the SDK's processors when they end.

The OpenTelemetry SDK's span costs ~25 µs to start and end on the benchmark machine, more
than half of it cleaning and copying attributes under a lock (``BoundedAttributes``), and
the tracing layer opens one or two per request. ``LightTracer`` makes spans whose
attributes are a plain dict (the tracing layer's own: strings, numbers, booleans and
tuples of strings, nothing to clean) and that are themselves the SDK's ``ReadableSpan``
(as the SDK's own span is): when one ends it goes to the provider's span processors,
exactly where the SDK's own span goes: batch or simple processors, OTLP and in-memory
exporters see the same span (name, ids, parent, kind, attributes, events, status, times,
resource, scope). When every processor is a ``BatchSpanProcessor``, a sampled span goes
straight into their queues (what their ``on_end`` does), and their ``on_start``, which
does nothing, is not called.

What it keeps from the SDK: the provider's sampler (asked with the start attributes, so a
sampled-out request costs a ``NonRecordingSpan``), id generator, resource and processors.
What it leaves out: span limits (onion's spans have under 20 attributes, far below the
default 128) and the SDK's own self-metrics. Values set by others through the API
(``set_attribute`` on the current span) are cleaned as the SDK cleans them.

``attach_span`` / ``detach_span`` make a span the current one in OpenTelemetry's context
for the code a layer awaits, and restore the previous context: what
``context.attach(trace.set_span_in_context(span))`` and ``context.detach(token)`` do, in
two calls instead of eight when the runtime context is the API's default (``contextvars``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace import Event, ReadableSpan, SynchronousMultiSpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, StaticSampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    DEFAULT_TRACE_STATE,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

__all__ = ["LightTracer", "attach_span", "detach_span", "light_tracer"]

_PLAIN = (str, bool, int, float)
_UNSET = Status(StatusCode.UNSET)
_new_context = tuple.__new__
_NO_STATE = DEFAULT_TRACE_STATE
_MAX_TRACE_ID = 2**128 - 1
_MAX_SPAN_ID = 2**64 - 1


class LightTracer:
    """Starts ``LightSpan``\\ s on an SDK ``TracerProvider`` (see the module's docstring)."""

    __slots__ = ("_batch_emits", "_draw", "_ids", "_new_span_id", "_new_trace_id", "_processor", "_random_ids",
                 "_resource", "_sampler", "_scope", "_seen", "_static")  # fmt: skip

    def __init__(self, provider: TracerProvider, scope: str) -> None:
        # The provider's own parts; its processor list is the object spans end into, so
        # processors added later are served too.
        self._processor = provider._active_span_processor
        self._sampler = provider.sampler
        self._ids = ids = provider.id_generator
        self._new_trace_id = ids.generate_trace_id
        self._new_span_id = ids.generate_span_id
        # A property of the generator, not of each id: asked once.
        self._random_ids = bool(getattr(ids, "is_trace_id_random", lambda: False)())
        # The SDK's default generator's own draw, called directly; any other generator is asked.
        self._draw: Callable[[int], int] | None = random.getrandbits if type(ids) is RandomIdGenerator else None
        self._resource = provider.resource
        self._scope = InstrumentationScope(scope)
        self._static = _static_flags(provider.sampler)
        self._seen: Any = None  # the processor tuple _batch_emits was built for
        self._batch_emits: tuple[Callable[[ReadableSpan], None], ...] | None = None

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
    ) -> trace_api.Span:
        """A started span; ``attributes`` must hold only plain values and is owned by the span."""
        # ``trace_api.get_current_span(context).get_span_context()``: the span in ``context``
        # (or in the current one, read from the context variable when the runtime is the
        # API's default): three calls fewer per span.
        key = _SPAN_KEY
        if key is None or (context is None and otel_context._RUNTIME_CONTEXT is not _RUNTIME):
            current: Any = trace_api.get_current_span(context)
        else:
            current = (context if context is not None else _CURRENT.get()).get(key)  # type: ignore[union-attr]
        parent: SpanContext | None = None
        if current is not None and isinstance(current, trace_api.Span):
            parent = current.get_span_context()
            if parent is None or not parent.is_valid:
                parent = None
        if parent is None:
            # The SDK's RandomIdGenerator draws until the id is not 0: one draw nearly always.
            trace_id = (self._draw(128) if self._draw is not None else 0) or self._new_trace_id()
            random_id = self._random_ids
        else:
            trace_id = parent.trace_id
            random_id = parent.trace_flags.random_trace_id
        static = self._static
        added: Any = None
        if static is not None:
            # The SDK's default sampler, decided as it decides: by the parent's flags
            # alone, the parent's trace state kept, no attribute added. Each entry is
            # (recording, trace flags without / with a random trace id), built once.
            if parent is None:
                recording, sampled, flags, random_flags = static[0]
                trace_state = None
            else:
                sampled_in = parent.trace_flags.sampled
                recording, sampled, flags, random_flags = static[
                    (1 if sampled_in else 2) if parent.is_remote else (3 if sampled_in else 4)
                ]
                trace_state = parent.trace_state
            if random_id:
                flags = random_flags
        else:
            result = self._sampler.should_sample(context, trace_id, name, kind, attributes, ())
            decision, trace_state, added = result.decision, result.trace_state, result.attributes
            recording, sampled = decision.is_recording(), decision.is_sampled()
            bits = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
            flags = TraceFlags(bits | TraceFlags.RANDOM_TRACE_ID if random_id else bits)
        span_id = (self._draw(64) if self._draw is not None else 0) or self._new_span_id()
        # What SpanContext(...) builds, without its call and defaults (the same tuple).
        span_context = _new_context(
            SpanContext,
            (
                trace_id,
                span_id,
                False,
                flags,
                _NO_STATE if trace_state is None else trace_state,
                0 < trace_id <= _MAX_TRACE_ID and 0 < span_id <= _MAX_SPAN_ID,
            ),
        )
        if not recording:
            return NonRecordingSpan(span_context)
        attrs = attributes if attributes is not None else {}
        if added:
            for key, value in added.items():  # what the sampler added (its view of ours is the same dict)
                attrs[key] = value
        span = LightSpan(self, name, span_context, parent, kind, attrs, sampled)
        if self._emits() is None:  # a batch processor's on_start does nothing
            self._processor.on_start(span, parent_context=context)  # type: ignore[arg-type]
        return span

    def _emits(self) -> tuple[Callable[[ReadableSpan], None], ...] | None:
        """When every processor is the SDK's ``BatchSpanProcessor`` (the usual OTLP
        setup): their queues' ``emit``, to hand a sampled span straight to (what their
        ``on_end`` does after a check of the span's flags); else ``None``: the
        processors are called as the SDK calls them. Rebuilt when a processor is added
        (the provider replaces its tuple)."""
        processors = getattr(self._processor, "_span_processors", None)
        if processors is self._seen:
            return self._batch_emits
        emits: tuple[Callable[[ReadableSpan], None], ...] | None = None
        if type(self._processor) is SynchronousMultiSpanProcessor and processors:
            queues = [getattr(p, "_batch_processor", None) for p in processors if type(p) is BatchSpanProcessor]
            if len(queues) == len(processors) and all(callable(getattr(q, "emit", None)) for q in queues):
                emits = tuple(q.emit for q in queues)
        self._seen, self._batch_emits = processors, emits
        return emits


class LightSpan(trace_api.Span, ReadableSpan):
    """A recording span that is its own finished ``ReadableSpan`` once it ends (as the
    SDK's span is): the processors get this object, nothing is copied at the end."""

    # ReadableSpan's own field names, so its properties (what exporters read) read them.
    __slots__ = ("_attributes", "_context", "_end_time", "_events", "_instrumentation_info",
                 "_instrumentation_scope", "_kind", "_links", "_name", "_parent", "_resource", "_sampled",
                 "_start_time", "_status", "_tracer")  # fmt: skip

    def __init__(
        self,
        tracer: LightTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        sampled: bool,
    ) -> None:
        # ReadableSpan.__init__ is not called: every field it sets is set here.
        self._tracer = tracer
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._events: list[Event] | tuple[()] = ()
        self._links = ()
        self._resource = tracer._resource
        self._instrumentation_scope = tracer._scope
        self._instrumentation_info = None
        self._status = _UNSET  # immutable: shared
        self._sampled = sampled
        self._start_time = time.time_ns()
        self._end_time: int | None = None

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is not None:
            return
        if type(value) in _PLAIN or (type(value) is tuple and all(type(v) is str for v in value)):
            self._attributes[key] = value
        else:  # what someone else set through the API: cleaned as the SDK cleans it
            cleaned = BoundedAttributes(attributes={key: value}).get(key)
            if cleaned is not None:
                self._attributes[key] = cleaned

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end_time is not None:
            return
        own = self._attributes
        for key, value in attributes.items():
            if type(value) in _PLAIN:  # the common case inline: one call per span, not per attribute
                own[key] = value
            else:
                self.set_attribute(key, value)

    def set_plain_attributes(self, attributes: Mapping[str, Any]) -> None:
        """``set_attributes`` for a caller that promises every value is a string, number,
        boolean or tuple of strings (the tracing layer's own): taken as they are, in one
        ``update``, with nothing looked at."""
        if self._end_time is None:
            self._attributes.update(attributes)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self._end_time is not None:
            return
        events = self._events
        if not isinstance(events, list):
            events = self._events = []
        events.append(Event(name, dict(attributes or {}), timestamp or time.time_ns()))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # As the SDK: OK is final, UNSET is ignored.
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        found = status if isinstance(status, Status) else Status(status, description)
        if found.status_code is not StatusCode.UNSET:
            self._status = found

    def record_exception(
        self, exception: BaseException, attributes: Any = None, timestamp: int | None = None, escaped: bool = False
    ) -> None:
        attrs = {
            "exception.type": type(exception).__qualname__,
            "exception.message": str(exception),
            "exception.escaped": str(escaped),
            **dict(attributes or {}),
        }
        self.add_event("exception", attrs, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time or time.time_ns()
        tracer = self._tracer
        emits = tracer._emits()
        if emits is None:
            processor = tracer._processor
            # As the SDK's span ends: the processors' "ending" hook (newer SDKs), then on_end.
            ending = getattr(processor, "_on_ending", None)
            if ending is not None:
                ending(self)
            processor.on_end(self)
        elif self._sampled:  # a batch processor exports sampled spans only
            for emit in emits:
                emit(self)

    def __repr__(self) -> str:
        return f"<LightSpan {self._name!r}>"


def _static_decisions(sampler: Any) -> tuple[Decision, Decision, Decision, Decision, Decision] | None:
    """For a ``ParentBased`` sampler whose five parts are fixed decisions (the SDK's
    default, ``ParentBased(ALWAYS_ON)``): the decisions for no parent, a remote parent
    sampled / not, a local parent sampled / not. ``None`` for any other sampler (asked)."""
    if type(sampler) is not ParentBased:
        return None
    parts = (
        getattr(sampler, "_root", None),
        getattr(sampler, "_remote_parent_sampled", None),
        getattr(sampler, "_remote_parent_not_sampled", None),
        getattr(sampler, "_local_parent_sampled", None),
        getattr(sampler, "_local_parent_not_sampled", None),
    )
    if not all(type(part) is StaticSampler for part in parts):
        return None
    root, remote_yes, remote_no, local_yes, local_no = (part._decision for part in parts)  # type: ignore[union-attr]
    return root, remote_yes, remote_no, local_yes, local_no


_Flags = tuple[bool, bool, TraceFlags, TraceFlags]


def _static_flags(sampler: Any) -> tuple[_Flags, _Flags, _Flags, _Flags, _Flags] | None:
    """``_static_decisions`` as what a span needs of each: whether it records, whether
    it is sampled, and its trace flags without and with the random-trace-id bit."""
    decisions = _static_decisions(sampler)
    if decisions is None:
        return None

    def flags(decision: Decision) -> _Flags:
        bits = TraceFlags.SAMPLED if decision.is_sampled() else TraceFlags.DEFAULT
        sampled = decision.is_sampled()
        return decision.is_recording(), sampled, TraceFlags(bits), TraceFlags(bits | TraceFlags.RANDOM_TRACE_ID)

    root, remote_yes, remote_no, local_yes, local_no = decisions
    return flags(root), flags(remote_yes), flags(remote_no), flags(local_yes), flags(local_no)


def light_tracer(provider: Any, scope: str) -> LightTracer | None:
    """A ``LightTracer`` for an SDK ``TracerProvider`` with its default parts; ``None``
    for any other provider (the API's no-op, a vendor's), whose own tracer is used."""
    if not isinstance(provider, TracerProvider) or not hasattr(provider, "_active_span_processor"):
        return None
    return LightTracer(provider, scope)


def _default_runtime() -> tuple[Any, ContextVar[Context] | None, str | None]:
    """The API's runtime context, its context variable and the current span's key, when
    the runtime is the default ``contextvars`` one (``(runtime, None, None)`` otherwise, or
    when this API version keeps them elsewhere: then the API is called)."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    try:
        from opentelemetry.trace.propagation import _SPAN_KEY as key
    except ImportError:  # pragma: no cover - an API without it
        return runtime, None, None
    if type(runtime) is not ContextVarsRuntimeContext or not isinstance(var, ContextVar) or not isinstance(key, str):
        return runtime, None, None
    return runtime, var, key


_RUNTIME, _CURRENT, _SPAN_KEY = _default_runtime()


def attach_span(span: trace_api.Span) -> Token[Context]:
    """Make ``span`` the current span (``context.attach(trace.set_span_in_context(span))``):
    the current context with the span set, as a new ``Context``; the token restores it."""
    current = _CURRENT
    if current is None or otel_context._RUNTIME_CONTEXT is not _RUNTIME:
        return otel_context.attach(trace_api.set_span_in_context(span))
    values = current.get().copy()  # what set_value does: a plain dict of the context's values
    values[_SPAN_KEY] = span
    return current.set(Context(values))


def detach_span(token: Token[Context]) -> None:
    """Restore the context ``attach_span`` replaced (``context.detach(token)``; a token that
    cannot be reset here is logged by the API as it logs it)."""
    current = _CURRENT
    if current is not None and otel_context._RUNTIME_CONTEXT is _RUNTIME:
        try:
            current.reset(token)
            return
        except (ValueError, RuntimeError):
            pass  # another context's token, or one used already: the API says so in its log
    otel_context.detach(token)
