"""HTTP mechanics of the gateway: the parts of an exchange that are the same for every
route and every dialect.

Reading the headers once (the API key, ``Content-Length``, the cache switches, the W3C
trace context), checking the key, reading a body under ``max_body_bytes``, writing an
answer with prebuilt header bytes, turning a layer's headers into pairs HTTP can carry,
and cancelling a stream when the client goes away. What the bodies say belongs to the
dialects (``onion.wire``); what runs when belongs to ``_app``.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import anyio
import msgspec

from .._context import Context, RequestOptions
from .._keys import bearer
from .._response import Response
from ..errors import BadRequest, RequestTooLarge, Unauthorized

__all__ = [
    "DISCONNECT",
    "JSON",
    "SSE_HEADERS",
    "ApiKeys",
    "DisconnectHook",
    "Receive",
    "Scope",
    "Send",
    "answer_headers",
    "cancel_on_disconnect",
    "check_json",
    "header",
    "header_pairs",
    "read_body",
    "read_headers",
    "respond",
]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = (b"content-type", b"application/json")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})
_CACHE_OFF = frozenset({b"no", b"false", b"0", b"off"})
_NO_CACHE = RequestOptions(cache=False)
_REFRESH = RequestOptions(refresh=True)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    served_by: bytes = b"onion",
    request_id: str | None = None,
) -> None:
    """Send a whole answer: ``headers``, then ``content-length``, ``x-onion-served-by``
    and (when given) ``x-request-id``, then ``body``."""
    headers = [*headers, (b"content-length", str(len(body)).encode()), (b"x-onion-served-by", served_by)]
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def read_headers(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[bytes | None, bytes | None, RequestOptions | None, dict[str, str] | None]:
    """``(authorization, content_length, options, trace_headers)`` in one pass, where
    ``options`` is the cache switch (``x-onion-cache: off`` or ``Cache-Control: no-cache``
    turn the caches off, ``x-onion-cache: refresh`` skips their lookup), or ``None``; a plain
    tuple, as a named one costs ten times more to build per request. Two
    ``Authorization`` headers are a ``BadRequest``: which one counts would depend on the
    server (and on every proxy in front of it)."""
    authorization = declared = onion_cache = cache_control = api_key = None
    trace_headers: dict[str, str] | None = None
    for name, value in headers:
        if name in _TRACE_HEADERS:
            # Only the W3C trace context reaches the layers (the tracing layer continues
            # it); the rest, credentials included, stays here.
            if trace_headers is None:
                trace_headers = {}
            trace_headers[name.decode("latin-1")] = value.decode("latin-1")
        elif name == b"authorization":
            if authorization is not None:
                raise BadRequest("send one Authorization header, not several", code="invalid_authorization_header")
            authorization = value
        elif name == b"x-api-key":  # Anthropic's SDKs send the key here
            api_key = value
        elif name == b"content-length":
            declared = value
        elif name == b"x-onion-cache":
            onion_cache = value
        elif name == b"cache-control":
            cache_control = value
    options = None
    if onion_cache is not None:
        switch = onion_cache.strip().lower()
        options = _NO_CACHE if switch in _CACHE_OFF else _REFRESH if switch == b"refresh" else None
    if cache_control is not None and (b"no-cache" in cache_control.lower() or b"no-store" in cache_control.lower()):
        options = _NO_CACHE
    if authorization is None and api_key is not None:
        authorization = b"Bearer " + api_key.strip()
    return authorization, declared, options, trace_headers


class ApiKeys:
    """The gateway's API keys, ``{key: identity}``; none means every caller may call."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, str] | None = None) -> None:
        self._keys = [(key.encode(), identity) for key, identity in (keys or {}).items()]

    def caller(self, authorization: bytes | None) -> str | None:
        """The identity of the key in an ``Authorization: Bearer <key>`` header value
        (``None`` when the gateway has no keys); raises ``Unauthorized`` for no key or an
        unknown one, ``BadRequest`` for a header that is not ``Bearer <one token>``."""
        if not self._keys:
            return None
        given = bearer(authorization)  # one parser of the header, shared with KeyResolver
        identity = None
        for key, name in self._keys:
            # Compare with every key, in constant time, so timing reveals nothing.
            if hmac.compare_digest(given, key):
                identity = name
        if identity is None:
            raise Unauthorized("incorrect API key provided")
        return identity


async def read_body(receive: Receive, declared: bytes | None, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes. Raises ``RequestTooLarge`` as soon as
    the declared ``Content-Length`` or the bytes received pass it (so a huge body is
    never buffered), and ``BadRequest`` for a malformed length or a client gone away."""
    if declared is not None:
        try:
            too_large = int(declared) > limit
        except ValueError:
            raise BadRequest("invalid Content-Length header") from None
        if too_large:
            raise RequestTooLarge(limit)
    message = await receive()
    body = message.get("body", b"")
    size = len(body)
    if size > limit:
        raise RequestTooLarge(limit)
    if not message.get("more_body", False):
        return body
    parts = [body]
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client went away", code="client_closed")
        piece = message.get("body", b"")
        size += len(piece)
        if size > limit:
            raise RequestTooLarge(limit)
        parts.append(piece)
    return b"".join(parts)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_MAX_NUMBER_CHARS = 100


def check_json(body: bytes, max_depth: int) -> None:
    """Refuse, with ``BadRequest``, a JSON body the dialect's decoder would crash on or
    read ambiguously: arrays and objects nested deeper than ``max_depth``
    (``code="json_too_deep"``; checked on the raw bytes before any decoding, so 100k
    levels cost a scan, not a ``RecursionError``), numbers longer than 100 characters or
    not finite, invalid UTF-8 (``code="invalid_json"``), and an object that names a key
    twice (``code="duplicate_key"``: which one wins differs between parsers, so a guard
    and the upstream could read different requests)."""
    if body.count(b"[") + body.count(b"{") > max_depth and _depth(body, max_depth) > max_depth:
        raise BadRequest(f"the JSON body nests arrays and objects deeper than {max_depth} levels", code="json_too_deep")
    if _plainly_valid(body):
        return
    try:
        # What json.loads does with bytes, on a decoder built once (json.loads with hooks
        # builds a decoder and its scanner per call: half of this check's time).
        _CHECKER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except _DuplicateKey as error:
        message = f"the JSON body names the key {error.args[0]!r} twice in one object"
        raise BadRequest(message, code="duplicate_key") from None
    except _BadNumber as error:
        raise BadRequest(f"the JSON body has a number out of range: {error.args[0]}", code="invalid_json") from None
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadRequest("the request body is not valid JSON (UTF-8)", code="invalid_json") from None


def _plainly_valid(body: bytes) -> bool:
    """True only for a body the full check below passes, proven in C for the usual
    request of at most 2 KiB (half the full check's time); ``False`` says nothing: the
    full check (stdlib ``json`` with a hook per object and per number) decides.

    msgspec refuses all the full check refuses on syntax, UTF-8 and numbers out of range,
    but it keeps the last of duplicate keys silently and reads numbers of any length. So:
    no ``\\u`` escape (one could spell a colon), no run of 33 digits (a number past 100
    characters has one: it holds at most four other characters in at most three runs of
    digits), and as many colons in the body as in msgspec's encoding of what it decoded.
    The body's colons are its keys as written plus the colons inside its strings; the
    encoding's are the keys decoded plus the colons inside the strings kept. Keys decoded
    are at most the keys written, the strings kept at most those written (without escapes
    a string's colons are its text's), so equal counts mean no key was dropped."""
    if len(body) > _PLAIN_BYTES or b"\\u" in body or _LONG_RUN in body.translate(_DIGITS_AS_ZEROS):
        return False
    try:
        return _encode(_decode(body)).count(b":") == body.count(b":")
    except msgspec.MsgspecError:
        return False


# Past this size the passes here cost more than the full check's one (long prompts are
# mostly string bodies, which its C scanner reads fast).
_PLAIN_BYTES = 2048
# Digits as "0", everything else as a space: a run of 33 digits is a run of 33 zeros.
_DIGITS_AS_ZEROS = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_LONG_RUN = b"0" * 33
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def _depth(body: bytes, limit: int) -> int:
    # Brackets inside strings do not nest: drop the strings, keep only the brackets.
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte == 91 or byte == 123:  # [ {
            depth += 1
            if depth > limit:
                return depth
        else:
            depth -= 1
    return depth


class _DuplicateKey(ValueError):
    pass


class _BadNumber(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def _bounded_int(text: str) -> int:
    if len(text) > _MAX_NUMBER_CHARS:
        raise _BadNumber(f"an integer of {len(text)} digits")
    return int(text)


def _no_constant(text: str) -> float:
    raise _BadNumber(text)  # NaN, Infinity: not JSON


def _finite_float(text: str) -> float:
    value = float(text)
    if len(text) > _MAX_NUMBER_CHARS or value in (float("inf"), float("-inf")):
        raise _BadNumber(f"{text[:20]}...")
    return value


_CHECKER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant
)


def header_pairs(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """A layer's ``Response.headers`` as byte pairs, lower-cased, without any that could
    inject a header line (CR or LF) or that Latin-1 cannot carry."""
    pairs = []
    for name, value in headers.items():
        try:
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                continue
            pairs.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        except (UnicodeEncodeError, TypeError, AttributeError):
            # A layer's header that HTTP cannot carry is dropped rather than failing the answer.
            continue
    return pairs


def answer_headers(response: Response, context: Context, base: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers of a successful answer: ``base``, who served it, the request id, and
    the headers layers set."""
    headers = [
        *base,
        (b"x-onion-served-by", (response.served_by or "onion").encode("latin-1", "replace")),
        (b"x-request-id", context.request_id.encode()),
    ]
    if response.headers:
        headers += header_pairs(response.headers)
    return headers


DISCONNECT = "onion.disconnect"
"""The key, in a request scope's ``extensions``, of its ``DisconnectHook``."""


class DisconnectHook:
    """Calls ``callback`` when the request's client disconnects before its answer ends.

    The app registers its call's cancel here instead of running a task per request that
    waits for ``http.disconnect`` (a task group, a spawn and a cancel, whose message
    formats the task's repr: about a tenth of the gateway's CPU per call). Called from
    the protocol's ``connection_lost``, in the event loop, outside any task.
    """

    __slots__ = ("callback", "disconnected", "loop")

    def __init__(self, loop: Any = None) -> None:
        self.callback: Any = None
        self.disconnected = False
        # The connection's event loop (asyncio), so the app finds its task without asking.
        self.loop = loop

    def fire(self) -> None:
        self.disconnected = True
        callback, self.callback = self.callback, None
        if callback is not None:
            callback()


async def cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` when the client disconnects (run beside a stream's pump)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def header(scope: Scope, name: bytes) -> bytes | None:
    """The value of the request header ``name`` (lower-case bytes), if sent."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None
