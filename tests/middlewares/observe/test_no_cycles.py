"""A finished request leaves nothing for the garbage collector: the observe layers' end
callbacks let go of the response once they ran, so a stream (its response, chunks,
generators and watch) is freed by reference counting when the caller drops it."""

from __future__ import annotations

import gc
import io
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from middlewares.observe import Metrics, RequestLog, Tracing
from onion import Layer, Message, Request, Response, Stack, Usage
from onion.telemetry import configure_logging, reset_logging
from onion.testing import Reply, ScriptedProvider


@pytest.fixture
def no_collector() -> Iterator[None]:
    # Only reference counting frees objects while the test runs: what is left is in a cycle.
    configure_logging(json=True, stream=io.StringIO(), cache=False, stdlib=False)
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        reset_logging()


def cyclic_responses() -> int:
    """How many ``Response`` objects only the collector could free (kept in ``gc.garbage``)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    found = sum(1 for thing in gc.garbage if type(thing) is Response)
    gc.set_debug(0)
    gc.garbage.clear()
    return found


def layers() -> dict[str, Layer]:
    spans = TracerProvider()
    spans.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    tracing = Tracing(tracer_provider=spans)
    return {"metrics": Metrics(meter_provider=meters), "logging": RequestLog(), "tracing": tracing}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("names", [("metrics",), ("logging",), ("tracing",), ("metrics", "logging", "tracing")])
async def test_a_finished_request_is_freed_without_the_collector(
    no_collector: None, names: tuple[str, ...], stream: bool
) -> None:
    built = layers()
    stack = Stack([built[name] for name in names], ScriptedProvider(default=Reply("a b c", usage=Usage(3, 3, 6))))
    request = Request(model="gpt-4o", messages=[Message("user", "hi")], stream=stream)
    response = await stack(request)
    answer = await response.result()
    assert answer.content == "a b c"
    del response
    assert cyclic_responses() == 0
