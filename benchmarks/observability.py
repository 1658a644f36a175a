"""Per-request cost of the observability layers: ``metrics``, ``tracing``, ``logging``.

Each variant is a ``Stack`` around an in-process handler that answers at once (complete,
or streamed in 8 chunks), so the difference to the bare stack is the layers' own cost.
Variants run interleaved, min of several repeats. The OpenTelemetry SDK's own per-call
costs (one histogram point, one counter add, one span) and one structlog JSON line are
measured separately, to show how much of the layers' cost is the SDK's.

Setup, as in production: metrics on an SDK ``MeterProvider`` (aggregation happens when a
value is recorded, so the reader type does not matter); spans on an SDK
``TracerProvider`` with a ``BatchSpanProcessor`` (the request only enqueues the span);
log lines rendered as JSON to a null stream.

    python benchmarks/observability.py [--calls 20000] [--repeats 5] [--clock wall|cpu] [--results PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import structlog
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, TraceFlags

from middlewares.observe.metrics import Metrics
from middlewares.observe.request_log import RequestLog
from middlewares.observe.tracing import Tracing
from onion import Chunk, Completion, Message, Request, Response, Stack, Usage
from onion.telemetry import configure_logging

RESULTS = Path(__file__).parent / "results" / "observability.json"
MESSAGES = [Message("user", "hello")]
USAGE = Usage(12, 8, 20)
CHUNKS = 8


class DropExporter(SpanExporter):
    """Accepts spans and drops them: the cost of export stays off the request path anyway."""

    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def complete_handler(request: Request) -> Response:
    return Response.complete(Completion(content="ok", model="gpt-4o", usage=USAGE), served_by="upstream")


async def _chunks() -> AsyncGenerator[Chunk, None]:
    for index in range(CHUNKS - 1):
        yield Chunk(content="tok ", model="gpt-4o" if index == 0 else None)
    yield Chunk(finish_reason="stop", usage=USAGE)


async def stream_handler(request: Request) -> Response:
    return Response.stream(_chunks(), served_by="upstream", model="gpt-4o")


SERVED: dict[str, int] = {}
# The clock a variant is timed with: wall time (default), or this thread's CPU time, which
# leaves out the time the process waited for a core on a shared machine (--clock cpu).
CLOCK = time.perf_counter


async def per_request_us(stack: Stack, stream: bool, calls: int) -> float:
    messages = MESSAGES
    served: list[str] = []
    clock = CLOCK
    start = clock()
    for _ in range(calls):
        response = await stack(Request(model="gpt-4o", messages=messages, stream=stream))
        if stream:
            async for _chunk in response:
                pass
        served.append(response.served_by)
    elapsed = clock() - start
    for who in served:  # counted after the clock stopped
        SERVED[who] = SERVED.get(who, 0) + 1
    return elapsed / calls * 1e6


def _drop(logger: Any, method: str, event_dict: Any) -> Any:
    raise structlog.DropEvent


class EndFloor:
    """A layer that only asks to be told when the answer ends (``on_end``, reading no text):
    the share of the observe layers' cost that is onion's core (for a stream: the one
    wrapper that watches the chunks), which they cannot go below."""

    name = "end_floor"

    async def __call__(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        return await response.on_end(_ignore, content=False)


def _ignore(end: Any) -> None:
    return None


class EndFloorMetricsLogging:
    """The core's share for metrics + logging: two ``on_end`` calls with the options those
    two layers pass (metrics: chunk times and held time; logging: neither), no work in
    the callbacks. What ``all_three_unexported`` cannot go below."""

    name = "end_floor_metrics_logging"

    async def __call__(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        await response.on_end(_ignore, chunk_times=response.is_stream, content=False)
        return await response.on_end(_ignore, content=False, held=False)


def variants(handler: Callable[[Request], Awaitable[Response]]) -> dict[str, Stack]:
    # As onion's default provider: no exemplars (Prometheus text cannot show them, and with
    # a span active every histogram point would also store one).
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()], exemplar_filter=AlwaysOffExemplarFilter())
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=1 << 16))
    metrics = Metrics(meter_provider=meters)
    tracing = Tracing(tracer_provider=tracer_provider)
    # What configure_otel builds without OTLP export: an SDK provider with no processor.
    unexported = Tracing(tracer_provider=TracerProvider())
    logs = RequestLog()
    # The layers' own code: the same three layers on backends that do nothing
    # (no-op meter and tracer, a log processor that drops the event before rendering).
    dropped = structlog.wrap_logger(None, processors=[_drop], wrapper_class=structlog.make_filtering_bound_logger(0))
    own = [RequestLog(logger=dropped), Tracing(), Metrics(meter_provider=NoOpMeterProvider())]
    # The same layers without this short cuts, interleaved in the same run: the log
    # line through structlog's processor chain, spans from the SDK's own tracer.
    logs_chain, tracing_sdk = RequestLog(), Tracing(tracer_provider=tracer_provider)
    logs_chain._bound = structlog.get_logger("onion.request").bind()  # bound, with no short cut
    tracing_sdk._spans = tracing_sdk._tracer
    return {
        "bare": Stack([], handler),
        "metrics": Stack([metrics], handler),
        "tracing": Stack([tracing], handler),
        "tracing_noop": Stack([Tracing()], handler),  # no SDK configured: the API's no-op tracer
        "logging": Stack([logs], handler),
        "all_three": Stack([logs, tracing, metrics], handler),
        "all_three_unexported": Stack([logs, unexported, metrics], handler),
        "all_three_own": Stack(own, handler),
        "end_floor": Stack([EndFloor()], handler),
        "end_floor_metrics_logging": Stack([EndFloorMetricsLogging()], handler),
        "logging_chain": Stack([logs_chain], handler),
        "tracing_sdk_span": Stack([tracing_sdk], handler),
        "all_three_before": Stack([logs_chain, tracing_sdk, metrics], handler),
    }


def sdk_costs(calls: int, repeats: int) -> dict[str, float]:
    """Microseconds per call of the SDK primitives the layers use."""
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()], exemplar_filter=AlwaysOffExemplarFilter())
    meter = meters.get_meter("bench")
    histogram = meter.create_histogram("h", explicit_bucket_boundaries_advisory=[0.01 * 2**i for i in range(14)])
    counter = meter.create_counter("c")
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o",
        "onion.scope": "gateway",
    }
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=1 << 16))
    tracer = tracer_provider.get_tracer("bench")
    log = structlog.get_logger("bench")

    def timed(fn: Callable[[], object]) -> float:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, (time.perf_counter() - start) / calls * 1e6)
        return best

    def span() -> None:
        tracer.start_span("chat gpt-4o", attributes=attrs).end()

    # The alternative to the SDK's span: a finished ReadableSpan built directly (trusted
    # attributes, no cleaning, no lock) and handed to the same processor.
    processor = tracer_provider._active_span_processor
    ids = tracer_provider.id_generator
    scope = InstrumentationScope("bench")

    def readable() -> None:
        now = time.time_ns()
        context = SpanContext(ids.generate_trace_id(), ids.generate_span_id(), False, TraceFlags(1))
        finished = ReadableSpan("chat gpt-4o", context, None, tracer_provider.resource, dict(attrs),
                                start_time=now, end_time=time.time_ns(), instrumentation_scope=scope)  # fmt: skip
        processor.on_end(finished)

    # The alternative to summing in onion: prometheus_client's own instruments, each label
    # set's child found once and kept (its cheapest use), against onion's kept series.
    from prometheus_client import CollectorRegistry
    from prometheus_client import Counter as PromCounter
    from prometheus_client import Histogram as PromHistogram

    from onion.telemetry import summed_histogram

    registry = CollectorRegistry()
    labels = [name.replace(".", "_") for name in attrs]
    prom_histogram = PromHistogram("h", "h", labels, registry=registry, buckets=[0.01 * 2**i for i in range(14)])
    prom_counter = PromCounter("c", "c", labels, registry=registry)
    prom_h, prom_c = prom_histogram.labels(*attrs.values()), prom_counter.labels(*attrs.values())
    kept = summed_histogram(meters, "bench", "h2", unit="s", description="", bounds=[0.01 * 2**i for i in range(14)])
    series_of = getattr(kept, "series_of", None)  # absent before the kept series: run against an older tree
    add = series_of("k", lambda key: dict(attrs)).add if series_of else lambda v: kept.record("k", v, lambda k: attrs)

    return {
        "prometheus_client_observe": timed(lambda: prom_h.observe(0.5)),
        "prometheus_client_inc": timed(lambda: prom_c.inc(1)),
        "summed_series_add": timed(lambda: add(0.5)),
        "histogram_record": timed(lambda: histogram.record(0.5, attrs)),
        "counter_add": timed(lambda: counter.add(1, attrs)),
        "span_start_end": timed(span),
        "readable_span_direct": timed(readable),
        "structlog_json_line": timed(lambda: log.info("request", model="gpt-4o", outcome="ok", latency_ms=1.0)),
    }


async def measure(calls: int, repeats: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for kind, handler, stream in (("complete", complete_handler, False), ("stream", stream_handler, True)):
        stacks = variants(handler)
        samples: dict[str, list[float]] = {name: [] for name in stacks}
        for stack in stacks.values():  # warm up caches and lazy setup
            await per_request_us(stack, stream, 200)
        for _ in range(repeats):
            for name, stack in stacks.items():
                samples[name].append(await per_request_us(stack, stream, calls))
        results[kind] = {name: min(values) for name, values in samples.items()}
    # Every answer came from the handler: no layer here answers, and a benchmark that
    # measured something else would say so.
    if set(SERVED) != {"upstream"}:
        raise RuntimeError(f"expected every answer from the handler ('upstream'), got {SERVED}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="wall time, or the thread's CPU time")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the JSON (default: %(default)s)")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    # Log lines are rendered in full (JSON, secrets scrubbed) and written to /dev/null.
    null = open(os.devnull, "w")  # noqa: SIM115 - kept open for the whole run
    configure_logging(json=True, level="info", stream=null)
    results = anyio.run(measure, args.calls, args.repeats)
    sdk = sdk_costs(args.calls, args.repeats)
    print(f"µs per request (min of {args.repeats} runs of {args.calls:,}); added = variant - bare stack")
    print(f"{'variant':<22} {'complete':>9} {'added':>8} {'stream(8)':>10} {'added':>8}")
    rows = []
    for name in results["complete"]:
        complete, stream = results["complete"][name], results["stream"][name]
        added_c, added_s = complete - results["complete"]["bare"], stream - results["stream"]["bare"]
        rows.append({"variant": name, "complete": complete, "complete_added": added_c, "stream": stream,
                     "stream_added": added_s})  # fmt: skip
        print(f"{name:<22} {complete:>9.2f} {added_c:>8.2f} {stream:>10.2f} {added_s:>8.2f}")
    print("\nOpenTelemetry SDK / structlog primitives, µs per call:")
    for name, value in sdk.items():
        print(f"  {name:<22} {value:>6.2f}")
    by_name = {row["variant"]: row for row in rows}
    together = by_name["all_three"]["complete_added"]
    own = by_name["all_three_own"]["complete_added"]
    # Per complete request: 4 histogram points (duration, 2 x tokens, overhead), 1 span,
    # 1 log line. (Requests and cost are running sums read at collection: no SDK call.)
    per_request_sdk = 4 * sdk["histogram_record"]
    primitives = per_request_sdk + sdk["span_start_end"] + sdk["structlog_json_line"]
    # The same per-request metric points (4 histogram points, 2 counter adds) three ways.
    per_request_metrics = {
        "otel_sdk_sync_instruments": 4 * sdk["histogram_record"] + 2 * sdk["counter_add"],
        "prometheus_client_direct": 4 * sdk["prometheus_client_observe"] + 2 * sdk["prometheus_client_inc"],
        "onion_summed_series": 6 * sdk["summed_series_add"],
    }
    print("\nOne request's metric points (4 histogram points, 2 counter adds), µs:")
    for name, value in per_request_metrics.items():
        print(f"  {name:<26} {value:>6.2f}")
    print(
        f"\nmetrics + tracing + logging together: {together:.1f} µs per complete request (target < 30 µs);\n"
        f"the SDK / structlog primitives they call add up to about {primitives:.1f} µs;\n"
        f"the layers' own code (no-op backends): {own:.1f} µs"
    )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(
        json.dumps(
            {
                "benchmark": "observability",
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "calls": args.calls,
                "repeats": args.repeats,
                "clock": args.clock,
                "stream_chunks": CHUNKS,
                "rows": rows,
                "sdk_primitives_us": sdk,
                "served_by": SERVED,
                "all_three_added_us": together,
                "all_three_stream_added_us": by_name["all_three"]["stream_added"],
                "all_three_unexported_added_us": by_name["all_three_unexported"]["complete_added"],
                "all_three_unexported_stream_added_us": by_name["all_three_unexported"]["stream_added"],
                "all_three_own_code_us": own,
                "all_three_before_added_us": by_name["all_three_before"]["complete_added"],
                "all_three_before_stream_added_us": by_name["all_three_before"]["stream_added"],
                "sdk_primitives_per_request_us": primitives,
                "metric_points_per_request_us": per_request_metrics,
                "end_floor_added_us": by_name["end_floor"]["complete_added"],
                "end_floor_stream_added_us": by_name["end_floor"]["stream_added"],
                "end_floor_metrics_logging_added_us": by_name["end_floor_metrics_logging"]["complete_added"],
                "end_floor_metrics_logging_stream_added_us": by_name["end_floor_metrics_logging"]["stream_added"],
                "target_us": 30,
            },
            indent=2,
        )
    )
    print(f"wrote {args.results}")
    null.close()


if __name__ == "__main__":
    main()
