"""Process-wide telemetry: OpenTelemetry providers, Prometheus rendering, logging set-up.

What a process configures once, at start, and every layer then uses: the default
``MeterProvider`` and ``TracerProvider`` (``configure_otel`` adds OTLP export),
``render_prometheus`` for ``GET /metrics``, ``summed_histogram`` (histograms summed in
onion's code and added to what the readers collect), the names and bucket boundaries of onion's
instruments, and the structlog configuration (``configure_logging``) with its secret
scrubbing. ``onion serve`` calls ``onion.config.configure_telemetry``, which calls these;
a program that composes its own stack may call them itself.

Names load on first use, so importing this package costs nothing until OpenTelemetry
or structlog is needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    # Static twins of the lazy names below (``X as X`` marks a re-export).
    from ._histograms import HistogramSeries as HistogramSeries
    from ._histograms import SummedHistogram as SummedHistogram
    from ._histograms import summed_histogram as summed_histogram
    from ._logging import LOG_LEVELS as LOG_LEVELS
    from ._logging import configure_logging as configure_logging
    from ._logging import json_line_writer as json_line_writer
    from ._logging import mask_request_id as mask_request_id
    from ._logging import mask_secrets as mask_secrets
    from ._logging import reset_logging as reset_logging
    from ._logging import scrub_secrets as scrub_secrets
    from ._logging import scrub_text as scrub_text
    from ._otel import CHUNK_BUCKETS as CHUNK_BUCKETS
    from ._otel import DURATION_BUCKETS as DURATION_BUCKETS
    from ._otel import OVERHEAD_BUCKETS as OVERHEAD_BUCKETS
    from ._otel import SCOPE as SCOPE
    from ._otel import TOKEN_BUCKETS as TOKEN_BUCKETS
    from ._otel import configure_otel as configure_otel
    from ._otel import default_meter_provider as default_meter_provider
    from ._otel import default_tracer_provider as default_tracer_provider
    from ._otel import render_prometheus as render_prometheus
    from ._spans import LightTracer as LightTracer
    from ._spans import attach_span as attach_span
    from ._spans import detach_span as detach_span
    from ._spans import light_tracer as light_tracer

_LAZY: dict[str, str] = {
    "LOG_LEVELS": "_logging",
    "configure_logging": "_logging",
    "json_line_writer": "_logging",
    "mask_request_id": "_logging",
    "mask_secrets": "_logging",
    "reset_logging": "_logging",
    "scrub_secrets": "_logging",
    "scrub_text": "_logging",
    "CHUNK_BUCKETS": "_otel",
    "DURATION_BUCKETS": "_otel",
    "OVERHEAD_BUCKETS": "_otel",
    "SCOPE": "_otel",
    "TOKEN_BUCKETS": "_otel",
    "configure_otel": "_otel",
    "default_meter_provider": "_otel",
    "default_tracer_provider": "_otel",
    "render_prometheus": "_otel",
    "LightTracer": "_spans",
    "attach_span": "_spans",
    "detach_span": "_spans",
    "light_tracer": "_spans",
    "HistogramSeries": "_histograms",
    "SummedHistogram": "_histograms",
    "summed_histogram": "_histograms",
}

__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = sorted(_LAZY)
