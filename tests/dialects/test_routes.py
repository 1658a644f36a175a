"""``onion serve`` says which routes it serves; the legacy completions API is a clear 400."""

from __future__ import annotations

import httpx
import pytest

from onion import cli
from onion.config import build_gateway, default_config
from onion.server import create_app, served_routes
from onion.testing.upstream import ThreadedServer


def test_the_banner_lists_every_route(capsys: pytest.CaptureFixture[str]) -> None:
    config = default_config(env={})
    cli._banner(config, build_gateway(config), "http://127.0.0.1:1")
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("routes: ")]
    for route in ("POST /v1/chat/completions", "POST /v1/responses", "POST /v1/embeddings", "GET /v1/models"):
        assert route in line
    assert "GET /metrics" in served_routes(metrics=True) and "GET /metrics" not in served_routes(metrics=False)


async def test_every_listed_route_answers_and_models_is_unchanged() -> None:
    app = create_app(build_gateway(default_config(env={})))
    async with ThreadedServer(app, lifespan="on") as server, httpx.AsyncClient(base_url=server.url) as http:
        models = (await http.get("/v1/models")).json()
        assert [m["id"] for m in models["data"]] == ["sim-small", "sim-large"]
        for route in app.routes():
            method, path = route.split()
            if method == "POST":
                reply = await http.post(path, json={})
                assert reply.status_code == 400  # reached the dialect: an empty body is its to explain
            else:
                assert (await http.get(path.replace("{id}", "sim-small"))).status_code == 200
        legacy = await http.post("/v1/completions", json={"model": "sim-small", "prompt": "hi"})
        assert legacy.status_code == 400 and "legacy completions API is not served" in legacy.text
