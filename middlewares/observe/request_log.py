"""``logging``: one structured log line per request.

``RequestLog`` writes, when a request ends (at the end of the stream for a streamed
answer), one event ``request`` with: request id, caller, model (asked and answered),
``served_by``, stream, tokens, latency (and time to first chunk), estimated cost, the
budget headroom (``budget_remaining_usd``, when a ``budget`` layer inside set it), the team,
outcome, and the error type on failure. Expected refusals (blocked, rate limited) are
info; failures are warnings and carry the error's detail for operators. Placed
outermost it logs what callers saw; the reliability layers log their own warnings
(``falling back…``, retries) through the same structlog configuration.

Prompt and answer text are not logged unless ``log_content = true``; then they pass
through a redactor first: the output guard's detectors (``middlewares.guard.pii``: cards,
e-mails, phones, IBANs, secrets) when that module is present, else the ``redactor``
you name (``"package.module:function"``, ``str -> str``). Secrets never appear: the
``configure_logging`` processors blank fields named like keys and mask key-shaped
values in every event, from any layer.

Hot path: when the logger's level filters the line out, the layer passes the request
through untouched — nothing is measured, gathered or formatted. When the logger runs
``configure_logging``'s JSON chain, the line is rendered by
``onion.telemetry.json_line_writer`` (the same line, written by the same structlog output,
without walking the processor chain: a third of the layer's cost).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import structlog

from onion import (
    AnswerEnd,
    CallNext,
    Clock,
    ConfigError,
    Layer,
    OnionError,
    Request,
    Response,
    error_type,
    outcome,
    resolve_import,
)
from onion.telemetry import LOG_LEVELS, json_line_writer, mask_request_id, mask_secrets, scrub_text

from .prices import PriceTable

__all__ = ["RequestLog", "pii_redactor"]

# The line's fields whose values come from callers, upstreams or configuration (request
# id, caller, model, team, response model, fallback, guard flags, redactions, prompt,
# answer, detail) may hold a key: ``_fields`` masks each as it puts it in (``detail`` is
# scrubbed in full), so the writer scans none (``scan=()``). The others are numbers, flags
# and names onion chose (served_by, outcome, error_type, stream, tokens, latency, cost).
_SCANNED_BY_FIELDS: tuple[str, ...] = ()

_NAMES_MEMO = 1024
"""Distinct caller, team and model names a ``RequestLog`` keeps masked; later ones are
masked per line (callers choose these names: the memo is bounded)."""


def _milliseconds(seconds: float) -> float:
    """``round(seconds * 1000, 3)``, the same float, mostly without ``round``'s decimal
    conversion (a third of the line's fields' cost): the nearest integer number of
    microseconds, divided by 1000. Where the product lies within 0.49 of that integer, it
    is the correctly rounded one, and int / int is the float nearest the decimal, as
    ``round`` returns; near a tie, or out of range, ``round`` decides (a test compares
    the two)."""
    milliseconds = seconds * 1000
    micro = milliseconds * 1000
    if 0.0 < micro < 1e12:  # a negative or zero time (a signed zero) is left to round
        whole = round(micro)
        if -0.49 < micro - whole < 0.49:
            return whole / 1000
    return round(milliseconds, 3)


def pii_redactor() -> Callable[[str], str]:
    """A redactor from the output guard's detectors (``middlewares.guard.pii``), secrets
    masked too."""
    # Imported here: the log layer loads the detectors only when content is logged.
    from ..guard.pii import DETECTORS

    detectors = [cls() for cls in DETECTORS.values()]

    def redact(text: str) -> str:
        spans = sorted(
            (begin, end, detector.placeholder) for detector in detectors for begin, end in detector.find(text)
        )
        if not spans:
            return scrub_text(text)
        parts, position = [], 0
        for begin, end, placeholder in spans:
            if begin < position:
                continue  # overlapping matches: the earlier one already covers it
            parts += (text[position:begin], placeholder)
            position = end
        parts.append(text[position:])
        return scrub_text("".join(parts))

    return redact


def _load_redactor(redactor: Any) -> Callable[[str], str]:
    if callable(redactor):
        return redactor
    if isinstance(redactor, str):
        try:
            found = resolve_import(redactor)
        except ConfigError as error:
            raise ConfigError(f"redactor: {error}") from None
        if not callable(found):
            raise ConfigError(f"redactor {redactor!r} is not a function str -> str")
        return found
    return pii_redactor()


class RequestLog(Layer):
    """Logs one line per request (short name ``logging``).

    - ``logger``: a structlog logger (default ``structlog.get_logger("onion.request")``).
    - ``level``: level of the line for answered, blocked and rate-limited requests;
      failures are logged at ``warning``.
    - ``log_content``: also log the last prompt message and the answer, redacted and cut
      to ``content_max_chars``.
    - ``redactor``: ``"package.module:function"`` used when ``log_content`` is on
      (default: ``middlewares.guard.pii`` detectors, else secrets only).
    - ``prices`` / ``prices_file`` / ``default_prices``: the price table for ``cost_usd``.
    """

    name = "logging"
    provides = frozenset({"logging"})

    def __init__(
        self,
        *,
        logger: Any = None,
        level: str = "info",
        log_content: bool = False,
        content_max_chars: int = 2000,
        redactor: Any = None,
        prices: dict[str, Any] | None = None,
        prices_file: str | None = None,
        default_prices: bool = True,
        clock: Clock | None = None,
    ) -> None:
        if level not in LOG_LEVELS:
            raise ConfigError(f"level must be one of {sorted(LOG_LEVELS)}, not {level!r}")
        self._log = logger if logger is not None else structlog.get_logger("onion.request")
        self._bound: Any = None
        self._write: Callable[..., None] | None = None
        # (watching, routine, warning): whether the logger takes lines at the levels this
        # layer uses, known once the logger is one whose levels are fixed (the JSON short
        # cut's filtering logger); ``None`` until then, or for a logger asked each time.
        self._levels: tuple[bool, bool, bool] | None = None
        self.level = level
        self._level_number = LOG_LEVELS[level]
        self.log_content = log_content
        self.content_max_chars = content_max_chars
        self._redact = _load_redactor(redactor) if log_content else scrub_text
        self.prices = PriceTable.build(prices, prices_file, defaults=default_prices)
        self._now: Callable[[], float] = clock.now if clock is not None else time.perf_counter
        # Caller, team and model names repeat from line to line: each is masked once.
        self._names: dict[str, str] = {}

    def _masked_name(self, name: str) -> str:
        names = self._names
        found = names.get(name)
        if found is None:
            found = mask_secrets(name)
            if len(names) < _NAMES_MEMO:
                names[name] = found
        return found  # type: ignore[no-any-return]

    def _logger(self) -> Any:
        # structlog's default logger is a lazy proxy that rebuilds itself on every call;
        # bind it once, at the first request (after the application configured logging).
        log = self._bound
        if log is None:
            bind = getattr(self._log, "bind", None)
            log = self._bound = bind() if bind is not None else self._log
            self._write = json_line_writer(log)
            enabled = getattr(log, "is_enabled_for", None)
            if self._write is not None and enabled is not None:
                # configure_logging's filtering loggers filter by a level fixed per class.
                self._levels = (
                    enabled(max(self._level_number, logging.WARNING)),
                    enabled(self._level_number),
                    enabled(logging.WARNING),
                )
        return log

    def _enabled(self, level: int) -> bool:
        # structlog's filtering loggers answer from a precomputed table; others log everything.
        is_enabled_for = getattr(self._logger(), "is_enabled_for", None)
        return True if is_enabled_for is None else is_enabled_for(level)

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        # Failures are warnings: while those are on, the layer has to watch the request.
        levels = self._levels
        if not (levels[0] if levels is not None else self._enabled(max(self._level_number, logging.WARNING))):
            return await call_next(request)
        start = self._now()
        try:
            response = await call_next(request)
        except BaseException as error:
            self._emit(request, None, start, AnswerEnd.failed(error, self._now()))
            raise
        # The callback refers to the response; the stream drops its callbacks once they ran,
        # so a finished stream is freed without the garbage collector. A partial, not a
        # lambda: calling it costs no frame of its own.
        return await response.on_end(
            partial(self._emit, request, response, start),
            now=self._now,
            content=self.log_content,
            held=False,  # the line has no held time: no clock reads around each chunk for it
        )

    def _emit(self, request: Request, response: Response | None, start: float, end: AnswerEnd) -> None:
        # A consumer that stopped early is logged as cancelled, as a cancelled task is.
        error = end.failure
        # The common case, an answer, without asking ``outcome``.
        result = "ok" if error is None else outcome(error)
        routine = error is None or result in ("blocked", "rate_limited", "cancelled")
        levels = self._levels
        if routine and not (levels[1] if levels is not None else self._enabled(self._level_number)):
            return
        fields = self._fields(request, response, end, start)
        fields["outcome"] = result
        if routine:
            if error is not None:
                fields["error_type"] = error_type(error)
            if self._write is not None:
                self._write(self.level, "request", fields, _SCANNED_BY_FIELDS)
            else:
                self._logger().log(self._level_number, "request", **fields)
            return
        assert error is not None
        fields["error_type"] = error_type(error)
        # The detail is for operators (never shown to users); secrets are masked by the
        # configured processors and again here in case another configuration is used.
        fields["detail"] = scrub_text(str(error) if isinstance(error, OnionError) else repr(error))
        if self._write is not None:
            if levels[2] if levels is not None else self._enabled(logging.WARNING):
                self._write("warning", "request failed", fields, _SCANNED_BY_FIELDS)
        else:
            self._logger().warning("request failed", **fields)

    def _fields(self, request: Request, response: Response | None, end: AnswerEnd, start: float) -> dict[str, Any]:
        context = request.context
        completion = end.completion
        model = completion.model or (response.model if response is not None else "")
        caller, team, asked = context.caller, context.team, request.model
        masked = self._masked_name
        fields: dict[str, Any] = {
            "request_id": mask_request_id(context.request_id),
            "caller": caller if caller is None else masked(caller),
            "model": masked(asked),
            "served_by": response.served_by if response is not None else None,
            "stream": request.stream,
            "latency_ms": _milliseconds(end.ended_at - start),
        }
        if team is not None:
            fields["team"] = masked(team)
        if model and model != asked:
            fields["response_model"] = masked(model)
        if response is not None and response.fallback:
            fields["fallback"] = mask_secrets(response.fallback)
        if end.first_chunk_at is not None:
            fields["ttfc_ms"] = _milliseconds(end.first_chunk_at - start)
        usage = completion.usage
        if usage is not None:
            fields["prompt_tokens"] = usage.prompt_tokens
            fields["completion_tokens"] = usage.completion_tokens
            cached = response is not None and response.cache == "hit"
            cost = 0.0 if cached else self.prices.cost(model or asked, usage)
            fields["cost_usd"] = cost  # None: the model has no price (unknown, not zero)
        if response is not None and (headroom := response.headers.get("x-onion-budget-remaining")) is not None:
            fields["budget_remaining_usd"] = float(headroom)  # set by a budget layer inside this one
        findings = context.findings
        if findings is not None:
            if findings.flags:
                fields["guard_flags"] = mask_secrets(list(findings.flags))
            if findings.redactions:
                fields["redacted"] = mask_secrets(dict(findings.redactions))
        if self.log_content:
            # Masked after the redactor, which may be one that leaves keys.
            fields["prompt"] = mask_secrets(self._content(request.messages[-1].text if request.messages else ""))
            if response is not None:
                fields["answer"] = mask_secrets(self._content(completion.content))
        return fields

    def _content(self, text: str) -> str:
        text = text[: self.content_max_chars]
        return self._redact(text)
