"""Histograms summed in onion's own code and handed to OpenTelemetry when it collects.

A synchronous OpenTelemetry histogram costs several microseconds per ``record`` (it
builds a ``Measurement``, cleans and hashes the attributes, takes the aggregation's lock):
8 µs on the benchmark machine, against a request budget of 30 µs for metrics, tracing and
logging together, and a stream records one point per chunk. Python's SDK has no
observable histogram, so ``SummedHistogram`` keeps the sums itself — one bucket list per
attribute set, found by a tuple key, one ``bisect`` per point (0.4 µs) — and adds them, as
``HistogramDataPoint``\\ s with the same name, unit, description, boundaries and
attributes, to what each of the provider's readers collects (Prometheus, OTLP, an
in-memory reader). Names, units, buckets and attributes are what the SDK would have
exported; exemplars are left out (onion's providers turn them off too).

The readers are reached through the SDK's collect callback (``MetricReader._collect``):
the one seam the SDK has for data it did not aggregate itself. Points are cumulative,
as the Prometheus reader and OTLP's default want; a reader that prefers delta
temporality gets them cumulative too.
"""

from __future__ import annotations

import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

__all__ = ["HistogramSeries", "SummedHistogram", "summed_histogram"]

_OVERFLOW = ("__overflow__",)
_INF = float("inf")


class HistogramSeries:
    """One attribute set's running sums (``SummedHistogram.series`` finds it once, a
    layer keeps it and ``add``\\ s to it: no key is built or hashed per point)."""

    __slots__ = ("attributes", "bounds", "counts", "max", "min", "started", "sum")

    def __init__(self, attributes: dict[str, Any], bounds: tuple[float, ...]) -> None:
        self.attributes = attributes
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.started = time.time_ns()

    def add(self, value: float) -> None:
        """One point (negative and non-finite values are ignored, as the SDK ignores them)."""
        if not 0.0 <= value < _INF:
            return
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def add_gaps(self, times: Sequence[float]) -> None:
        """One point per gap between consecutive ``times`` (a stream's chunk arrivals),
        in one loop: a stream's points cost a bisect each, not a call each."""
        if len(times) < 2:
            return
        counts, bounds = self.counts, self.bounds
        total, low, high = self.sum, self.min, self.max
        previous = times[0]
        for current in times[1:]:
            gap = current - previous
            previous = current
            if not 0.0 <= gap < _INF:
                continue
            counts[bisect_left(bounds, gap)] += 1
            total += gap
            if gap < low:
                low = gap
            if gap > high:
                high = gap
        self.sum, self.min, self.max = total, low, high


class SummedHistogram:
    """A histogram whose points are summed per attribute set in onion's code.

    ``record(key, value, attributes)``: ``key`` is a hashable tuple that stands for the
    attribute set, ``attributes(key)`` builds that set (called once per series, so no
    dict is built or hashed per point);
    at most ``limit`` sets are kept, the rest summed under ``otel.metric.overflow``, as
    the SDK does. Negative and non-finite values are ignored, as the SDK ignores them.
    """

    __slots__ = ("bounds", "description", "limit", "name", "series", "unit")

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float], limit: int = 2000) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.bounds = tuple(float(b) for b in bounds)
        self.limit = limit
        self.series: dict[Any, HistogramSeries] = {}

    def record(self, key: Any, value: float, attributes: Callable[[Any], dict[str, Any]]) -> None:
        """Add one point to the series ``key`` (``attributes(key)`` builds its attributes once)."""
        series = self.series.get(key)
        if series is None:
            series = self._new(key, attributes)
        series.add(value)

    def series_of(self, key: Any, attributes: Callable[[Any], dict[str, Any]]) -> HistogramSeries:
        """The series ``key`` (made with ``attributes(key)`` if new; the overflow series
        once ``limit`` sets exist), to keep and ``add`` to."""
        series = self.series.get(key)
        return series if series is not None else self._new(key, attributes)

    def record_gaps(self, key: Any, times: Sequence[float], attributes: Callable[[Any], dict[str, Any]]) -> None:
        """Add the gaps between consecutive ``times`` (a stream's chunk arrivals) to one series."""
        if len(times) < 2:
            return
        series = self.series.get(key)
        if series is None:
            series = self._new(key, attributes)
        series.add_gaps(times)

    def _new(self, key: Any, attributes: Callable[[Any], dict[str, Any]]) -> HistogramSeries:
        if len(self.series) >= self.limit:
            found = self.series.get(_OVERFLOW)
            if found is None:
                found = self.series[_OVERFLOW] = HistogramSeries({"otel.metric.overflow": True}, self.bounds)
            return found
        series = self.series[key] = HistogramSeries(attributes(key), self.bounds)
        return series

    def metric(self, now: int) -> Metric | None:
        """The sums as an OpenTelemetry ``Metric`` (``None`` before the first point)."""
        points = []
        for series in list(self.series.values()):
            counts = list(series.counts)
            count = sum(counts)  # from the buckets, so count and buckets always agree
            if not count:
                continue
            points.append(
                HistogramDataPoint(
                    attributes=series.attributes,
                    start_time_unix_nano=series.started,
                    time_unix_nano=now,
                    count=count,
                    sum=series.sum,
                    bucket_counts=counts,
                    explicit_bounds=self.bounds,
                    min=series.min,
                    max=series.max,
                )
            )
        if not points:
            return None
        data = Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
        return Metric(name=self.name, description=self.description, unit=self.unit, data=data)


class _Summed:
    """The summed histograms of one meter provider, and the readers they are added to."""

    def __init__(self, provider: Any, scope: str) -> None:
        self.histograms: dict[str, SummedHistogram] = {}
        self.scope = InstrumentationScope(scope)
        self.resource = getattr(provider, "_sdk_config", None) and provider._sdk_config.resource
        for reader in getattr(provider, "_metric_readers", ()):
            self._hook(reader)

    def _hook(self, reader: Any) -> None:
        collect = getattr(reader, "_collect", None)
        if collect is None:
            return
        this = weakref.ref(self)

        def collect_with_sums(reader: Any, timeout_millis: float = 10_000) -> MetricsData | None:
            data = collect(reader, timeout_millis=timeout_millis)
            summed = this()
            return summed.merge(data) if summed is not None else data

        reader._collect = collect_with_sums

    def merge(self, data: MetricsData | None) -> MetricsData | None:
        now = time.time_ns()
        metrics = [m for h in list(self.histograms.values()) if (m := h.metric(now)) is not None]
        if not metrics:
            return data
        if data is None or not data.resource_metrics:
            scope = ScopeMetrics(scope=self.scope, metrics=metrics, schema_url="")
            resource = ResourceMetrics(resource=self.resource, scope_metrics=[scope], schema_url="")
            return MetricsData(resource_metrics=[resource])
        first = data.resource_metrics[0]
        scopes = list(first.scope_metrics)
        for i, scope in enumerate(scopes):
            if scope.scope.name == self.scope.name:
                scopes[i] = ScopeMetrics(scope=scope.scope, metrics=[*scope.metrics, *metrics], schema_url="")
                break
        else:
            scopes.append(ScopeMetrics(scope=self.scope, metrics=metrics, schema_url=""))
        merged = ResourceMetrics(resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url)
        return MetricsData(resource_metrics=[merged, *data.resource_metrics[1:]])


_SUMMED: weakref.WeakKeyDictionary[Any, _Summed] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def summed_histogram(
    provider: Any, scope: str, name: str, *, unit: str, description: str, bounds: Sequence[float]
) -> SummedHistogram:
    """The ``SummedHistogram`` ``name`` of ``provider`` (one per name: two layers on one
    provider share it and tell their series apart by attributes), collected with the
    provider's readers under the instrumentation scope ``scope``."""
    with _LOCK:
        summed = _SUMMED.get(provider)
        if summed is None:
            summed = _SUMMED[provider] = _Summed(provider, scope)
        found = summed.histograms.get(name)
        if found is None:
            found = summed.histograms[name] = SummedHistogram(name, unit, description, bounds)
        elif found.bounds != tuple(float(b) for b in bounds) or found.unit != unit:
            raise ValueError(f"histogram {name!r} already exists with other buckets or unit")
        return found
