"""Process-wide logging for the gateway: structlog configured once, secrets scrubbed.

``configure_logging`` renders onion's structlog lines and the standard library's records
(uvicorn, httpx) through one root handler, as JSON lines in production or pretty in a
terminal. Every emitted line passes ``scrub_secrets``; ``scrub_text`` masks key-shaped
values in one string (what the request-log layer uses for error details).

``json_line_writer`` is the request log's short cut: for a logger that runs exactly the
JSON chain ``configure_logging`` installed, it renders the same line (same keys in the same
order, same scrubbing, same timestamp) without walking structlog's processor chain, and
hands it to the same structlog output logger.
"""

from __future__ import annotations

import datetime
import logging
import re
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import msgspec
import structlog

from .._context import _ID_PREFIX
from ..errors import ConfigError

__all__ = [
    "LOG_LEVELS",
    "configure_logging",
    "json_line_writer",
    "mask_request_id",
    "mask_secrets",
    "reset_logging",
    "scrub_secrets",
    "scrub_text",
]

LOG_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Field names whose values are credentials, whatever they hold.
_SECRET_FIELDS = frozenset(
    {"api_key", "apikey", "authorization", "proxy-authorization", "x-api-key", "password", "secret", "cookie"}
)
_SECRET_SUFFIXES = ("_key", "-key", "_secret", "_password", "_token")
# Values shaped like provider keys or bearer credentials, wherever they appear in a line.
_SECRET_VALUE = re.compile(
    r"(?:sk-(?:proj-|ant-(?:api03-)?)?[A-Za-z0-9_-]{16,}"
    r"|[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}|hf_[A-Za-z0-9]{30,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,})"
)
_REDACTED = "[REDACTED]"
# No string shorter than this can match ``_SECRET_VALUE`` (the shortest alternatives,
# ``xox?-`` and ``bearer``, need 15 characters; a test checks it against the pattern), so
# the short fields of a line (model, outcome, ids) skip the regex.
_SHORTEST_SECRET = 15
# Whether a field name is a credential's, memoised: the names of a line repeat on every
# line. Bounded, in case some caller logs data-dependent keys.
_SECRET_FIELD_MEMO: dict[str, bool] = {}


# Every match of ``_SECRET_VALUE`` holds one of the hints below, in lower case: a string
# that holds none, once lowered, cannot match, and skips the regex (it tries each alternative at each
# position; the lowered copy and these tests cost under half of it). A test checks it:
# every string the pattern matches passes ``_may_hold_secret``.
def _may_hold_secret(text: str) -> bool:
    if len(text) < _SHORTEST_SECRET:
        return False
    lowered = text.lower()
    # One chain of ``in`` tests: a loop over a tuple of hints costs twice as much.
    return (
        "sk-" in lowered
        or "k_" in lowered  # [rsp]k_live_, [rsp]k_test_
        or "gh" in lowered  # gh?_
        or "github_pat_" in lowered
        or "xox" in lowered
        or "akia" in lowered
        or "aiza" in lowered
        or "hf_" in lowered
        or "bearer" in lowered
    )


def _masked(text: str) -> str:
    return _SECRET_VALUE.sub(_REDACTED, text) if _may_hold_secret(text) else text


def scrub_text(text: str) -> str:
    """``text`` with every key-shaped value (provider keys, bearer tokens) masked."""
    return _SECRET_VALUE.sub(_REDACTED, text)


def mask_secrets(value: Any) -> Any:
    """``value`` with key-shaped text masked, as a log line's field is scrubbed: a string
    (one too short to hold a key comes back as it is, unexamined), the text in lists and
    dicts (three levels; a value under a credential's name blanked); numbers, booleans
    and ``None`` as they are. For a caller that builds a line's fields itself and knows
    which can hold text (``json_line_writer``'s ``scan=()``)."""
    if type(value) is str:
        return _masked(value)
    if value is None or isinstance(value, (int, float)):
        return value
    return _scrub(value, 3)


# The length of the ids onion gives requests (``onion._context``: a per-process prefix and
# eight hex digits of a counter).
_ID_LENGTH = len(_ID_PREFIX) + 8


def mask_request_id(value: str) -> str:
    """``mask_secrets(value)`` for a request id, onion's own ids let through unscanned.

    An id of onion's shape (its prefix, ``req_`` and 12 hex digits, then 8 characters)
    cannot hold a secret: no alternative of the pattern starts inside the prefix (a secret
    starts with ``s``, ``rk_``, ``pk_``, ``g``, ``x``, ``A``, ``h`` or ``bearer``, and a
    ``b`` there would need an ``r`` the prefix lacks and more than 8 characters after it),
    and one that starts in the 8 characters after it is shorter than the shortest secret
    (15). Any other id (a caller's ``x-request-id``) is masked as every field is; a test
    checks both against the pattern.
    """
    if len(value) == _ID_LENGTH and value.startswith(_ID_PREFIX):
        return value
    return mask_secrets(value)  # type: ignore[no-any-return]


def _secret_field(name: str) -> bool:
    found = _SECRET_FIELD_MEMO.get(name)
    if found is None:
        lowered = name.lower()
        found = lowered in _SECRET_FIELDS or lowered.endswith(_SECRET_SUFFIXES)
        if len(_SECRET_FIELD_MEMO) < 4096:
            _SECRET_FIELD_MEMO[name] = found
    return found


def _scrub(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _masked(value)
    if depth and isinstance(value, dict):
        # A key is text too (a detector's or a rule's name from configuration): masked as well.
        return {
            (_masked(k) if type(k) is str else k): _REDACTED if _secret_field(str(k)) else _scrub(v, depth - 1)
            for k, v in value.items()
        }
    if depth and isinstance(value, (list, tuple)):
        return [_scrub(v, depth - 1) for v in value]
    return value


def scrub_secrets(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: blank credential fields and mask key-shaped values.

    Runs only for lines that are emitted. Stack traces are kept for ``error`` and above
    only (they can hold URLs and internal detail).
    """
    memo = _SECRET_FIELD_MEMO
    for key, value in event_dict.items():
        secret = memo.get(key)
        if secret is None:
            secret = _secret_field(key)
        if secret:
            event_dict[key] = _REDACTED
        elif type(value) is str:
            # Most fields of a line are short strings that cannot hold a key.
            if len(value) >= _SHORTEST_SECRET:
                event_dict[key] = _masked(value)
        elif value is not None and not isinstance(value, (int, float, bool)):
            event_dict[key] = _scrub(value, 3)
    if method not in ("error", "critical", "exception"):
        event_dict.pop("exc_info", None)
        event_dict.pop("stack_info", None)
    return event_dict


def _json_serializer(obj: Any, **_: Any) -> str:
    return msgspec.json.encode(obj, enc_hook=str).decode()


# The processor list of the JSON chain configure_logging installed last (None: not JSON,
# or not configured): a logger whose chain is this very list gets the short cut.
_json_chain: list[Any] | None = None
_UTC = datetime.UTC
_encode = msgspec.json.Encoder(enc_hook=str).encode
_merge_contextvars = structlog.contextvars.merge_contextvars
# structlog's context-local variables, one per name ever bound (private to structlog: when
# it is gone, every line is merged as before). While none was ever bound, merging (a copy
# of the task's whole context, every variable of every library looked at) adds nothing.
_bound_vars: dict[str, Any] | None = getattr(structlog.contextvars, "_CONTEXT_VARS", None)


def json_line_writer(logger: Any) -> Callable[..., None] | None:
    """``write(level, event, fields, scan=None)`` that emits, through ``logger``'s output,
    the JSON line ``logger.<level>(event, **fields)`` would — or ``None`` when ``logger``
    is not a structlog logger running ``configure_logging``'s JSON chain with no bound
    context (then log through structlog as usual).

    ``fields`` is consumed (the line is built in it). Keys are scrubbed as
    ``scrub_secrets`` scrubs them; the caller promises that no key of its own is a
    credential's name and that its values are strings, numbers, booleans, ``None`` or
    flat lists and dicts of those (what the request log writes). ``scan``: the only keys
    whose values can hold a secret (text from callers, upstreams or configuration); the
    caller promises the others cannot (numbers, flags, names onion chose), and they are
    not looked at. ``None``: every field is scanned. Context-local fields
    (``structlog.contextvars``) are merged and, as they can hold anything, scrubbed in full.
    """
    chain = _json_chain
    processors = getattr(logger, "_processors", None)
    output = getattr(logger, "_logger", None)
    if chain is None or processors is not chain or output is None or getattr(logger, "_context", None):
        return None
    emit = _printer(output)

    def write(level: str, event: str, fields: dict[str, Any], scan: tuple[str, ...] | None = None) -> None:
        # The order structlog builds: the call's fields, the event, the context-local
        # fields, the level, then the timestamp.
        if scan is None:
            for key, value in fields.items():
                if type(value) is str:
                    if len(value) >= _SHORTEST_SECRET:
                        fields[key] = _masked(value)
                elif value is not None and not isinstance(value, (int, float)):
                    fields[key] = _scrub(value, 3)
        else:
            for key in scan:
                value = fields.get(key)
                if value is None:
                    continue
                if type(value) is str:
                    if len(value) >= _SHORTEST_SECRET:
                        fields[key] = _masked(value)
                elif not isinstance(value, (int, float)):
                    fields[key] = _scrub(value, 3)
        fields["event"] = event
        if _bound_vars is None or _bound_vars:
            size = len(fields)
            _merge_contextvars(None, level, fields)
            fields["level"] = level
            if len(fields) != size + 1:  # context-local fields joined: scrub the whole line
                scrub_secrets(None, level, fields)
        else:
            fields["level"] = level
        fields["timestamp"] = _utc_iso_now()
        emit(_encode(fields).decode())

    return write


# The start of the second of the last timestamp, in nanoseconds since the epoch, and its
# formatted part with the dot (one tuple: threads read both at once). A line's timestamp
# costs one clock read, a subtraction and a small format, not a ``datetime``: the format
# is ``TimeStamper(fmt="iso", utc=True)``'s.
_last_second: tuple[int, str] = (-(10**18), "")


def _utc_iso_now(ns: int | None = None) -> str:
    """``datetime.now(UTC).isoformat()`` with ``Z`` for ``+00:00``, as structlog stamps it
    (``ns``: that instant instead of now, in nanoseconds since the epoch)."""
    global _last_second
    if ns is None:
        ns = time.time_ns()
    start, prefix = _last_second
    offset = ns - start
    if not 0 <= offset < 1_000_000_000:
        second = ns // 1_000_000_000
        start = second * 1_000_000_000
        prefix = datetime.datetime.fromtimestamp(second, _UTC).isoformat().removesuffix("+00:00") + "."
        _last_second = (start, prefix)
        offset = ns - start
    micro = offset // 1000
    # isoformat leaves out a zero microsecond part; the six digits are two of _DIGITS
    # (two lookups cost less than formatting the number).
    return f"{prefix}{_DIGITS[micro // 1000]}{_DIGITS[micro % 1000]}Z" if micro else prefix[:-1] + "Z"


_DIGITS = tuple(f"{n:03d}" for n in range(1000))


def _printer(output: Any) -> Callable[[str], None]:
    """What ``PrintLogger.msg`` does (the line and a newline, flushed, under its lock) in
    one write; any other output logger's own ``msg``."""
    file, lock = getattr(output, "_file", None), getattr(output, "_lock", None)
    # On standard output PrintLogger prints to whatever sys.stdout is at the time.
    if (
        type(output) is not structlog.PrintLogger
        or file is None
        or lock is None
        or file in (sys.stdout, sys.__stdout__)
    ):
        return output.msg  # type: ignore[no-any-return]
    write, flush = file.write, file.flush
    if isinstance(getattr(file, "line_buffering", None), bool):

        def emit_line(line: str) -> None:
            with lock:
                write(line + "\n")
                # A line-buffered file (standard error) flushed on the newline by itself;
                # asked per line, as a stream can be reconfigured.
                if not file.line_buffering:
                    flush()

        return emit_line

    def emit(line: str) -> None:
        with lock:
            write(line + "\n")
            flush()

    return emit


def configure_logging(
    *,
    json: bool | None = None,
    level: str = "info",
    stream: TextIO | None = None,
    stdlib: bool = True,
    cache: bool = True,
) -> None:
    """Configure structlog for the gateway: JSON lines in production, pretty in a terminal.

    ``json=None`` picks JSON unless ``stream`` (default ``sys.stderr``) is a terminal.
    ``level`` filters before anything is formatted. Every event goes through
    ``scrub_secrets``. With ``stdlib`` the standard ``logging`` records (uvicorn, httpx,
    modules that use ``logging.getLogger``) are rendered the same way, through one root
    handler. Call once at startup; ``cache=False`` lets tests reconfigure.
    """
    global _json_chain
    if level not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {sorted(LOG_LEVELS)}, not {level!r}")
    stream = stream if stream is not None else sys.stderr
    if json is None:
        json = not (hasattr(stream, "isatty") and stream.isatty())
    shared: list[Any] = [
        structlog.processors.add_log_level,
        # Before the timestamp, which cannot hold a secret and would be scanned for one.
        scrub_secrets,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[Any] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(_json_serializer)]
        if json
        else [structlog.dev.ConsoleRenderer()]
    )
    processors = [structlog.contextvars.merge_contextvars, *shared, *renderer]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LOG_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=cache,
    )
    _json_chain = processors if json else None
    if stdlib:
        _route_stdlib(stream, LOG_LEVELS[level], shared, renderer)


_previous_root_level: list[int] = []


class _OnionHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler ``configure_logging`` installs (found again to be replaced)."""


def _route_stdlib(stream: TextIO, level: int, shared: list[Any], renderer: list[Any]) -> None:
    handler = _OnionHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            # The whole renderer chain: without format_exc_info a record's traceback
            # reached the JSON line as "<traceback object at 0x...>".
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    installed = [h for h in root.handlers if isinstance(h, _OnionHandler)]
    if not installed and not _previous_root_level:
        _previous_root_level.append(root.level)  # what reset_logging restores
    for old in installed:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def reset_logging() -> None:
    """Undo ``configure_logging`` (structlog defaults, the root handler removed); for tests."""
    global _json_chain
    _json_chain = None
    structlog.reset_defaults()
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OnionHandler)]:
        root.removeHandler(old)
    if _previous_root_level:
        root.setLevel(_previous_root_level[0])
        _previous_root_level.clear()
