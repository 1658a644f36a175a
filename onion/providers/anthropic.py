"""The Anthropic Messages API as a provider, behind the same OpenAI-shaped request.

Mapping (``onion.wire._anthropic_shapes``, shared with the ``/v1/messages`` dialect): system,
text, images, tools, tool results, thinking, cache_control and usage both ways; ``stop`` becomes
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

from .._types import Chunk, Completion, Request
from ..wire._anthropic_shapes import (
    JSON_TOOL,
    STOP_REASONS,
    chunk_tool_start,
    completion_from_message,
    request_to_anthropic,
    usage_from_anthropic,
)
from ._http import HTTPProvider, StreamDecoder, with_prefix

__all__ = ["AnthropicProvider"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


class _AnthropicStream(StreamDecoder):
    """Anthropic's typed events as OpenAI-shaped chunks: a ``tool_use`` block opens a
    tool call (its own ``index``, counted over tool blocks), ``input_json_delta`` extends
    its arguments, ``thinking_delta`` / ``signature_delta`` ride in ``delta_extra``."""

    __slots__ = ("_forced_json", "_input", "_tools")

    def __init__(self, request: Request) -> None:
        super().__init__()
        self._input: dict[str, Any] = {}
        self._tools: dict[int, int] = {}
        fmt = request.response_format
        self._forced_json = fmt is not None and fmt.get("type") != "text"

    def decode(self, event: str | None, data: bytes) -> Chunk | None:
        body = _decode(data)
        kind = body.get("type")
        if kind == "content_block_delta":
            return self._delta(body.get("index", 0), body.get("delta") or {})
        if kind == "content_block_start":
            block = body.get("content_block") or {}
            if block.get("type") == "tool_use" and not (self._forced_json and block.get("name") == JSON_TOOL):
                index = self._tools[body.get("index", 0)] = len(self._tools)
                return chunk_tool_start(index, block)
            return None
        if kind == "message_start":
            message = body.get("message") or {}
            self._input = message.get("usage") or {}
            start = Chunk(role="assistant", model=message.get("model") or None)
            start.id = message.get("id") if isinstance(message.get("id"), str) else None
            start.prompt_usage = usage_from_anthropic(self._input) if self._input else None
            return start
        if kind == "message_delta":
            usage = usage_from_anthropic({**self._input, **(body.get("usage") or {})})
            reason = (body.get("delta") or {}).get("stop_reason")
            finish = "stop" if self._forced_json and reason == "tool_use" else STOP_REASONS.get(reason or "", reason)
            return Chunk(finish_reason=finish, usage=usage)
        if kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise ValueError(f"the upstream sent an error event: {str(body.get('error'))[:200]}")
        return None

    def _delta(self, block: int, delta: dict[str, Any]) -> Chunk | None:
        kind = delta.get("type")
        if kind == "text_delta":
            return Chunk(content=delta.get("text", "")) if delta.get("text") else None
        if kind == "input_json_delta":
            partial = delta.get("partial_json", "")
            if block not in self._tools:  # the forced JSON tool: its input is the content
                return Chunk(content=partial) if partial else None
            return Chunk(tool_calls=[{"index": self._tools[block], "function": {"arguments": partial}}])
        if kind == "thinking_delta":
            return Chunk(delta_extra={"reasoning_content": delta.get("thinking", "")})
        if kind == "signature_delta":
            return Chunk(delta_extra={"thinking_signature": delta.get("signature", "")})
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
        """The Messages body (``onion.wire._anthropic_shapes``); ``BadRequest`` names a
        field that has no Anthropic equivalent, so nothing is silently dropped."""
        return _encode(request_to_anthropic(request, request.answer_tokens_limit or self.default_max_tokens))

    def decode_completion(self, data: bytes, request: Request) -> Completion:
        body = _decode(data)
        if not isinstance(body, dict):
            raise TypeError("the answer is not a JSON object")
        return completion_from_message(body, request)

    def stream_decoder(self, request: Request) -> StreamDecoder:
        return _AnthropicStream(request)
