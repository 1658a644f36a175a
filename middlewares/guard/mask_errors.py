"""``mask_errors``: nothing but a safe message ever leaves the gateway.

Usually the outermost layer. Every exception raised below it, before the answer or in
the middle of a stream, is logged with its details (type, internal message, traceback
for unexpected ones, request id) and replaced by an error that carries only what a user
may see:

- an ``OnionError`` keeps its class, status, code and safe fields (``retry_after``,
  ``phase``, ``stage``, ``rule``, ``param``, ``upstream_status``, ``retryable``), but its
  detail becomes its public message plus the request id (a ``RateLimited`` keeps
  "too many requests, retry after N s"); upstream causes and tracebacks are dropped;
- anything else becomes a plain ``OnionError`` ("the request could not be completed
  (request id …)").

The server maps the masked errors to HTTP statuses (429, 400, 502, 503, 504) and, in a
stream, to an SSE error event. Public messages are scrubbed once more for anything that
looks like a URL or a key, in case a layer put one there by mistake.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator

import structlog

from onion import CallNext, Chunk, Layer, OnionError, RateLimited, Request, Response

__all__ = ["MaskErrors", "mask"]

_log = structlog.get_logger("onion.errors")

# Safe attributes copied onto the masked error (the rest, like causes, stay behind).
_SAFE_FIELDS = (
    "retry_after",
    "limit",
    "phase",
    "stage",
    "rule",
    "param",
    "upstream_status",
    "retryable",
    "status",
    # The class and reason an upstream gave (issue 14): what a client needs to act on it.
    "code",
    "type",
    "upstream_type",
    "upstream_code",
)
# URLs, bearer tokens and key-like strings (sk-..., long hex/base64 runs).
_SECRET = re.compile(
    r"(?i)\b(?:https?|redis|wss?)://\S+|\bbearer\s+\S+|\b(?:sk|pk|rk|key)[-_][A-Za-z0-9_\-]{8,}|\b[A-Za-z0-9+/_\-]{32,}"
)


def _scrub(text: str) -> str:
    return _SECRET.sub("[redacted]", text)


def mask(error: BaseException, request_id: str) -> OnionError:
    """The safe twin of ``error`` (see the module docstring)."""
    if isinstance(error, OnionError):
        public = _scrub(error.public_message)
        if not isinstance(error, RateLimited):
            public = f"{public} (request id {request_id})"
        masked = type(error).__new__(type(error))
        Exception.__init__(masked, public)
        masked.public_message = public
        for field in _SAFE_FIELDS:
            if field in error.__dict__:
                setattr(masked, field, error.__dict__[field])
        # Fields a subclass's public interface promises, emptied of internal detail.
        for field, empty in (("causes", []), ("models", []), ("provider", None), ("model", None)):
            if hasattr(error, field):
                setattr(masked, field, empty)
        return masked
    public = f"the request could not be completed (request id {request_id})"
    return OnionError(public, public_message=public)


class MaskErrors(Layer):
    """Replace every error from below with its safe twin, logging the original."""

    name = "mask_errors"
    provides = frozenset({"mask_errors"})

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        try:
            response = await call_next(request)
        except Exception as error:
            raise self._masked(error, request) from None
        if response.is_stream:
            response.wrap(lambda chunks: self._guard(chunks, request))
        return response

    def _masked(self, error: Exception, request: Request) -> OnionError:
        request_id = request.context.request_id
        if isinstance(error, OnionError):
            # Expected failures: the detail, never a traceback, at warning level.
            _log.warning(
                "request failed",
                request_id=request_id,
                error=type(error).__name__,
                status=error.status,
                detail=error.detail,
            )
        else:
            _log.error("unexpected error", request_id=request_id, error=type(error).__name__, exc_info=error)
        return mask(error, request_id)

    async def _guard(self, source: AsyncIterator[Chunk], request: Request) -> AsyncGenerator[Chunk, None]:
        try:
            async for chunk in source:
                yield chunk
        except Exception as error:
            raise self._masked(error, request) from None
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
