"""Child spans for the layers that do work (cache lookups, guards), opened only when a
``Tracing`` layer runs outside them: without one, no OpenTelemetry module is imported
and the cost is one dictionary lookup."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from onion import Request

_STATE_KEY = "tracing"  # where middlewares.tracing keeps the request span


def work_span(request: Request, name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """``middlewares.tracing.layer_span`` when the request is traced, else a context that
    yields ``None``."""
    if _STATE_KEY not in request.context.state:
        return nullcontext(None)
    from .tracing import layer_span

    return layer_span(request, name, attributes)
