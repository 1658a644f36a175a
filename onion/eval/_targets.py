"""What an eval talks to: a handler in this process, or a gateway over HTTP.

Both are an ``Ask``: an async function from a ``Request`` to an ``Answer`` (the answer's
text and who served it). In process, any onion ``Handler`` works (a ``Stack`` around
providers, a ``ScriptedProvider``). Over HTTP, ``GatewayTarget`` speaks the OpenAI
chat-completions API (JSON or SSE) to ``onion serve`` or any compatible endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec

from .._stack import Handler
from .._types import Request, request_to_wire
from ..errors import OnionError

__all__ = ["Answer", "Ask", "GatewayError", "GatewayTarget", "handler_target"]


class Answer(msgspec.Struct, frozen=True):
    """The text of one answer and the layer or provider that produced it."""

    text: str
    served_by: str = ""


Ask = Callable[[Request], Awaitable[Answer]]


class GatewayError(OnionError):
    """The gateway answered with an HTTP error; the message is the body's public text."""

    default_public_message = "the gateway returned an error"


def handler_target(handler: Handler) -> Ask:
    """An ``Ask`` that calls ``handler`` in process and reads the whole answer."""

    async def ask(request: Request) -> Answer:
        async with await handler(request) as response:
            completion = await response.result()
        return Answer(completion.content, response.served_by)

    return ask


def chat_completions_url(base: str) -> str:
    """``base`` as the full chat-completions URL (``http://host:port`` and ``.../v1`` both work)."""
    url = base.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if not url.endswith("/v1"):
        url += "/v1"
    return url + "/chat/completions"


def _error_text(status: int, body: bytes) -> str:
    # Only the body's own error message is kept: it is what the gateway chose to show
    # users. The URL and headers never enter the report.
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = ""
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


class GatewayTarget:
    """An ``Ask`` over HTTP to an OpenAI-compatible gateway.

    ``api_key`` is sent as a bearer token and never written anywhere. A request whose
    context says ``options.cache = False`` is sent with ``Cache-Control: no-cache`` and
    ``x-onion-cache: off``. Pass ``client`` to
    share an ``httpx.AsyncClient``; otherwise use ``async with GatewayTarget(...)``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = chat_completions_url(base_url)
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._no_cache = {**self._headers, "cache-control": "no-cache", "x-onion-cache": "off"}
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> GatewayTarget:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this target created it."""
        if self._own_client:
            await self._client.aclose()

    async def __call__(self, request: Request) -> Answer:
        body = request_to_wire(request)
        # The request's "no cache" option crosses HTTP as the headers onion's gateway reads.
        headers = self._headers if request.context.options.cache else self._no_cache
        if request.stream:
            return await self._stream(body, headers)
        response = await self._client.post(self.url, json=body, headers=headers)
        if response.status_code >= 400:
            raise GatewayError(public_message=_error_text(response.status_code, response.content))
        data = response.json()
        message = data["choices"][0]["message"]
        return Answer(message.get("content") or "", response.headers.get("x-onion-served-by", ""))

    async def _stream(self, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        parts: list[str] = []
        async with self._client.stream("POST", self.url, json=body, headers=headers) as response:
            if response.status_code >= 400:
                raise GatewayError(public_message=_error_text(response.status_code, await response.aread()))
            served_by = response.headers.get("x-onion-served-by", "")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                event = json.loads(payload)
                if "error" in event:
                    raise GatewayError(public_message=f"stream error: {event['error'].get('message', '')}")
                for choice in event.get("choices", ()):
                    parts.append((choice.get("delta") or {}).get("content") or "")
        return Answer("".join(parts), served_by)
