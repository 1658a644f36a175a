"""onion: production LLM calls as an explicit, testable stack of small middleware layers.

::

    from onion import Stack, Request, Message
    stack = Stack([outermost, ..., innermost], handler=provider)
    response = await stack(Request(model="gpt-4o", messages=[Message("user", "hi")]))

The providers (``OpenAIProvider``, ``AnthropicProvider``, ``SimulatedProvider``,
``Router``), the gateway's configuration (``load_config``, ``build_gateway``) and its
ASGI app (``create_app``, ``GatewayApp`` from ``onion.server``) are re-exported here too,
but loaded on first use: they pull in httpx and the server, which a stack in code may
not need. The JSON and Server-Sent Events of each HTTP API the server speaks live in
``onion.wire`` (``onion.wire.openai_chat``), apart from the HTTP plumbing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._aside import run_aside
from ._attempt import within
from ._clock import Clock, SystemClock, async_library, loop_clock, system_clock
from ._context import (
    Context,
    GuardFindings,
    PhaseLimits,
    RequestChain,
    RequestOptions,
    ResumeMode,
    ResumePrefix,
    SpanHook,
    TrimReport,
)
from ._failures import FAILURE_CLASSES, UPSTREAM_FAILURES, failure_class, failure_classes
from ._lazy import lazy_getattr
from ._operable import CacheSelector, Pingable, Purgeable
from ._policy import KeyPolicy
from ._registry import ENTRY_POINT_GROUP, available_layers, build_layer, resolve_import, resolve_layer
from ._response import Accumulator, AnswerEnd, EndCallback, Response
from ._stack import PROTOCOL_VERSION, CallNext, Handler, Layer, LayerInfo, Middleware, Order, Stack, layer_info
from ._tokens import (
    PER_MESSAGE_TOKENS,
    REPLY_PRIMING_TOKENS,
    BpeCounter,
    EstimateCounter,
    TokenCounter,
    counter_for,
    counter_named,
    input_tokens,
    message_tokens,
    prompt_tokens,
    register_counter,
)
from ._types import (
    Chunk,
    Completion,
    EmbeddingInput,
    Message,
    Request,
    Usage,
    decode_request,
    request_to_wire,
    usage_of,
)
from .errors import (
    CANCELLED,
    AllProvidersFailed,
    AnswerTooLarge,
    BadRequest,
    BudgetExceeded,
    CircuitOpen,
    ConfigError,
    GuardrailViolation,
    ModelNotFound,
    OnionError,
    ProviderError,
    RateLimited,
    RateLimiterUnavailable,
    RequestTooLarge,
    SharedStateUnavailable,
    ShuttingDown,
    Timeout,
    Unauthorized,
    error_type,
    outcome,
)

if TYPE_CHECKING:
    # Static twins of the lazy names below (``X as X`` marks a re-export).
    from ._keys import KeyResolver as KeyResolver
    from ._keys import KeyStore as KeyStore
    from ._redis import RedisClient as RedisClient
    from ._redis import RedisUnavailable as RedisUnavailable
    from .config import Gateway as Gateway
    from .config import GatewayConfig as GatewayConfig
    from .config import build_gateway as build_gateway
    from .config import default_config as default_config
    from .config import load_config as load_config
    from .providers import AnthropicProvider as AnthropicProvider
    from .providers import EjectionPolicy as EjectionPolicy
    from .providers import OpenAIProvider as OpenAIProvider
    from .providers import Router as Router
    from .providers import SimulatedProvider as SimulatedProvider
    from .providers import build_provider as build_provider
    from .server import GatewayApp as GatewayApp
    from .server import create_app as create_app

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Gateway": "config",
    "GatewayConfig": "config",
    "build_gateway": "config",
    "default_config": "config",
    "load_config": "config",
    "AnthropicProvider": "providers",
    "EjectionPolicy": "providers",
    "OpenAIProvider": "providers",
    "Router": "providers",
    "SimulatedProvider": "providers",
    "build_provider": "providers",
    "KeyResolver": "_keys",
    "KeyStore": "_keys",
    "RedisClient": "_redis",
    "RedisUnavailable": "_redis",
    "GatewayApp": "server",
    "create_app": "server",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "CANCELLED",
    "ENTRY_POINT_GROUP",
    "PER_MESSAGE_TOKENS",
    "PROTOCOL_VERSION",
    "REPLY_PRIMING_TOKENS",
    "Accumulator",
    "AnswerEnd",
    "AllProvidersFailed",
    "AnswerTooLarge",
    "BadRequest",
    "BpeCounter",
    "BudgetExceeded",
    "CacheSelector",
    "CallNext",
    "Chunk",
    "CircuitOpen",
    "Completion",
    "Clock",
    "ConfigError",
    "Context",
    "EmbeddingInput",
    "EndCallback",
    "EstimateCounter",
    "GuardrailViolation",
    "KeyPolicy",
    "GuardFindings",
    "Handler",
    "Layer",
    "LayerInfo",
    "Message",
    "Middleware",
    "ModelNotFound",
    "OnionError",
    "Order",
    "FAILURE_CLASSES",
    "UPSTREAM_FAILURES",
    "PhaseLimits",
    "Pingable",
    "ProviderError",
    "Purgeable",
    "RateLimited",
    "RateLimiterUnavailable",
    "Request",
    "RequestChain",
    "RequestOptions",
    "RequestTooLarge",
    "ResumeMode",
    "ResumePrefix",
    "Response",
    "SharedStateUnavailable",
    "ShuttingDown",
    "Stack",
    "SpanHook",
    "SystemClock",
    "Timeout",
    "TrimReport",
    "TokenCounter",
    "Unauthorized",
    "Usage",
    "async_library",
    "available_layers",
    "build_layer",
    "counter_for",
    "counter_named",
    "decode_request",
    "error_type",
    "failure_class",
    "failure_classes",
    "input_tokens",
    "layer_info",
    "lazy_getattr",
    "loop_clock",
    "message_tokens",
    "outcome",
    "prompt_tokens",
    "register_counter",
    "request_to_wire",
    "usage_of",
    "resolve_import",
    "resolve_layer",
    "run_aside",
    "system_clock",
    "within",
    *_LAZY,
]
