"""The gateway over real sockets: uvicorn serving the ASGI app in front of the fake upstream,
driven by the official ``openai`` client and by raw httpx for hostile inputs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import openai
import pytest

from onion import CallNext, Request, Response, Stack
from onion.config import build_gateway, parse_config
from onion.server import GatewayApp, create_app
from onion.testing.upstream import FakeUpstream, Fault, ThreadedServer


class Recorder:
    """A layer that keeps every request it sees (to check what the server built)."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[Request] = []

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        self.seen.append(request)
        response = await call_next(request)
        response.headers["x-recorded"] = "yes"
        return response


def gateway_for(upstream: FakeUpstream, *, keys: list[Any] | None = None, max_body: int = 64 * 1024) -> Any:
    config = parse_config(
        {
            "server": {"api_keys": keys or [], "max_body_bytes": max_body},
            "providers": [
                {
                    "name": "primary",
                    "kind": "openai",
                    "base_url": upstream.base_url,
                    "models": ["gpt-4o", "gpt-4o-mini"],
                },
                {"name": "claude", "kind": "anthropic", "base_url": upstream.base_url, "models": ["claude-x"]},
            ],
        },
        env={"ONION_KEY_ALICE": "alice-secret"},
    )
    return build_gateway(config)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def gateway(upstream: FakeUpstream, recorder: Recorder) -> AsyncIterator[ThreadedServer]:
    built = gateway_for(upstream)
    built.stack = Stack([recorder], built.router)
    app = create_app(built, metrics_renderer=lambda: (b"onion_requests_total 3\n", "text/plain; version=0.0.4"))
    async with ThreadedServer(app, lifespan="on") as server:
        yield server


@pytest.fixture
async def http(gateway: ThreadedServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        yield client


@pytest.fixture
async def client(gateway: ThreadedServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


HELLO = [{"role": "user", "content": "hello gateway"}]


# -- the official client, unchanged -----------------------------------------------


async def test_openai_client_complete(client: openai.AsyncOpenAI, recorder: Recorder) -> None:
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)  # type: ignore[arg-type]
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "You said: hello gateway"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    assert raw.headers["x-onion-served-by"] == "primary"
    assert raw.headers["x-recorded"] == "yes"
    assert raw.headers["x-request-id"] == recorder.seen[-1].context.request_id


async def test_openai_client_stream_with_usage(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o",
        messages=HELLO,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: hello gateway"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert (await upstream.wait_settled()).streams_completed == 1


async def test_stream_without_include_usage_sends_no_usage(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache" and response.headers["x-accel-buffering"] == "no"
    events = [line for line in response.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all('"usage"' not in e for e in events)


async def test_anthropic_provider_behind_the_gateway(client: openai.AsyncOpenAI) -> None:
    messages = [{"role": "system", "content": "be brief"}, *HELLO]
    completion = await client.chat.completions.create(model="claude-x", messages=messages)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "You said: hello gateway"
    stream = await client.chat.completions.create(model="claude/claude-x", messages=messages, stream=True)  # type: ignore[arg-type]
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "You said: hello gateway"


async def test_models_health_and_metrics(client: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == ["gpt-4o", "gpt-4o-mini", "claude-x"]
    health = await http.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert health.headers["x-onion-served-by"] == "onion"
    metrics = await http.get("/metrics")
    assert metrics.text == "onion_requests_total 3\n" and metrics.headers["content-type"].startswith("text/plain")


async def test_a_model_is_retrieved_by_id_or_is_a_404_in_openais_shape(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    model = await client.models.retrieve("gpt-4o-mini")
    assert (model.id, model.object, model.owned_by) == ("gpt-4o-mini", "model", "primary")
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("gpt-9")
    assert caught.value.code == "model_not_found"
    missing = await http.get("/v1/models/org/not-here")
    assert missing.status_code == 404 and missing.headers["x-should-retry"] == "false"
    assert missing.json()["error"] == {
        "message": "the model 'org/not-here' does not exist or is not served here",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


async def test_metrics_is_404_without_a_renderer(upstream: FakeUpstream) -> None:
    async with ThreadedServer(create_app(gateway_for(upstream))) as server, httpx.AsyncClient() as http:
        response = await http.get(server.url + "/metrics")
    assert response.status_code == 404 and "error" in response.json()


async def test_metrics_without_the_exporter_says_what_to_install(upstream: FakeUpstream) -> None:
    def missing_exporter() -> tuple[bytes, str]:
        raise ImportError("GET /metrics needs: pip install onion-llm[prometheus]")

    app = create_app(gateway_for(upstream), metrics_renderer=missing_exporter)
    async with ThreadedServer(app) as server, httpx.AsyncClient() as http:
        response = await http.get(server.url + "/metrics")
    assert response.status_code == 501
    assert "onion-llm[prometheus]" in response.json()["error"]["message"]
    assert response.headers["x-onion-served-by"] == "onion"


# -- hostile and wrong input ------------------------------------------------------

HOSTILE: list[tuple[str, bytes, int, str]] = [
    ("not json", b"{model: gpt-4o", 400, "not valid JSON"),
    ("invalid utf-8", b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, "JSON"),
    ("lone surrogate", b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "\\ud800"}]}', 400, "JSON"),
    ("array body", b"[1, 2]", 400, "JSON object"),
    ("empty body", b"", 400, "empty"),
    ("model wrong type", b'{"model": 7, "messages": []}', 400, "model"),
    ("missing messages", b'{"model": "gpt-4o"}', 400, "messages"),
    ("missing model", b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model"),
    ("empty messages", b'{"model": "gpt-4o", "messages": []}', 400, "messages"),
    ("message wrong type", b'{"model": "gpt-4o", "messages": ["hi"]}', 400, "messages"),
    ("role missing", b'{"model": "gpt-4o", "messages": [{"content": "hi"}]}', 400, "role"),
    ("temperature string", b'{"model": "gpt-4o", "messages": [{"role": "user"}], "temperature": "hot"}', 400, "temp"),
    ("n above 128", b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "n": 129}', 400, "'n'"),
    ("user content null", b'{"model": "gpt-4o", "messages": [{"role": "user", "content": null}]}', 400, "[0].content"),
    ("unknown role", b'{"model": "gpt-4o", "messages": [{"role": "boss", "content": "x"}]}', 400, "[0].role"),
    ("tool without id", b'{"model": "gpt-4o", "messages": [{"role": "tool", "content": "x"}]}', 400, "tool_call_id"),
    ("unknown model", b'{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}', 404, "gpt-9"),
    (
        "bidi trick in model",
        '{"model": "gpt-4o\u202e\u200b", "messages": [{"role": "user", "content": "x"}]}'.encode(),
        404,
        "does not exist",
    ),
    ("nested garbage", b'{"model": "gpt-4o", "messages": [{"role": "user", "content": {"a": 1}}]}', 400, "content"),
]


async def test_bad_input_gets_a_clear_openai_style_error(http: httpx.AsyncClient, upstream: FakeUpstream) -> None:
    # One server for every case: each case is one request, the server is the costly part.
    for case, body, status, says in HOSTILE:
        response = await http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert response.status_code == status, (case, response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, case
        assert says in error["message"], (case, error)
        assert error["type"] == "invalid_request_error", case
        assert "Traceback" not in response.text and "127.0.0.1" not in response.text, case
        assert "x-onion-served-by" in response.headers, case
    assert upstream.stats.requests == 0  # nothing bad reaches the upstream


async def test_huge_bodies_get_413_declared_or_streamed(upstream: FakeUpstream) -> None:
    server_app = create_app(gateway_for(upstream, max_body=4096))
    async with ThreadedServer(server_app) as server, httpx.AsyncClient(base_url=server.url) as http:
        big = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "' + b"a" * 10_000 + b'"}]}'
        declared = await http.post("/v1/chat/completions", content=big)

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1000

        streamed = await http.post("/v1/chat/completions", content=chunked())
        small = await http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO})
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
    assert small.status_code == 200


async def test_wrong_method_and_path(http: httpx.AsyncClient) -> None:
    wrong = await http.get("/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"  # HTTP requires Allow on a 405
    missing = await http.post("/v1/nothing", json={})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


# -- keys, caller, options ------------------------------------------------------------


async def test_api_keys(upstream: FakeUpstream) -> None:
    built = gateway_for(upstream, keys=["env:ONION_KEY_ALICE", {"name": "bob", "key": "bob-key"}])
    recorder = Recorder()
    built.stack = Stack([recorder], built.router)
    async with ThreadedServer(create_app(built)) as server, httpx.AsyncClient(base_url=server.url) as http:
        body = {"model": "gpt-4o", "messages": HELLO, "user": "end-user-1"}
        missing = await http.post("/v1/chat/completions", json=body)
        wrong = await http.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer nope"})
        models = await http.get("/v1/models")
        alice = await http.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer alice-secret"})
        bob = await http.post("/v1/chat/completions", json=body, headers={"authorization": "bearer bob-key"})
        health = await http.get("/healthz")
        sdk = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await sdk.chat.completions.create(model="gpt-4o", messages=HELLO)  # type: ignore[arg-type]
        await sdk.close()
    for response in (missing, wrong, models):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert "alice-secret" not in response.text
    assert alice.status_code == bob.status_code == health.status_code == 200
    assert [r.context.caller for r in recorder.seen] == ["ONION_KEY_ALICE", "bob"]
    assert all(r.user == "end-user-1" for r in recorder.seen)


async def test_caller_is_the_user_field_without_keys(http: httpx.AsyncClient, recorder: Recorder) -> None:
    await http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO, "user": "u-42"})
    assert recorder.seen[-1].context.caller == "u-42"


CACHE_SWITCHES: list[tuple[dict[str, str], bool | None]] = [
    ({}, True),
    ({"x-onion-cache": "no"}, False),
    ({"x-onion-cache": "OFF"}, False),
    ({"cache-control": "no-cache"}, False),
    ({"cache-control": "max-age=0, no-store"}, False),
    ({"x-onion-cache": "yes"}, True),
]


async def test_cache_switches(http: httpx.AsyncClient, recorder: Recorder) -> None:
    for headers, cache in CACHE_SWITCHES:
        body = {"model": "gpt-4o", "messages": HELLO}
        response = await http.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200
        assert recorder.seen[-1].context.options.cache is cache, headers


# -- failures -----------------------------------------------------------------------------


async def test_internal_errors_say_nothing_but_the_request_id(upstream: FakeUpstream) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("secret detail: postgres://admin:pw@10.0.0.3")

    app = GatewayApp(broken)
    async with ThreadedServer(app) as server, httpx.AsyncClient(base_url=server.url) as http:
        for stream in (False, True):
            body = {"model": "m", "messages": HELLO, "stream": stream}
            response = await http.post("/v1/chat/completions", json=body)
            assert response.status_code == 500
            message = response.json()["error"]["message"]
            assert "secret" not in response.text and "postgres" not in response.text
            assert response.headers["x-request-id"] in message


async def test_upstream_error_before_the_stream_is_a_plain_http_error(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.push(Fault(status=500), Fault(status=500))
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    with pytest.raises(openai.APIStatusError) as caught:
        stream = await client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)  # type: ignore[arg-type]
        [c async for c in stream]
    assert caught.value.status_code == 502
    assert "injected" not in str(caught.value.body)


async def test_mid_stream_failure_ends_with_an_error_event_and_no_done(
    http: httpx.AsyncClient, upstream: FakeUpstream, client: openai.AsyncOpenAI
) -> None:
    upstream.push(Fault(cut_after=2))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "a b c d e f"}], "stream": True}
    response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    events = [e for e in response.text.split("\n\n") if e]
    assert "data: [DONE]" not in events
    last = msgspec.json.decode(events[-1].removeprefix("data: "))
    assert last["error"]["code"] == "upstream_error" and "request id" in last["error"]["message"]
    assert "127.0.0.1" not in response.text
    upstream.push(Fault(cut_after=2))
    with pytest.raises(openai.APIError):
        stream = await client.chat.completions.create(model="gpt-4o", messages=body["messages"], stream=True)  # type: ignore[arg-type]
        [c async for c in stream]


async def test_client_disconnect_closes_the_upstream_stream(gateway: ThreadedServer, upstream: FakeUpstream) -> None:
    upstream.push(Fault(chunk_delay=0.05))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": " ".join(["w"] * 400)}], "stream": True}
    async with (
        httpx.AsyncClient(base_url=gateway.url) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        lines = 0
        async for line in response.aiter_lines():
            lines += bool(line)
            if lines == 3:
                break
    stats = await upstream.wait_settled(connections=True)
    assert stats.streams_disconnected == 1
    assert stats.open_streams == 0 and stats.streams_completed == 0
    assert stats.open_connections == 0


async def test_typed_errors_keep_their_status_and_retry_after() -> None:
    from onion import GuardrailViolation, RateLimited

    errors = iter([RateLimited("caller over budget", retry_after=2.2), GuardrailViolation(stage="input", rule="pii")])

    async def limited(request: Request) -> Response:
        raise next(errors)

    async with ThreadedServer(GatewayApp(limited)) as server, httpx.AsyncClient(base_url=server.url) as http:
        limit = await http.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
        guard = await http.post("/v1/chat/completions", json={"model": "m", "messages": HELLO, "stream": True})
    assert limit.status_code == 429 and limit.headers["retry-after"] == "3"
    assert limit.json()["error"] == {
        "message": "too many requests, retry after 3 s",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert "budget" not in limit.text
    assert guard.status_code == 400 and guard.json()["error"]["code"] == "guardrail_violation"


async def test_headers_a_layer_sets_cannot_inject_lines(upstream: FakeUpstream) -> None:
    async def header_layer(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        response.headers["x-fine"] = "ok"
        response.headers["x-evil"] = "a\r\nset-cookie: stolen=1"
        response.headers["x-unicode"] = "caf\u00e9 \u2603"
        return response

    built = gateway_for(upstream)
    built.stack = Stack([header_layer], built.router)
    async with ThreadedServer(create_app(built)) as server, httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO})
    assert response.status_code == 200
    assert response.headers["x-fine"] == "ok"
    assert "x-evil" not in response.headers and "set-cookie" not in response.headers
    assert "x-unicode" not in response.headers  # not representable in HTTP/1.1 header bytes


async def test_an_upstream_429_reaches_the_client_as_429_with_retry_after(
    http: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.push(Fault(status=429, retry_after="7"), Fault(status=500))
    limited = await http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO})
    broken = await http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers["x-should-retry"] == "true"
    assert broken.status_code == 502 and "retry-after" not in broken.headers
    assert "injected" not in broken.text


# -- trace context from the client to the upstream attempt -----------------------------

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.mark.parametrize("stream", [False, True])
async def test_traceparent_over_http_continues_in_the_tracing_layer(
    upstream: FakeUpstream, recorder: Recorder, stream: bool
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from middlewares import Tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    built = gateway_for(upstream)
    built.stack = Stack([Tracing(tracer_provider=provider), recorder], built.router)
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "authorization": "Bearer sk-not-for-layers-0123456789"}
    async with ThreadedServer(create_app(built), lifespan="on") as server, httpx.AsyncClient(timeout=10) as http:
        body = {"model": "gpt-4o", "messages": HELLO, "stream": stream}
        reply = await http.post(server.url + "/v1/chat/completions", json=body, headers=headers)
    assert reply.status_code == 200
    assert reply.text.endswith("data: [DONE]\n\n") if stream else "hello gateway" in reply.text
    # Only the W3C trace context reaches the layers; credentials stay in the server.
    assert recorder.seen[-1].context.trace_headers == {"traceparent": headers["traceparent"]}
    spans = [
        s for s in exporter.get_finished_spans() if s.parent is not None and f"{s.parent.span_id:016x}" == PARENT_ID
    ]
    assert len(spans) == 1
    span = spans[0]
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.attributes is not None
    assert span.attributes["gen_ai.provider.name"] == "openai"
    assert span.attributes["gen_ai.request.model"] == "gpt-4o"
