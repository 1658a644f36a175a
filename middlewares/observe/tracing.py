"""``tracing``: OpenTelemetry spans for requests, for upstream attempts, and for layer work.

Two placements, one class:

- ``Tracing()`` (``kind="request"``), usually outermost: one span per request,
  ``onion chat {model}``, with the GenAI attributes (``gen_ai.operation.name``,
  ``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
  ``gen_ai.usage.*``, ``gen_ai.response.finish_reasons``, ``error.type``) and onion's
  (request id, caller, ``served_by``, outcome). It continues the trace of an incoming
  W3C ``traceparent`` header, which the server leaves in
  ``request.context.trace_headers``.
- ``Tracing(kind="attempt")``, innermost (just above the provider): one client span
  ``chat {model}`` per upstream call, so a retry or a fallback shows each attempt with the
  model it tried, as children of the request span.

Layers that do work open a child span with ``layer_span(request, "cache lookup")``; it
costs nothing when no ``Tracing`` layer is in the stack. The span of a streamed answer
ends when the stream ends. The request span is found through ``request.context.state``
rather than only the ambient OpenTelemetry context, because chunks are pulled after
``call_next`` returned, where a context attached by this layer is no longer current.
Spans carry no prompt or answer text, and failures record ``error.type`` and the
error's public message only (upstream details can hold URLs).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from onion import (
    CANCELLED,
    CallNext,
    Chunk,
    Completion,
    Layer,
    OnionError,
    Request,
    Response,
    Usage,
    error_type,
    outcome,
)
from onion.telemetry import SCOPE, default_tracer_provider

from ._spans import _STATE_KEY

__all__ = ["Tracing", "layer_span", "request_span"]

_ATTEMPTS_KEY = "tracing.attempts"
_propagator = TraceContextTextMapPropagator()


class _Active:
    """The request span and its tracer, kept in ``request.context.state``."""

    __slots__ = ("span", "tracer")

    def __init__(self, span: Span, tracer: Any) -> None:
        self.span = span
        self.tracer = tracer


def request_span(request: Request) -> Span:
    """The span of ``request`` opened by a ``Tracing`` layer (a non-recording span if none),
    for layers that want to add an event or an attribute."""
    active = request.context.state.get(_STATE_KEY)
    return active.span if active is not None else INVALID_SPAN


@contextmanager
def layer_span(request: Request, name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """A child span of the request's span around a layer's work::

        with layer_span(request, "cache lookup", {"onion.cache": "exact"}) as span:
            hit = await store.get(key)
            span.set_attribute("onion.cache.hit", hit is not None)

    Without a ``Tracing`` layer in the stack it yields a non-recording span and records
    nothing. An exception leaving the block marks the span as failed with ``error.type``.
    """
    active = request.context.state.get(_STATE_KEY)
    if active is None:
        yield INVALID_SPAN
        return
    span = active.tracer.start_span(name, context=trace.set_span_in_context(active.span), attributes=attributes)
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


def _carrier(headers: Any) -> Mapping[str, str] | None:
    """Incoming headers as a lower-case mapping (ASGI gives lists of byte pairs)."""
    if not headers:
        return None
    if isinstance(headers, Mapping):
        if "traceparent" in headers:
            return headers
        items = headers.items()
    else:
        items = headers
    out = {}
    for key, value in items:
        key = key.decode("latin-1") if isinstance(key, bytes) else str(key)
        out[key.lower()] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return out


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
        self._tracer = (tracer_provider or default_tracer_provider()).get_tracer(SCOPE)
        if kind == "attempt":
            self.name = "tracing.attempt"

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        state = request.context.state
        outer: _Active | None = state.get(_STATE_KEY)
        if self.kind == "request":
            span = self._start_request(request, outer)
            state[_STATE_KEY] = _Active(span, self._tracer)
        else:
            span = self._start_attempt(request, outer)
        started = time.perf_counter()
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            response = await call_next(request)
        except BaseException as error:
            self._end(request, span, outer, None, None, error)
            raise
        finally:
            otel_context.detach(token)
        if response.is_stream:
            return response.wrap(lambda source: self._watch(source, request, response, span, outer, started))
        self._end(request, span, outer, response, response.completion, None)
        return response

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

    def _start_request(self, request: Request, outer: _Active | None) -> Span:
        context = request.context
        if outer is not None:  # a stack inside a stack: nest under the outer request
            parent, kind = trace.set_span_in_context(outer.span), SpanKind.INTERNAL
        else:
            carrier = _carrier(context.trace_headers)
            parent = _propagator.extract(carrier) if carrier else None
            remote = parent is not None and trace.get_current_span(parent).get_span_context().is_valid
            kind = SpanKind.SERVER if remote else SpanKind.INTERNAL
        attrs = self._attributes(request)
        attrs["onion.request_id"] = context.request_id
        attrs["onion.stream"] = request.stream
        if context.caller:
            attrs["onion.caller"] = context.caller
        return self._tracer.start_span(f"onion chat {request.model}", context=parent, kind=kind, attributes=attrs)

    def _start_attempt(self, request: Request, outer: _Active | None) -> Span:
        state = request.context.state
        attempt = state.get(_ATTEMPTS_KEY, 0) + 1
        state[_ATTEMPTS_KEY] = attempt
        attrs = self._attributes(request)
        attrs["onion.attempt"] = attempt
        parent = trace.set_span_in_context(outer.span) if outer is not None else None
        return self._tracer.start_span(f"chat {request.model}", context=parent, kind=SpanKind.CLIENT, attributes=attrs)

    def _end(
        self,
        request: Request,
        span: Span,
        outer: _Active | None,
        response: Response | None,
        completion: Completion | None,
        error: BaseException | None,
        usage: Usage | None = None,
    ) -> None:
        try:
            if span.is_recording():
                self._finish_attributes(span, response, completion, error, usage)
        finally:
            span.end()
            if self.kind == "request":
                if outer is None:
                    request.context.state.pop(_STATE_KEY, None)
                else:
                    request.context.state[_STATE_KEY] = outer

    def _finish_attributes(
        self,
        span: Span,
        response: Response | None,
        completion: Completion | None,
        error: BaseException | None,
        usage: Usage | None,
    ) -> None:
        if error is not None:
            _mark_failed(span, error)
        if response is None:
            return
        # One set_attributes call: each call on an SDK span takes the span's lock.
        attrs: dict[str, Any] = {"onion.served_by": response.served_by}
        if error is None:
            attrs["onion.outcome"] = "ok"
        provider = response.attrs.get("provider")
        if provider:
            attrs["gen_ai.provider.name"] = provider
        fallback = response.attrs.get("fallback")
        if fallback:
            attrs["onion.fallback"] = fallback
        if completion is not None:
            model = response.model or completion.model
            if model:
                attrs["gen_ai.response.model"] = model
            usage = completion.usage
            if completion.finish_reason:
                attrs["gen_ai.response.finish_reasons"] = (completion.finish_reason,)
        if usage is not None:
            attrs["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attrs["gen_ai.usage.output_tokens"] = usage.completion_tokens
        span.set_attributes(attrs)

    async def _watch(
        self,
        source: AsyncIterator[Chunk],
        request: Request,
        response: Response,
        span: Span,
        outer: _Active | None,
        started: float,
    ) -> AsyncIterator[Chunk]:
        first = True
        usage: Usage | None = None
        finish_reason: str | None = None
        model = response.model
        error: BaseException | None = None
        try:
            async for chunk in source:
                if first:
                    first = False
                    span.set_attribute("gen_ai.response.time_to_first_chunk", time.perf_counter() - started)
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.finish_reason is not None:
                    finish_reason = chunk.finish_reason
                if chunk.model:
                    model = chunk.model
                yield chunk
        except BaseException as caught:
            error = caught
            raise
        finally:
            try:
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                if span.is_recording():
                    if finish_reason is not None:
                        span.set_attribute("gen_ai.response.finish_reasons", (finish_reason,))
                    if model:
                        span.set_attribute("gen_ai.response.model", model)
                self._end(request, span, outer, response, None, error, usage)
