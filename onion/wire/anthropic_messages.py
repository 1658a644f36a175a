"""Anthropic Messages on the wire: the dialect of ``POST /v1/messages``.

- ``decode``: an Anthropic body into the internal ``Request`` (``_anthropic_shapes``:
  system, blocks, tools, tool results, thinking, cache_control; Anthropic-only fields
  such as ``top_k`` and ``thinking`` ride in ``extra`` and reach an Anthropic upstream
  unchanged).
- ``encode_completion``: a ``Completion`` as an Anthropic ``message`` object.
- ``encode_stream``: ``MessageEventEncoder``, the real event sequence: ``message_start``,
  ``ping``, per block ``content_block_start`` / ``content_block_delta`` /
  ``content_block_stop``, then ``message_delta`` (stop reason and usage) and
  ``message_stop``; a stream cut after its start ends with an ``error`` event.
- ``encode_error``: ``{"type": "error", "error": {"type", "message"}}`` with Anthropic's
  error types for the status.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._context import Context
from .._tokens import counter_for
from .._types import Chunk, Completion, Request, Usage
from ..errors import BadRequest, OnionError
from . import ErrorAnswer
from ._anthropic_shapes import anthropic_usage, completion_to_message, request_from_anthropic, stop_reason

__all__ = ["MessageEventEncoder", "count_tokens", "decode", "encode_completion", "encode_error", "encode_stream"]

_encode = msgspec.json.Encoder().encode
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def decode(body: bytes, context: Context) -> Request:
    """The request in ``body``; ``BadRequest`` names the field that cannot be decoded."""
    if not body:
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        raw = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON (UTF-8)", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise BadRequest("the request body must be a JSON object")
    request = request_from_anthropic(raw, context)
    if context.caller is None and request.user:
        context.caller = request.user
    return request


def count_tokens(body: bytes, context: Context) -> bytes:
    """The ``count_tokens`` answer for an Anthropic body: ``{"input_tokens": n}``, counted
    with the model's token counter over every text, tool and argument it sends."""
    try:
        raw = msgspec.json.decode(body) if body else None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON (UTF-8)", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise BadRequest("the request body must be a JSON object")
    request = request_from_anthropic({"max_tokens": 1, **raw}, context)  # count_tokens takes no max_tokens
    counter = counter_for(request.model)
    total = 0
    for message in request.messages:
        total += counter.count(message.text) + 4
        for call in message.tool_calls or ():
            total += counter.count(_encode(call).decode())
    if request.tools:
        total += counter.count(_encode(request.tools).decode())
    return _encode({"input_tokens": total})


def encode_completion(completion: Completion, request: Request, model: str) -> bytes:
    """``completion`` as an Anthropic ``message`` JSON object."""
    return _encode(completion_to_message(completion, model, f"msg_{request.context.request_id}"))


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _encode({"type": kind, **data}) + b"\n\n"


class MessageEventEncoder:
    """Writes one streamed answer as Anthropic's typed events.

    OpenAI-shaped chunks become blocks: content opens a ``text`` block, a tool-call delta
    with an ``id`` opens a ``tool_use`` block (its arguments are ``input_json_delta``),
    ``reasoning_content`` / ``thinking_signature`` a ``thinking`` block. A block closes
    when a chunk of another kind (or another tool call) arrives.
    """

    __slots__ = (
        "_block",
        "_finish",
        "_id",
        "_index",
        "_kind",
        "_model",
        "_request_id",
        "_sequence",
        "_started",
        "_tool",
        "_usage",
    )

    def __init__(self, request: Request, model: str) -> None:
        self._request_id = request.context.request_id
        self._id = f"msg_{self._request_id}"
        self._model = model
        self._started = False
        self._index = -1
        self._kind: str | None = None
        self._tool: int | None = None
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._sequence: Any = None
        self._block = 0

    def _start(self, chunk: Chunk) -> bytes:
        self._started = True
        if chunk.id and chunk.id.startswith("msg"):  # an Anthropic upstream's own id, as for a complete answer
            self._id = chunk.id
        message = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": chunk.model or self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # What the upstream announced at its start (an Anthropic one: the input and
            # cache tokens clients read here), else nothing yet: the counts follow at the end.
            "usage": anthropic_usage(chunk.prompt_usage),
        }
        return _event("message_start", {"message": message}) + _event("ping", {})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._kind = kind
        return out + _event("content_block_start", {"index": self._index, "content_block": block})

    def _close(self) -> bytes:
        if self._kind is None:
            return b""
        self._kind = None
        return _event("content_block_stop", {"index": self._index})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"index": self._index, "delta": delta})

    def event(self, chunk: Chunk) -> bytes | None:
        """The events for ``chunk`` (``None`` when it carries nothing to send)."""
        out = b"" if self._started else self._start(chunk)
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.finish_reason is not None:
            self._finish = chunk.finish_reason
        if "stop_sequence" in chunk.extra:
            self._sequence = chunk.extra["stop_sequence"]
        extra = chunk.delta_extra
        if extra.get("reasoning_content"):
            if self._kind != "thinking":
                out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out += self._delta({"type": "thinking_delta", "thinking": extra["reasoning_content"]})
        if extra.get("thinking_signature"):
            if self._kind != "thinking":
                out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out += self._delta({"type": "signature_delta", "signature": extra["thinking_signature"]})
        if chunk.content:
            if self._kind != "text":
                out += self._open("text", {"type": "text", "text": ""})
            out += self._delta({"type": "text_delta", "text": chunk.content})
        for call in chunk.tool_calls or ():
            out += self._tool_delta(call)
        return out or None

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        out = b""
        function = call.get("function") or {}
        index = call.get("index", 0)
        if call.get("id") or self._kind != "tool_use" or index != self._tool:
            self._tool = index
            block = {"type": "tool_use", "id": call.get("id") or "", "name": function.get("name") or "", "input": {}}
            out += self._open("tool_use", block)
        if function.get("arguments"):
            out += self._delta({"type": "input_json_delta", "partial_json": function["arguments"]})
        return out

    def end(self) -> bytes:
        """Close the open block, then ``message_delta`` (stop reason, usage) and ``message_stop``."""
        out = b"" if self._started else self._start(Chunk())
        out += self._close()
        usage = anthropic_usage(self._usage)
        delta = {"stop_reason": stop_reason(self._finish or "stop", self._sequence), "stop_sequence": self._sequence}
        return out + _event("message_delta", {"delta": delta, "usage": usage}) + _event("message_stop", {})

    def error(self, error: BaseException) -> bytes:
        """The ``error`` event that ends a stream cut by ``error``."""
        return b"event: error\ndata: " + encode_error(error, self._request_id).body + b"\n\n"


def encode_stream(request: Request, model: str) -> MessageEventEncoder:
    """A ``MessageEventEncoder`` for the streamed answer to ``request``."""
    return MessageEventEncoder(request, model)


def error_body(status: int, message: str) -> bytes:
    """Anthropic's error body; the type follows from ``status``."""
    kind = _ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")
    return _encode({"type": "error", "error": {"type": kind, "message": message}})


def encode_error(error: BaseException, request_id: str | None = None) -> ErrorAnswer:
    """The answer for ``error``: an ``OnionError`` keeps its status and public message
    (with ``Retry-After`` for a 429/503 that knows one); anything else is a 500 naming
    only the request id."""
    if not isinstance(error, OnionError):
        message = "internal error" if request_id is None else f"internal error (request id {request_id})"
        return ErrorAnswer(500, error_body(500, message), [])
    status, message = error.status, error.public_message
    if status >= 500 and request_id is not None and request_id not in message:
        message = f"{message} (request id {request_id})"
    headers: list[tuple[bytes, bytes]] = [(b"x-should-retry", b"true" if error.should_retry else b"false")]
    retry_after = getattr(error, "retry_after", None)
    if isinstance(retry_after, (int, float)) and status in (429, 503, 529):
        headers.append((b"retry-after", str(max(1, int(-(-retry_after // 1)))).encode()))
    return ErrorAnswer(status, error_body(status, message), headers)
