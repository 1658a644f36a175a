"""Guards: what may go in and what may come out.

In the order a request meets them::

    mask_errors ─▶ input_guard ─▶ … caches … ─▶ output_guard ─▶ … ─▶ provider

``normalize`` (the text folding the input guard matches against) and ``pii`` (the
output guard's detectors) are what the two guards are built from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onion import lazy_getattr

if TYPE_CHECKING:
    # Static twins of the lazy names below (``X as X`` marks a re-export).
    from .input import INJECTION_PATTERNS as INJECTION_PATTERNS
    from .input import InputGuard as InputGuard
    from .input import Rule as Rule
    from .input import RuleSpec as RuleSpec
    from .mask_errors import MaskErrors as MaskErrors
    from .mask_errors import mask as mask
    from .output import OutputGuard as OutputGuard
    from .output import Scanner as Scanner
    from .pii import DETECTORS as DETECTORS
    from .pii import CardDetector as CardDetector
    from .pii import Detector as Detector
    from .pii import EmailDetector as EmailDetector
    from .pii import IbanDetector as IbanDetector
    from .pii import MyNumberDetector as MyNumberDetector
    from .pii import PatternDetector as PatternDetector
    from .pii import PhoneDetector as PhoneDetector
    from .pii import SecretDetector as SecretDetector

_EXPORTS: dict[str, tuple[str, ...]] = {
    "mask_errors": ("MaskErrors", "mask"),
    "input": ("INJECTION_PATTERNS", "InputGuard", "Rule", "RuleSpec"),
    "output": ("OutputGuard", "Scanner"),
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
}

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)

__getattr__ = lazy_getattr(__name__, _MODULE_OF, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
