"""Summed histograms: what a reader collects is what the SDK's own histogram would give."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from onion.telemetry import DURATION_BUCKETS, summed_histogram

BOUNDS = (0.1, 1.0, 10.0)


def attrs(key: tuple[str, ...]) -> dict[str, Any]:
    return {"gen_ai.request.model": key[0]}


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    found: list[Any] = []
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            found += [p for m in scope.metrics if m.name == name for p in m.data.data_points]
    return found


values = st.lists(st.floats(min_value=0.0, max_value=100.0, allow_nan=False), max_size=40)


@settings(max_examples=50, deadline=None)
@given(values, values)
def test_law_collected_points_match_the_sdks_own_histogram(first: list[float], gaps: list[float]) -> None:
    """Same buckets, counts, sums, min and max as an SDK histogram fed the same points."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    mine = summed_histogram(provider, "onion", "mine", unit="s", description="d", bounds=BOUNDS)
    theirs = provider.get_meter("onion").create_histogram("theirs", explicit_bucket_boundaries_advisory=BOUNDS)
    times = [0.0]
    for gap in gaps:
        times.append(times[-1] + gap)
    for value in first:
        mine.record(("gpt-4o",), value, attrs)
        theirs.record(value, {"gen_ai.request.model": "gpt-4o"})
    mine.record_gaps(("gpt-4o",), times, attrs)
    for previous, current in itertools.pairwise(times):
        theirs.record(current - previous, {"gen_ai.request.model": "gpt-4o"})
    got, want = points(reader, "mine"), points(reader, "theirs")
    assert len(got) == len(want) == (1 if first or gaps else 0)
    for a, b in zip(got, want, strict=True):
        assert dict(a.attributes) == dict(b.attributes)
        assert list(a.bucket_counts) == list(b.bucket_counts)
        assert tuple(a.explicit_bounds) == tuple(b.explicit_bounds)
        assert (a.count, a.min, a.max) == (b.count, b.min, b.max)
        assert abs(a.sum - b.sum) <= 1e-9 * max(1.0, abs(b.sum))


def test_negative_and_non_finite_points_are_ignored_as_the_sdk_ignores_them() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    histogram = summed_histogram(provider, "onion", "h", unit="s", description="d", bounds=BOUNDS)
    for value in (-1.0, float("nan"), float("inf"), 0.5):
        histogram.record(("m",), value, attrs)
    [point] = points(reader, "h")
    assert (point.count, point.sum, list(point.bucket_counts)) == (1, 0.5, [0, 1, 0, 0])


def test_attribute_sets_past_the_limit_are_summed_as_overflow() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    histogram = summed_histogram(provider, "onion", "h", unit="s", description="d", bounds=BOUNDS)
    histogram.limit = 2
    for model in ("a", "b", "c", "d"):
        histogram.record((model,), 1.0, attrs)
    found = {tuple(sorted(p.attributes.items())): p.count for p in points(reader, "h")}
    assert found == {
        (("gen_ai.request.model", "a"),): 1,
        (("gen_ai.request.model", "b"),): 1,
        (("otel.metric.overflow", True),): 2,
    }


def test_one_histogram_per_name_and_provider_shared_by_layers() -> None:
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    one = summed_histogram(provider, "onion", "h", unit="s", description="d", bounds=BOUNDS)
    assert summed_histogram(provider, "onion", "h", unit="s", description="d", bounds=BOUNDS) is one
    other = MeterProvider(metric_readers=[InMemoryMetricReader()])
    assert summed_histogram(other, "onion", "h", unit="s", description="d", bounds=BOUNDS) is not one


def test_prometheus_text_has_the_histogram_with_its_unit_buckets_and_labels() -> None:
    registry = CollectorRegistry(auto_describe=True)
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    provider.get_meter("onion").create_counter("onion.other").add(1)  # an SDK metric beside it
    histogram = summed_histogram(
        provider, "onion", "gen_ai.client.operation.duration", unit="s", description="d", bounds=DURATION_BUCKETS
    )
    histogram.record(("gpt-4o",), 0.03, attrs)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    duration = families["gen_ai_client_operation_duration_seconds"]
    assert duration.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s.value for s in duration.samples}
    assert samples[("gen_ai_client_operation_duration_seconds_bucket", "0.02")] == 0
    assert samples[("gen_ai_client_operation_duration_seconds_bucket", "0.04")] == 1
    assert samples[("gen_ai_client_operation_duration_seconds_count", None)] == 1
    assert all(s.labels["gen_ai_request_model"] == "gpt-4o" for s in duration.samples)
    assert "onion_other" in families
