"""The per-request resilience chain, taken off a request at the edge.

A caller may name its own fallback chain and retry count: in the body, as the extension
fields ``"fallbacks": ["m2", "m3"]`` and ``"retries": 1``, or as the headers
``x-onion-fallbacks: m2, m3`` and ``x-onion-retries: 1`` (the body wins). They go on
``context.chain`` (``RequestChain``) and are removed from the request, so they are never
sent upstream; ``fallback`` and ``retry`` honour them within their allowlists.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from .._context import RequestChain
from .._types import Request
from ..errors import BadRequest

__all__ = ["take_chain"]

_FALLBACKS = b"x-onion-fallbacks"
_RETRIES = b"x-onion-retries"
_MAX_FALLBACKS = 16


def take_chain(request: Request, headers: Iterable[tuple[bytes, bytes]]) -> Request:
    """``request`` without the chain extension fields, its chain on ``context.chain``."""
    extra = request.extra
    fallbacks: object = None
    retries: object = None
    for name, value in headers:
        if name == _FALLBACKS:
            fallbacks = [part.strip() for part in value.decode("latin-1").split(",") if part.strip()]
        elif name == _RETRIES:
            text = value.decode("latin-1").strip()
            retries = int(text) if text.isdigit() else text
    if "fallbacks" in extra or "retries" in extra:
        fallbacks = extra.get("fallbacks", fallbacks)
        retries = extra.get("retries", retries)
        rest = {key: value for key, value in extra.items() if key not in ("fallbacks", "retries")}
        request = msgspec.structs.replace(request, extra=rest)
    if fallbacks is None and retries is None:
        return request
    if fallbacks is not None and (
        not isinstance(fallbacks, list)
        or len(fallbacks) > _MAX_FALLBACKS
        or not all(isinstance(model, str) and model for model in fallbacks)
    ):
        raise BadRequest(f"fallbacks must be a list of at most {_MAX_FALLBACKS} model names", param="fallbacks")
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool) or retries < 0):
        raise BadRequest("retries must be a whole number, 0 or more", param="retries")
    request.context.chain = RequestChain(None if fallbacks is None else tuple(fallbacks), retries)
    return request
