"""Failure classes: the one vocabulary in which ``retry``, ``fallback`` and
``circuit_breaker`` say what they act on.

An error is sorted into exactly one class by ``failure_class(error)``. The classes name
what went wrong as a caller would put it, not which exception carried it:

=================  ==============================================================
``rate_limited``   the upstream answered 429
``server_error``   the upstream answered 5xx
``connection``     no answer: refused, reset, DNS, a socket read timeout
``cut``            a stream ended before its end marker (a dropped connection)
``malformed``      an undecodable body or SSE event (handled as a cut: resumed)
``first_chunk``    an attempt stayed silent past its first-chunk limit
``idle``           a stream stalled past its idle limit
``timeout``        a deadline (``timeout.seconds``) or an attempt's ``answer_seconds`` passed
``circuit_open``   the breaker refused the call (nothing was sent)
``context_length`` the upstream refused a prompt too long for its window (400)
``content_filter`` the upstream's safety filter refused the request (400)
``invalid_request`` any other upstream 4xx (the request is wrong for that model)
``upstream_auth``  the upstream refused the gateway's credentials (401/403)
``caller``         the caller's own error (bad request, guard block, rate limit)
``internal``       anything else (a bug): never retried, never a fallback
=================  ==============================================================
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import AllProvidersFailed, CircuitOpen, ConfigError, OnionError, ProviderError, Timeout

__all__ = ["FAILURE_CLASSES", "UPSTREAM_FAILURES", "failure_class", "failure_classes"]

UPSTREAM_FAILURES = frozenset(
    {"rate_limited", "server_error", "connection", "cut", "malformed", "first_chunk", "idle", "timeout"}
)
"""The upstream's transient failures: what ``retry`` retries by default, and the core of
what ``fallback`` and ``circuit_breaker`` act on (each adds its own classes to it)."""

FAILURE_CLASSES = UPSTREAM_FAILURES | {
    "circuit_open",
    "context_length",
    "content_filter",
    "invalid_request",
    "upstream_auth",
    "caller",
    "internal",
}
"""Every class ``failure_class`` can return."""

_TIMEOUT_CLASSES = {"first_chunk": "first_chunk", "idle": "idle"}


def failure_class(error: BaseException) -> str:
    """The class of ``error`` (one of ``FAILURE_CLASSES``)."""
    if isinstance(error, ProviderError):
        return _provider_class(error)
    if isinstance(error, Timeout):
        return _TIMEOUT_CLASSES.get(error.phase, "timeout")
    if isinstance(error, AllProvidersFailed):
        return failure_class(error.causes[-1]) if error.causes else "internal"
    if isinstance(error, OnionError):
        return "caller"
    return "internal"


def _provider_class(error: ProviderError) -> str:
    if isinstance(error, CircuitOpen):
        return "circuit_open"
    if error.failure is not None:
        return error.failure
    status = error.upstream_status
    if status is None:
        return "connection" if error.retryable else "malformed"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    if status in (401, 403):
        return "upstream_auth"
    said = f"{error.upstream_code or ''} {error.upstream_type or ''}".lower()
    if "context_length" in said or "context_window" in said:
        return "context_length"
    if "content_filter" in said or "content_policy" in said or "safety" in said:
        return "content_filter"
    return "invalid_request"


def failure_classes(names: Iterable[str], field: str) -> frozenset[str]:
    """``names`` checked against ``FAILURE_CLASSES``; a ``ConfigError`` naming ``field``
    and the unknown class otherwise."""
    chosen = frozenset(names)
    unknown = sorted(chosen - FAILURE_CLASSES)
    if unknown:
        raise ConfigError(
            f"{field}: unknown failure class {unknown[0]!r} (known: {', '.join(sorted(FAILURE_CLASSES))})",
            field=field,
        )
    return chosen
