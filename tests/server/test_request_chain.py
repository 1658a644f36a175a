"""Per-request fallback chains over real HTTP: the body extension ``fallbacks`` / ``retries``
and the headers ``x-onion-fallbacks`` / ``x-onion-retries`` reach the fallback and retry
layers, never the upstream, are limited to the configured allowlist, and the answer says
which model served it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from onion.config import build_gateway, parse_config
from onion.server import create_app
from onion.testing.upstream import FakeUpstream, Fault, ThreadedServer

HELLO = [{"role": "user", "content": "hello chain"}]


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(models=("m1", "m2", "m3", "m4")) as fake:
        # m1 and m2 are down; m3 and m4 answer.
        fake.fault_for = lambda body: Fault(status=503) if body.get("model") in ("m1", "m2") else None
        yield fake


@pytest.fixture
async def http(upstream: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    config = parse_config(
        {
            "providers": [
                {"name": "up", "kind": "openai", "base_url": upstream.base_url, "models": ["m1", "m2", "m3", "m4"]}
            ],
            "stack": [
                {"use": "timeout", "seconds": 10},
                {"use": "fallback", "models": ["m1", "m2"], "allow_request_fallbacks": ["m3", "m2"]},
                {"use": "retry", "attempts": 2, "base_delay": 0.0, "max_request_attempts": 3},
            ],
        }
    )
    app = create_app(build_gateway(config))
    async with ThreadedServer(app, lifespan="on") as server, httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        yield c


def _models(upstream: FakeUpstream) -> list[str]:
    return [body["model"] for _, _, body in upstream.requests if isinstance(body, dict)]


@pytest.mark.parametrize("stream", [False, True])
async def test_the_body_names_the_chain_and_never_reaches_the_upstream(
    http: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
) -> None:
    body = {"model": "m1", "messages": HELLO, "fallbacks": ["m3"], "retries": 0, "stream": stream}
    answer = await http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    if stream:
        assert '"model":"m3"' in answer.text.replace(" ", "")
    else:
        assert answer.json()["model"] == "m3"
    # retries=0: one attempt on m1, then the request's own chain (not the layer's m2).
    assert _models(upstream) == ["m1", "m3"]
    assert all("fallbacks" not in b and "retries" not in b for _, _, b in upstream.requests)


async def test_the_header_form(http: httpx.AsyncClient, upstream: FakeUpstream) -> None:
    headers = {"x-onion-fallbacks": "m2, m3", "x-onion-retries": "0"}
    answer = await http.post("/v1/chat/completions", json={"model": "m1", "messages": HELLO}, headers=headers)
    assert answer.status_code == 200 and answer.json()["model"] == "m3"
    assert _models(upstream) == ["m1", "m2", "m3"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"fallbacks": ["m4"]}, "fallbacks"),  # not in the allowlist
        ({"fallbacks": "m3"}, "fallbacks"),  # not a list
        ({"retries": 5}, "retries"),  # over max_request_attempts
        ({"retries": -1}, "retries"),
    ],
)
async def test_what_the_allowlist_refuses_is_a_400_naming_the_field(
    http: httpx.AsyncClient, upstream: FakeUpstream, extra: dict, param: str
) -> None:
    answer = await http.post("/v1/chat/completions", json={"model": "m1", "messages": HELLO, **extra})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert _models(upstream) == []  # nothing was sent
