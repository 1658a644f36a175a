"""The observe layers' output, pinned: metric points, log lines and spans for a mix of traffic.

A short cut on the hot path (a memo, a fused loop, a skipped call) must leave what the
layers export exactly as it was. This test runs one fixed mix of requests (complete and
streamed answers, a cut stream, a stream closed early, upstream errors, a rate limit, a
guard block, an unpriced model, a caller whose name holds a key, a consumer that holds
chunks) through logging, tracing and metrics on a fake clock, and compares every metric
point (name, unit, attributes, bucket counts, count, sum, min, max), every log line and
every span (name, kind, parent, attributes, status) field by field with
``data/observe_golden.json``, written from the tree before the short cuts:

    PYTHONPATH=<tree> python tests/middlewares/observe/test_observe_golden.py --write

Only what changes from run to run is left out: timestamps, request ids and span ids, and
span times (the tracing layer reads the real clock).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import anyio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from middlewares.observe.metrics import Metrics
from middlewares.observe.request_log import RequestLog
from middlewares.observe.tracing import Tracing
from onion import GuardrailViolation, Message, ProviderError, RateLimited, Request, Stack, Usage
from onion.telemetry import configure_logging, reset_logging
from onion.testing import Fail, FakeClock, Reply, ScriptedProvider

GOLDEN = Path(__file__).parent / "data" / "observe_golden.json"
KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0" * 2
# Span attributes read from the real clock: present, value not compared.
_TIMED_SPAN_ATTRIBUTES = frozenset({"gen_ai.response.time_to_first_chunk"})

# (model, stream, caller, team, step, how the consumer reads: "all", "hold", "one", "none")
TRAFFIC: list[tuple[str, bool, str | None, str | None, Any, str]] = [
    ("gpt-4o", False, "alice", "red", Reply("fine thanks", usage=Usage(12, 8, 20)), "all"),
    ("gpt-4o", True, "alice", "red", Reply("one two three four", delay=0.25, usage=Usage(10, 4, 14)), "all"),
    ("gpt-4o", True, "bob", None, Reply("a b c", first_delay=0.5, delay=0.125, usage=Usage(3, 3, 6)), "hold"),
    ("gpt-4o-mini", True, None, None, Fail(ProviderError("cut", upstream_status=None), after_chunks=2), "all"),
    ("gpt-4o", True, "carol", "blue", Reply("w x y z", delay=0.0625), "one"),
    ("gpt-4o", True, "carol", "blue", Reply("never read"), "none"),
    ("gpt-4o", False, "dave", None, Fail(ProviderError("boom", upstream_status=503), delay=0.25), "all"),
    ("gpt-4o", False, "dave", None, Fail(RateLimited("slow down", retry_after=2.0)), "all"),
    ("gpt-4o", False, "erin", None, Fail(GuardrailViolation("no", stage="input", rule="pii")), "all"),
    ("mystery-model", False, "erin", None, Reply("who am i", usage=Usage(5, 3, 8), model="mystery-1"), "all"),
    ("gpt-4o", False, KEY, "red", Reply("keyed", usage=Usage(7, 2, 9)), "all"),
    ("gpt-4o", True, KEY, "red", Reply("keyed stream", delay=0.5, usage=Usage(7, 2, 9)), "all"),
    ("gpt-4o", False, "alice", "red", Reply("again", usage=Usage(12, 8, 20)), "all"),
]


async def _run(clock: FakeClock, stack: Stack) -> None:
    for model, stream, caller, team, _step, read in TRAFFIC:
        request = Request(model=model, messages=[Message("user", "hello")], stream=stream)
        request.context.caller, request.context.team = caller, team
        try:
            response = await stack(request)
            if read == "none":
                await response.aclose()
            elif read == "one":
                async with response:
                    async for _chunk in response:
                        clock.advance(0.03125)
                        break
            elif read == "hold":
                async for _chunk in response:
                    clock.advance(0.75)  # the consumer holds each chunk
            else:
                await response.result()
        except (ProviderError, RateLimited, GuardrailViolation):
            pass
        clock.advance(1.0)


def _metrics(reader: InMemoryMetricReader) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    row: dict[str, Any] = {
                        "name": metric.name,
                        "unit": metric.unit,
                        "description": metric.description,
                        "attributes": dict(sorted(point.attributes.items())),
                    }
                    if hasattr(point, "bucket_counts"):
                        row.update(
                            count=point.count,
                            sum=point.sum,
                            min=point.min,
                            max=point.max,
                            bucket_counts=list(point.bucket_counts),
                            explicit_bounds=list(point.explicit_bounds),
                        )
                    else:
                        row["value"] = point.value
                    found.append(row)
    return sorted(found, key=lambda row: json.dumps(row, sort_keys=True))


def _lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for raw in text.splitlines():
        line = json.loads(raw)
        assert line.pop("timestamp").endswith("Z")
        assert line.pop("request_id").startswith("req_")
        lines.append({"keys": list(line), **line})  # the order of the keys is the line's too
    return lines


def _spans(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    spans = exporter.get_finished_spans()
    names = {span.context.span_id: span.name for span in spans}
    found = []
    for span in spans:
        attributes = dict(span.attributes or {})
        assert str(attributes.pop("onion.request_id", "req_")).startswith("req_")
        for name in _TIMED_SPAN_ATTRIBUTES & set(attributes):
            attributes[name] = "<timed>"
        found.append(
            {
                "name": span.name,
                "kind": span.kind.name,
                "parent": names.get(span.parent.span_id) if span.parent is not None else None,
                "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(attributes.items())},
                "status": [span.status.status_code.name, span.status.description],
                "events": [event.name for event in span.events],
            }
        )
    return found


def snapshot() -> dict[str, Any]:
    """What the three layers export for ``TRAFFIC``, in comparable form."""
    clock = FakeClock(start=100.0)
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    stack = Stack(
        [
            RequestLog(clock=clock),
            Tracing(tracer_provider=tracer_provider),
            Metrics(meter_provider=MeterProvider(metric_readers=[reader]), clock=clock),
        ],
        ScriptedProvider([step for *_, step, _read in TRAFFIC], clock=clock),
    )
    out = io.StringIO()
    configure_logging(json=True, level="info", stream=out, cache=False)
    try:
        anyio.run(_run, clock, stack)
    finally:
        reset_logging()
    return {"metrics": _metrics(reader), "lines": _lines(out.getvalue()), "spans": _spans(exporter)}


def test_law_metric_points_log_lines_and_spans_are_the_pinned_ones() -> None:
    got, want = snapshot(), json.loads(GOLDEN.read_text())
    for part in ("metrics", "lines", "spans"):
        assert len(got[part]) == len(want[part]), part
        for index, (mine, pinned) in enumerate(zip(got[part], want[part], strict=True)):
            assert mine == pinned, f"{part}[{index}]"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(snapshot(), indent=1, sort_keys=False) + "\n")
        print(f"wrote {GOLDEN}")
