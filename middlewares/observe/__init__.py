"""Observation: metrics, traces and logs of every request, and what it cost.

Usually outermost, in this order::

    metrics ─▶ logging ─▶ tracing ─▶ … ─▶ provider

``prices`` is the price table the metrics and the log line count cost with. The
process-wide set-up (OpenTelemetry providers, Prometheus, structlog) lives in the
core, ``onion.telemetry``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onion import lazy_getattr

if TYPE_CHECKING:
    # Static twins of the lazy names below (``X as X`` marks a re-export).
    from .metrics import OVERHEAD_HEADER as OVERHEAD_HEADER
    from .metrics import Metrics as Metrics
    from .prices import DEFAULT_PRICES as DEFAULT_PRICES
    from .prices import Price as Price
    from .prices import PriceTable as PriceTable
    from .prices import default_prices as default_prices
    from .request_log import RequestLog as RequestLog
    from .request_log import pii_redactor as pii_redactor
    from .tracing import Tracing as Tracing

_EXPORTS: dict[str, tuple[str, ...]] = {
    "metrics": ("OVERHEAD_HEADER", "Metrics"),
    "request_log": ("RequestLog", "pii_redactor"),
    "tracing": ("Tracing",),
    "prices": ("DEFAULT_PRICES", "Price", "PriceTable", "default_prices"),
}

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)

__getattr__ = lazy_getattr(__name__, _MODULE_OF, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
