"""The layers' background jobs under the server's lifespan: the semantic cache's verifier
runs from start-up to shutdown, over real HTTP, and a failing job leaves the server up."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from middlewares.cache.semantic import SemanticCache
from onion import Stack
from onion.config import build_gateway, parse_config
from onion.server import GatewayApp, create_app
from onion.testing.upstream import FakeUpstream, ThreadedServer

ANSWER = "Use the reset link on the sign-in page."


def reply(body: dict[str, Any]) -> str:
    return ANSWER


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(reply=reply) as fake:
        yield fake


def bounded_gateway(upstream: FakeUpstream, verify_rate: float) -> Any:
    config = parse_config(
        {
            "providers": [{"name": "primary", "kind": "openai", "base_url": upstream.base_url, "models": ["m"]}],
            "stack": [
                {"use": "semantic_cache", "scope": "shared", "max_wrong_hit_rate": 0.2, "verify_rate": verify_rate}
            ],
        },
        env={},
    )
    return build_gateway(config)


def semantic_of(built: Any) -> SemanticCache:
    (layer,) = built.stack.layers
    assert isinstance(layer, SemanticCache) and layer.thresholds is not None
    for i in range(30):  # outcomes of other entries open the bound, as a warm cache's would
        layer.thresholds.record(f"other{i}", 0.8, True, "latin")
    return layer


async def ask(http: httpx.AsyncClient, text: str, stream: bool = False) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": text}], "stream": stream}
    response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    return response


async def until(condition: Any, seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        # The condition turns true on the server's thread: there is no event to wait on.
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_the_server_runs_the_verifier_of_a_bounded_semantic_cache(upstream: FakeUpstream, stream: bool) -> None:
    built = bounded_gateway(upstream, verify_rate=1.0)
    semantic = semantic_of(built)
    assert built.stack.background_jobs() == [semantic.run_background]
    async with ThreadedServer(create_app(built), lifespan="on") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            await ask(http, "How do I reset my password?")
            await until(lambda: semantic.stats.stores == 1)
            hit = await ask(http, "how do I reset my password please", stream)
            assert hit.headers["x-onion-served-by"] == "semantic_cache"
            # The shadow check re-asks the upstream off the request's path and learns.
            await until(lambda: semantic.shadow.done == 1)
            assert semantic.shadow.running
        assert len(upstream.requests) == 2
        assert semantic.stats.verified == 1 and semantic.stats.verified_wrong == 0
    assert not semantic.shadow.running  # cancelled at shutdown


async def test_without_a_bound_the_semantic_cache_runs_nothing(upstream: FakeUpstream) -> None:
    semantic = SemanticCache(scope="shared")
    await semantic.run_background()  # returns at once: no verifier to run
    assert not semantic.shadow.running


def test_verify_rate_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="verify_rate needs max_wrong_hit_rate"):
        SemanticCache(verify_rate=0.5)


async def test_a_failing_background_job_is_logged_and_the_server_serves_on(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    built = bounded_gateway(upstream, verify_rate=0.0)
    ran = threading.Event()  # set on the server's thread

    async def broken() -> None:
        raise RuntimeError("boom")

    async def steady() -> None:
        ran.set()
        await anyio.sleep_forever()

    app = GatewayApp(Stack([], built.router), background=[broken, steady])
    with caplog.at_level(logging.ERROR):
        async with ThreadedServer(app, lifespan="on") as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                answer = await ask(http, "hello")
            assert answer.json()["choices"][0]["message"]["content"] == ANSWER
    assert ran.is_set()
    assert any("background job broken failed" in r.getMessage() for r in caplog.records)
