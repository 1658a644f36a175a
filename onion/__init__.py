"""onion: production LLM calls as an explicit, testable stack of small middleware layers.

::

    from onion import Stack, Request, Message
    stack = Stack([outermost, ..., innermost], handler=provider)
    response = await stack(Request(model="gpt-4o", messages=[Message("user", "hi")]))
"""

from ._clock import Clock, SystemClock, system_clock
from ._registry import ENTRY_POINT_GROUP, available_layers, build_layer, resolve_layer
from ._response import Accumulator, EndCallback, Response
from ._stack import PROTOCOL_VERSION, CallNext, Handler, Layer, LayerInfo, Middleware, Order, Stack, layer_info
from ._types import Chunk, Completion, Context, Message, Request, Usage, decode_request, request_to_wire
from .errors import (
    AllProvidersFailed,
    BadRequest,
    CircuitOpen,
    ConfigError,
    GuardrailViolation,
    ModelNotFound,
    OnionError,
    ProviderError,
    RateLimited,
    Timeout,
)

__version__ = "0.1.0"

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROTOCOL_VERSION",
    "Accumulator",
    "AllProvidersFailed",
    "BadRequest",
    "CallNext",
    "Chunk",
    "CircuitOpen",
    "Completion",
    "Clock",
    "ConfigError",
    "Context",
    "EndCallback",
    "GuardrailViolation",
    "Handler",
    "Layer",
    "LayerInfo",
    "Message",
    "Middleware",
    "ModelNotFound",
    "OnionError",
    "Order",
    "ProviderError",
    "RateLimited",
    "Request",
    "Response",
    "Stack",
    "SystemClock",
    "Timeout",
    "Usage",
    "available_layers",
    "build_layer",
    "decode_request",
    "layer_info",
    "request_to_wire",
    "resolve_layer",
    "system_clock",
]
