"""OpenAIProvider against the fake upstream over real HTTP: answers, usage, errors, leaks."""

from __future__ import annotations

import email.utils
import socket
import time
from collections.abc import AsyncIterator

import anyio
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import AnswerTooLarge, Message, ProviderError, Request, ResumePrefix, Stack, Timeout
from onion._types import request_to_wire
from onion.providers import OpenAIProvider, classify_status, parse_retry_after
from onion.testing.upstream import FakeUpstream, Fault


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(api_key="sk-test") as fake:
        yield fake


@pytest.fixture
async def provider(upstream: FakeUpstream) -> AsyncIterator[OpenAIProvider]:
    p = OpenAIProvider(name="primary", base_url=upstream.base_url, api_key="sk-test", models=["gpt-4o"], read_timeout=5)
    try:
        yield p
    finally:
        await p.aclose()


def ask(text: str = "hello there", *, stream: bool = False, **fields: object) -> Request:
    return Request(model="gpt-4o", messages=[Message("user", text)], stream=stream, **fields)  # type: ignore[arg-type]


async def test_complete_answer_with_usage_and_auth(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    request = ask("hello there")
    response = await provider(request)
    completion = await response.result()
    assert completion.content == "You said: hello there"
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 4
    assert response.served_by == "primary"
    path, headers, body = upstream.requests[-1]
    assert path == "/v1/chat/completions" and headers["authorization"] == "Bearer sk-test"
    assert body["messages"] == [{"role": "user", "content": "hello there"}] and "stream" not in body
    assert request.context.upstream_seconds > 0


async def test_stream_asks_for_usage_and_reads_it_from_the_final_chunk(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    request = ask("one two three", stream=True, stream_options={"foo": 1})
    async with await provider(request) as response:
        chunks = [chunk async for chunk in response]
    text = "".join(c.content for c in chunks)
    assert text == "You said: one two three"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert any(c.finish_reason == "stop" for c in chunks)
    body = upstream.requests[-1][2]
    assert body["stream"] is True and body["stream_options"] == {"foo": 1, "include_usage": True}
    assert request.context.upstream_seconds > 0
    stats = await upstream.wait_settled()
    assert stats.streams_completed == 1 and stats.open_streams == 0


async def test_unknown_fields_reach_the_upstream(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    from onion import decode_request

    request = decode_request(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "x", "weird": 1}], "logprobs": True}
    )
    await (await provider(request)).result()
    body = upstream.requests[-1][2]
    assert body["logprobs"] is True and body["messages"][0]["weird"] == 1


STATUSES = [400, 401, 403, 404, 422, 408, 409, 429, 500, 502, 503, 529]


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_status_is_classified(provider: OpenAIProvider, upstream: FakeUpstream, stream: bool) -> None:
    for status in STATUSES:
        upstream.push(Fault(status=status, retry_after="7" if status == 429 else None))
        with pytest.raises(ProviderError) as caught:
            await provider(ask(stream=stream))
        error = caught.value
        assert error.upstream_status == status
        assert error.retryable is (status in (408, 409, 429) or status >= 500), status
        assert error.retry_after == (7.0 if status == 429 else None), status
        assert error.provider == "primary"
        # The user-facing text keeps the reason of a 4xx (the caller's to fix), scrubbed;
        # an outage's or a refused upstream key's body never reaches the caller.
        assert "127.0.0.1" not in error.public_message
        assert ("injected" in error.public_message) is (400 <= status < 500 and status not in (401, 403)), status
        assert "injected" in str(error)


@pytest.mark.parametrize(
    ("content", "param"),
    [
        ([{"type": "text", "text": ["a list"]}], "messages[0].content[0].text"),
        ([{"text": "no type"}], "messages[0].content[0]"),
    ],
)
async def test_the_fake_refuses_a_part_openai_cannot_read_with_a_400(
    provider: OpenAIProvider, content: list[dict[str, object]], param: str
) -> None:
    # As OpenAI's (the fake crashed into a 500 on a text that was a list).
    with pytest.raises(ProviderError) as caught:
        await provider(Request(model="gpt-4o", messages=[Message("user", content)]))  # type: ignore[arg-type]
    assert (caught.value.upstream_status, caught.value.param) == (400, param)


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = OpenAIProvider(base_url=f"http://127.0.0.1:{port}/v1", connect_timeout=2)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider(ask())
        assert caught.value.retryable and caught.value.upstream_status is None
    finally:
        await provider.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_read_stall_becomes_a_retryable_error(upstream: FakeUpstream, stream: bool) -> None:
    provider = OpenAIProvider(base_url=upstream.base_url, api_key="sk-test", read_timeout=0.3)
    upstream.push(Fault(stall_after=1, stall=30))
    try:
        with pytest.raises(ProviderError) as caught:
            response = await provider(ask("a b c d", stream=stream))
            await response.result()
        assert caught.value.retryable
        assert "ReadTimeout" in str(caught.value)
    finally:
        await provider.aclose()
    stats = await upstream.wait_settled()
    assert stats.open_streams == 0


@pytest.mark.parametrize("mode", ["close", "end"])
async def test_cut_stream_fails_and_is_never_passed_off_as_complete(
    provider: OpenAIProvider, upstream: FakeUpstream, mode: str
) -> None:
    upstream.push(Fault(cut_after=2, cut_mode=mode))  # type: ignore[arg-type]
    received = []
    response = await provider(ask("a b c d e f", stream=True))
    with pytest.raises(ProviderError) as caught:
        async for chunk in response:
            received.append(chunk.content)
    assert caught.value.retryable and caught.value.upstream_status is None
    assert "".join(received) == "You said: "  # what came before the cut, and nothing more
    upstream.push(Fault(cut_after=2, cut_mode=mode))  # type: ignore[arg-type]
    with pytest.raises(ProviderError):
        await (await provider(ask("a b c d e f", stream=True))).result()


async def test_complete_body_cut_in_half_fails(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.push(Fault(cut_after=0))
    with pytest.raises(ProviderError) as caught:
        await provider(ask())
    assert caught.value.retryable


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_bodies_are_provider_errors(
    provider: OpenAIProvider, upstream: FakeUpstream, stream: bool
) -> None:
    upstream.push(Fault(malformed=True))
    with pytest.raises(ProviderError) as caught:
        await (await provider(ask(stream=stream))).result()
    # Issue 17's documented choice: a malformed answer ends the attempt like a cut one
    # (class "malformed", retryable), so retry/fallback recover it.
    assert caught.value.retryable and caught.value.failure == "malformed"
    assert "malformed" in str(caught.value)


async def test_closing_a_stream_early_closes_the_upstream_connection(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.push(Fault(chunk_delay=0.05))
    response = await provider(ask(" ".join(["word"] * 200), stream=True))
    seen = 0
    async for _ in response:
        seen += 1
        if seen == 3:
            break
    await response.aclose()
    stats = await upstream.wait_settled(connections=True)
    assert stats.streams_disconnected == 1
    assert stats.open_streams == 0
    assert stats.open_connections == 0  # the half-read connection is dropped, not pooled


@pytest.mark.parametrize("layers", [0, 2])
async def test_closing_a_stream_before_reading_releases_the_upstream(upstream: FakeUpstream, layers: int) -> None:
    # The HTTP response is open before the chunk generator starts; closing an unread
    # stream must still close it (through the stream's on_close), under any layers.
    from middlewares import Metrics, OutputGuard

    provider = OpenAIProvider(base_url=upstream.base_url, api_key="sk-test", read_timeout=5)
    upstream.push(Fault(chunk_delay=0.05))
    stack = Stack([Metrics(), OutputGuard()][:layers], provider)
    try:
        async with await stack(ask(" ".join(["word"] * 50), stream=True)):
            pass
        stats = await upstream.wait_settled(connections=True)
        assert stats.open_streams == 0
        assert stats.streams_disconnected == 1
    finally:
        await provider.aclose()


async def test_connections_are_pooled_across_calls(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    for _ in range(5):
        await (await provider(ask())).result()
        async with await provider(ask(stream=True)) as response:
            await response.result()
    assert upstream.stats.connections_opened == 1


@pytest.mark.parametrize("limit", [8, 40])
async def test_concurrent_calls_share_a_bounded_pool(upstream: FakeUpstream, limit: int) -> None:
    # The pool under the provider must hand each idle connection to one waiting request:
    # more calls than connections all finish, on no more connections than allowed, and
    # every connection is handed back (none is left in use).
    provider = OpenAIProvider(base_url=upstream.base_url, api_key="sk-test", max_connections=limit, read_timeout=5)
    answers: list[str] = []

    async def call(index: int) -> None:
        response = await provider(ask(f"call {index}", stream=index % 2 == 1))
        answers.append((await response.result()).content)

    try:
        for _wave in range(2):
            async with anyio.create_task_group() as group:
                for index in range(60):
                    group.start_soon(call, index)
        assert provider._transport.in_use == 0  # type: ignore[union-attr]
    finally:
        await provider.aclose()
    assert len(answers) == 120 and all(a.startswith("You said: call ") for a in answers)
    assert upstream.stats.connections_opened <= limit


@pytest.mark.parametrize("stream", [False, True])
async def test_total_timeout_bounds_a_silent_upstream(upstream: FakeUpstream, stream: bool) -> None:
    # read_timeout is 60 s: only total_timeout can end these waits early.
    provider = OpenAIProvider(base_url=upstream.base_url, api_key="sk-test", read_timeout=60, total_timeout=0.3)
    upstream.push(Fault(stall_after=1, stall=5) if stream else Fault(delay=5))
    began = time.perf_counter()
    try:
        with pytest.raises(ProviderError) as caught:
            await (await provider(ask("a b c d", stream=stream))).result()
    finally:
        await provider.aclose()
    assert time.perf_counter() - began < 1.5
    assert caught.value.retryable and "total_timeout=0.3" in str(caught.value)


async def test_request_deadline_becomes_a_timeout(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.push(Fault(delay=2))
    request = ask()
    request.context.deadline = anyio.current_time() + 0.2
    with pytest.raises(Timeout):
        await provider(request)
    upstream.push(Fault(stall_after=1, stall=2))
    request = ask("a b c", stream=True)
    request.context.deadline = anyio.current_time() + 0.3
    with pytest.raises(Timeout):
        await (await provider(request)).result()


async def test_total_timeout_bounds_a_trickling_stream(upstream: FakeUpstream) -> None:
    provider = OpenAIProvider(base_url=upstream.base_url, api_key="sk-test", total_timeout=0.3)
    upstream.push(Fault(chunk_delay=0.05))
    try:
        with pytest.raises(ProviderError) as caught:
            await (await provider(ask(" ".join(["w"] * 100), stream=True))).result()
        assert caught.value.retryable and "total_timeout" in str(caught.value)
    finally:
        await provider.aclose()


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after({"retry-after": later}) or 0) <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}) == 0.0


def test_status_classification_table() -> None:
    assert [s for s in range(400, 600) if classify_status(s)] == [408, 409, 429, *range(500, 600)]


async def test_list_models(provider: OpenAIProvider) -> None:
    assert await provider.list_models() == ["gpt-4o", "gpt-4o-mini"]


def test_repr_hides_the_key() -> None:
    provider = OpenAIProvider(base_url="http://127.0.0.1:1/v1", api_key="sk-very-secret")
    assert "secret" not in repr(provider)
    anyio.run(provider.aclose)


async def test_body_encoding_round_trips_unicode(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    text = "naïve 日本語 \u202e emoji 🧅 \x00"
    completion = await (await provider(ask(text))).result()
    assert completion.content == f"You said: {text}"
    assert msgspec.json.decode(msgspec.json.encode(upstream.requests[-1][2]))["messages"][0]["content"] == text


async def test_large_bodies_pass_the_write_buffer(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    # The transport holds writes back until it reads; past 64 KiB it must send as it goes.
    text = "x" * 300_000
    completion = await (await provider(ask(text))).result()
    assert completion.content == f"You said: {text}"
    async with await provider(ask(text, stream=True)) as response:
        assert (await response.result()).content == f"You said: {text}"


async def test_a_client_of_your_own_is_used_and_left_open(upstream: FakeUpstream) -> None:
    import httpx

    async with httpx.AsyncClient(headers={"x-team": "blue"}) as client:
        provider = OpenAIProvider(base_url=upstream.base_url, api_key="sk-test", client=client)
        for stream in (False, True):
            completion = await (await provider(ask("mine", stream=stream))).result()
            assert completion.content == "You said: mine"
            assert upstream.requests[-1][1]["x-team"] == "blue"
        await provider.aclose()
        assert not client.is_closed


def _resuming(text: str) -> Request:
    request = ask("one two three", stream=True)
    request.context.resume = ResumePrefix(text, request.messages)
    return request


async def test_without_continue_final_message_a_resume_marker_is_ignored(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    assert provider.continue_final_message is False
    response = await provider(_resuming("You said: "))
    assert (await response.result()).content == "You said: one two three"
    body = upstream.requests[-1][2]
    assert body["messages"] == [{"role": "user", "content": "one two three"}]
    assert "continue_final_message" not in body and response.resumed is None


async def test_with_continue_final_message_a_resume_marker_is_continued_vllm_style(upstream: FakeUpstream) -> None:
    vllm = OpenAIProvider(base_url=upstream.base_url, api_key="sk-test", continue_final_message=True)
    upstream.reply = lambda body: "one two three" if body["messages"][-1]["role"] == "assistant" else "?"
    try:
        response = await vllm(_resuming("You said: "))
        assert (await response.result()).content == "You said: one two three"
        assert response.resumed == "continue"
        body = upstream.requests[-1][2]
        assert body["messages"][-1] == {"role": "assistant", "content": "You said:"}
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
        # A final assistant message the caller did not ask to continue is left alone.
        request = Request(model="gpt-4o", messages=[Message("user", "x"), Message("assistant", "y")], stream=True)
        assert vllm.prefill(request, "z") is None
        # A fresh request is sent as it is.
        await (await vllm(ask("plain", stream=True))).result()
        assert "continue_final_message" not in upstream.requests[-1][2]
    finally:
        await vllm.aclose()


async def test_an_answer_past_max_answer_bytes_is_cut_with_a_clean_error(upstream: FakeUpstream) -> None:
    provider = OpenAIProvider(
        name="p", base_url=upstream.base_url, api_key="sk-test", models=["gpt-4o"], max_answer_bytes=50_000
    )
    upstream.push(Fault(text="word " * 40_000), Fault(text="word " * 40_000))  # 200 kB each
    try:
        with pytest.raises(AnswerTooLarge) as info:
            await (await provider(ask())).result()
        assert (info.value.status, info.value.code, info.value.limit) == (502, "answer_too_large", 50_000)
        with pytest.raises(AnswerTooLarge):
            async with await provider(ask(stream=True)) as response:
                async for _ in response:
                    pass
        assert (await (await provider(ask("small"))).result()).content == "You said: small"
    finally:
        await provider.aclose()


@pytest.mark.parametrize("include_usage", [True, False])
async def test_a_stream_that_delivered_its_finish_reason_is_finished_without_done(
    provider: OpenAIProvider, upstream: FakeUpstream, include_usage: bool
) -> None:
    provider.stream_usage = include_usage
    upstream.push(Fault(done=False))
    completion = await (await provider(ask("one two three", stream=True))).result()
    assert completion.content == "You said: one two three" and completion.finish_reason == "stop"
    assert (completion.usage is not None) is include_usage
    assert (await upstream.wait_settled()).open_streams == 0


async def test_a_body_that_ends_without_a_finish_reason_is_still_a_cut(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.push(Fault(cut_after=2, cut_mode="end"))
    with pytest.raises(ProviderError, match="cut mid-way") as caught:
        await (await provider(ask("one two three", stream=True))).result()
    assert caught.value.retryable


_TEXT = st.text(max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_EXTRA = st.dictionaries(st.sampled_from(["metadata", "store", "x_custom", "reasoning_effort"]), _JSON, max_size=2)
_MESSAGES = st.builds(
    Message,
    role=st.sampled_from(["system", "user", "assistant", "tool"]),
    content=st.none() | _TEXT | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": _TEXT}), max_size=2),
    name=st.none() | _TEXT,
    tool_calls=st.none() | st.lists(st.dictionaries(_TEXT, _JSON, max_size=2), max_size=2),
    tool_call_id=st.none() | _TEXT,
    extra=st.just({}) | _EXTRA,
)
_REQUESTS = st.builds(
    Request,
    model=_TEXT,
    # A caller in code may pass plain dicts as messages: they reach the upstream as given.
    messages=st.lists(_MESSAGES | st.fixed_dictionaries({"role": st.just("user"), "content": _TEXT}), max_size=3),
    stream=st.booleans() | st.sampled_from([None, 0, 1]),  # code may set what no body would
    max_tokens=st.none() | st.integers(0, 10**6),
    temperature=st.none() | st.floats(0, 2),
    top_p=st.none() | st.floats(0, 1),
    n=st.none() | st.integers(1, 4),
    stop=st.none() | _TEXT | st.lists(_TEXT, max_size=2),
    seed=st.none() | st.integers(-(2**31), 2**31),
    user=st.none() | _TEXT,
    tools=st.none() | st.lists(st.dictionaries(_TEXT, _JSON, max_size=2), max_size=2),
    tool_choice=st.none() | _TEXT,
    parallel_tool_calls=st.none() | st.booleans(),
    response_format=st.none() | st.dictionaries(_TEXT, _JSON, max_size=2),
    stream_options=st.none() | st.dictionaries(_TEXT, _JSON, max_size=2),
    extra=st.just({}) | _EXTRA,
)


_ENCODERS = {usage: OpenAIProvider(base_url="http://127.0.0.1:9/v1", stream_usage=usage) for usage in (False, True)}


@settings(max_examples=300, deadline=None)
@given(request=_REQUESTS, stream_usage=st.booleans())
def test_the_upstream_body_is_byte_for_byte_the_wire_form_of_the_request(request: Request, stream_usage: bool) -> None:
    # The provider encodes a request without unknown fields through a struct of its wire
    # fields: the bytes must be request_to_wire's, whatever fields are set.
    provider = _ENCODERS[stream_usage]
    if request.stream and stream_usage:
        wire = request_to_wire(request, stream_options={**(request.stream_options or {}), "include_usage": True})
    else:
        wire = request_to_wire(request)
    assert provider.encode(request) == msgspec.json.encode(wire)
