"""The OpenAI-compatible provider: OpenAI, Azure-style proxies, vLLM, Ollama, llama.cpp
server, or another gateway — anything that speaks ``POST /chat/completions``.

It is an innermost handler of the onion. Streamed calls ask the upstream for the usage
chunk (``stream_options.include_usage``) so token counts survive streaming. A stream is
finished by ``data: [DONE]`` or, when the body ends without it, by a finish reason it
delivered; a body that ends with neither fails as cut rather than passing a half answer
off as complete. Bodies are read in the ``onion.wire.openai_chat`` dialect: every
choice and every field, unknown ones kept. An embeddings request goes to ``POST
/embeddings`` (``onion.wire.embeddings`` reads the answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from .._types import Chunk, Completion, Message, Request, request_to_wire
from ..wire import embeddings, openai_chat
from ._http import HTTPProvider, StreamDecoder, with_prefix

__all__ = ["OpenAIProvider"]

_encode = msgspec.json.Encoder().encode

# The fields of a Request an upstream sees, in order, as a struct that msgspec encodes in
# one C call: the same bytes as ``request_to_wire``'s dict (it leaves out what is None and
# ``stream: false``; a struct with those defaults omits the same), without building the
# dict (a getattr per field and a dict per message: about 5x the time). Only for a request
# with no unknown fields, at the top or in a message (those are merged as the dict does),
# and messages that are Messages.
_FIELDS = Request.__struct_fields__
_WIRE_COUNT = _FIELDS.index("extra")
_DEFAULTED = _FIELDS[len(_FIELDS) - len(Request.__struct_defaults__) :]
_DEFAULTS = dict(zip(_DEFAULTED, Request.__struct_defaults__, strict=True))
_WireRequest = msgspec.defstruct(
    "_WireRequest",
    [(name, object, _DEFAULTS[name]) if name in _DEFAULTS else (name, object) for name in _FIELDS[:_WIRE_COUNT]],
    omit_defaults=True,
)
_astuple = msgspec.structs.astuple


def _encode_plain(request: Request) -> bytes:
    """``request``'s upstream body, as ``_encode(request_to_wire(request))`` has it."""
    stream = request.stream
    # The struct leaves ``stream`` out when it equals False; the dict only when it is False.
    if request.extra or (stream is not False and stream is not True):
        return _encode(request_to_wire(request))
    for message in request.messages:
        # A message built as a plain dict (a caller in code may), or with unknown fields.
        if type(message) is not Message or message.extra:
            return _encode(request_to_wire(request))
    return _encode(_WireRequest(*_astuple(request)[:_WIRE_COUNT]))


class _OpenAIStream(StreamDecoder):
    __slots__ = ("_model_sent",)

    def __init__(self) -> None:
        super().__init__()
        self._model_sent = False

    def decode(self, event: str | None, data: bytes) -> list[Chunk] | None:
        if data == b"[DONE]":
            self.done = True
            return None
        body = msgspec.json.decode(data)
        if not isinstance(body, dict):
            raise ValueError("a stream event is not a JSON object")
        if body.get("error") is not None:
            raise ValueError(f"the upstream sent an error event: {str(body['error'])[:200]}")
        chunks = openai_chat.decode_chunk(body, with_model=not self._model_sent)
        if chunks and chunks[0].model:
            self._model_sent = True
        for chunk in chunks:
            if chunk.finish_reason is not None:
                # A finish reason is the answer's end: an upstream that then closes the body
                # without [DONE] finished it (several servers do), it did not cut it.
                self.finished = True
        return chunks or None


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
    embeddings_path = "/embeddings"

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
        return _encode_plain(request)

    def decode_completion(self, data: bytes, request: Request) -> Completion:
        return openai_chat.decode_completion(data, request.model)

    def encode_embeddings(self, request: Request) -> bytes:
        return _encode(embeddings.request_to_wire(request))

    def decode_embeddings(self, data: bytes, request: Request) -> Completion:
        return embeddings.decode_answer(data, request)

    def stream_decoder(self, request: Request) -> StreamDecoder:
        return _OpenAIStream()

    async def list_models(self) -> list[str]:
        """The model ids the upstream lists at ``GET /models`` (for catch-all providers)."""
        return [str(entry["id"]) for entry in await self.model_entries()]

    async def model_entries(self) -> list[dict[str, Any]]:
        """The model objects the upstream lists at ``GET /models``, each as it sent it
        (``owned_by``, ``created`` and any other field): the gateway's ``/v1/models``
        passes them on for a catch-all provider."""
        response = await self.client.get(self.base_url + "/models", headers=self._headers)
        response.raise_for_status()
        data = msgspec.json.decode(response.content)
        listed = data.get("data", []) if isinstance(data, dict) else []
        return [item for item in listed if isinstance(item, dict) and isinstance(item.get("id"), str)]
