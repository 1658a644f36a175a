"""The Anthropic Messages API as a provider, behind the same OpenAI-shaped request.

Mapping: ``system`` messages become the top-level ``system`` text; ``stop`` becomes
``stop_sequences``; ``max_tokens`` is required by Anthropic (``default_max_tokens`` when
the request has none). Streams are typed events (``message_start``,
``content_block_delta``, ``message_delta``, ``message_stop``); usage is the input tokens
of ``message_start`` plus the output tokens of ``message_delta``. A stream without
``message_stop`` is a cut stream and fails.

A trailing assistant message is a prefill: Anthropic continues it. So a stream cut after
part of the answer went out can be resumed by continuation (``prefill``, used by the
retry and fallback layers in ``resume = "auto"`` mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from .._types import Chunk, Completion, Message, Request, Usage
from ._http import HTTPProvider, StreamDecoder, with_prefix

__all__ = ["AnthropicProvider"]

_encode = msgspec.json.Encoder().encode

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class _Usage(msgspec.Struct, frozen=True):
    input_tokens: int = 0
    output_tokens: int = 0


class _Block(msgspec.Struct):
    type: str = "text"
    text: str = ""


class _MessageBody(msgspec.Struct):
    content: list[_Block]
    id: str = ""
    model: str = ""
    role: str = "assistant"
    stop_reason: str | None = None
    usage: _Usage = _Usage()


class _Delta(msgspec.Struct, frozen=True):
    type: str = ""
    text: str = ""
    stop_reason: str | None = None


class _Event(msgspec.Struct):
    type: str
    message: _MessageBody | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: Any = None


_decode_message = msgspec.json.Decoder(_MessageBody).decode
_decode_event = msgspec.json.Decoder(_Event).decode


def _usage(input_tokens: int, output_tokens: int) -> Usage:
    return Usage(input_tokens, output_tokens, input_tokens + output_tokens)


def _content(message: Message) -> Any:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    return [{"type": "text", "text": p.get("text", "")} for p in message.content if p.get("type") == "text"]


class _AnthropicStream(StreamDecoder):
    __slots__ = ("_input_tokens", "_model")

    def __init__(self) -> None:
        super().__init__()
        self._input_tokens = 0
        self._model: str | None = None

    def decode(self, event: str | None, data: bytes) -> Chunk | None:
        body = _decode_event(data)
        kind = body.type
        if kind == "content_block_delta" and body.delta is not None:
            return Chunk(content=body.delta.text) if body.delta.text else None
        if kind == "message_start" and body.message is not None:
            self._input_tokens = body.message.usage.input_tokens
            return Chunk(role="assistant", model=body.message.model or None)
        if kind == "message_delta":
            output = body.usage.output_tokens if body.usage is not None else 0
            reason = body.delta.stop_reason if body.delta is not None else None
            return Chunk(
                finish_reason=_STOP_REASONS.get(reason or "", reason), usage=_usage(self._input_tokens, output)
            )
        if kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise ValueError(f"the upstream sent an error event: {str(body.error)[:200]}")
        return None


class AnthropicProvider(HTTPProvider):
    """A provider for Anthropic's Messages API (``POST {base_url}/messages``)."""

    kind = "anthropic"
    path = "/messages"

    def __init__(
        self,
        *,
        name: str = "anthropic",
        base_url: str = "https://api.anthropic.com/v1",
        api_key: str | None = None,
        models: Sequence[str] = (),
        version: str = "2023-06-01",
        default_max_tokens: int = 1024,
        **options: Any,
    ) -> None:
        self.version = version
        self.default_max_tokens = default_max_tokens
        super().__init__(name=name, base_url=base_url, api_key=api_key, models=models, **options)

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": self.version}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def prefill(self, request: Request, prefix: str) -> Request | None:
        """The request with ``prefix`` as the start of the assistant's answer (appended to
        a trailing assistant message, which Anthropic already treats as a prefill)."""
        return with_prefix(request, prefix)

    def encode(self, request: Request) -> bytes:
        system = "\n\n".join(m.text for m in request.messages if m.role in ("system", "developer"))
        messages = [
            {"role": "assistant" if m.role == "assistant" else "user", "content": _content(m)}
            for m in request.messages
            if m.role not in ("system", "developer")
        ]
        body: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "max_tokens": request.answer_tokens_limit or self.default_max_tokens,
        }
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop is not None:
            body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
        if request.stream:
            body["stream"] = True
        return _encode(body)

    def decode_completion(self, data: bytes, request: Request) -> Completion:
        body = _decode_message(data)
        reason = body.stop_reason
        return Completion(
            content="".join(block.text for block in body.content if block.type == "text"),
            model=body.model or request.model,
            role=body.role,
            finish_reason=_STOP_REASONS.get(reason or "", reason),
            usage=_usage(body.usage.input_tokens, body.usage.output_tokens),
            id=body.id,
        )

    def stream_decoder(self, request: Request) -> StreamDecoder:
        return _AnthropicStream()
