"""Context: what the model is sent, shaped to fit.

``trim_context`` keeps the history within a token budget (the token counters are
onion's own: ``onion.counter_for``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onion import lazy_getattr

if TYPE_CHECKING:
    # Static twins of the lazy names below (``X as X`` marks a re-export).
    from .trim import CONTEXT_WINDOWS as CONTEXT_WINDOWS
    from .trim import TrimContext as TrimContext

_EXPORTS: dict[str, tuple[str, ...]] = {
    "trim": ("CONTEXT_WINDOWS", "TrimContext"),
}

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)

__getattr__ = lazy_getattr(__name__, _MODULE_OF, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
