"""The gateway is transparent: an upstream error keeps its class and reason, with
``x-should-retry`` saying what a retry can fix, seen by the official ``openai`` client
over real HTTP through the default stack in front of the fake upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import openai
import pytest

from onion.config import DEFAULT_STACK, build_gateway, parse_config
from onion.server import create_app
from onion.testing import AnthropicUpstream
from onion.testing.upstream import FakeUpstream, Fault, ThreadedServer

HELLO = [{"role": "user", "content": "hello"}]
HOSTILE = "see https://internal.corp:8443/v1?key=sk-live-0123456789abcdef at 10.0.0.7 with Bearer abc.def"

ERRORS: list[tuple[Fault, int, str, str | None, bool]] = [
    # upstream fault -> gateway status, code, param, x-should-retry
    (
        Fault(
            status=400,
            error_type="invalid_request_error",
            error_code="context_length_exceeded",
            error_param="messages",
            error_message="This model's maximum context length is 8192 tokens.",
        ),
        400,
        "context_length_exceeded",
        "messages",
        False,
    ),
    (
        Fault(
            status=400,
            error_type="invalid_request_error",
            error_code="content_policy_violation",
            error_message="Your request was rejected by the safety system.",
        ),
        400,
        "content_policy_violation",
        None,
        False,
    ),
    (
        Fault(
            status=404,
            error_type="invalid_request_error",
            error_code="model_not_found",
            error_param="model",
            error_message="The model `gpt-9` does not exist.",
        ),
        404,
        "model_not_found",
        "model",
        False,
    ),
    (Fault(status=413, error_message="payload too large"), 413, "request_too_large", None, False),
    (Fault(status=422, error_message="unprocessable"), 422, "unprocessable_entity", None, False),
    (
        Fault(status=401, error_type="invalid_request_error", error_code="invalid_api_key", error_message=HOSTILE),
        502,
        "upstream_auth_failed",
        None,
        False,
    ),
    (Fault(status=403, error_message="forbidden"), 502, "upstream_auth_failed", None, False),
    (
        Fault(status=429, retry_after="1", error_type="rate_limit_error", error_code="rate_limit_exceeded"),
        429,
        "rate_limit_exceeded",
        None,
        True,
    ),
    (
        Fault(
            status=429,
            error_type="insufficient_quota",
            error_code="insufficient_quota",
            error_message="You exceeded your current quota.",
        ),
        429,
        "insufficient_quota",
        None,
        False,
    ),
    (Fault(status=500, error_message=HOSTILE), 502, "upstream_error", None, True),
    (Fault(status=503), 503, "upstream_overloaded", None, True),
    (Fault(status=529, error_type="overloaded_error", error_message="Over"), 529, "upstream_overloaded", None, True),
]


def _gateway(upstream: FakeUpstream, stack: list[dict[str, Any]] | None = None) -> Any:
    config = parse_config(
        {
            "providers": [
                {
                    "name": "primary",
                    "kind": "openai",
                    "base_url": upstream.base_url,
                    "models": ["gpt-4o", "gpt-4o-mini"],
                }
            ],
            # The default stack, without retry's backoff waits.
            "stack": stack
            if stack is not None
            else [{**t, "base_delay": 0.0} if t["use"] == "retry" else dict(t) for t in DEFAULT_STACK],
        },
        env={},
    )
    return build_gateway(config)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture
async def gateway(upstream: FakeUpstream) -> AsyncIterator[ThreadedServer]:
    async with ThreadedServer(create_app(_gateway(upstream)), lifespan="on") as server:
        yield server


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("fault", "status", "code", "param", "should_retry"), ERRORS)
async def test_an_upstream_error_keeps_its_class_and_reason(
    gateway: ThreadedServer,
    upstream: FakeUpstream,
    fault: Fault,
    status: int,
    code: str,
    param: str | None,
    should_retry: bool,
    stream: bool,
) -> None:
    # Retry (in the default stack) tries a retryable one again: give every attempt the fault.
    upstream.fault_for = lambda body: fault
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        answer = await http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO, "stream": stream})
    assert answer.status_code == status
    assert answer.headers["x-should-retry"] == ("true" if should_retry else "false")
    error = answer.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    if fault.error_type and 400 <= status < 500:
        assert error["type"] == fault.error_type
    for secret in ("internal.corp", "sk-live", "10.0.0.7", "abc.def", "127.0.0.1", "8443"):
        assert secret not in answer.text
    request_id = answer.headers["x-request-id"]
    assert answer.text.count(request_id) == (1 if status >= 500 else 0)
    if status == 429 and fault.retry_after:
        assert answer.headers["retry-after"] == fault.retry_after
    if 400 <= status < 500 and fault.error_message:
        assert error["message"] == fault.error_message  # the upstream's reason, kept
    if code == "upstream_auth_failed":
        assert "credentials" in error["message"]
    # A 4xx is sent upstream once: the retry layer acts on the classification.
    attempts = sum(1 for path, _, _ in upstream.requests if path.endswith("/chat/completions"))
    assert attempts == (1 if not should_retry else attempts) and attempts >= 1


async def test_the_openai_client_raises_the_upstreams_class_and_does_not_retry_a_4xx(
    gateway: ThreadedServer, upstream: FakeUpstream
) -> None:
    upstream.fault_for = lambda body: ERRORS[0][0]
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=2)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
    assert len(upstream.requests) == 1
    upstream.fault_for = lambda body: ERRORS[5][0]
    with pytest.raises(openai.APIStatusError) as auth:
        await client.chat.completions.create(model="gpt-4o", messages=HELLO)  # type: ignore[arg-type]
    assert auth.value.status_code == 502 and auth.value.code == "upstream_auth_failed"
    assert len(upstream.requests) == 2  # x-should-retry: false stopped the SDK's retries
    await client.close()


# -- tool calls stream like OpenAI's: the SDK's stream helper, fresh, cached, simulated --

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
ARGUMENTS = '{"city": "Paris, France", "unit": "celsius"}'
TOOL_ANSWER = {
    "id": "chatcmpl-tools",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ARGUMENTS}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
}


def _simulated_gateway() -> Any:
    config = parse_config(
        {
            "providers": [
                {"name": "sim", "kind": "simulated", "models": ["sim-small"], "ttft": 0, "tokens_per_second": 0}
            ],
            "stack": [dict(t) for t in DEFAULT_STACK],
        },
        env={},
    )
    return build_gateway(config)


async def _tool_calls_through_the_sdk(base_url: str, model: str) -> list[tuple[str, Any]]:
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)
    messages: Any = [{"role": "user", "content": "weather in Paris?"}]
    seen: list[tuple[str, Any]] = []
    try:
        for _ in range(2):  # the second answer comes from the exact cache
            async with client.chat.completions.stream(model=model, messages=messages, tools=TOOLS) as stream:
                deltas = [
                    call
                    async for event in stream
                    if event.type == "chunk" and event.chunk.choices
                    for call in event.chunk.choices[0].delta.tool_calls or []
                ]
                final = await stream.get_final_completion()
            # Every delta has its index; a call's first delta its id and type.
            assert all(d.index is not None for d in deltas)
            firsts = {d.index: d for d in reversed(deltas)}
            assert all(d.id and d.type == "function" and d.function and d.function.name for d in firsts.values())
            seen.append(("stream", final.choices[0]))
            complete = await client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
            seen.append(("complete", complete.choices[0]))
    finally:
        await client.close()
    return seen


async def test_tool_calls_stream_like_openais_fresh_and_cached(gateway: ThreadedServer, upstream: FakeUpstream) -> None:
    upstream.completion_for = lambda body: TOOL_ANSWER
    seen = await _tool_calls_through_the_sdk(gateway.url, "gpt-4o")
    for how, choice in seen:
        calls = [(c.id, c.type, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
        assert calls == [
            ("call_1", "function", "get_weather", ARGUMENTS),
            ("call_2", "function", "get_weather", "{}"),
        ], how
        assert choice.finish_reason == "tool_calls", how
        # No text: the content is None, complete and streamed (the first delta says
        # null before the calls, as OpenAI's does), fresh and from the cache.
        assert choice.message.content is None, how
    # One upstream call for the stream, one for the complete answer; the rest were cached.
    assert len(upstream.requests) <= 2


async def test_the_simulated_provider_streams_tool_calls_like_openais() -> None:
    async with ThreadedServer(create_app(_simulated_gateway()), lifespan="on") as server:
        seen = await _tool_calls_through_the_sdk(server.url, "sim-small")
    for how, choice in seen:
        [call] = choice.message.tool_calls
        assert call.id.startswith("call_sim") and call.function.name == "get_weather", how
        assert call.function.arguments == '{"input": "weather in Paris?"}', how
        assert choice.finish_reason == "tool_calls", how


async def test_a_stream_without_done_after_its_finish_reason_reaches_the_client_whole(
    gateway: ThreadedServer, upstream: FakeUpstream
) -> None:
    upstream.fault_for = lambda body: Fault(done=False)
    body = {"model": "gpt-4o", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        answer = await http.post("/v1/chat/completions", json=body)
    events = [e.removeprefix("data: ") for e in answer.text.split("\n\n") if e]
    assert events[-1] == "[DONE]" and not any('"error"' in e for e in events)
    assert len([p for p in upstream.requests if p[0].endswith("/chat/completions")]) == 1  # not retried


@pytest.mark.parametrize("include_usage", [False, True])
async def test_every_stream_event_has_the_fields_openais_have(
    gateway: ThreadedServer, upstream: FakeUpstream, include_usage: bool
) -> None:
    # Field by field on the wire (not only what the SDK makes of it): each event of the
    # gateway's stream has the keys the upstream's events have, down to the nulls
    # (``logprobs`` on every choice, ``usage`` on every event when asked for).
    body: dict[str, Any] = {"model": "gpt-4o", "messages": HELLO, "stream": True, "logprobs": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}

    def shapes(text: str) -> set[tuple[tuple[str, ...], tuple[str, ...]]]:
        out = set()
        for event in text.split("\n\n"):
            if event.startswith("data: {"):
                data = msgspec.json.decode(event[6:])
                choices = data.get("choices") or [{}]
                out.add((tuple(sorted(data)), tuple(sorted(choices[0]))))
        return out

    async with httpx.AsyncClient(timeout=10) as http:
        direct = await http.post(upstream.base_url + "/chat/completions", json=body)
        body["messages"] = [{"role": "user", "content": "hello through the gateway"}]
        through = await http.post(gateway.url + "/v1/chat/completions", json=body)
    assert shapes(through.text) == shapes(direct.text)


async def test_an_inline_photo_passes_the_default_limits(gateway: ThreadedServer, upstream: FakeUpstream) -> None:
    # A vision call with a phone photo inline (base64, ~7 MB) reaches the model through
    # the default config; a body past the default limit is a 413 that says which limit.
    photo = "data:image/jpeg;base64," + "A" * (7 * 1024 * 1024)
    content = [{"type": "text", "text": "what is in this photo?"}, {"type": "image_url", "image_url": {"url": photo}}]
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        answer = await http.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        assert upstream.requests[-1][2]["messages"][0]["content"][1]["image_url"]["url"] == photo
        content[1]["image_url"]["url"] = "data:image/jpeg;base64," + "A" * (33 * 1024 * 1024)
        refused = await http.post("/v1/chat/completions", json=body)
    assert refused.status_code == 413
    assert "max_body_bytes" in refused.json()["error"]["message"]


async def test_a_catch_all_upstreams_model_list_passes_as_it_sent_it(upstream: FakeUpstream) -> None:
    # A provider with no models of its own serves whatever the upstream lists: /v1/models
    # shows the upstream's objects field for field (its owner, not the provider's name).
    config = parse_config({"providers": [{"name": "up", "kind": "openai", "base_url": upstream.base_url}]}, env={})
    served = ThreadedServer(create_app(build_gateway(config)), lifespan="on")
    async with served as server, httpx.AsyncClient(timeout=10) as http:
        direct = (await http.get(upstream.base_url + "/models")).json()
        listed = (await http.get(server.url + "/v1/models")).json()
        one = (await http.get(server.url + "/v1/models/gpt-4o-mini")).json()
    assert listed == direct and direct["data"]
    assert one == next(entry for entry in direct["data"] if entry["id"] == "gpt-4o-mini")


async def test_providers_listing_globs_serve_the_models_they_match(upstream: FakeUpstream) -> None:
    # Before: models = ["gpt-*"] was a literal name: every call was a 404 model_not_found,
    # with no word at start-up. Now a glob serves the names it matches (the official
    # client, both providers over HTTP) and /v1/models lists the upstream's that it matches.
    upstream.models = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small")
    async with AnthropicUpstream() as claude:
        providers = [
            {"name": "oa", "kind": "openai", "base_url": upstream.base_url, "models": ["gpt-*"]},
            {"name": "an", "kind": "anthropic", "base_url": claude.base_url, "models": ["claude-*"]},
        ]
        config = parse_config({"providers": providers, "stack": []}, env={})
        async with ThreadedServer(create_app(build_gateway(config)), lifespan="on") as server:
            client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
            hello = [{"role": "user", "content": "hello"}]
            gpt = await client.chat.completions.with_raw_response.create(model="gpt-4.1-nano", messages=hello)
            sonnet = await client.chat.completions.with_raw_response.create(model="claude-sonnet-4-5", messages=hello)
            with pytest.raises(openai.NotFoundError) as unknown:
                await client.chat.completions.create(model="o3", messages=hello)
            listed = [m.id async for m in client.models.list()]
            await client.close()
    chats = [body for path, _, body in upstream.requests if path.endswith("/chat/completions")]
    assert gpt.headers["x-onion-served-by"] == "oa" and [body["model"] for body in chats] == ["gpt-4.1-nano"]
    assert sonnet.headers["x-onion-served-by"] == "an" and claude.requests[-1]["model"] == "claude-sonnet-4-5"
    assert unknown.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert listed == ["gpt-4o", "gpt-4o-mini"]  # the upstream's, the glob's only


# -- after a fallback mid-stream, the chunks name the model that produced them ------------


async def test_after_a_fallback_mid_stream_the_tail_names_its_model(upstream: FakeUpstream) -> None:
    stack = [{"use": "fallback", "models": ["gpt-4o", "gpt-4o-mini"]}]
    upstream.push(Fault(cut_after=2))  # the first model's stream is cut after two words
    async with ThreadedServer(create_app(_gateway(upstream, stack)), lifespan="on") as server:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "one two three four"}], "stream": True}
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            answer = await http.post("/v1/chat/completions", json=body)
            complete = await http.post("/v1/chat/completions", json={**body, "stream": False})
    raw = [e.removeprefix("data: ") for e in answer.text.split("\n\n") if e]
    assert raw[-1] == "[DONE]"
    events = [msgspec.json.decode(e) for e in raw[:-1]]
    text = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
    assert text == "You said: one two three four"
    models = [e["model"] for e in events]
    assert models[0] == "gpt-4o" and models[-1] == "gpt-4o-mini", models
    cut = models.index("gpt-4o-mini")
    assert set(models[:cut]) == {"gpt-4o"} and set(models[cut:]) == {"gpt-4o-mini"}
    assert answer.headers["x-onion-served-by"] and complete.json()["model"] == "gpt-4o"


# -- n > 1: several choices, complete and streamed, through the stack and the cache ---------


async def test_several_choices_reach_the_openai_client_complete_and_streamed(
    gateway: ThreadedServer, upstream: FakeUpstream
) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    messages: Any = [{"role": "user", "content": "pick a colour"}]
    try:
        complete = await client.chat.completions.create(model="gpt-4o", messages=messages, n=3)
        assert [c.index for c in complete.choices] == [0, 1, 2]
        assert {c.message.content for c in complete.choices} == {"You said: pick a colour"}
        assert complete.usage is not None and complete.usage.completion_tokens == 3 * 5  # every choice counted
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=messages, n=2, stream=True, stream_options={"include_usage": True}
        )
        texts: dict[int, str] = {}
        finished: dict[int, str | None] = {}
        async for chunk in stream:
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
                finished[choice.index] = choice.finish_reason or finished.get(choice.index)
        assert texts == {0: "You said: pick a colour", 1: "You said: pick a colour"}
        assert finished == {0: "stop", 1: "stop"}
    finally:
        await client.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_the_exact_cache_stores_and_replays_every_choice(upstream: FakeUpstream, stream: bool) -> None:
    from middlewares.cache.exact import CachePolicy, ExactCache
    from onion import Message, OpenAIProvider, Request, Stack

    provider = OpenAIProvider(name="primary", base_url=upstream.base_url)
    stack = Stack([ExactCache(policy=CachePolicy(allow_n=True))], provider)
    answers = []
    try:
        for _ in range(2):
            request = Request(model="gpt-4o", messages=[Message("user", "two please")], n=2, stream=stream)
            response = await stack(request)
            answers.append((response.served_by, await response.result()))
    finally:
        await provider.aclose()
    (fresh_by, fresh), (cached_by, cached) = answers
    assert (fresh_by, cached_by) == ("primary", "exact_cache")
    assert [c.content for c in cached.all_choices()] == ["You said: two please"] * 2
    assert cached.all_choices() == fresh.all_choices()
    assert len(upstream.requests) == 1
