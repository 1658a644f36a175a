"""The tracing layer: spans checked exactly from an in-memory exporter."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from middlewares.observe.tracing import Tracing
from onion import Message, ProviderError, Request, Response, Stack, Usage
from onion.testing import Fail, Reply, ScriptedProvider

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def new_exporter() -> tuple[InMemorySpanExporter, TracerProvider]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider


def ask(model: str = "gpt-4o", stream: bool = False, **kwargs: Any) -> Request:
    return Request(model=model, messages=[Message("user", "hello there")], stream=stream, **kwargs)


def by_name(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name.startswith(prefix)]


async def test_one_span_per_request_with_genai_attributes() -> None:
    exporter, provider = new_exporter()
    stack = Stack([Tracing(tracer_provider=provider)], ScriptedProvider([Reply("hi you", usage=Usage(12, 2, 14))]))
    request = ask(max_tokens=64, temperature=0.5)
    request.context.caller = "team-a"
    await stack(request)
    [span] = exporter.get_finished_spans()
    assert span.name == "onion chat gpt-4o"
    assert span.kind == SpanKind.INTERNAL
    assert span.parent is None
    assert dict(span.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.temperature": 0.5,
        "onion.request_id": request.context.request_id,
        "onion.stream": False,
        "onion.caller": "team-a",
        "onion.outcome": "ok",
        "onion.served_by": "scripted",
        "gen_ai.response.model": "gpt-4o",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 2,
    }
    assert span.status.status_code == StatusCode.UNSET
    assert request.context.tracer is None  # the hook is gone after the request


async def test_incoming_traceparent_is_continued() -> None:
    exporter, provider = new_exporter()
    stack = Stack([Tracing(tracer_provider=provider)], ScriptedProvider())
    request = ask()
    request.context.trace_headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    await stack(request)
    [span] = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert span.parent.is_remote
    assert span.kind == SpanKind.SERVER


async def test_malformed_traceparent_starts_a_new_trace() -> None:
    exporter, provider = new_exporter()
    request = ask()
    request.context.trace_headers = {"traceparent": "not-a-trace"}
    await Stack([Tracing(tracer_provider=provider)], ScriptedProvider())(request)
    [span] = exporter.get_finished_spans()
    assert span.parent is None


def fallback_to(*models: str) -> Any:
    """A minimal fallback layer (the real one lives in middlewares.resilience.fallback)."""
    import msgspec

    async def fallback(request: Request, call_next: Any) -> Response:
        for model in models[:-1]:
            try:
                return await call_next(msgspec.structs.replace(request, model=model))
            except ProviderError:
                pass
        return await call_next(msgspec.structs.replace(request, model=models[-1]))

    return fallback


@pytest.mark.parametrize("stream", [False, True])
async def test_fallback_shows_two_attempt_spans_under_the_request(stream: bool) -> None:
    exporter, provider = new_exporter()
    scripted = ScriptedProvider([Fail(ProviderError("down", upstream_status=503)), Reply("fine", usage=Usage(4, 1, 5))])
    stack = Stack(
        [
            Tracing(tracer_provider=provider),
            fallback_to("gpt-4o", "claude-3-5-haiku"),
            Tracing(tracer_provider=provider, kind="attempt"),
        ],
        scripted,
    )
    await (await stack(ask(stream=stream))).result()
    spans = exporter.get_finished_spans()
    [root] = by_name(spans, "onion chat")
    attempts = sorted(by_name(spans, "chat "), key=lambda s: s.attributes["onion.attempt"])
    assert [a.attributes["gen_ai.request.model"] for a in attempts] == ["gpt-4o", "claude-3-5-haiku"]
    assert [a.attributes["onion.attempt"] for a in attempts] == [1, 2]
    assert all(a.kind == SpanKind.CLIENT for a in attempts)
    assert all(a.parent is not None and a.parent.span_id == root.context.span_id for a in attempts)
    assert attempts[0].attributes["error.type"] == "503"
    assert attempts[0].status.status_code == StatusCode.ERROR
    assert attempts[1].attributes["onion.outcome"] == "ok"
    assert attempts[1].attributes["gen_ai.usage.output_tokens"] == 1
    assert root.attributes["gen_ai.request.model"] == "gpt-4o"
    assert root.attributes["gen_ai.response.model"] == "claude-3-5-haiku"
    assert root.attributes["onion.outcome"] == "ok"


async def test_stream_span_ends_with_the_stream_and_records_first_chunk_time() -> None:
    exporter, provider = new_exporter()
    stack = Stack([Tracing(tracer_provider=provider)], ScriptedProvider([Reply("a b c", usage=Usage(3, 3, 6))]))
    response = await stack(ask(stream=True))
    assert exporter.get_finished_spans() == ()  # still open: nothing has been read
    chunks = [chunk.content async for chunk in response]
    assert chunks == ["a ", "b ", "c", ""]
    [span] = exporter.get_finished_spans()
    assert span.attributes["gen_ai.response.time_to_first_chunk"] >= 0
    assert span.attributes["gen_ai.usage.input_tokens"] == 3
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert span.attributes["onion.stream"] is True


async def test_failure_sets_error_type_and_only_the_public_message() -> None:
    exporter, provider = new_exporter()
    error = ProviderError("GET http://10.0.0.7/v1 said 500 with key sk-secret", upstream_status=500)
    stack = Stack([Tracing(tracer_provider=provider)], ScriptedProvider([Fail(error)]))
    with pytest.raises(ProviderError):
        await stack(ask())
    [span] = exporter.get_finished_spans()
    assert span.attributes["error.type"] == "500"
    assert span.attributes["onion.outcome"] == "error"
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == error.public_message
    assert span.events == ()  # no exception event: its message and stack would leak details


async def test_stream_closed_early_ends_the_span_as_cancelled() -> None:
    exporter, provider = new_exporter()
    stack = Stack([Tracing(tracer_provider=provider)], ScriptedProvider([Reply("a b c d")]))
    async with await stack(ask(stream=True)) as response:
        async for _ in response:
            break
    [span] = exporter.get_finished_spans()
    assert span.attributes["onion.outcome"] == "cancelled"
    assert "error.type" not in span.attributes
    assert span.status.status_code == StatusCode.UNSET


async def test_layer_span_is_a_child_of_the_request_span() -> None:
    exporter, provider = new_exporter()

    async def cache(request: Request, call_next: Any) -> Response:
        with request.context.span("cache lookup", {"onion.cache": "exact"}) as span:
            span.set_attribute("onion.cache.hit", False)
        return await call_next(request)

    await Stack([Tracing(tracer_provider=provider), cache], ScriptedProvider())(ask())
    spans = exporter.get_finished_spans()
    [child] = by_name(spans, "cache lookup")
    [root] = by_name(spans, "onion chat")
    assert child.parent is not None and child.parent.span_id == root.context.span_id
    assert dict(child.attributes) == {"onion.cache": "exact", "onion.cache.hit": False}


async def test_layer_span_failure_is_marked_and_reraised() -> None:
    exporter, provider = new_exporter()

    async def guard(request: Request, call_next: Any) -> Response:
        with request.context.span("guard"):
            raise ProviderError("inner detail", upstream_status=429)

    with pytest.raises(ProviderError):
        await Stack([Tracing(tracer_provider=provider), guard], ScriptedProvider())(ask())
    [child] = by_name(exporter.get_finished_spans(), "guard")
    assert child.attributes["error.type"] == "429"


async def test_layer_span_without_tracing_records_nothing() -> None:
    seen = []

    async def cache(request: Request, call_next: Any) -> Response:
        with request.context.span("cache lookup") as span:
            seen.append(span)
        return await call_next(request)

    await Stack([cache], ScriptedProvider())(ask())
    assert seen == [None]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=8))
async def test_law_one_finished_root_span_per_request(calls: list[tuple[bool, bool]]) -> None:
    exporter, provider = new_exporter()

    def script(request: Request, index: int) -> Reply | Fail:
        return Fail(ProviderError("x", upstream_status=502), after_chunks=1) if calls[index][1] else Reply("a b")

    stack = Stack([Tracing(tracer_provider=provider)], ScriptedProvider(script))
    for stream, _fails in calls:
        with contextlib.suppress(ProviderError):
            await (await stack(ask(stream=stream))).result()
    spans = exporter.get_finished_spans()
    assert len(spans) == len(calls)
    assert [s.attributes["onion.outcome"] for s in spans] == ["error" if f else "ok" for _, f in calls]
    assert len({s.context.trace_id for s in spans}) == len(calls)


@pytest.mark.parametrize("stream", [False, True])
async def test_real_fallback_and_retry_show_every_attempt_and_count_once_outside(stream: bool) -> None:
    """With the built-in fallback and retry: outermost metrics/log count one request,
    the innermost attempt spans and metrics see each upstream call with its model."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from middlewares.observe.metrics import Metrics
    from middlewares.resilience.fallback import Fallback
    from middlewares.resilience.retry import Retry

    exporter, provider = new_exporter()
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    down = ProviderError("down", upstream_status=503, retryable=True)
    scripted = ScriptedProvider([Fail(down), Fail(down), Reply("fine", usage=Usage(4, 1, 5))])
    stack = Stack(
        [
            Tracing(tracer_provider=provider),
            Metrics(meter_provider=meters, scope="gateway"),
            Fallback(["gpt-4o", "gpt-4o-mini"]),
            Retry(attempts=2, base_delay=0.0, max_delay=0.0),
            Metrics(meter_provider=meters, scope="upstream"),
            Tracing(tracer_provider=provider, kind="attempt"),
        ],
        scripted,
    )
    await (await stack(ask("gpt-4o", stream=stream))).result()
    spans = exporter.get_finished_spans()
    [root] = by_name(spans, "onion chat")
    attempts = sorted(by_name(spans, "chat "), key=lambda s: s.attributes["onion.attempt"])
    assert [a.attributes["gen_ai.request.model"] for a in attempts] == ["gpt-4o", "gpt-4o", "gpt-4o-mini"]
    assert [a.attributes.get("error.type") for a in attempts] == ["503", "503", None]
    assert root.attributes["onion.fallback"] == "gpt-4o-mini"
    requests: dict[tuple[str, str], float] = {}
    for data in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics:
        if data.name == "onion.requests":
            for point in data.data.data_points:
                key = (point.attributes["onion.scope"], point.attributes["onion.outcome"])
                requests[key] = requests.get(key, 0) + point.value
                if point.attributes["onion.scope"] == "gateway":
                    assert point.attributes["onion.fallback"] is True
    assert requests == {("gateway", "ok"): 1, ("upstream", "error"): 2, ("upstream", "ok"): 1}


def test_built_from_config_by_short_name() -> None:
    from onion import ConfigError

    stack = Stack.from_config(
        [{"use": "tracing"}, {"use": "logging", "log_content": True}, {"use": "tracing", "kind": "attempt"}],
        ScriptedProvider(),
    )
    assert [info.name for info in stack.infos] == ["tracing", "logging", "tracing.attempt"]
    with pytest.raises(ConfigError, match="kind"):
        Stack.from_config([{"use": "tracing", "kind": "sometimes"}], ScriptedProvider())


@pytest.mark.parametrize("stream", [False, True])
async def test_built_in_layers_that_do_work_open_child_spans(stream: bool) -> None:
    from middlewares import ExactCache, InputGuard, OutputGuard, SemanticCache

    exporter, provider = new_exporter()
    upstream = ScriptedProvider([Reply("mail me at ann@example.com")])
    layers = [Tracing(tracer_provider=provider), InputGuard(), ExactCache(), SemanticCache(), OutputGuard()]
    stack = Stack(layers, upstream)

    async def call() -> str:
        response = await stack(ask(stream=stream, temperature=0))
        return (await response.result()).content

    assert "[EMAIL]" in await call()
    spans = exporter.get_finished_spans()
    [root] = by_name(spans, "onion chat")
    children = {span.name: span for span in spans if span.parent and span.parent.span_id == root.context.span_id}
    assert {"input_guard check", "exact_cache lookup", "semantic_cache lookup", "output_guard scan"} <= set(children)
    assert children["exact_cache lookup"].attributes["onion.cache.hit"] is False
    assert children["semantic_cache lookup"].attributes["onion.cache.hit"] is False
    assert list(children["output_guard scan"].attributes["onion.guard.found"]) == ["email"]

    exporter.clear()
    assert "[EMAIL]" in await call()  # the guarded answer, from the exact cache
    spans = exporter.get_finished_spans()
    [lookup] = by_name(spans, "exact_cache lookup")
    assert lookup.attributes["onion.cache.hit"] is True
    assert not by_name(spans, "output_guard scan")  # the hit never reached the guard
    assert upstream.calls == 1


def test_work_spans_import_nothing_without_tracing() -> None:
    # The guards and caches must not pull OpenTelemetry in for users who do not trace.
    import subprocess
    import sys

    code = """
import sys, anyio
from middlewares import ExactCache, InputGuard, OutputGuard, SemanticCache
from onion import Message, Request, Stack
from onion.testing import Reply, ScriptedProvider

async def main():
    stack = Stack([InputGuard(), ExactCache(), SemanticCache(), OutputGuard()], ScriptedProvider([Reply("hi")] * 2))
    for stream in (False, True):
        request = Request(model="m", messages=[Message("user", "hello")], stream=stream)
        await (await stack(request)).result()

anyio.run(main)
print(sorted(m for m in ("middlewares.observe.tracing", "opentelemetry") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


async def test_a_provider_without_processors_gets_no_spans_until_one_is_added() -> None:
    provider = TracerProvider()
    stack = Stack([Tracing(tracer_provider=provider)], ScriptedProvider([Reply("a"), Reply("b")]))
    request = Request(model="gpt-4o", messages=[Message("user", "hi")])
    response = await stack(request)
    assert (await response.result()).content == "a" and request.context.tracer is None
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    await (await stack(Request(model="gpt-4o", messages=[Message("user", "hi")]))).result()
    assert [span.name for span in exporter.get_finished_spans()] == ["onion chat gpt-4o"]


@pytest.mark.parametrize("stream", [False, True])
async def test_the_request_span_is_current_while_inner_code_runs_and_restored_after(stream: bool) -> None:
    """An instrumented client inside (a span started from the ambient context) is a child of
    the request span; once the layer returned, the context before it is current again."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    exporter, provider = new_exporter()
    scripted = ScriptedProvider([Reply("hi you")])
    seen: list[Any] = []

    async def instrumented(request: Request) -> Response:
        with provider.get_tracer("client").start_as_current_span("POST /v1/chat/completions"):
            seen.append(trace.get_current_span())
        return await scripted(request)

    before = otel_context.get_current()
    response = await Stack([Tracing(tracer_provider=provider)], instrumented)(ask(stream=stream))
    assert otel_context.get_current() is before
    await response.result()
    client, request_span = sorted(exporter.get_finished_spans(), key=lambda span: span.name.startswith("onion"))
    assert client.parent is not None and client.parent.span_id == request_span.context.span_id
    assert client.context.trace_id == request_span.context.trace_id
    assert seen[0].get_span_context().span_id == client.context.span_id
