"""``tracing``: OpenTelemetry spans for requests, for upstream attempts, and for layer work.

Two placements, one class:

- ``Tracing()`` (``kind="request"``), usually outermost: one span per request,
  ``onion chat {model}``, with the GenAI attributes (``gen_ai.operation.name``,
  ``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
  ``gen_ai.usage.*``, ``gen_ai.response.finish_reasons``, ``error.type``) and onion's
  (request id, caller, ``served_by``, outcome). It continues the trace of an incoming
  W3C ``traceparent`` header, which the server leaves on ``request.context.trace_headers``.
- ``Tracing(kind="attempt")``, innermost (just above the provider): one client span
  ``chat {model}`` per upstream call, so a retry or a fallback shows each attempt with the
  model it tried, as children of the request span.

The request layer puts a hook on ``request.context.tracer``; layers that do work open a
child span with ``request.context.span("cache lookup", attributes)``, which costs
nothing when no ``Tracing`` layer is in the stack. The span of a streamed answer ends
when the stream ends (``Response.on_end``). The request span is found through the context
rather than only the ambient OpenTelemetry context, because chunks are pulled after
``call_next`` returned, where a context attached by this layer is no longer current.
Spans carry no prompt or answer text, and failures record ``error.type`` and the
error's public message only (upstream details can hold URLs).

Hot path: an SDK ``TracerProvider`` with no span processor (what ``configure_otel`` builds
without OTLP export) would build every span only to drop it, ~25 µs a request; while it
has none, the layer passes requests through as if it were not there. With processors, the
request and attempt spans are ``onion.telemetry.light_tracer`` spans (the same finished
spans reach the processors, without the SDK's per-attribute cleaning); spans other layers
open through ``context.span`` use the SDK's tracer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from onion import (
    CANCELLED,
    AnswerEnd,
    CallNext,
    Completion,
    Layer,
    OnionError,
    Request,
    Response,
    SpanHook,
    error_type,
    outcome,
)
from onion.telemetry import SCOPE, attach_span, default_tracer_provider, detach_span, light_tracer

__all__ = ["Tracing"]

_propagator = TraceContextTextMapPropagator()


class _RequestSpans:
    """The hook a request layer puts on ``context.tracer``: child spans of its span."""

    __slots__ = ("root", "tracer")

    def __init__(self, root: Span, tracer: Any) -> None:
        self.root = root
        self.tracer = tracer

    def span(self, name: str, attributes: Mapping[str, Any] | None) -> AbstractContextManager[Any]:
        return _child(self, name, attributes)


@contextmanager
def _child(parent: _RequestSpans, name: str, attributes: Mapping[str, Any] | None) -> Iterator[Span]:
    span = parent.tracer.start_span(name, context=trace.set_span_in_context(parent.root), attributes=attributes)
    try:
        yield span
    except BaseException as error:
        _mark_failed(span, error)
        raise
    finally:
        span.end()


def _mark_failed(span: Span, error: BaseException) -> None:
    kind = error_type(error)
    span.set_attribute("onion.outcome", outcome(error))
    if kind == CANCELLED:
        return  # the caller went away: not a failure of this span's work
    span.set_attribute("error.type", kind)
    message = error.public_message if isinstance(error, OnionError) else kind
    span.set_status(Status(StatusCode.ERROR, message))


class Tracing(Layer):
    """Opens a span per request (``kind="request"``) or per upstream attempt
    (``kind="attempt"``).

    - ``tracer_provider``: where spans go (default: the provider set with
      ``onion.telemetry.configure_otel``, else the application's global one).
    - ``provider``: ``gen_ai.provider.name`` when the response does not name one.
    """

    name = "tracing"
    provides = frozenset({"tracing"})

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        kind: Literal["request", "attempt"] = "request",
        provider: str = "openai",
    ) -> None:
        self.kind = kind
        self.provider = provider
        provider = tracer_provider or default_tracer_provider()
        self._tracer = provider.get_tracer(SCOPE)
        self._spans: Any = light_tracer(provider, SCOPE) or self._tracer
        # The SDK provider's processor list (read per request: processors may be added
        # later); ``None`` for a provider that is not the SDK's.
        self._processors: Any = getattr(provider, "_active_span_processor", None)
        if kind == "attempt":
            self.name = "tracing.attempt"

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        processors = self._processors
        if processors is not None and not getattr(processors, "_span_processors", True):
            return await call_next(request)  # no span would go anywhere
        context = request.context
        outer = context.tracer
        parent = outer if isinstance(outer, _RequestSpans) else None
        if self.kind == "request":
            span = self._start_request(request, parent)
            context.tracer = _RequestSpans(span, self._tracer)
        else:
            span = self._start_attempt(request, parent)
        started = time.perf_counter()
        # The span is current while inner layers and the provider run (an instrumented HTTP
        # client's spans become its children).
        token = attach_span(span)
        try:
            response = await call_next(request)
        except BaseException as error:
            self._end(request, span, outer, None, None, error)
            raise
        finally:
            detach_span(token)
        return await response.on_end(
            lambda end: self._ended(request, span, outer, response, end, started),
            content=False,
            held=False,  # a span has no held time: no clock reads around each chunk for it
        )

    def _ended(
        self, request: Request, span: Span, outer: SpanHook | None, response: Response, end: AnswerEnd, started: float
    ) -> None:
        # A consumer that stopped is reported as a cancellation, as when it is cancelled.
        first = end.first_chunk_at
        self._end(
            request, span, outer, response, end.completion, end.failure, None if first is None else first - started
        )

    def _attributes(self, request: Request) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": request.model,
        }
        if request.answer_tokens_limit is not None:
            attrs["gen_ai.request.max_tokens"] = request.answer_tokens_limit
        if request.temperature is not None:
            attrs["gen_ai.request.temperature"] = request.temperature
        if request.top_p is not None:
            attrs["gen_ai.request.top_p"] = request.top_p
        return attrs

    def _start_request(self, request: Request, outer: _RequestSpans | None) -> Span:
        context = request.context
        if outer is not None:  # a stack inside a stack: nest under the outer request
            parent, kind = trace.set_span_in_context(outer.root), SpanKind.INTERNAL
        else:
            carrier = context.trace_headers
            parent = _propagator.extract(carrier) if carrier else None
            remote = parent is not None and trace.get_current_span(parent).get_span_context().is_valid
            kind = SpanKind.SERVER if remote else SpanKind.INTERNAL
        attrs = self._attributes(request)
        attrs["onion.request_id"] = context.request_id
        attrs["onion.stream"] = request.stream
        if context.caller:
            attrs["onion.caller"] = context.caller
        return self._spans.start_span(f"onion chat {request.model}", context=parent, kind=kind, attributes=attrs)

    def _start_attempt(self, request: Request, outer: _RequestSpans | None) -> Span:
        attrs = self._attributes(request)
        # The handler counts the attempts that reached it; this is the next one.
        attrs["onion.attempt"] = request.context.attempts + 1
        parent = trace.set_span_in_context(outer.root) if outer is not None else None
        return self._spans.start_span(f"chat {request.model}", context=parent, kind=SpanKind.CLIENT, attributes=attrs)

    def _end(
        self,
        request: Request,
        span: Span,
        outer: SpanHook | None,
        response: Response | None,
        completion: Completion | None,
        error: BaseException | None,
        first_chunk: float | None = None,
    ) -> None:
        try:
            if span.is_recording():
                self._finish_attributes(span, response, completion, error, first_chunk)
        finally:
            span.end()
            if self.kind == "request":
                request.context.tracer = outer

    def _finish_attributes(
        self,
        span: Span,
        response: Response | None,
        completion: Completion | None,
        error: BaseException | None,
        first_chunk: float | None,
    ) -> None:
        if error is not None:
            _mark_failed(span, error)
        if response is None:
            return
        # One set_attributes call: each call on an SDK span takes the span's lock.
        attrs: dict[str, Any] = {"onion.served_by": response.served_by}
        if error is None:
            attrs["onion.outcome"] = "ok"
        if response.provider:
            attrs["gen_ai.provider.name"] = response.provider
        if response.fallback:
            attrs["onion.fallback"] = response.fallback
        if first_chunk is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = first_chunk
        if completion is not None:
            model = completion.model or response.model
            if model:
                attrs["gen_ai.response.model"] = model
            if completion.finish_reason:
                attrs["gen_ai.response.finish_reasons"] = (completion.finish_reason,)
            usage = completion.usage
            if usage is not None:
                attrs["gen_ai.usage.input_tokens"] = usage.prompt_tokens
                attrs["gen_ai.usage.output_tokens"] = usage.completion_tokens
        # A light span takes the layer's own plain values as they are (one update).
        getattr(span, "set_plain_attributes", span.set_attributes)(attrs)
