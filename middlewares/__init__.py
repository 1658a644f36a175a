"""The built-in layers of onion, grouped in families, one layer class per module.

They import only onion's public API, exactly as a third-party layer would. Each is
registered under a short name in the ``onion.middlewares`` entry-point group, so a TOML
stack names them as ``use = "retry"``; in code, import them from here (or from their
family)::

    from middlewares import Deadline, ExactCache, Fallback, InputGuard, Retry

Names are resolved on first use: ``import middlewares`` does not load numpy,
OpenTelemetry or Redis until a layer that needs them is touched.

The families, and each layer's short name (TOML ``use``) and class:

- ``resilience/``: ``timeout`` ``Deadline``, ``fallback`` ``Fallback``, ``retry``
  ``Retry``, ``circuit_breaker`` ``CircuitBreaker``, and stream ``resumption``;
- ``limit/``: ``rate_limit`` ``RateLimit`` (memory or Redis); ``budget`` ``Budget`` (memory, SQLite or Redis);
- ``guard/``: ``mask_errors`` ``MaskErrors``, ``input_guard`` ``InputGuard``,
  ``output_guard`` ``OutputGuard``, and the ``pii`` detectors;
- ``cache/``: ``exact_cache`` ``ExactCache``, ``semantic_cache`` ``SemanticCache``,
  their stores, embedders and vector index;
- ``context/``: ``trim_context`` ``TrimContext``;
- ``observe/``: ``metrics`` ``Metrics``, ``logging`` ``RequestLog``, ``tracing``
  ``Tracing``, and the price table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onion import lazy_getattr

from . import cache, context, guard, limit, observe, resilience

if TYPE_CHECKING:
    # Static twins of the lazy names below (``X as X`` marks a re-export).
    from .cache import CachePolicy as CachePolicy
    from .cache import CacheStats as CacheStats
    from .cache import CacheStore as CacheStore
    from .cache import Embedder as Embedder
    from .cache import EmbedderError as EmbedderError
    from .cache import ExactCache as ExactCache
    from .cache import HashedEmbedder as HashedEmbedder
    from .cache import Match as Match
    from .cache import MemoryStore as MemoryStore
    from .cache import NearestIndex as NearestIndex
    from .cache import OpenAIEmbedder as OpenAIEmbedder
    from .cache import RedisStore as RedisStore
    from .cache import SemanticCache as SemanticCache
    from .cache import SemanticStats as SemanticStats
    from .cache import SentenceTransformerEmbedder as SentenceTransformerEmbedder
    from .cache import UsearchIndex as UsearchIndex
    from .cache import VectorIndex as VectorIndex
    from .cache import make_index as make_index
    from .cache import request_key as request_key
    from .context import CONTEXT_WINDOWS as CONTEXT_WINDOWS
    from .context import TrimContext as TrimContext
    from .guard import DETECTORS as DETECTORS
    from .guard import INJECTION_PATTERNS as INJECTION_PATTERNS
    from .guard import CardDetector as CardDetector
    from .guard import Detector as Detector
    from .guard import EmailDetector as EmailDetector
    from .guard import IbanDetector as IbanDetector
    from .guard import InputGuard as InputGuard
    from .guard import MaskErrors as MaskErrors
    from .guard import MyNumberDetector as MyNumberDetector
    from .guard import OutputGuard as OutputGuard
    from .guard import PatternDetector as PatternDetector
    from .guard import PhoneDetector as PhoneDetector
    from .guard import Rule as Rule
    from .guard import RuleSpec as RuleSpec
    from .guard import Scanner as Scanner
    from .guard import SecretDetector as SecretDetector
    from .guard import mask as mask
    from .limit import Budget as Budget
    from .limit import BudgetStore as BudgetStore
    from .limit import MemoryBackend as MemoryBackend
    from .limit import MemoryBudgetStore as MemoryBudgetStore
    from .limit import RateBackend as RateBackend
    from .limit import RateLimit as RateLimit
    from .limit import RedisBackend as RedisBackend
    from .limit import RedisBudgetStore as RedisBudgetStore
    from .limit import SpendRecord as SpendRecord
    from .limit import SQLiteBudgetStore as SQLiteBudgetStore
    from .observe import DEFAULT_PRICES as DEFAULT_PRICES
    from .observe import OVERHEAD_HEADER as OVERHEAD_HEADER
    from .observe import Metrics as Metrics
    from .observe import Price as Price
    from .observe import PriceTable as PriceTable
    from .observe import RequestLog as RequestLog
    from .observe import Tracing as Tracing
    from .observe import default_prices as default_prices
    from .observe import pii_redactor as pii_redactor
    from .resilience import BreakerPolicy as BreakerPolicy
    from .resilience import BreakerState as BreakerState
    from .resilience import CircuitBreaker as CircuitBreaker
    from .resilience import Deadline as Deadline
    from .resilience import Fallback as Fallback
    from .resilience import FallbackPolicy as FallbackPolicy
    from .resilience import Retry as Retry
    from .resilience import RetryBudget as RetryBudget
    from .resilience import RetryPolicy as RetryPolicy

# Each family declares what it exports; a name resolves to its family's module.
_FAMILIES = (resilience, limit, guard, cache, context, observe)
_MODULE_OF = {
    name: f"{family.__name__.rpartition('.')[2]}.{module}"
    for family in _FAMILIES
    for name, module in family._MODULE_OF.items()
}

__all__ = sorted(_MODULE_OF)

__getattr__ = lazy_getattr(__name__, _MODULE_OF, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
