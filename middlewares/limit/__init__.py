"""Limits: what a caller may spend, checked before anything is sent upstream.

``rate_limit`` (requests and tokens per window) and its backends (memory, Redis);
``budget`` (USD per key, team and global, reserved before the call and settled after)
and its stores (memory, SQLite, Redis).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onion import lazy_getattr

if TYPE_CHECKING:
    # Static twins of the lazy names below (``X as X`` marks a re-export).
    from .budget import Budget as Budget
    from .budget import SpendRecord as SpendRecord
    from .budget_stores import BudgetStore as BudgetStore
    from .budget_stores import MemoryBudgetStore as MemoryBudgetStore
    from .budget_stores import RedisBudgetStore as RedisBudgetStore
    from .budget_stores import SQLiteBudgetStore as SQLiteBudgetStore
    from .rate_backends import MemoryBackend as MemoryBackend
    from .rate_backends import RateBackend as RateBackend
    from .rate_backends import RedisBackend as RedisBackend
    from .rate_limit import RateLimit as RateLimit

_EXPORTS: dict[str, tuple[str, ...]] = {
    "rate_limit": ("RateLimit",),
    "rate_backends": ("MemoryBackend", "RateBackend", "RedisBackend"),
    "budget": ("Budget", "SpendRecord"),
    "budget_stores": ("BudgetStore", "MemoryBudgetStore", "RedisBudgetStore", "SQLiteBudgetStore"),
}

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)

__getattr__ = lazy_getattr(__name__, _MODULE_OF, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
