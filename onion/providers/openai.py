"""The OpenAI-compatible provider: OpenAI, Azure-style proxies, vLLM, Ollama, llama.cpp
server, or another gateway — anything that speaks ``POST /chat/completions``.

It is an innermost handler of the onion. Streamed calls ask the upstream for the usage
chunk (``stream_options.include_usage``) so token counts survive streaming; the stream
must end with ``data: [DONE]``, otherwise the call fails as cut rather than passing a
half answer off as complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from .._types import Chunk, Completion, Request, Usage, request_to_wire
from ._http import HTTPProvider, StreamDecoder, with_prefix

__all__ = ["OpenAIProvider"]

_encode = msgspec.json.Encoder().encode


class _Message(msgspec.Struct):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice]
    id: str = ""
    created: int = 0
    model: str = ""
    usage: Usage | None = None


class _Delta(msgspec.Struct, frozen=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None


class _DeltaChoice(msgspec.Struct):
    delta: _Delta = _Delta()
    finish_reason: str | None = None


class _ChunkBody(msgspec.Struct):
    choices: list[_DeltaChoice] = []
    model: str | None = None
    usage: Usage | None = None
    error: Any = None


_decode_completion = msgspec.json.Decoder(_Completion).decode
_decode_chunk = msgspec.json.Decoder(_ChunkBody).decode


class _OpenAIStream(StreamDecoder):
    __slots__ = ("_model_sent",)

    def __init__(self) -> None:
        super().__init__()
        self._model_sent = False

    def decode(self, event: str | None, data: bytes) -> Chunk | None:
        if data == b"[DONE]":
            self.done = True
            return None
        body = _decode_chunk(data)
        if body.error is not None:
            raise ValueError(f"the upstream sent an error event: {str(body.error)[:200]}")
        model = None
        if not self._model_sent and body.model:
            model = body.model
            self._model_sent = True
        if not body.choices:
            return Chunk(usage=body.usage, model=model) if body.usage is not None or model else None
        choice = body.choices[0]
        delta = choice.delta
        return Chunk(
            content=delta.content or delta.refusal or "",
            role=delta.role,
            tool_calls=delta.tool_calls,
            finish_reason=choice.finish_reason,
            usage=body.usage,
            model=model,
        )


class OpenAIProvider(HTTPProvider):
    """A provider for any OpenAI-compatible chat-completions API.

    ``base_url`` includes the version prefix (``https://api.openai.com/v1``); ``api_key``
    goes into ``Authorization: Bearer``. ``stream_usage=False`` stops asking for the usage
    chunk, for upstreams that reject ``stream_options``.

    ``continue_final_message=True`` says the upstream continues a final assistant message
    when asked with vLLM's ``continue_final_message: true, add_generation_prompt: false``
    (vLLM, SGLang…); a stream cut mid-answer is then resumed by continuation in the retry
    and fallback layers' ``resume = "auto"`` mode, instead of by re-issuing the request.
    Other parameters: see ``HTTPProvider``.
    """

    kind = "openai"

    def __init__(
        self,
        *,
        name: str = "openai",
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        models: Sequence[str] = (),
        stream_usage: bool = True,
        continue_final_message: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(name=name, base_url=base_url, api_key=api_key, models=models, **options)
        self.stream_usage = stream_usage
        self.continue_final_message = continue_final_message

    def prefill(self, request: Request, prefix: str) -> Request | None:
        """With ``continue_final_message``: the request with ``prefix`` as a final assistant
        message and vLLM's switches to continue it; otherwise ``None`` (cannot)."""
        if not self.continue_final_message:
            return None
        last = request.messages[-1] if request.messages else None
        if last is not None and last.role == "assistant" and not request.extra.get("continue_final_message"):
            return None  # a final assistant message the caller did not ask to continue
        prefilled = with_prefix(request, prefix)
        if prefilled is None:
            return None
        extra = {**request.extra, "continue_final_message": True, "add_generation_prompt": False}
        return msgspec.structs.replace(prefilled, extra=extra)

    def encode(self, request: Request) -> bytes:
        if request.stream and self.stream_usage:
            options = dict(request.stream_options or {})
            options["include_usage"] = True
            return _encode(request_to_wire(request, stream_options=options))
        return _encode(request_to_wire(request))

    def decode_completion(self, data: bytes, request: Request) -> Completion:
        body = _decode_completion(data)
        if not body.choices:
            raise ValueError("the answer has no choices")
        choice = body.choices[0]
        message = choice.message
        return Completion(
            content=message.content or message.refusal or "",
            model=body.model or request.model,
            role=message.role,
            tool_calls=message.tool_calls,
            finish_reason=choice.finish_reason,
            usage=body.usage,
            id=body.id,
            created=body.created,
        )

    def stream_decoder(self, request: Request) -> StreamDecoder:
        return _OpenAIStream()

    async def list_models(self) -> list[str]:
        """The model ids the upstream lists at ``GET /models`` (for catch-all providers)."""
        response = await self.client.get(self.base_url + "/models", headers=self._headers)
        response.raise_for_status()
        data = msgspec.json.decode(response.content)
        return [str(item["id"]) for item in data.get("data", []) if isinstance(item, dict) and "id" in item]
