"""``LightTracer``'s spans reach the processors as the SDK's own spans would."""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, Status, StatusCode

from onion.telemetry import light_tracer


def provider(**kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": "t"}), **kwargs)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider, exporter


def shape(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": dict(span.attributes or {}),
        "status": (span.status.status_code, span.status.description),
        "events": [(e.name, dict(e.attributes or {})) for e in span.events],
        "resource": span.resource.attributes,
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
        "parent": span.parent.span_id if span.parent else None,
        "trace_id_set": span.context.trace_id != 0,
        "sampled": span.context.trace_flags.sampled,
        "ended_after_start": span.end_time >= span.start_time,  # type: ignore[operator]
    }


_plain = st.one_of(st.text(max_size=10), st.integers(), st.booleans(), st.floats(allow_nan=False))


@settings(max_examples=40, deadline=None)
@given(
    start=st.dictionaries(st.sampled_from(["a", "b", "gen_ai.request.model"]), _plain),
    later=st.dictionaries(st.sampled_from(["c", "a"]), st.one_of(_plain, st.lists(st.text(max_size=5), max_size=3))),
    fail=st.booleans(),
    kind=st.sampled_from([SpanKind.INTERNAL, SpanKind.CLIENT, SpanKind.SERVER]),
)
def test_law_a_light_span_exports_as_the_sdk_span(
    start: dict[str, Any], later: dict[str, Any], fail: bool, kind: SpanKind
) -> None:
    tracer_provider, exporter = provider()
    sdk, light = tracer_provider.get_tracer("onion"), light_tracer(tracer_provider, "onion")
    assert light is not None
    root = sdk.start_span("root")
    parent = trace.set_span_in_context(root)
    for tracer in (sdk, light):
        span = tracer.start_span("onion chat m", context=parent, kind=kind, attributes=dict(start))
        span.set_attributes(later)
        span.add_event("moved", {"n": 1})
        if fail:
            span.set_status(Status(StatusCode.ERROR, "boom"))
        span.set_status(StatusCode.UNSET)  # ignored by both
        span.end()
        span.set_attribute("after", "end")  # ignored by both: the span ended
    root.end()
    sdk_span, light_span, _ = exporter.get_finished_spans()
    assert shape(light_span) == shape(sdk_span)
    assert light_span.context.trace_id == root.get_span_context().trace_id


def test_a_sampled_out_request_records_nothing() -> None:
    tracer_provider, exporter = provider(sampler=ALWAYS_OFF)
    light = light_tracer(tracer_provider, "onion")
    assert light is not None
    span = light.start_span("x", attributes={"a": 1})
    assert not span.is_recording()
    span.end()
    assert exporter.get_finished_spans() == ()


def test_only_the_sdk_provider_gets_light_spans() -> None:
    assert light_tracer(trace.NoOpTracerProvider(), "onion") is None


@settings(max_examples=60, deadline=None)
@given(
    parent=st.sampled_from(["none", "remote sampled", "remote not", "local sampled", "local not"]),
    state=st.lists(st.tuples(st.sampled_from(["v", "w"]), st.sampled_from(["1", "x2"])), max_size=2),
    sampler=st.sampled_from(["default", "parent-based off", "ratio"]),
)
def test_law_sampling_decides_as_the_sdk_for_every_parent(parent: str, state: list[Any], sampler: str) -> None:
    # The default sampler is decided without asking it (LightTracer._static): the same
    # decision, flags and trace state as the SDK's own span, whatever the parent.
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    # A ratio decides a root by its trace id, which each tracer draws anew.
    assume(not (sampler == "ratio" and parent == "none"))
    chosen = {"default": None, "parent-based off": ParentBased(ALWAYS_OFF), "ratio": TraceIdRatioBased(0.5)}[sampler]
    tracer_provider, _ = provider(**({"sampler": chosen} if chosen is not None else {}))
    sdk, light = tracer_provider.get_tracer("onion"), light_tracer(tracer_provider, "onion")
    assert light is not None
    context = None
    if parent != "none":
        flags = TraceFlags(TraceFlags.SAMPLED if parent.endswith(" sampled") else TraceFlags.DEFAULT)
        span_context = SpanContext(
            0x1234, 0x99, is_remote=parent.startswith("remote"), trace_flags=flags, trace_state=TraceState(state)
        )
        context = trace.set_span_in_context(NonRecordingSpan(span_context))
    spans = [tracer.start_span("s", context=context, attributes={"a": 1}) for tracer in (sdk, light)]
    seen = [
        (s.is_recording(), s.get_span_context().trace_flags.sampled, s.get_span_context().trace_state) for s in spans
    ]
    assert seen[0] == seen[1]
    for span in spans:
        span.end()


def test_through_batch_processors_a_light_span_exports_as_the_sdk_span() -> None:
    # Every processor a BatchSpanProcessor: the light span goes straight into their
    # queues (LightTracer._emits). The same span reaches the exporter as the SDK's, and a
    # processor added later (a new tuple on the provider) is served too.
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": "t"}))
    tracer_provider.add_span_processor(BatchSpanProcessor(first))
    sdk, light = tracer_provider.get_tracer("onion"), light_tracer(tracer_provider, "onion")
    assert light is not None
    try:
        for tracer in (sdk, light):
            span = tracer.start_span("onion chat m", kind=SpanKind.SERVER, attributes={"a": 1})
            span.set_attributes({"b": "x", "c": ("y",)})
            span.add_event("moved", {"n": 1})
            span.end()
        tracer_provider.force_flush()
        finished = first.get_finished_spans()
        assert len(finished) == 2
        sdk_span = next(s for s in finished if type(s).__name__ != "LightSpan")
        light_span = next(s for s in finished if type(s).__name__ == "LightSpan")  # no copy was made
        assert shape(light_span) == shape(sdk_span)
        tracer_provider.add_span_processor(BatchSpanProcessor(second))
        light.start_span("later").end()
        tracer_provider.force_flush()
        assert [s.name for s in second.get_finished_spans()] == ["later"]
        assert len(first.get_finished_spans()) == 3
    finally:
        tracer_provider.shutdown()


def test_a_recorded_but_unsampled_span_is_not_exported_by_a_batch_processor() -> None:
    # RECORD_ONLY: the span records (processors see it end) but a batch processor exports
    # sampled spans only; the light span's direct path must keep that rule.
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class RecordOnly(Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            return SamplingResult(Decision.RECORD_ONLY)

        def get_description(self) -> str:
            return "record only"

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=RecordOnly())
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    light = light_tracer(tracer_provider, "onion")
    assert light is not None
    try:
        span = light.start_span("x")
        assert span.is_recording()
        span.end()
        tracer_provider.force_flush()
        assert exporter.get_finished_spans() == ()
    finally:
        tracer_provider.shutdown()


def test_plain_attributes_are_taken_as_they_are_until_the_span_ends() -> None:
    tracer_provider, exporter = provider()
    light = light_tracer(tracer_provider, "onion")
    assert light is not None
    span = light.start_span("x", attributes={"a": 1})
    span.set_plain_attributes({"b": "two", "c": ("stop",), "a": 3})  # type: ignore[attr-defined]
    span.end()
    span.set_plain_attributes({"after": "end"})  # type: ignore[attr-defined]
    [finished] = exporter.get_finished_spans()
    assert dict(finished.attributes or {}) == {"a": 3, "b": "two", "c": ("stop",)}


def test_processors_see_a_light_span_start_end_and_ending_as_the_sdk_span() -> None:
    from opentelemetry.sdk.trace import SpanProcessor

    class Seen(SpanProcessor):
        def __init__(self) -> None:
            self.calls: list[str] = []

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            self.calls.append("start")

        def _on_ending(self, span: Any) -> None:
            self.calls.append("ending")

        def on_end(self, span: ReadableSpan) -> None:
            self.calls.append("end")

    seen = {}
    for name in ("sdk", "light"):
        tracer_provider = TracerProvider()
        seen[name] = processor = Seen()
        tracer_provider.add_span_processor(processor)
        tracer = tracer_provider.get_tracer("onion") if name == "sdk" else light_tracer(tracer_provider, "onion")
        assert tracer is not None
        tracer.start_span("x").end()
    assert seen["light"].calls == seen["sdk"].calls


# attach_span / detach_span: the API's attach(set_span_in_context(span)) and detach(token).
_OTHER_KEY = "onion-test-other"


def _named_spans(count: int) -> list[trace.Span]:
    tracer_provider, _ = provider()
    return [tracer_provider.get_tracer("t").start_span(f"s{index}") for index in range(count)]


def test_the_short_cut_is_taken_with_this_api_version() -> None:
    from onion.telemetry import _spans

    assert _spans._CURRENT is not None and _spans._SPAN_KEY is not None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.booleans(), max_size=12))
def test_law_attach_and_detach_leave_the_context_the_api_would(steps: list[bool]) -> None:
    """Each step attaches the next span (True) or detaches the latest (False), through the
    short cut and through the API in turn: the current context holds the same values and
    the same current span after each step, and detaching restores the very context before."""
    from opentelemetry import context as otel_context

    from onion.telemetry import attach_span, detach_span

    spans = iter(_named_spans(len(steps)))
    # A value of someone else's in the context (baggage, a suppression flag) stays beside the span.
    outer = otel_context.attach(otel_context.set_value(_OTHER_KEY, len(steps)))
    mine: list[tuple[Any, Any]] = []
    for attach in steps:
        if attach or not mine:
            span = next(spans)
            before = otel_context.get_current()
            want = dict(trace.set_span_in_context(span))
            token = attach_span(span)
            got = otel_context.get_current()
            assert type(got) is type(before) and dict(got) == want
            assert trace.get_current_span() is span
            mine.append((token, before))
        else:
            token, before = mine.pop()
            detach_span(token)
            assert otel_context.get_current() is before
    while mine:
        token, before = mine.pop()
        detach_span(token)
        assert otel_context.get_current() is before
    assert otel_context.get_value(_OTHER_KEY) == len(steps)
    otel_context.detach(outer)


def test_a_token_detached_twice_is_logged_as_the_api_logs_it(caplog: Any) -> None:
    from opentelemetry import context as otel_context

    from onion.telemetry import attach_span, detach_span

    [span] = _named_spans(1)
    before = otel_context.get_current()
    token = attach_span(span)
    detach_span(token)
    with caplog.at_level("ERROR"):
        detach_span(token)  # used already: not raised, logged
    assert "Failed to detach context" in caplog.text
    assert otel_context.get_current() is before


def test_another_runtime_context_is_served_through_the_api(monkeypatch: Any) -> None:
    from opentelemetry import context as otel_context
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    from onion.telemetry import attach_span, detach_span

    other = ContextVarsRuntimeContext()
    monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", other)
    [span] = _named_spans(1)
    token = attach_span(span)
    assert trace.get_current_span(other.get_current()) is span  # set in the runtime in use
    detach_span(token)
    assert trace.get_current_span(other.get_current()) is not span
