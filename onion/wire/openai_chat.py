"""OpenAI chat completions on the wire: the dialect of ``POST /v1/chat/completions``.

- ``decode``: a JSON body into a ``Request``; what is malformed or unsupported is a
  ``BadRequest`` whose message and ``param`` name the field.
- ``encode_completion``: a ``Completion`` as a ``chat.completion`` object.
- ``encode_stream``: a ``ChunkEncoder`` that writes each ``Chunk`` as a
  ``chat.completion.chunk`` Server-Sent Event, then the usage event when the request
  asked for it (``stream_options.include_usage``) and ``data: [DONE]``. A stream that
  fails after its first chunk ends with a ``data: {"error": ...}`` event and no
  ``[DONE]``, so a client cannot mistake a cut answer for a whole one.
- ``encode_error``: OpenAI's error body, ``{"error": {message, type, param, code}}``,
  with the status and headers for a typed error.

Pure functions of bytes and onion's types (the server does the HTTP). A stream's event
prefix (id, created, model) is encoded once, so a chunk costs one small msgspec encode
and one concatenation.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .._context import Context
from .._types import Chunk, Completion, Message, Request, Usage, decode_request
from ..errors import BadRequest, OnionError
from . import ErrorAnswer

__all__ = ["ChunkEncoder", "decode", "encode_completion", "encode_error", "encode_stream", "error_body"]

_encode = msgspec.json.Encoder().encode
_DONE = b"data: [DONE]\n\n"
_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


# -- decoding ------------------------------------------------------------------------


def decode(body: bytes, context: Context) -> Request:
    """The request in ``body``, carrying ``context``.

    Raises ``BadRequest`` for an empty or non-JSON body (``code="invalid_json"``), a
    field of the wrong type (``param`` is the top-level field), a missing model or
    message, ``n`` outside 1..128, and a message the upstream would refuse (an unknown
    role, no ``content`` where the role needs it, a tool message without
    ``tool_call_id``; ``param`` is its path, ``messages[2].content``). Without an API
    key the ``user`` field names the caller.
    """
    if not body:
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        raw = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON (UTF-8)", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise BadRequest("the request body must be a JSON object")
    try:
        request = decode_request(raw, context=context)
    except msgspec.ValidationError as error:
        message, param = _explain(error)
        raise BadRequest(f"invalid request: {message}", param=param) from None
    _check(request)
    if context.caller is None and request.user:
        context.caller = request.user
    return request


def _explain(error: msgspec.ValidationError) -> tuple[str, str | None]:
    # msgspec ends its message with " - at `$.messages[0].role`": say it in words, and
    # name the top-level field as OpenAI's ``param`` does.
    text = str(error)
    marker = text.rfind(" - at `$")
    if marker < 0:
        return text[:300], None
    path = text[marker + 8 : -1].lstrip(".")
    return f"{text[:marker]} at '{path}'"[:300], path.split("[")[0].split(".")[0] or None


_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_NEEDS_CONTENT = frozenset({"system", "developer", "user", "tool", "function"})


def _check(request: Request) -> None:
    if not request.model:
        raise BadRequest("'model' must name a model", param="model")
    if not request.messages:
        raise BadRequest("'messages' must hold at least one message", param="messages")
    if request.n is not None and not 1 <= request.n <= 128:
        raise BadRequest("'n' must be between 1 and 128", param="n", code="invalid_value")
    if request.n is not None and request.n > 1:
        raise BadRequest("n > 1 is not supported by this gateway", param="n", code="unsupported_value")
    for index, message in enumerate(request.messages):
        _check_message(index, message)


def _check_message(index: int, message: Message) -> None:
    # What an upstream would refuse anyway, refused here with the field's path: before
    # any layer runs, so a guard, a cache or a retry never sees a request that cannot be.
    role = message.role
    if role not in _ROLES:
        raise BadRequest(
            f"'messages[{index}].role' must be one of {', '.join(sorted(_ROLES))}, not {role[:40]!r}",
            param=f"messages[{index}].role",
            code="invalid_value",
        )
    if message.content is None:
        if role in _NEEDS_CONTENT:
            raise BadRequest(
                f"'messages[{index}].content' is required for a {role} message", param=f"messages[{index}].content"
            )
        answered = message.tool_calls or "function_call" in message.extra or "audio" in message.extra
        if role == "assistant" and not answered:
            raise BadRequest(
                f"'messages[{index}].content' is required for an assistant message without tool_calls",
                param=f"messages[{index}].content",
            )
    if role == "tool" and not message.tool_call_id:
        raise BadRequest(
            f"'messages[{index}].tool_call_id' is required for a tool message", param=f"messages[{index}].tool_call_id"
        )


# -- a complete answer ---------------------------------------------------------------


class _OutUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _OutMessage(msgspec.Struct):
    role: str
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None
    refusal: None = None


class _OutChoice(msgspec.Struct):
    index: int
    message: _OutMessage
    finish_reason: str | None
    logprobs: None = None


class _OutCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[_OutChoice]
    usage: _OutUsage | None
    object: str = "chat.completion"


def _usage(usage: Usage | None) -> _OutUsage | None:
    if usage is None:
        return None
    return _OutUsage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


def encode_completion(completion: Completion, request: Request, model: str) -> bytes:
    """``completion`` as a ``chat.completion`` JSON object. Its id, creation time and
    model default to ``chatcmpl-<request id>``, now, and ``model``."""
    message = _OutMessage(completion.role or "assistant", completion.content, completion.tool_calls)
    return _encode(
        _OutCompletion(
            id=completion.id or f"chatcmpl-{request.context.request_id}",
            created=completion.created or int(time.time()),
            model=completion.model or model,
            choices=[_OutChoice(0, message, completion.finish_reason)],
            usage=_usage(completion.usage),
        )
    )


# -- a streamed answer ---------------------------------------------------------------


class _OutDelta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChunkEncoder:
    """Writes one streamed answer as ``chat.completion.chunk`` events.

    Every event shares the id ``chatcmpl-<request id>``, the creation time and the model,
    encoded once here. It keeps the usage of the last chunk that had one, for the usage
    event ``end`` sends when the request set ``stream_options.include_usage``.
    """

    __slots__ = ("_include_usage", "_prefix", "_request_id", "usage")

    def __init__(self, request: Request, model: str, *, created: int | None = None) -> None:
        self._request_id = request.context.request_id
        self._prefix = (
            b'data: {"id":"chatcmpl-'
            + self._request_id.encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(created or int(time.time())).encode()
            + b',"model":'
            + _encode(model)
            + b',"choices":[{"index":0,"delta":'
        )
        options = request.stream_options
        self._include_usage = bool(options and options.get("include_usage"))
        self.usage: Usage | None = None

    def event(self, chunk: Chunk) -> bytes | None:
        """The event for ``chunk``, or ``None`` when it has nothing to show (empty, or usage only)."""
        if chunk.usage is not None:
            self.usage = chunk.usage
        if not (chunk.content or chunk.role or chunk.tool_calls or chunk.finish_reason):
            return None
        # The first delta carries the role and content "" as OpenAI's does; later ones
        # omit what they do not change.
        content = chunk.content if chunk.content or chunk.role else None
        delta = _encode(_OutDelta(chunk.role, content, chunk.tool_calls))
        finish = b"null" if chunk.finish_reason is None else _encode(chunk.finish_reason)
        return self._prefix + delta + b',"finish_reason":' + finish + b"}]}\n\n"

    def end(self) -> bytes:
        """``data: [DONE]``, after the usage event when the request asked for one."""
        if self.usage is None or not self._include_usage:
            return _DONE
        head = self._prefix[: self._prefix.rindex(b'"choices"')]
        return head + b'"choices":[],"usage":' + _encode(_usage(self.usage)) + b"}\n\n" + _DONE

    def error(self, error: BaseException) -> bytes:
        """The ``data: {"error": ...}`` event that ends a stream cut by ``error``."""
        return b"data: " + encode_error(error, self._request_id).body + b"\n\n"


def encode_stream(request: Request, model: str) -> ChunkEncoder:
    """A ``ChunkEncoder`` for the streamed answer to ``request`` from ``model``."""
    return ChunkEncoder(request, model)


# -- errors --------------------------------------------------------------------------


class _OutError(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _OutError


def error_body(status: int, message: str, code: str | None, param: str | None = None, kind: str | None = None) -> bytes:
    """OpenAI's error body; its ``type`` is ``kind``, else follows from ``status`` as OpenAI's does."""
    kind = kind or _ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "server_error")
    return _encode(_ErrorBody(_OutError(message, kind, param, code)))


_RETRY_YES = (b"x-should-retry", b"true")
_RETRY_NO = (b"x-should-retry", b"false")


def encode_error(error: BaseException, request_id: str | None = None) -> ErrorAnswer:
    """The answer for ``error``.

    An ``OnionError`` keeps its status, type, code and param and shows its public message,
    with ``request_id`` appended for a 5xx (once: a message that already names it, as a
    masked error's does, is left alone); a 429 or 503 carries ``Retry-After`` (whole
    seconds, rounded up) when the error knows one. Anything else is a 500 that names only
    the request id. Every answer says ``x-should-retry: true|false`` (the OpenAI SDKs
    honour it): false for what the same request cannot get past.
    """
    if not isinstance(error, OnionError):
        message = "internal error" if request_id is None else f"internal error (request id {request_id})"
        return ErrorAnswer(500, error_body(500, message, "internal_error"), [_RETRY_YES])
    status, message, code = error.status, error.public_message, error.code
    if status >= 500 and request_id is not None and request_id not in message:
        message = f"{message} (request id {request_id})"
    headers = [_RETRY_YES if error.should_retry else _RETRY_NO]
    retry_after = getattr(error, "retry_after", None)
    if isinstance(retry_after, (int, float)) and status in (429, 503):
        headers.append((b"retry-after", str(max(1, int(-(-retry_after // 1)))).encode()))
    return ErrorAnswer(status, error_body(status, message, code, error.param, error.type), headers)
