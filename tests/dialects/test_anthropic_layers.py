"""The layers work unchanged through ``/v1/messages``: the output guard redacts a card
number in an Anthropic SSE stream (and a complete answer), the exact cache serves the
second identical call, and trim_context trims what reaches the upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx
import pytest

from middlewares import ExactCache, OutputGuard, TrimContext
from onion import Stack
from onion.providers.anthropic import AnthropicProvider
from onion.server import GatewayApp
from onion.testing import AnthropicUpstream, ThreadedServer

pytestmark = pytest.mark.anyio

CARD = "4111 1111 1111 1111"


@asynccontextmanager
async def _served(layers: list[Any], upstream: AnthropicUpstream) -> AsyncIterator[str]:
    async with upstream:
        stack = Stack(layers, AnthropicProvider(base_url=upstream.base_url))
        async with ThreadedServer(GatewayApp(stack)) as server:
            yield server.url


@pytest.mark.parametrize("stream", [False, True])
async def test_a_planted_card_number_is_redacted(anyio_backend: str, stream: bool) -> None:
    upstream = AnthropicUpstream(reply=lambda body: f"your card is {CARD} thanks")
    body = {"model": "c", "max_tokens": 30, "stream": stream, "messages": [{"role": "user", "content": "card?"}]}
    async with _served([OutputGuard()], upstream) as url, httpx.AsyncClient() as http:
        answer = await http.post(url + "/v1/messages", json=body, headers={"x-api-key": "k"})
        client = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
        if stream:
            async with client.messages.stream(model="c", max_tokens=30, messages=body["messages"]) as s:
                text = (await s.get_final_message()).content[0].text
        else:
            text = (await client.messages.create(model="c", max_tokens=30, messages=body["messages"])).content[0].text
        await client.close()
    assert answer.status_code == 200
    assert "4111" not in answer.text and "4111" not in text
    assert text.startswith("your card is ") and text.endswith("thanks")
    if stream:
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert "event: message_stop" in answer.text


@pytest.mark.parametrize("stream", [False, True])
async def test_the_exact_cache_serves_the_second_call(anyio_backend: str, stream: bool) -> None:
    upstream = AnthropicUpstream()
    async with _served([ExactCache()], upstream) as url:
        client = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
        texts = []
        for _ in range(2):
            ask = {"model": "c", "max_tokens": 30, "messages": [{"role": "user", "content": "same question"}]}
            if stream:
                async with client.messages.stream(**ask) as s:  # type: ignore[arg-type]
                    texts.append((await s.get_final_message()).content[0].text)
            else:
                texts.append((await client.messages.create(**ask)).content[0].text)  # type: ignore[arg-type]
        await client.close()
    assert texts == ["echo: same question"] * 2
    assert len(upstream.requests) == 1


async def test_trim_context_trims_what_reaches_the_upstream(anyio_backend: str) -> None:
    upstream = AnthropicUpstream()
    history: list[dict[str, Any]] = []
    for i in range(40):
        history += [
            {"role": "user", "content": f"question {i} " * 20},
            {"role": "assistant", "content": f"answer {i} " * 20},
        ]
    history.append({"role": "user", "content": "last question"})
    async with _served([TrimContext(max_tokens=400)], upstream) as url:
        client = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
        message = await client.messages.create(model="c", max_tokens=30, system="keep me", messages=history)  # type: ignore[arg-type]
        await client.close()
    assert message.content[0].text == "echo: last question"
    sent = upstream.requests[-1]
    assert len(sent["messages"]) < len(history) and sent["system"] == "keep me"
    assert upstream.rejected == []
