"""AnthropicProvider against the fake Messages API over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from onion import Message, ProviderError, Request, ResumePrefix
from onion.providers import AnthropicProvider
from onion.testing.upstream import FakeUpstream, Fault


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(api_key="ak-test") as fake:
        yield fake


@pytest.fixture
async def provider(upstream: FakeUpstream) -> AsyncIterator[AnthropicProvider]:
    p = AnthropicProvider(name="claude", base_url=upstream.base_url, api_key="ak-test", models=["claude-x"])
    try:
        yield p
    finally:
        await p.aclose()


def ask(*, stream: bool = False, **fields: object) -> Request:
    messages = [
        Message("system", "be brief"),
        Message("user", "first"),
        Message("assistant", "noted"),
        Message("user", [{"type": "text", "text": "hello"}, {"type": "text", "text": " claude"}]),
    ]
    return Request(model="claude-x", messages=messages, stream=stream, **fields)  # type: ignore[arg-type]


async def test_complete_maps_system_messages_and_usage(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    request = ask(max_tokens=50, stop="END", temperature=0.2)
    completion = await (await provider(request)).result()
    assert completion.content == "You said: hello claude"
    assert completion.finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 4
    path, headers, body = upstream.requests[-1]
    assert path == "/v1/messages"
    assert headers["x-api-key"] == "ak-test" and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    assert body["system"] == "be brief"
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["max_tokens"] == 50 and body["stop_sequences"] == ["END"] and body["temperature"] == 0.2
    assert request.context.upstream_seconds > 0


async def test_max_tokens_defaults_because_anthropic_requires_it(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    await (await provider(ask())).result()
    assert upstream.requests[-1][2]["max_tokens"] == 1024


async def test_stream_events_become_chunks_with_usage(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    async with await provider(ask(stream=True)) as response:
        chunks = [chunk async for chunk in response]
    assert "".join(c.content for c in chunks) == "You said: hello claude"
    assert chunks[0].role == "assistant" and chunks[0].model == "claude-x"
    final = [c for c in chunks if c.usage is not None]
    assert len(final) == 1 and final[0].finish_reason == "stop" and final[0].usage.completion_tokens == 4  # type: ignore[union-attr]
    stats = await upstream.wait_settled()
    assert stats.streams_completed == 1 and stats.open_streams == 0


@pytest.mark.parametrize("mode", ["close", "end"])
async def test_stream_without_message_stop_is_an_error(
    provider: AnthropicProvider, upstream: FakeUpstream, mode: str
) -> None:
    upstream.push(Fault(cut_after=1, cut_mode=mode))  # type: ignore[arg-type]
    with pytest.raises(ProviderError) as caught:
        await (await provider(ask(stream=True))).result()
    assert caught.value.retryable


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (401, False), (429, True), (529, True)])
async def test_errors_are_classified(
    provider: AnthropicProvider, upstream: FakeUpstream, status: int, retryable: bool
) -> None:
    upstream.push(Fault(status=status, retry_after="2"))
    with pytest.raises(ProviderError) as caught:
        await provider(ask())
    assert caught.value.upstream_status == status and caught.value.retryable is retryable
    assert caught.value.retry_after == 2.0


async def test_wrong_key_is_not_retryable(upstream: FakeUpstream) -> None:
    provider = AnthropicProvider(base_url=upstream.base_url, api_key="wrong")
    try:
        with pytest.raises(ProviderError) as caught:
            await provider(ask())
        assert caught.value.upstream_status == 401 and not caught.value.retryable
    finally:
        await provider.aclose()


async def test_malformed_stream_event(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    upstream.push(Fault(malformed=True))
    with pytest.raises(ProviderError) as caught:
        await (await provider(ask(stream=True))).result()
    assert "malformed" in str(caught.value)


@pytest.mark.parametrize("stream", [False, True])
async def test_answers_name_the_api_for_gen_ai_provider_name(provider: AnthropicProvider, stream: bool) -> None:
    from onion.providers import SimulatedProvider

    async with await provider(ask(stream=stream)) as response:
        await response.result()
    assert response.provider == "anthropic"
    simulated = await SimulatedProvider(models=["m"], ttft=0, tokens_per_second=1e6)(ask(stream=stream))
    await simulated.result()
    assert simulated.provider == "simulated"


def _stream_with_prefix(text: str, messages: list[Message] | None = None) -> Request:
    request = ask(stream=True)
    request.context.resume = ResumePrefix(text, request.messages if messages is None else messages)
    return request


async def test_a_resume_marker_becomes_an_assistant_prefix_replayed_before_the_continuation(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    # The upstream continues the prefix: it sends only what follows it (here a leading space).
    upstream.reply = lambda body: " hello claude" if body["messages"][-1]["role"] == "assistant" else "?"
    async with await provider(_stream_with_prefix("You said: ")) as response:
        chunks = [chunk async for chunk in response]
    # The prefix goes without its trailing whitespace (Anthropic rejects it) ...
    assert upstream.requests[-1][2]["messages"][-1] == {"role": "assistant", "content": "You said:"}
    # ... and the answer reads as a whole answer: the sent text, then the continuation.
    assert "".join(c.content for c in chunks) == "You said: hello claude"
    assert response.resumed == "continue"


async def test_a_resume_marker_extends_a_trailing_assistant_prefill(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    request = Request(model="claude-x", messages=[Message("user", "hi"), Message("assistant", "Sure:")], stream=True)
    request.context.resume = ResumePrefix(" one two ", request.messages)
    upstream.reply = lambda body: "three"
    text = (await (await provider(request)).result()).content
    assert upstream.requests[-1][2]["messages"][-1] == {"role": "assistant", "content": "Sure: one two"}
    assert text == " one two three"


@pytest.mark.parametrize("case", ["other messages", "not streamed", "blank text"])
async def test_a_resume_marker_for_another_request_is_ignored(
    provider: AnthropicProvider, upstream: FakeUpstream, case: str
) -> None:
    if case == "other messages":  # a side call that shares the context
        request = _stream_with_prefix("You said:", [Message("user", "something else")])
    elif case == "not streamed":
        request = ask()
        request.context.resume = ResumePrefix("You said:", request.messages)
    else:
        request = _stream_with_prefix("  ")
    response = await provider(request)
    assert (await response.result()).content == "You said: hello claude"
    assert upstream.requests[-1][2]["messages"][-1]["role"] == "user"
    assert response.resumed is None


# -- the complete translation, OpenAI in -> the schema-checking Anthropic fake -------


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_tools_round_trip_through_the_anthropic_fake(anyio_backend: str, stream: bool) -> None:
    from onion.testing import AnthropicUpstream

    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    with AnthropicUpstream() as up:
        provider = AnthropicProvider(base_url=up.base_url)
        ask = Request(
            model="c", messages=[Message("user", "onion?")], tools=[tool], tool_choice="required", stream=stream
        )
        response = await provider(ask)
        if stream:
            chunks = [chunk async for chunk in response]
            calls = [d for c in chunks for d in c.tool_calls or ()]
            assert calls[0]["index"] == 0 and calls[0]["function"]["name"] == "lookup"
            arguments = "".join(d["function"]["arguments"] for d in calls)
            call_id, finish = calls[0]["id"], [c.finish_reason for c in chunks if c.finish_reason][-1]
        else:
            completion = response.completion
            arguments = completion.tool_calls[0]["function"]["arguments"]
            call_id, finish = completion.tool_calls[0]["id"], completion.finish_reason
        assert json.loads(arguments) == {"q": "onion?"} and finish == "tool_calls"
        call = {"id": call_id, "type": "function", "function": {"name": "lookup", "arguments": arguments}}
        follow = Request(
            model="c",
            messages=[
                *ask.messages,
                Message("assistant", None, tool_calls=[call]),
                Message("tool", "a bulb", tool_call_id=call_id, extra={"is_error": True}),
            ],
            tools=[tool],
        )
        answer = (await provider(follow)).completion
        assert answer.content == "results: error: a bulb"
        assert up.rejected == []
        assert up.requests[0]["tool_choice"] == {"type": "any"}


@pytest.mark.parametrize("field", ["seed", "presence_penalty", "frequency_penalty", "logit_bias"])
async def test_an_untranslatable_field_is_a_400_naming_it(anyio_backend: str, field: str) -> None:
    from onion import BadRequest

    value: object = {"1": 1.0} if field == "logit_bias" else 1
    request = Request(model="c", messages=[Message("user", "x")], **{field: value})  # type: ignore[arg-type]
    with pytest.raises(BadRequest) as refused:
        AnthropicProvider().encode(request)
    assert refused.value.param == field
