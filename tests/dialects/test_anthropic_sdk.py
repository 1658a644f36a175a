"""The official ``anthropic`` SDK against the gateway's ``/v1/messages`` over real HTTP,
in front of the OpenAI-shaped fake (translation both ways) and the Anthropic fake
(pass-through, every request checked against the Messages schema)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx
import pytest

from onion import Stack
from onion.providers.anthropic import AnthropicProvider
from onion.providers.openai import OpenAIProvider
from onion.server import GatewayApp
from onion.testing import AnthropicUpstream, FakeUpstream, ThreadedServer
from onion.testing.upstream import Fault

pytestmark = pytest.mark.anyio

_TOOL = {
    "name": "lookup",
    "description": "Look a word up.",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
}
_PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


def _openai_answer(body: dict[str, Any]) -> dict[str, Any] | None:
    # A tool call when tools are offered and no result came back yet; else text.
    if body.get("tools") and body["messages"][-1]["role"] != "tool":
        call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"onion"}'}}
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls"
    else:
        last = body["messages"][-1]
        message, finish = {"role": "assistant", "content": f"seen: {last['role']}"}, "stop"
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }  # fmt: skip


@asynccontextmanager
async def _gateway(kind: str) -> AsyncIterator[tuple[anthropic.AsyncAnthropic, Any]]:
    if kind == "anthropic":
        upstream: Any = AnthropicUpstream(api_key="up-key")
        upstream.__enter__()
        provider: Any = AnthropicProvider(base_url=upstream.base_url, api_key="up-key")
    else:
        upstream = FakeUpstream()
        upstream.completion_for = _openai_answer
        upstream.start()
        provider = OpenAIProvider(base_url=upstream.base_url, api_key="up-key")
    app = GatewayApp(Stack([], provider), api_keys={"gw-key": "alice"})
    try:
        async with ThreadedServer(app) as server:
            client = anthropic.AsyncAnthropic(base_url=server.url, api_key="gw-key", max_retries=0)
            yield client, upstream
            await client.close()
    finally:
        upstream.__exit__() if kind == "anthropic" else upstream.stop()


def _sent(upstream: Any) -> list[dict[str, Any]]:
    return upstream.requests if isinstance(upstream, AnthropicUpstream) else [r[2] for r in upstream.requests]


@pytest.fixture(params=["anthropic", "openai"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_messages_create_answers_in_anthropic_shape(anyio_backend: str, kind: str) -> None:
    async with _gateway(kind) as (client, upstream):
        message = await client.messages.create(
            model="claude-x", max_tokens=50, system="be brief", messages=[{"role": "user", "content": "hello there"}]
        )
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == ("echo: hello there" if kind == "anthropic" else "seen: user")
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0
    sent = _sent(upstream)[-1]
    if kind == "anthropic":
        assert sent["system"] == "be brief" and sent["max_tokens"] == 50
        assert upstream.rejected == []
    else:
        assert sent["messages"][0] == {"role": "system", "content": "be brief"}


async def test_messages_stream_sends_the_real_event_sequence(anyio_backend: str, kind: str) -> None:
    async with (
        _gateway(kind) as (client, _upstream),
        client.messages.stream(
            model="claude-x", max_tokens=50, messages=[{"role": "user", "content": "one two three"}]
        ) as stream,
    ):
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds and "message_delta" in kinds
    assert final.content[0].text == ("echo: one two three" if kind == "anthropic" else "seen: user")
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    # An Anthropic upstream's message id reaches the client, streamed as complete; an
    # OpenAI upstream's chatcmpl id is no message id: the gateway names that message.
    assert final.id == "msg_fake1" if kind == "anthropic" else final.id.startswith("msg_req_")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_full_tool_use_round_trip(anyio_backend: str, kind: str, stream: bool) -> None:
    async with _gateway(kind) as (client, upstream):
        ask = [{"role": "user", "content": "what is an onion?"}]
        if stream:
            async with client.messages.stream(model="claude-x", max_tokens=50, tools=[_TOOL], messages=ask) as s:
                first = await s.get_final_message()
        else:
            first = await client.messages.create(model="claude-x", max_tokens=50, tools=[_TOOL], messages=ask)
        assert first.stop_reason == "tool_use"
        use = next(b for b in first.content if b.type == "tool_use")
        assert use.name == "lookup" and isinstance(use.input, dict) and "q" in use.input
        follow = [
            *ask,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "a bulb", "is_error": False}],
            },
        ]
        second = await client.messages.create(model="claude-x", max_tokens=50, tools=[_TOOL], messages=follow)
    assert second.stop_reason == "end_turn"
    text = second.content[0].text
    assert text == ("results: a bulb" if kind == "anthropic" else "seen: tool")
    sent = _sent(upstream)[-1]
    if kind == "openai":
        assert sent["messages"][-1] == {"role": "tool", "content": "a bulb", "tool_call_id": use.id}
        assert sent["messages"][-2]["tool_calls"][0]["function"]["name"] == "lookup"
    else:
        assert upstream.rejected == []


async def test_an_image_reaches_the_upstream(anyio_backend: str, kind: str) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": _PNG}}
    async with _gateway(kind) as (client, upstream):
        await client.messages.create(
            model="claude-x",
            max_tokens=20,
            messages=[{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}],
        )
    part = _sent(upstream)[-1]["messages"][-1]["content"][0]
    if kind == "anthropic":
        assert part == image and upstream.rejected == []
    else:
        assert part == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_PNG}"}}


async def test_anthropic_to_anthropic_keeps_unknown_fields(anyio_backend: str) -> None:
    async with _gateway("anthropic") as (client, upstream):
        await client.messages.create(
            model="claude-x",
            max_tokens=20,
            metadata={"user_id": "u-1"},
            system=[{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"service_tier": "auto", "top_k": 5},
        )
    sent = upstream.requests[-1]
    assert sent["top_k"] == 5 and sent["service_tier"] == "auto" and sent["metadata"] == {"user_id": "u-1"}
    assert sent["system"] == [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}]


async def test_anthropic_to_anthropic_streams_the_usage_where_clients_read_it(anyio_backend: str) -> None:
    # message_start carries the input and cache tokens (what LangChain and raw-event
    # readers take the input count from), message_delta the final counts, as upstream.
    system = [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}]
    ask = [{"role": "user", "content": "count me"}]
    async with (
        _gateway("anthropic") as (client, _upstream),
        client.messages.stream(model="claude-x", max_tokens=20, system=system, messages=ask) as stream,
    ):
        events = [event async for event in stream]
    start = next(e for e in events if e.type == "message_start").message.usage
    end = next(e for e in events if e.type == "message_delta").usage
    assert (start.input_tokens, start.cache_read_input_tokens, start.output_tokens) == (10, 7, 1)
    assert (end.input_tokens, end.cache_read_input_tokens, end.output_tokens) == (10, 7, 5)
    # The fields onion does not count pass as sent.
    split = {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
    assert start.service_tier == end.service_tier == "standard"
    assert dict(start.cache_creation) == dict(end.cache_creation) == split


async def test_anthropic_to_anthropic_keeps_the_usage_field_by_field(anyio_backend: str) -> None:
    system = [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}]
    async with _gateway("anthropic") as (client, upstream):
        ask = {"model": "claude-x", "max_tokens": 20, "system": system, "messages": [{"role": "user", "content": "x"}]}
        headers = {"x-api-key": "up-key", "anthropic-version": "2023-06-01"}
        async with httpx.AsyncClient() as http:
            expected = (await http.post(upstream.base_url + "/messages", json=ask, headers=headers)).json()["usage"]
        got = (await client.messages.with_raw_response.create(**ask)).http_response.json()["usage"]
    assert got == expected and "cache_creation" in expected


async def test_errors_come_in_anthropic_shape(anyio_backend: str) -> None:
    async with _gateway("anthropic") as (client, upstream):
        bad = anthropic.AsyncAnthropic(base_url=str(client.base_url), api_key="wrong", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as denied:
            await bad.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        await bad.close()
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(model="m", max_tokens=5, messages=[{"role": "system", "content": "x"}])  # type: ignore[list-item]
        counted = await client.messages.count_tokens(model="m", messages=[{"role": "user", "content": "hello world"}])
    assert denied.value.body["type"] == "error" and denied.value.body["error"]["type"] == "authentication_error"
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].role" in refused.value.body["error"]["message"]
    assert counted.input_tokens > 0
    assert upstream.requests == []  # count_tokens is answered by the gateway


@pytest.mark.parametrize(
    ("status", "raised"), [(529, anthropic.OverloadedError), (503, anthropic.ServiceUnavailableError)]
)
async def test_an_overloaded_upstream_reaches_the_anthropic_client_as_overloaded(
    anyio_backend: str, status: int, raised: type[anthropic.APIStatusError]
) -> None:
    # The status and its reason pass through: the SDK's own class for it, its Retry-After,
    # and a message that says what it is (not the upstream's words).
    fault = Fault(status=status, error_type="overloaded_error", error_message="Overloaded", retry_after="3")
    async with FakeUpstream() as upstream:
        upstream.fault_for = lambda body: fault
        app = GatewayApp(Stack([], AnthropicProvider(base_url=upstream.base_url, api_key="up-key")))
        async with ThreadedServer(app) as server:
            client = anthropic.AsyncAnthropic(base_url=server.url, api_key="any", max_retries=0)
            for stream in (False, True):
                with pytest.raises(raised) as error:
                    ask = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": f"x {stream}"}]}
                    if stream:
                        async with client.messages.stream(**ask) as events:  # type: ignore[arg-type]
                            await events.get_final_message()
                    else:
                        await client.messages.create(**ask)  # type: ignore[arg-type]
                assert error.value.status_code == status
                assert error.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
                assert "overloaded" in error.value.body["error"]["message"]  # type: ignore[index]
                assert error.value.response.headers["retry-after"] == "3"
                assert error.value.response.headers["x-should-retry"] == "true"
            await client.close()


async def test_an_endpoint_the_gateway_does_not_serve_is_an_anthropic_404(anyio_backend: str) -> None:
    async with _gateway("anthropic") as (client, _):
        with pytest.raises(anthropic.NotFoundError) as missing:
            await client.messages.batches.list()
    body: Any = missing.value.body
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert "/v1/messages/batches" in body["error"]["message"] and "POST /v1/messages" in body["error"]["message"]
