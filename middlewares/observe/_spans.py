"""Child spans for the layers that do work (cache lookups, guards), opened only when a
``Tracing`` layer runs outside them: without one, no OpenTelemetry module is imported
and the cost is one dictionary lookup."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from onion import Request

_STATE_KEY = "tracing"  # where middlewares.observe.tracing keeps the request span


# Reusable: the untraced path allocates nothing per call.
_UNTRACED: AbstractContextManager[Any] = nullcontext(None)


def work_span(request: Request, name: str, layer: str, *, stream: bool = False) -> AbstractContextManager[Any]:
    """``middlewares.observe.tracing.layer_span`` named ``name`` with ``onion.layer = layer`` (and
    ``onion.stream``) when the request is traced, else a context that yields ``None``."""
    if _STATE_KEY not in request.context.state:
        return _UNTRACED
    from .tracing import layer_span

    attributes: dict[str, Any] = {"onion.layer": layer}
    if stream:
        attributes["onion.stream"] = True
    return layer_span(request, name, attributes)
