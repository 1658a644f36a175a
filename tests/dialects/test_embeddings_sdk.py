"""``POST /v1/embeddings`` over real HTTP with the official ``openai`` SDK: through the
same stack as chat (rate limit, metrics with tokens and cost, exact cache; the guards,
trimming and semantic cache pass it by) to the fake upstream, and on the simulated default."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from middlewares import ExactCache, InputGuard, Metrics, OutputGuard, RateLimit, SemanticCache, TrimContext
from onion import OpenAIProvider, Stack
from onion.config import build_gateway, default_config
from onion.server import GatewayApp, create_app
from onion.testing.upstream import FakeUpstream, ThreadedServer, embedding_of

MODEL = "text-embedding-3-small"


def _total(reader: InMemoryMetricReader, name: str, **match: str) -> float:
    data = reader.get_metrics_data()
    result = 0.0
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    attrs = dict(point.attributes)
                    if all(attrs.get(k.replace("__", ".")) == v for k, v in match.items()):
                        result += point.sum if hasattr(point, "bucket_counts") else point.value
    return result


class Served:
    def __init__(self, upstream: FakeUpstream, server: ThreadedServer, reader: InMemoryMetricReader) -> None:
        self.upstream, self.server, self.reader = upstream, server, reader


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    reader = InMemoryMetricReader()
    async with FakeUpstream() as upstream:
        provider = OpenAIProvider(name="up", base_url=upstream.base_url, api_key="test-key")
        layers = [
            Metrics(meter_provider=MeterProvider(metric_readers=[reader])),
            RateLimit(tokens_per_minute=60),
            InputGuard(),
            ExactCache(),
            SemanticCache(threshold=0.5),
            OutputGuard(),
            TrimContext(max_tokens=50),
        ]
        upstream.api_key = "test-key"
        app = GatewayApp(Stack(layers, provider), on_shutdown=provider.aclose)
        async with ThreadedServer(app, lifespan="on") as server:
            yield Served(upstream, server, reader)


@pytest.fixture
async def client(served: Served) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=served.server.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


async def test_string_list_and_token_arrays(client: openai.AsyncOpenAI, served: Served) -> None:
    one = await client.embeddings.create(model=MODEL, input="hello world", encoding_format="float")
    assert one.data[0].embedding == pytest.approx(embedding_of("hello world"), abs=1e-12)
    many = await client.embeddings.create(model=MODEL, input=["a b", "c"], encoding_format="float")
    assert [d.index for d in many.data] == [0, 1] and len(many.data[1].embedding) == 64
    ids = await client.embeddings.create(model=MODEL, input=[[1, 2, 3], [4]], encoding_format="float")
    assert ids.usage.prompt_tokens == 4
    sent = served.upstream.requests[-1]
    assert sent[0] == "/v1/embeddings" and sent[2]["input"] == [[1, 2, 3], [4]]


async def test_base64_and_dimensions_are_passed_on(client: openai.AsyncOpenAI, served: Served) -> None:
    # The SDK asks for base64 by default and decodes it: the vectors arrive as floats.
    answer = await client.embeddings.create(model=MODEL, input="short text", dimensions=8)
    assert served.upstream.requests[-1][2]["encoding_format"] == "base64"
    assert served.upstream.requests[-1][2]["dimensions"] == 8
    assert answer.data[0].embedding == pytest.approx(embedding_of("short text", 8), abs=1e-6)
    raw = await client.post(
        "/embeddings", body={"model": MODEL, "input": "x y", "encoding_format": "base64"}, cast_to=httpx.Response
    )
    vector = struct.unpack("<64f", base64.b64decode(raw.json()["data"][0]["embedding"]))
    assert list(vector) == pytest.approx(embedding_of("x y"), abs=1e-6)


async def test_exact_cache_hit_and_chat_layers_pass_it_by(served: Served) -> None:
    body = {"model": MODEL, "input": ["card 4111 1111 1111 1111 " + "word " * 8], "encoding_format": "float"}
    async with httpx.AsyncClient(base_url=served.server.url, timeout=10) as http:
        first = await http.post("/v1/embeddings", json=body)
        second = await http.post("/v1/embeddings", json=body)
    assert first.status_code == 200, first.text
    assert first.headers["x-onion-served-by"] == "up"
    assert second.headers["x-onion-served-by"] == "exact_cache"
    assert first.json()["data"] == second.json()["data"]
    # The input guard, trimming (a 50-token budget) and the output guard and the semantic cache left it alone.
    assert served.upstream.requests[-1][2]["input"] == body["input"]
    assert len([r for r in served.upstream.requests if r[0] == "/v1/embeddings"]) == 1


async def test_rate_limit_and_metrics_count_embedding_tokens(client: openai.AsyncOpenAI, served: Served) -> None:
    answer = await client.embeddings.create(model=MODEL, input=["one two three"] * 10, encoding_format="float")
    assert answer.usage.prompt_tokens == 30
    assert _total(served.reader, "gen_ai.client.token.usage", gen_ai__token__type="input") == 30
    assert _total(served.reader, "gen_ai.client.token.usage", gen_ai__operation__name="embeddings") == 30
    assert _total(served.reader, "onion.cost") == pytest.approx(30 * 0.02 / 1e6)
    # 30 of 60 tokens a minute spent: a call that needs more than the rest is refused.
    with pytest.raises(openai.RateLimitError):
        await client.embeddings.create(model=MODEL, input=["four five six seven"] * 10, encoding_format="float")


async def test_bad_input_is_a_400_naming_the_field(client: openai.AsyncOpenAI) -> None:
    for body, param in [
        ({"model": MODEL, "input": ""}, "input"),
        ({"model": MODEL, "input": []}, "input"),
        ({"model": MODEL, "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": MODEL, "input": "a", "dimensions": 0}, "dimensions"),
        ({"model": MODEL, "input": "a", "stream": True}, "stream"),
        ({"model": MODEL, "input": [{"x": 1}]}, "input"),
    ]:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.post("/embeddings", body=body, cast_to=httpx.Response)
        assert caught.value.body["param"] == param  # type: ignore[index]


async def test_a_huge_dimensions_is_the_upstreams_400_and_nothing_stalls(
    client: openai.AsyncOpenAI, served: Served
) -> None:
    # A vector of 10**30 floats: the fake upstream (as OpenAI's) refuses it at once rather
    # than building it until memory runs out, and the gateway passes the 400 on.
    for dimensions in (10**30, 4097):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.post(
                "/embeddings", body={"model": MODEL, "input": "a", "dimensions": dimensions}, cast_to=httpx.Response
            )
        assert caught.value.body["param"] == "dimensions"  # type: ignore[index]
    answer = await client.embeddings.create(model=MODEL, input="a", dimensions=4096, encoding_format="float")
    assert len(answer.data[0].embedding) == 4096


async def test_on_the_simulated_default() -> None:
    app = create_app(build_gateway(default_config(env={})))
    async with (
        ThreadedServer(app, lifespan="on") as server,
        openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client,
    ):
        first = await client.embeddings.create(model="sim-small", input=["same", "other"])
        again = await client.embeddings.create(model="sim-small", input=["same"], dimensions=16)
        floats = await client.embeddings.create(model="sim-small", input=[[5, 6]], encoding_format="float")
        # Past the simulated model's size, a 400 naming the field (a 500 before: an
        # OverflowError building the vector).
        with pytest.raises(openai.BadRequestError) as caught:
            await client.embeddings.create(model="sim-small", input="a", dimensions=10**30)
        assert caught.value.body["param"] == "dimensions"  # type: ignore[index]
    assert len(first.data) == 2 and len(first.data[0].embedding) == 256
    assert first.data[0].embedding != first.data[1].embedding
    assert len(again.data[0].embedding) == 16
    assert sum(v * v for v in floats.data[0].embedding) == pytest.approx(1.0, rel=1e-5)
    assert first.usage.prompt_tokens > 0


async def test_a_provider_without_embeddings_is_a_clear_400() -> None:
    from onion import AnthropicProvider

    async with FakeUpstream() as upstream:
        provider = AnthropicProvider(name="claude", base_url=upstream.base_url, api_key="k")
        async with (
            ThreadedServer(GatewayApp(Stack([], provider)), lifespan="on") as server,
            httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        ):
            reply = await http.post("/v1/embeddings", json={"model": "claude-x", "input": "hi"})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "embeddings_not_supported"
    assert upstream.requests == []
