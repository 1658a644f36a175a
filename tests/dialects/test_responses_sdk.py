"""``POST /v1/responses`` over real HTTP with the official ``openai`` SDK: the gateway
(default stack) in front of the fake upstream and in front of the simulated default."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from onion.config import build_gateway, default_config, parse_config
from onion.server import create_app
from onion.testing.upstream import FakeUpstream, Fault, ThreadedServer

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def _gateway(upstream: FakeUpstream | None, stack: list[dict[str, Any]] | None = None) -> Any:
    if upstream is None:
        return build_gateway(default_config(env={}))
    config: dict[str, Any] = {
        "providers": [{"name": "up", "kind": "openai", "base_url": upstream.base_url, "models": ["gpt-4o-mini"]}]
    }
    if stack is not None:
        config["stack"] = stack
    return build_gateway(parse_config(config, env={}))


def _answer(content: str | None = None, tool_calls: list[Any] | None = None, finish: str = "stop") -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
    }


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture
async def served(upstream: FakeUpstream) -> AsyncIterator[ThreadedServer]:
    async with ThreadedServer(create_app(_gateway(upstream)), lifespan="on") as server:
        yield server


@pytest.fixture
async def client(served: ThreadedServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


async def test_create_text_and_usage(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    response = await client.responses.create(model="gpt-4o-mini", input="hello there", instructions="be brief")
    assert response.status == "completed"
    assert response.output_text == "You said: hello there"
    assert response.instructions == "be brief"
    assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    sent = upstream.requests[-1][2]
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["messages"][1] == {"role": "user", "content": "hello there"}


async def test_function_tool_round_trip(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    upstream.completion_for = lambda body: (
        _answer(None, [call], "tool_calls") if body["messages"][-1]["role"] == "user" else None
    )
    first = await client.responses.create(model="gpt-4o-mini", input="weather in Oslo?", tools=TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, c.arguments, c.call_id) for c in calls] == [("get_weather", '{"city":"Oslo"}', "call_1")]
    second = await client.responses.create(
        model="gpt-4o-mini",
        tools=TOOLS,
        input=[
            {"role": "user", "content": "weather in Oslo?"},
            *[c.model_dump(exclude_none=True) for c in calls],
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        ],
    )
    assert second.status == "completed"
    sent = upstream.requests[-1][2]
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert sent["messages"][2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
    assert sent["tools"][0]["function"]["name"] == "get_weather"


async def test_stream_helper_with_a_function_call(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    call = {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}
    upstream.completion_for = lambda body: _answer("Checking.", [call], "tool_calls")
    kinds: list[str] = []
    async with client.responses.stream(model="gpt-4o-mini", input="weather?", tools=TOOLS) as stream:
        async for event in stream:
            kinds.append(event.type)
        final = await stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for kind in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ):
        assert kind in kinds
    assert final.output_text == "Checking."
    [fc] = [item for item in final.output if item.type == "function_call"]
    assert (fc.name, fc.arguments, fc.call_id) == ("get_weather", '{"city":"Rome"}', "call_9")
    assert final.usage is not None and final.usage.output_tokens > 0


async def test_stream_helper_assembles_what_create_answers_with_text_and_two_calls(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    # Text of several words, then two calls whose arguments the output guard holds back
    # in part (a phone number): through the default stack the SDK's stream helper keys
    # items by id and refuses an item that reopens, so each part must go out in order.
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "call", "arguments": '{"to": "+1 415 555 0100"}'}},
    ]
    upstream.completion_for = lambda body: {
        **_answer("Let me check the weather.", calls, "tool_calls"),
        "service_tier": "default",
    }
    complete = await client.responses.create(model="gpt-4o-mini", input="weather, complete", tools=TOOLS)
    async with client.responses.stream(model="gpt-4o-mini", input="weather, streamed", tools=TOOLS) as stream:
        async for _ in stream:
            pass
        streamed = await stream.get_final_response()
    for answer in (complete, streamed):
        assert [item.type for item in answer.output] == ["message", "function_call", "function_call"]
        assert answer.output_text == "Let me check the weather."
        assert [(c.call_id, c.arguments) for c in answer.output if c.type == "function_call"] == [
            ("call_1", '{"city": "Paris"}'),
            ("call_2", '{"to": "[PHONE]"}'),
        ]
        assert answer.service_tier == "default"  # the upstream's, not the request's (none)
        assert answer.created_at == 1  # the upstream answer's time


async def test_stream_text_sequence_numbers(served: ThreadedServer) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        body = {"model": "gpt-4o-mini", "input": "count to three", "stream": True}
        reply = await http.post("/v1/responses", json=body)
    events = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "You said: count to three"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == text


async def test_json_schema_text_format(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.completion_for = lambda body: _answer('{"city": "Oslo"}')
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response = await client.responses.create(
        model="gpt-4o-mini",
        input="a city",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    )
    assert json.loads(response.output_text) == {"city": "Oslo"}
    sent = upstream.requests[-1][2]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": schema, "strict": True},
    }
    assert response.text.format.type == "json_schema"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
async def test_stateful_features_are_a_400_that_says_so(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, extra: dict[str, Any], param: str
) -> None:
    before = len(upstream.requests)
    body: dict[str, Any] = {"model": "gpt-4o-mini", "input": "hi", **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        await client.post("/responses", body=body, cast_to=httpx.Response)
    assert caught.value.body["param"] == param  # type: ignore[index]
    assert len(upstream.requests) == before


async def test_upstream_error_and_stored_responses(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.push(Fault(status=400, error_message="bad thing", error_code="invalid_value"))
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="gpt-4o-mini", input="hi")
    assert caught.value.code == "invalid_value"
    with pytest.raises(openai.BadRequestError) as stored:
        await client.responses.retrieve("resp_123")
    assert "stateless" in str(stored.value)
    with pytest.raises(openai.BadRequestError) as legacy:
        await client.completions.create(model="gpt-4o-mini", prompt="hi")
    assert "legacy completions" in str(legacy.value)


async def test_mid_stream_failure_ends_with_error_and_failed(served: ThreadedServer, upstream: FakeUpstream) -> None:
    upstream.push(Fault(cut_after=2), Fault(cut_after=2), Fault(cut_after=2), Fault(cut_after=2))
    async with httpx.AsyncClient(base_url=served.url, timeout=20) as http:
        body = {"model": "gpt-4o-mini", "input": "one two three four five six", "stream": True}
        reply = await http.post("/v1/responses", json=body, headers={"x-onion-cache": "off"})
    kinds = [json.loads(line[6:])["type"] for line in reply.text.splitlines() if line.startswith("data: ")]
    assert kinds[-2:] == ["error", "response.failed"]
    assert "response.completed" not in kinds


async def test_against_the_simulated_default() -> None:
    app = create_app(_gateway(None))
    async with (
        ThreadedServer(app, lifespan="on") as server,
        openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client,
    ):
        response = await client.responses.create(model="sim-small", input="hello sim")
        assert response.output_text.startswith("Simulated answer to: hello sim")
        async with client.responses.stream(model="sim-small", input="weather?", tools=TOOLS) as stream:
            final = await stream.get_final_response()
        assert [item.type for item in final.output] == ["function_call"]


async def test_output_guard_exact_cache_and_trim_through_responses(upstream: FakeUpstream) -> None:
    card = "4111 1111 1111 1111"
    upstream.reply = lambda body: f"your card is {card} ok"
    stack = [
        {"use": "exact_cache"},
        {"use": "output_guard"},
        {"use": "trim_context", "max_tokens": 40},
    ]
    app = create_app(_gateway(upstream, stack))
    long_history = [{"role": "user", "content": "old words " * 30}, {"role": "assistant", "content": "ok"}]
    body = {"model": "gpt-4o-mini", "input": [*long_history, {"role": "user", "content": "my card?"}], "stream": True}
    async with ThreadedServer(app, lifespan="on") as server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        first = await http.post("/v1/responses", json=body)
        second = await http.post("/v1/responses", json=body)
    for reply in (first, second):
        text = "".join(
            json.loads(line[6:]).get("delta", "")
            for line in reply.text.splitlines()
            if line.startswith("data: ") and '"response.output_text.delta"' in line
        )
        assert card not in reply.text and "card is" in text
    assert first.headers["x-onion-served-by"] == "up"
    assert second.headers["x-onion-served-by"] == "exact_cache"
    sent = upstream.requests[-1][2]
    contents = [m["content"] for m in sent["messages"]]
    assert contents[-1] == "my card?" and not any("old words" in c for c in contents)
