"""The built-in layers of onion, one concern per module.

They import only onion's public API, exactly as a third-party layer would. Each is
registered under a short name in the ``onion.middlewares`` entry-point group, so a TOML
stack names them as ``use = "retry"``; in code, import them from here::

    from middlewares import Deadline, ExactCache, Fallback, InputGuard, Retry

``normalize`` (the text folding the input guard matches against) stays in its module,
``middlewares.normalize.normalize``, since a name cannot be both a module and a function.

Names are resolved on first use: ``import middlewares`` does not load numpy,
OpenTelemetry or Redis until a layer that needs them is touched.

Short name (TOML ``use``) and class:

- ``timeout`` ``Deadline``: total, first-chunk and idle deadlines;
- ``retry`` ``Retry``: backoff with full jitter, a retry budget, stream resumption;
- ``circuit_breaker`` ``CircuitBreaker``: per-model breaker over a sliding window;
- ``fallback`` ``Fallback``: a chain of models in priority order;
- ``rate_limit`` ``RateLimit``: requests and tokens per caller (memory or Redis);
- ``mask_errors`` ``MaskErrors``: only safe, public errors reach the caller;
- ``exact_cache`` ``ExactCache``: canonical-key cache (memory or Redis);
- ``semantic_cache`` ``SemanticCache``: embedding-similarity cache (numpy);
- ``input_guard`` ``InputGuard``: length, prompt injection (English, Japanese), rules;
- ``output_guard`` ``OutputGuard``: PII and secrets, blocked or redacted, streamed;
- ``trim_context`` ``TrimContext``: keeps the history within a token budget;
- ``metrics`` ``Metrics``: OpenTelemetry GenAI metrics, overhead and cost;
- ``tracing`` ``Tracing``: OpenTelemetry spans per request and per attempt;
- ``logging`` ``RequestLog``: one structlog line per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onion._lazy import lazy_getattr

if TYPE_CHECKING:
    # Static twins of the lazy names below (``X as X`` marks a re-export).
    from ._otel import configure_otel as configure_otel
    from ._otel import render_prometheus as render_prometheus
    from .cache_store import CacheStats as CacheStats
    from .cache_store import CacheStore as CacheStore
    from .cache_store import MemoryStore as MemoryStore
    from .cache_store import RedisStore as RedisStore
    from .circuit_breaker import BreakerPolicy as BreakerPolicy
    from .circuit_breaker import BreakerState as BreakerState
    from .circuit_breaker import CircuitBreaker as CircuitBreaker
    from .embedders import Embedder as Embedder
    from .embedders import EmbedderError as EmbedderError
    from .embedders import HashedEmbedder as HashedEmbedder
    from .embedders import OpenAIEmbedder as OpenAIEmbedder
    from .embedders import SentenceTransformerEmbedder as SentenceTransformerEmbedder
    from .exact_cache import CachePolicy as CachePolicy
    from .exact_cache import ExactCache as ExactCache
    from .exact_cache import request_key as request_key
    from .fallback import Fallback as Fallback
    from .fallback import FallbackPolicy as FallbackPolicy
    from .input_guard import INJECTION_PATTERNS as INJECTION_PATTERNS
    from .input_guard import InputGuard as InputGuard
    from .input_guard import Rule as Rule
    from .input_guard import RuleSpec as RuleSpec
    from .logs import RequestLog as RequestLog
    from .logs import configure_logging as configure_logging
    from .logs import pii_redactor as pii_redactor
    from .logs import reset_logging as reset_logging
    from .logs import scrub_secrets as scrub_secrets
    from .mask_errors import MaskErrors as MaskErrors
    from .mask_errors import mask as mask
    from .metrics import OVERHEAD_HEADER as OVERHEAD_HEADER
    from .metrics import Metrics as Metrics
    from .output_guard import OutputGuard as OutputGuard
    from .output_guard import Scanner as Scanner
    from .pii import DETECTORS as DETECTORS
    from .pii import CardDetector as CardDetector
    from .pii import Detector as Detector
    from .pii import EmailDetector as EmailDetector
    from .pii import IbanDetector as IbanDetector
    from .pii import MyNumberDetector as MyNumberDetector
    from .pii import PatternDetector as PatternDetector
    from .pii import PhoneDetector as PhoneDetector
    from .pii import SecretDetector as SecretDetector
    from .prices import DEFAULT_PRICES as DEFAULT_PRICES
    from .prices import Price as Price
    from .prices import PriceTable as PriceTable
    from .prices import default_prices as default_prices
    from .rate_limit import MemoryBackend as MemoryBackend
    from .rate_limit import RateBackend as RateBackend
    from .rate_limit import RateLimit as RateLimit
    from .rate_limit import RedisBackend as RedisBackend
    from .retry import Retry as Retry
    from .retry import RetryBudget as RetryBudget
    from .retry import RetryPolicy as RetryPolicy
    from .semantic_cache import SemanticCache as SemanticCache
    from .semantic_cache import SemanticStats as SemanticStats
    from .timeout import Deadline as Deadline
    from .tokens import BpeCounter as BpeCounter
    from .tokens import EstimateCounter as EstimateCounter
    from .tokens import TokenCounter as TokenCounter
    from .tokens import counter_for as counter_for
    from .tokens import register_counter as register_counter
    from .tracing import Tracing as Tracing
    from .tracing import layer_span as layer_span
    from .tracing import request_span as request_span
    from .trim_context import CONTEXT_WINDOWS as CONTEXT_WINDOWS
    from .trim_context import TrimContext as TrimContext
    from .vector_index import Match as Match
    from .vector_index import NearestIndex as NearestIndex
    from .vector_index import UsearchIndex as UsearchIndex
    from .vector_index import VectorIndex as VectorIndex
    from .vector_index import make_index as make_index

_EXPORTS: dict[str, tuple[str, ...]] = {
    "timeout": ("Deadline",),
    "retry": ("Retry", "RetryBudget", "RetryPolicy"),
    "circuit_breaker": ("BreakerPolicy", "BreakerState", "CircuitBreaker"),
    "fallback": ("Fallback", "FallbackPolicy"),
    "rate_limit": ("MemoryBackend", "RateBackend", "RateLimit", "RedisBackend"),
    "mask_errors": ("MaskErrors", "mask"),
    "exact_cache": ("CachePolicy", "ExactCache", "request_key"),
    "cache_store": ("CacheStats", "CacheStore", "MemoryStore", "RedisStore"),
    "embedders": ("Embedder", "EmbedderError", "HashedEmbedder", "OpenAIEmbedder", "SentenceTransformerEmbedder"),
    "vector_index": ("Match", "NearestIndex", "UsearchIndex", "VectorIndex", "make_index"),
    "semantic_cache": ("SemanticCache", "SemanticStats"),
    "input_guard": ("INJECTION_PATTERNS", "InputGuard", "Rule", "RuleSpec"),
    "output_guard": ("OutputGuard", "Scanner"),
    "pii": (
        "DETECTORS",
        "CardDetector",
        "Detector",
        "EmailDetector",
        "IbanDetector",
        "MyNumberDetector",
        "PatternDetector",
        "PhoneDetector",
        "SecretDetector",
    ),
    "trim_context": ("CONTEXT_WINDOWS", "TrimContext"),
    "tokens": ("BpeCounter", "EstimateCounter", "TokenCounter", "counter_for", "register_counter"),
    "metrics": ("OVERHEAD_HEADER", "Metrics"),
    "tracing": ("Tracing", "layer_span", "request_span"),
    "logs": ("RequestLog", "configure_logging", "pii_redactor", "reset_logging", "scrub_secrets"),
    "prices": ("DEFAULT_PRICES", "Price", "PriceTable", "default_prices"),
    "_otel": ("configure_otel", "render_prometheus"),
}

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


__getattr__ = lazy_getattr(__name__, _MODULE_OF, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
