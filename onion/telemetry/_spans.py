"""Spans for attributes onion builds itself, handed to the SDK's processors when they end.

The OpenTelemetry SDK's span costs ~25 µs to start and end on the benchmark machine, more
than half of it cleaning and copying attributes under a lock (``BoundedAttributes``), and
the tracing layer opens one or two per request. ``LightTracer`` makes spans whose
attributes are a plain dict (the tracing layer's own: strings, numbers, booleans and
tuples of strings, nothing to clean) and, when one ends, builds the SDK's finished
``ReadableSpan`` and passes it to the provider's span processors, exactly where the
SDK's own span goes: batch or simple processors, OTLP and in-memory exporters see the
same span (name, ids, parent, kind, attributes, events, status, times, resource, scope).

What it keeps from the SDK: the provider's sampler (asked with the start attributes, so a
sampled-out request costs a ``NonRecordingSpan``), id generator, resource and processors.
What it leaves out: span limits (onion's spans have under 20 attributes, far below the
default 128) and the SDK's own self-metrics. Values set by others through the API
(``set_attribute`` on the current span) are cleaned as the SDK cleans them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, StaticSampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

__all__ = ["LightTracer", "light_tracer"]

_PLAIN = (str, bool, int, float)
_UNSET = Status(StatusCode.UNSET)


class LightTracer:
    """Starts ``LightSpan``\\ s on an SDK ``TracerProvider`` (see the module's docstring)."""

    __slots__ = ("_ids", "_new_span_id", "_new_trace_id", "_processor", "_random_ids", "_resource", "_sampler",
                 "_scope", "_static")  # fmt: skip

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
        self._resource = provider.resource
        self._scope = InstrumentationScope(scope)
        self._static = _static_flags(provider.sampler)

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
    ) -> trace_api.Span:
        """A started span; ``attributes`` must hold only plain values and is owned by the span."""
        parent: SpanContext | None = trace_api.get_current_span(context).get_span_context()
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = self._new_trace_id()
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
                recording, flags, random_flags = static[0]
                trace_state = None
            else:
                sampled_in = parent.trace_flags.sampled
                recording, flags, random_flags = static[
                    (1 if sampled_in else 2) if parent.is_remote else (3 if sampled_in else 4)
                ]
                trace_state = parent.trace_state
            if random_id:
                flags = random_flags
        else:
            sampled = self._sampler.should_sample(context, trace_id, name, kind, attributes, ())
            decision, trace_state, added = sampled.decision, sampled.trace_state, sampled.attributes
            recording = decision.is_recording()
            bits = TraceFlags.SAMPLED if decision.is_sampled() else TraceFlags.DEFAULT
            flags = TraceFlags(bits | TraceFlags.RANDOM_TRACE_ID if random_id else bits)
        span_context = SpanContext(trace_id, self._new_span_id(), False, flags, trace_state)
        if not recording:
            return NonRecordingSpan(span_context)
        attrs = attributes if attributes is not None else {}
        if added:
            for key, value in added.items():  # what the sampler added (its view of ours is the same dict)
                attrs[key] = value
        span = LightSpan(self, name, span_context, parent, kind, attrs)
        self._processor.on_start(span, parent_context=context)  # type: ignore[arg-type]
        return span


class LightSpan(trace_api.Span):
    """A recording span that becomes an SDK ``ReadableSpan`` when it ends."""

    __slots__ = ("_attrs", "_context", "_end", "_events", "_kind", "_name", "_parent", "_start", "_status", "_tracer")

    def __init__(
        self,
        tracer: LightTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attrs = attributes
        self._events: list[Event] | None = None
        self._status = _UNSET  # immutable: shared
        self._start = time.time_ns()
        self._end: int | None = None

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end is not None:
            return
        if type(value) in _PLAIN or (type(value) is tuple and all(type(v) is str for v in value)):
            self._attrs[key] = value
        else:  # what someone else set through the API: cleaned as the SDK cleans it
            cleaned = BoundedAttributes(attributes={key: value}).get(key)
            if cleaned is not None:
                self._attrs[key] = cleaned

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end is not None:
            return
        own = self._attrs
        for key, value in attributes.items():
            if type(value) in _PLAIN:  # the common case inline: one call per span, not per attribute
                own[key] = value
            else:
                self.set_attribute(key, value)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self._end is not None:
            return
        if self._events is None:
            self._events = []
        self._events.append(Event(name, dict(attributes or {}), timestamp or time.time_ns()))

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # As the SDK: OK is final, UNSET is ignored.
        if self._end is not None or self._status.status_code is StatusCode.OK:
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
        if self._end is not None:
            return
        self._end = end_time or time.time_ns()
        tracer = self._tracer
        finished = ReadableSpan(
            self._name,
            self._context,
            self._parent,
            tracer._resource,
            self._attrs,
            tuple(self._events or ()),
            (),
            self._kind,
            None,
            self._status,
            self._start,
            self._end,
            tracer._scope,
        )
        tracer._processor.on_end(finished)

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


_Flags = tuple[bool, TraceFlags, TraceFlags]


def _static_flags(sampler: Any) -> tuple[_Flags, _Flags, _Flags, _Flags, _Flags] | None:
    """``_static_decisions`` as what a span needs of each: whether it records, and its
    trace flags without and with the random-trace-id bit."""
    decisions = _static_decisions(sampler)
    if decisions is None:
        return None

    def flags(decision: Decision) -> _Flags:
        bits = TraceFlags.SAMPLED if decision.is_sampled() else TraceFlags.DEFAULT
        return decision.is_recording(), TraceFlags(bits), TraceFlags(bits | TraceFlags.RANDOM_TRACE_ID)

    root, remote_yes, remote_no, local_yes, local_no = decisions
    return flags(root), flags(remote_yes), flags(remote_no), flags(local_yes), flags(local_no)


def light_tracer(provider: Any, scope: str) -> LightTracer | None:
    """A ``LightTracer`` for an SDK ``TracerProvider`` with its default parts; ``None``
    for any other provider (the API's no-op, a vendor's), whose own tracer is used."""
    if not isinstance(provider, TracerProvider) or not hasattr(provider, "_active_span_processor"):
        return None
    return LightTracer(provider, scope)
