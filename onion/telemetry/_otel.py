"""Process-wide OpenTelemetry set-up, shared by the ``metrics`` and ``tracing`` layers.

Holds the names and bucket boundaries onion uses, the process-wide default
``MeterProvider`` (with a Prometheus reader, so ``GET /metrics`` works out of the box)
and ``TracerProvider``, ``configure_otel`` to add OTLP export, and ``render_prometheus``,
which the server passes as its ``metrics_renderer``.

Semantic conventions followed: OpenTelemetry GenAI semantic conventions, repository
open-telemetry/semantic-conventions-genai, ``docs/gen-ai/gen-ai-metrics.md`` at commit
004902b8cb70aa5ae6ca4ae07132b7daabcd3e10 (status Development; it links semantic
conventions v1.42.0 for ``error.type`` and ``server.*``). ``gen_ai.*`` names may still
change; the constants below are the one place to follow them.
"""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

__all__ = [
    "CHUNK_BUCKETS",
    "DURATION_BUCKETS",
    "OVERHEAD_BUCKETS",
    "SCOPE",
    "TOKEN_BUCKETS",
    "configure_otel",
    "default_meter_provider",
    "default_tracer_provider",
    "render_prometheus",
]

SCOPE = "onion"
"""Instrumentation scope name of onion's meters and tracers."""

# Explicit bucket boundaries documented by the conventions (pinned above).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
CHUNK_BUCKETS = DURATION_BUCKETS  # time_to_first_chunk and time_per_output_chunk use the same set
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
# onion's own overhead is microseconds to milliseconds, far below the GenAI duration buckets.
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

_lock = threading.Lock()
_meter_provider: Any = None
_tracer_provider: Any = None
_prometheus_registry: Any = None


def _resource(service_name: str) -> Resource:
    return Resource.create({"service.name": service_name})


def _prometheus_reader() -> tuple[Any, Any]:
    """A Prometheus reader on a registry of its own, or ``(None, None)`` without the exporter."""
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry
    except ImportError:
        return None, None
    # A private registry: the gateway's /metrics shows onion's metrics, and tests or
    # host applications that use prometheus_client's global registry are not disturbed.
    registry = CollectorRegistry(auto_describe=True)
    return PrometheusMetricReader(registry=registry), registry


def _otlp_metric_reader(endpoint: str | None, interval_seconds: float) -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    except ImportError as error:
        raise ImportError("OTLP export needs: pip install opentelemetry-exporter-otlp-proto-http") from error
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    exporter = OTLPMetricExporter(endpoint=endpoint) if endpoint else OTLPMetricExporter()
    return PeriodicExportingMetricReader(exporter, export_interval_millis=interval_seconds * 1000)


def _otlp_span_processor(endpoint: str | None) -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as error:
        raise ImportError("OTLP export needs: pip install opentelemetry-exporter-otlp-proto-http") from error
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    return BatchSpanProcessor(exporter)


def configure_otel(
    *,
    service_name: str = "onion",
    prometheus: bool = True,
    otlp: bool = False,
    otlp_metrics_endpoint: str | None = None,
    otlp_traces_endpoint: str | None = None,
    export_interval_seconds: float = 15.0,
) -> tuple[MeterProvider, TracerProvider]:
    """Set up the default providers the layers use when given none.

    ``prometheus`` keeps a Prometheus reader for ``render_prometheus``; ``otlp`` adds OTLP
    over HTTP for metrics and traces (needs ``opentelemetry-exporter-otlp-proto-http``;
    endpoints default to the ``OTEL_EXPORTER_OTLP_*`` environment variables). Call it once
    at startup, before the first request; layers built earlier keep their providers.
    """
    global _meter_provider, _tracer_provider, _prometheus_registry
    readers = []
    reader, registry = _prometheus_reader() if prometheus else (None, None)
    if reader is not None:
        readers.append(reader)
    if otlp:
        readers.append(_otlp_metric_reader(otlp_metrics_endpoint, export_interval_seconds))
    tracer_provider = TracerProvider(resource=_resource(service_name))
    if otlp:
        tracer_provider.add_span_processor(_otlp_span_processor(otlp_traces_endpoint))
    # Only now, with every part built, replace the defaults (a failure above changes nothing).
    meter_provider = _meter_provider_with(readers, service_name)
    with _lock:
        _meter_provider, _tracer_provider, _prometheus_registry = meter_provider, tracer_provider, registry
    return meter_provider, tracer_provider


def default_meter_provider() -> Any:
    """The meter provider layers use by default (created on first use, with Prometheus)."""
    if _meter_provider is None:
        with _lock:
            if _meter_provider is None:
                _set_default_meter_provider()
    return _meter_provider


def _set_default_meter_provider() -> None:
    global _meter_provider, _prometheus_registry
    reader, _prometheus_registry = _prometheus_reader()
    _meter_provider = _meter_provider_with([reader] if reader else [], "onion")


def _meter_provider_with(readers: list[Any], service_name: str) -> MeterProvider:
    # No exemplars: the Prometheus text format cannot carry them, and with a span active
    # every histogram point would also store one, at a cost on every record.
    return MeterProvider(
        metric_readers=readers, resource=_resource(service_name), exemplar_filter=AlwaysOffExemplarFilter()
    )


def default_tracer_provider() -> Any:
    """The tracer provider layers use by default.

    The one set by ``configure_otel`` if it was called; otherwise the application's global
    provider (``opentelemetry.trace.get_tracer_provider()``), which is a no-op until the
    application configures OpenTelemetry, so unexported spans cost almost nothing.
    """
    return _tracer_provider if _tracer_provider is not None else otel_trace.get_tracer_provider()


def render_prometheus() -> tuple[bytes, str]:
    """The default meter provider's metrics as Prometheus text: ``(body, content_type)``.

    The server calls this for ``GET /metrics``. Raises ``ImportError`` when there is no
    Prometheus reader: ``configure_otel(prometheus=False)``, or an install that lost the
    exporter (a dependency of onion-llm since it is small).
    """
    default_meter_provider()
    if _prometheus_registry is None:
        raise ImportError(
            "GET /metrics needs the Prometheus exporter ([telemetry] prometheus = true; it ships with onion-llm: "
            "pip install --force-reinstall onion-llm)"
        )
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(_prometheus_registry), CONTENT_TYPE_LATEST
