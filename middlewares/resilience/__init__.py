"""Resilience: the layers that keep a call alive when an upstream fails.

In the order a request meets them in the recommended stack::

    timeout ─▶ fallback ─▶ retry ─▶ circuit_breaker ─▶ provider

``resumption`` holds what ``retry`` and ``fallback`` share to recover a stream
after its first chunk went out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onion import lazy_getattr

if TYPE_CHECKING:
    # Static twins of the lazy names below (``X as X`` marks a re-export).
    from .circuit_breaker import BreakerPolicy as BreakerPolicy
    from .circuit_breaker import BreakerState as BreakerState
    from .circuit_breaker import CircuitBreaker as CircuitBreaker
    from .fallback import Fallback as Fallback
    from .fallback import FallbackPolicy as FallbackPolicy
    from .retry import Retry as Retry
    from .retry import RetryBudget as RetryBudget
    from .retry import RetryPolicy as RetryPolicy
    from .timeout import Deadline as Deadline

_EXPORTS: dict[str, tuple[str, ...]] = {
    "timeout": ("Deadline",),
    "fallback": ("Fallback", "FallbackPolicy"),
    "retry": ("Retry", "RetryBudget", "RetryPolicy"),
    "circuit_breaker": ("BreakerPolicy", "BreakerState", "CircuitBreaker"),
}

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)

__getattr__ = lazy_getattr(__name__, _MODULE_OF, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
