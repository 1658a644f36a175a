"""The typed errors of onion.

Every error carries two texts: ``public_message``, safe to show an end user (no keys,
URLs, stack traces or upstream bodies), and ``detail`` (``str(error)``), for logs. The
server maps ``status``, ``code`` and ``param`` to the error body of the client's API
(OpenAI's for chat completions). A request the server refuses before it reaches the
stack (a bad body or key, a body too large) raises one of these too.

::

    OnionError
    ├── BadRequest              400  the request itself is wrong
    │   ├── ModelNotFound       404  no provider serves the model
    │   └── RequestTooLarge     413  the body is over the server's max_body_bytes
    ├── Unauthorized            401  no API key, or one the gateway does not know
    ├── GuardrailViolation      400  an input or output guard blocked the call
    ├── RateLimited             429  over a limit; carries retry_after
    │   └── BudgetExceeded      429  a spend budget is used up until its window resets
    ├── ProviderError           502  an upstream failed; status, retryable, retry_after
    │   │                            (an upstream 4xx keeps its status, type, code, param;
    │   │                            401/403 is 502 upstream_auth_failed; 429 is 429)
    │   ├── CircuitOpen         503  the breaker for that model is open
    │   └── AnswerTooLarge      502  the upstream's answer is over max_answer_bytes
    ├── SharedStateUnavailable  503  a store a layer needs (Redis) does not answer
    │   └── RateLimiterUnavailable 503  the rate limiter's store is down and it fails closed
    ├── ShuttingDown            503  the gateway stopped before the answer was complete
    ├── AllProvidersFailed      502  every model of a fallback chain failed
    ├── Timeout                 504  a deadline passed (phase: total, first_chunk, idle)
    └── ConfigError             --   a stack or config file is invalid (raised at build)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import anyio

__all__ = [
    "CANCELLED",
    "AllProvidersFailed",
    "AnswerTooLarge",
    "BadRequest",
    "BudgetExceeded",
    "CircuitOpen",
    "ConfigError",
    "GuardrailViolation",
    "ModelNotFound",
    "OnionError",
    "ProviderError",
    "RateLimited",
    "RateLimiterUnavailable",
    "RequestTooLarge",
    "SharedStateUnavailable",
    "ShuttingDown",
    "Timeout",
    "Unauthorized",
    "error_type",
    "outcome",
    "scrub",
]


class OnionError(Exception):
    """Base of every error onion raises on purpose.

    ``str(error)`` is the detail for logs; ``public_message`` is what a user may see.
    ``status`` and ``code`` say what the server answers; ``param`` names the request
    field at fault, when one is (``"model"``, ``"messages"``).
    """

    status: int = 500
    code: str = "internal_error"
    param: str | None = None
    default_public_message: str = "the request could not be completed"
    type: str | None = None
    """The error's ``type`` in OpenAI's error body; ``None``: derived from ``status``."""

    @property
    def should_retry(self) -> bool:
        """Whether the same request, sent again, may succeed (``x-should-retry``): false
        for the caller's own mistakes and refusals, true for overload and outages."""
        return self.status >= 500 or self.status in (408, 409, 429)

    def __init__(self, detail: str = "", *, public_message: str | None = None) -> None:
        super().__init__(detail or self.default_public_message)
        self.public_message = public_message or self.default_public_message

    @property
    def detail(self) -> str:
        """The internal description, for logs only."""
        return str(self)


class BadRequest(OnionError):
    """The request is malformed or asks for something onion cannot do.

    Raised by the server for a body it cannot decode (``code="invalid_json"``), a field
    that is missing or of the wrong type (``param`` names it), an unsupported value
    (``code="unsupported_value"``), or a client that went away while sending
    (``code="client_closed"``); and by layers for a request they cannot serve.
    """

    status = 400
    code = "invalid_request_error"
    default_public_message = "the request is invalid"

    def __init__(
        self,
        detail: str = "",
        *,
        public_message: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        # A bad request's explanation is about the caller's own input, so by default it is
        # safe to show them.
        super().__init__(detail, public_message=public_message or detail or None)
        self.param = param
        if code is not None:
            # One class, several machine-readable reasons: the instance names its case and
            # the class default stays for everyone else.
            self.code = code


class ModelNotFound(BadRequest):
    """No provider serves the requested model."""

    status = 404
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"the model {model!r} does not exist or is not served here", param="model")
        self.model = model


class RequestTooLarge(BadRequest):
    """The request body is larger than the server's ``max_body_bytes`` (``limit``):
    raised from its ``Content-Length`` before the body is read, or while reading it."""

    status = 413
    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes (the gateway's max_body_bytes)")
        self.limit = limit


class Unauthorized(OnionError):
    """The gateway requires an API key and the request sent none, or one it does not
    know. Raised by the server before the request reaches the stack."""

    status = 401
    code = "invalid_api_key"
    default_public_message = "incorrect API key provided"

    def __init__(self, detail: str = "") -> None:
        # The explanation is about the caller's own header, so it is safe to show them.
        super().__init__(detail, public_message=detail or None)


class GuardrailViolation(OnionError):
    """A guard blocked the request (``stage="input"``) or the answer (``"output"``)."""

    status = 400
    code = "guardrail_violation"

    def __init__(self, detail: str = "", *, stage: str, rule: str, public_message: str | None = None) -> None:
        public = public_message or (
            f"the request was blocked by the input guard ({rule})"
            if stage == "input"
            else f"the answer was blocked by the output guard ({rule})"
        )
        super().__init__(detail or public, public_message=public)
        self.stage = stage
        self.rule = rule


class RateLimited(OnionError):
    """A rate limit was exceeded; ``retry_after`` says when to try again (seconds)."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, detail: str = "", *, retry_after: float, limit: str = "requests") -> None:
        seconds = max(1, int(-(-retry_after // 1)))
        super().__init__(detail, public_message=f"too many requests, retry after {seconds} s")
        self.retry_after = retry_after
        self.limit = limit


class BudgetExceeded(RateLimited):
    """A spend budget (USD over a day or a month) has no room for the call's worst-case
    cost, or a stream was cut because its answer outgrew what was reserved for it.

    Raised by ``budget``. ``budget`` names the budget that refused (``"key"``,
    ``"team"`` or ``"global"``; ``"reservation"`` for a cut stream), ``resets_at`` is the
    Unix time its window resets and ``retry_after`` the seconds until then.
    """

    code = "budget_exceeded"

    def __init__(
        self,
        detail: str = "",
        *,
        budget: str,
        retry_after: float,
        resets_at: float,
        public_message: str | None = None,
    ) -> None:
        super().__init__(detail, retry_after=retry_after, limit="budget")
        seconds = max(1, int(-(-retry_after // 1)))
        self.public_message = public_message or f"the {budget} budget is used up; it resets in {seconds} s"
        self.budget = budget
        self.resets_at = resets_at


class ProviderError(OnionError):
    """An upstream call failed.

    ``upstream_status`` is the HTTP status the upstream answered with (``None`` for a
    connection error or a cut stream), ``retryable`` says whether trying again may help,
    ``retry_after`` is the upstream's ``Retry-After`` in seconds, if any. ``provider``
    is the configured provider's name, ``provider_kind`` the API it speaks (``openai``,
    ``anthropic``; ``gen_ai.provider.name`` in metrics and traces).

    The upstream's classification is kept, so the gateway stays transparent:
    ``upstream_type``, ``upstream_code`` and ``param`` are its error body's fields. An
    upstream 4xx is answered with its own status, type, code and param (a 400
    ``context_length_exceeded`` stays one, and no retry can fix it); a 401 or 403 (the
    gateway's own upstream key was refused) is a 502 ``upstream_auth_failed``; a 429 is a
    429 with the upstream's ``Retry-After``; a 503 or 529 (overloaded) keeps its status as
    ``upstream_overloaded`` with the upstream's ``Retry-After``; anything else is a 502
    ``upstream_error``.
    ``public_message`` is the upstream's message when it sent one, scrubbed (``scrub``).
    ``failure`` names the failure class when the status cannot (``"cut"`` for a stream
    ended early, ``"malformed"``, ``"connection"``; see ``onion.failure_class``).
    ``prefilled`` is true when the refused request carried an assistant prefix to
    continue (a stream resumed in ``auto`` mode, ``onion.ResumePrefix``): an upstream that
    rejects prefills answers such a request with a 400 it would not give the plain one.
    """

    status = 502
    code = "upstream_error"
    default_public_message = "the model provider failed to answer"
    prefilled = False

    def __init__(
        self,
        detail: str = "",
        *,
        upstream_status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        provider: str | None = None,
        model: str | None = None,
        public_message: str | None = None,
        provider_kind: str | None = None,
        upstream_type: str | None = None,
        upstream_code: str | None = None,
        param: str | None = None,
        failure: str | None = None,
    ) -> None:
        status, code, fixed, default = _upstream_class(upstream_status, upstream_code)
        super().__init__(detail, public_message=fixed or public_message or default)
        if status is not None:
            self.status, self.code = status, code
            if 400 <= status < 500 and upstream_type:
                self.type = upstream_type
        self.upstream_status = upstream_status
        self.upstream_type = upstream_type
        self.upstream_code = upstream_code
        self.param = param
        self.retryable = retryable
        self.retry_after = retry_after
        self.provider = provider
        self.model = model
        self.provider_kind = provider_kind
        # The failure class when the status alone does not tell it ("cut", "malformed",
        # "connection"); see ``onion.failure_class``.
        self.failure = failure

    @property
    def should_retry(self) -> bool:
        return self.retryable


_STATUS_CODES = {
    400: "invalid_request_error",
    404: "model_not_found",
    413: "request_too_large",
    422: "unprocessable_entity",
}


def _upstream_class(
    upstream_status: int | None, upstream_code: str | None
) -> tuple[int | None, str, str | None, str | None]:
    """The gateway's status and code for an upstream status, with the public message that
    replaces the upstream's (fixed) or stands in when it sent none (default)."""
    if upstream_status in (503, 529):
        # Overloaded (anyone's 503, Anthropic's 529): the status and its reason kept, so a
        # client backs off as against the provider (Anthropic's SDK knows 529 as such).
        return upstream_status, "upstream_overloaded", "the model provider is overloaded; retry later", None
    if upstream_status is None or upstream_status >= 500 or upstream_status < 400:
        return None, ProviderError.code, None, None
    if upstream_status in (401, 403):
        message = "the model provider refused the gateway's upstream credentials (a gateway configuration problem)"
        return 502, "upstream_auth_failed", message, None
    if upstream_status == 429:
        # Said as 429 (with its Retry-After) so clients back off as against the provider.
        default = "the model provider is rate limiting requests; retry later"
        return 429, upstream_code or "rate_limit_exceeded", None, default
    code = upstream_code or _STATUS_CODES.get(upstream_status, "invalid_request_error")
    return upstream_status, code, None, "the model provider refused the request"


class CircuitOpen(ProviderError):
    """The circuit breaker for a model is open: the call failed fast, nothing was sent."""

    status = 503
    code = "service_unavailable"
    default_public_message = "the model is temporarily unavailable"

    def __init__(self, detail: str = "", *, model: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(detail, retryable=False, retry_after=retry_after, model=model)

    @property
    def should_retry(self) -> bool:
        # Nothing was sent: after retry_after the breaker lets a trial through.
        return True


class AnswerTooLarge(ProviderError):
    """The upstream's answer passed the gateway's ``max_answer_bytes`` (``limit``); the
    call was cut rather than buffered."""

    code = "answer_too_large"
    default_public_message = "the model provider's answer was too large"

    def __init__(self, limit: int, *, provider: str | None = None, model: str | None = None) -> None:
        super().__init__(f"the upstream answer is larger than {limit} bytes", provider=provider, model=model)
        self.limit = limit


class SharedStateUnavailable(OnionError):
    """A store shared between gateway processes (Redis) did not answer in time or is
    skipped by its breaker, and the layer that needs it fails closed."""

    status = 503
    code = "service_unavailable"
    default_public_message = "a service the gateway depends on is unavailable; retry shortly"

    def __init__(self, detail: str = "", *, retry_after: float | None = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class RateLimiterUnavailable(SharedStateUnavailable):
    """The rate limiter cannot reach its store and is configured to fail closed: the
    caller is not over any limit (that would be a 429), the gateway cannot tell."""

    code = "rate_limiter_unavailable"
    default_public_message = "the rate limiter is unavailable; retry shortly"


class ShuttingDown(OnionError):
    """The gateway is stopping: a call still running after ``shutdown_grace_seconds``,
    or one that arrived during the drain, ends with this (a 503, or a stream's last event)."""

    status = 503
    code = "shutting_down"
    default_public_message = "the gateway is shutting down; retry the request"


class AllProvidersFailed(OnionError):
    """Every model of a fallback chain failed; ``causes`` holds each failure in order."""

    status = 502
    code = "upstream_error"
    default_public_message = "all model providers failed to answer"

    def __init__(self, causes: Sequence[BaseException], *, models: Sequence[str] = ()) -> None:
        parts = [f"{m}: {type(c).__name__}: {c}" for m, c in zip(models, causes, strict=False)] or [
            f"{type(c).__name__}: {c}" for c in causes
        ]
        super().__init__("all providers failed: " + "; ".join(parts))
        self.causes = list(causes)
        self.models = list(models)
        last = self.causes[-1] if self.causes else None
        if last is not None and all(_refused_request(c) for c in self.causes):
            # Every model refused the request itself (a 400 context_length_exceeded on each):
            # that is the answer's class, not an outage, and no retry fixes it.
            assert isinstance(last, ProviderError)
            self.status, self.code, self.type, self.param = last.status, last.code, last.type, last.param
            self.public_message = last.public_message

    @property
    def should_retry(self) -> bool:
        """True when any model's failure was one a retry may fix."""
        return any(getattr(c, "should_retry", True) for c in self.causes) if self.causes else True


def _refused_request(error: BaseException) -> bool:
    return isinstance(error, ProviderError) and 400 <= error.status < 500 and error.status != 429


class Timeout(OnionError):
    """A deadline passed. ``phase`` is ``"total"``, ``"first_chunk"``, ``"idle"`` or
    ``"answer"`` (a complete attempt's ``answer_seconds``)."""

    status = 504
    code = "timeout"

    def __init__(self, detail: str = "", *, phase: str = "total") -> None:
        super().__init__(detail or f"{phase} deadline exceeded", public_message="the model took too long to answer")
        self.phase = phase


class ConfigError(OnionError, ValueError):
    """A stack or configuration is invalid; the message names the table and the field.

    One error carries every problem found, so one run of ``onion check`` lists them all:
    ``problems`` holds one ``ConfigError`` per problem (``(self,)`` for a single one), each
    with its ``table`` (``"providers[1]"``, ``"stack[0]"``) and ``field`` when known, and
    ``str(error)`` is their messages, one a line.
    """

    code = "config_error"

    def __init__(
        self,
        detail: str = "",
        *,
        table: str | None = None,
        field: str | None = None,
        problems: Sequence[ConfigError] = (),
    ) -> None:
        flat = tuple(inner for problem in problems for inner in problem.problems)
        super().__init__(detail or "\n".join(map(str, flat)), public_message="the gateway is misconfigured")
        self.table = table
        self.field = field
        self.problems: tuple[ConfigError, ...] = flat or (self,)


# -- scrubbing upstream text ---------------------------------------------------------

# What must never leave the gateway in an upstream's message: URLs and hosts (with or
# without a scheme, IPs, ports), bearer tokens and credential assignments, key-shaped
# strings (sk-..., JWTs, long hex or base64 runs), e-mail addresses.
_SECRET = re.compile(
    r"""(?ix)
    \b[a-z][a-z0-9+.\-]*://\S+                                # any URL with a scheme
    | \b(?:bearer|basic)\s+\S+                                 # an Authorization value
    | \b(?:api[_-]?key|key|token|secret|password|passwd|pwd|auth(?:orization)?|credential|signature|sig)s?
      \b\s*[:=]\s*['"]?[^\s'",;]+                            # key=..., token: ...
    | \beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)?   # a JWT
    | \b(?:sk|pk|rk|ak|key|org|proj|sess|ghp|gho|xox[abp]|AKIA|AIza)[-_]?[A-Za-z0-9_\-*]{8,}
    | \b[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+\b                      # an e-mail address
    | \b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b                      # an IPv4 address
    | \[?\b[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}\]?(?::\d+)?      # an IPv6 address
    | \b(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+
      (?:com|net|org|io|ai|dev|app|cloud|internal|local|localhost|svc|cluster|azure|amazonaws|[a-z]{2})
      (?::\d+)?\b(?:/\S*)?                                     # a host name
    | \blocalhost(?::\d+)?\b
    | \b[A-Za-z0-9+/_\-]{32,}={0,2}                             # a long token
    """
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def scrub(text: str, limit: int = 300) -> str:
    """``text`` with URLs, hosts, addresses, keys and anything credential-shaped replaced
    by ``[redacted]``, control characters collapsed, at most ``limit`` characters: what
    may be shown to a caller of an upstream's error message."""
    text = _CONTROL.sub(" ", text[: limit * 4])
    return _SECRET.sub("[redacted]", text).strip()[:limit]


# -- classification, shared by metrics, traces and logs -------------------------------

CANCELLED = "cancelled"
"""Outcome (and ``error.type``) of a request whose caller went away or was cancelled."""


def _is_cancellation(error: BaseException) -> bool:
    return isinstance(error, (GeneratorExit, anyio.get_cancelled_exc_class()))


def outcome(error: BaseException | None) -> str:
    """How a request ended, in a few words: ``ok``, ``blocked``, ``rate_limited``,
    ``timeout``, ``error`` or ``cancelled``. Shared by metrics, traces and logs."""
    if error is None:
        return "ok"
    if isinstance(error, GuardrailViolation):
        return "blocked"
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, Timeout):
        return "timeout"
    if isinstance(error, OnionError):
        return "error"
    if _is_cancellation(error):
        return CANCELLED
    return "error"


def error_type(error: BaseException) -> str:
    """A low-cardinality ``error.type``: the upstream's HTTP status for provider errors
    (as the conventions' example ``500``), onion's error code for other onion errors,
    ``cancelled``, else the exception's qualified class name."""
    if isinstance(error, ProviderError) and error.upstream_status is not None:
        return str(error.upstream_status)
    if isinstance(error, OnionError):
        return error.code
    if _is_cancellation(error):
        return CANCELLED
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
