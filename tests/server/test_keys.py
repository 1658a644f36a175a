"""Virtual keys over a real socket: config keys with teams, model globs, expiry, rpm and
budgets; keys issued, listed, rotated and revoked through the admin API (memory and
SQLite stores), refused on the admin API; a restart keeps issued keys and spend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from onion import ConfigError
from onion.config import build_gateway, parse_config
from onion.server import create_app
from onion.testing.upstream import ThreadedServer

ADMIN = "admin-secret-0123456789"
ALICE = "alice-secret-0123456789"
OLD = "old-secret-0123456789"
PRICES = {"sim-small": {"input": 1.0, "output": 2.0}, "sim-large": {"input": 3.0, "output": 6.0}}
STACK = [{"use": "rate_limit", "keys_only": True}, {"use": "budget"}]


def _config(state: dict[str, Any] | None = None, **alice: Any) -> Any:
    keys = [
        {"name": "alice", "key": "env:ALICE", "team": "blue", **alice},
        {"name": "old", "key": "env:OLD", "expires": "2020-01-01"},
    ]
    data: dict[str, Any] = {
        "server": {"api_keys": keys, "admin_key": "env:ADMIN"},
        "providers": [
            {"name": "sim", "kind": "simulated", "models": ["sim-small", "sim-large"], "ttft": 0.0, "answer_tokens": 8}
        ],
        "stack": STACK,
        "prices": PRICES,
    }
    if state is not None:
        data["state"] = state
    return parse_config(data, env={"ADMIN": ADMIN, "ALICE": ALICE, "OLD": OLD})


@pytest.fixture
async def served() -> AsyncIterator[ThreadedServer]:
    app = create_app(build_gateway(_config(models=["sim-s*"], rpm=1000)))
    async with ThreadedServer(app) as server:
        yield server


def _chat(model: str = "sim-small", stream: bool = False, max_tokens: int = 16) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream, "max_tokens": max_tokens}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_bad_virtual_key_fields_are_config_errors_naming_them() -> None:
    for field, value in (("budget_usd", -1), ("rpm", 0), ("tpm", 0), ("expires", "soon")):
        with pytest.raises(ConfigError, match=rf"api_keys\[0\]\.{field}"):
            _config(**{field: value})
    with pytest.raises(ConfigError, match="budget_window"):
        _config(budget_window="week")
    config = parse_config(
        {
            "server": {"api_keys": [{"name": "a", "key": "env:A", "rpm": 5, "budget_usd": 1.0}]},
            "providers": [{"name": "sim", "kind": "simulated", "models": ["sim-small"]}],
        },
        env={"A": "a-secret-0123456789"},
    )
    with pytest.raises(ConfigError) as caught:
        build_gateway(config)
    text = str(caught.value)
    assert "api_keys[0].rpm': needs a 'rate_limit' layer" in text
    assert "api_keys[0].budget_usd': needs a 'budget' layer" in text


def test_a_budgeted_key_on_an_unpriced_model_is_refused_at_build() -> None:
    def config(prices: dict[str, Any]) -> Any:
        data = {
            "server": {"api_keys": [{"name": "a", "key": "env:A", "budget_usd": 1.0}]},
            "providers": [{"name": "sim", "kind": "simulated", "models": ["sim-small", "sim-large"]}],
            "stack": [{"use": "budget"}],
            "prices": prices,
        }
        return parse_config(data, env={"A": "a-secret-0123456789"})

    with pytest.raises(ConfigError, match="sim-large"):
        build_gateway(config({"sim-small": {"input": 1.0, "output": 2.0}}))
    build_gateway(config(PRICES))  # every model the key may call is priced


async def test_config_key_models_expiry_and_team(served: ThreadedServer) -> None:
    async with httpx.AsyncClient(base_url=served.url) as http:
        ok = await http.post("/v1/chat/completions", json=_chat(), headers=_auth(ALICE))
        assert ok.status_code == 200, ok.text
        refused = await http.post("/v1/chat/completions", json=_chat("sim-large"), headers=_auth(ALICE))
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "model_not_allowed"
        assert "sim-large" in refused.json()["error"]["message"] and "sim-s*" in refused.json()["error"]["message"]
        streamed = await http.post("/v1/chat/completions", json=_chat("sim-large", stream=True), headers=_auth(ALICE))
        assert streamed.status_code == 403
        expired = await http.post("/v1/chat/completions", json=_chat(), headers=_auth(OLD))
        assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
        unknown = await http.post("/v1/chat/completions", json=_chat(), headers=_auth("nope-0123456789"))
        assert unknown.status_code == 401


async def test_a_refused_key_is_answered_with_a_request_id(served: ThreadedServer) -> None:
    # Refused before the body is read (no key, a wrong one, two Authorization headers), on
    # every route that checks keys: the answer still names a request id, each its own.
    ids = []
    twice = [("authorization", "Bearer a"), ("authorization", "Bearer b")]
    async with httpx.AsyncClient(base_url=served.url) as client:
        for headers in ({}, _auth("wrong-secret-0123456789"), twice):
            for method, path in (("POST", "/v1/chat/completions"), ("POST", "/v1/messages"), ("GET", "/v1/models")):
                answer = await client.request(method, path, json=_chat(), headers=headers)
                assert answer.status_code in (400, 401), (path, answer.status_code)
                assert answer.headers["x-request-id"].startswith("req_"), path
                ids.append(answer.headers["x-request-id"])
    assert len(set(ids)) == len(ids)


async def test_issue_list_rotate_revoke(served: ThreadedServer) -> None:
    async with httpx.AsyncClient(base_url=served.url) as http:
        made = await http.post(
            "/admin/keys",
            json={"name": "bob", "team": "red", "models": ["sim-*"], "budget_usd": 5, "rpm": 100, "metadata": {"a": 1}},
            headers=_auth(ADMIN),
        )
        assert made.status_code == 201, made.text
        key, key_id = made.json()["key"], made.json()["id"]
        assert key.startswith("sk-onion-")
        # Never used yet (not in any cache): still known as a client key, so 403, not 401.
        assert (await http.get("/admin/keys", headers=_auth(key))).status_code == 403
        for stream in (False, True):
            answer = await http.post("/v1/chat/completions", json=_chat(stream=stream), headers=_auth(key))
            assert answer.status_code == 200, answer.text
            assert float(answer.headers["x-onion-budget-remaining"]) < 5.0
        listed = await http.get("/admin/keys", headers=_auth(ADMIN))
        assert listed.status_code == 200
        assert key not in listed.text and "digest" not in listed.text and ALICE not in listed.text
        bob = next(k for k in listed.json()["data"] if k.get("id") == key_id)
        assert bob["team"] == "red" and bob["budget_usd"] == 5 and bob["revoked"] is False
        # A virtual key, issued or from config, never opens the admin API.
        for client in (key, ALICE):
            assert (await http.get("/admin/keys", headers=_auth(client))).status_code == 403
        rotated = await http.post(f"/admin/keys/{key_id}/rotate", headers=_auth(ADMIN))
        assert rotated.status_code == 200
        new = rotated.json()["key"]
        assert new != key
        # This worker forgets its cache at once; other workers within the ttl (test_keys_workers).
        assert (await http.post("/v1/chat/completions", json=_chat(), headers=_auth(key))).status_code == 401
        assert (await http.post("/v1/chat/completions", json=_chat(), headers=_auth(new))).status_code == 200
        gone = await http.delete(f"/admin/keys/{key_id}", headers=_auth(ADMIN))
        assert gone.status_code == 200 and gone.json()["revoked"] is True
        assert (await http.post("/v1/chat/completions", json=_chat(), headers=_auth(new))).status_code == 401
        assert (await http.get("/admin/keys", headers=_auth(new))).status_code == 401  # revoked: no client key
        assert (await http.delete("/admin/keys/key_nope", headers=_auth(ADMIN))).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "budget_usd": -1}, "budget_usd"),
        ({"name": "x", "budget_usd": "lots"}, "budget_usd"),
        ({"name": "x", "budget_window": "week"}, "budget_window"),
        ({"name": "x", "rpm": 0}, "rpm"),
        ({"name": "x", "models": "sim-*"}, "models"),
        ({"name": "x", "expires": "someday"}, "expires"),
        ({"name": "x", "colour": "red"}, "colour"),
        ({"name": "alice"}, "name"),
        ([1], "body"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(served: ThreadedServer, body: Any, field: str) -> None:
    async with httpx.AsyncClient(base_url=served.url) as http:
        answer = await http.post("/admin/keys", json=body, headers=_auth(ADMIN))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == field, answer.json()


async def test_a_key_budget_refuses_with_429_once_spent(served: ThreadedServer) -> None:
    async with httpx.AsyncClient(base_url=served.url) as http:
        # Worst case of one call: ~10 prompt tokens + 16 answer tokens at $1/$2 per 1M ≈ $0.00004.
        made = await http.post("/admin/keys", json={"name": "carol", "budget_usd": 0.0001}, headers=_auth(ADMIN))
        key = made.json()["key"]
        statuses = [
            (await http.post("/v1/chat/completions", json=_chat(), headers=_auth(key))).status_code for _ in range(6)
        ]
        refused = await http.post("/v1/chat/completions", json=_chat(), headers=_auth(key))
    assert statuses.count(200) >= 2 and statuses[-1] == 429, statuses
    assert refused.json()["error"]["code"] == "budget_exceeded" and "retry-after" in refused.headers


async def test_a_restart_keeps_issued_keys_and_spend(tmp_path: Path) -> None:
    state = {"backend": "sqlite", "path": str(tmp_path / "state.db")}
    async with (
        ThreadedServer(create_app(build_gateway(_config(state)))) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        made = await http.post("/admin/keys", json={"name": "dave", "budget_usd": 1.0}, headers=_auth(ADMIN))
        key = made.json()["key"]
        first = await http.post("/v1/chat/completions", json=_chat(), headers=_auth(key))
        before = float(first.headers["x-onion-budget-remaining"])
    async with (
        ThreadedServer(create_app(build_gateway(_config(state)))) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        again = await http.post("/v1/chat/completions", json=_chat(), headers=_auth(key))
        assert again.status_code == 200, again.text
        # The first call's spend is still charged: less headroom than after it.
        assert float(again.headers["x-onion-budget-remaining"]) < before
        listed = await http.get("/admin/keys", headers=_auth(ADMIN))
        assert [k["name"] for k in listed.json()["data"] if k.get("source") == "issued"] == ["dave"]


async def test_spend_report_by_key_team_model_and_day_with_cache_hits(tmp_path: Path) -> None:
    config = _config({"backend": "sqlite", "path": str(tmp_path / "spend.db")})
    config.stack[:] = [{"use": "budget"}, {"use": "exact_cache"}]
    app = create_app(build_gateway(config))
    async with ThreadedServer(app) as server, httpx.AsyncClient(base_url=server.url) as http:
        made = await http.post(
            "/admin/keys", json={"name": "erin", "team": "red", "budget_usd": 1}, headers=_auth(ADMIN)
        )
        erin = made.json()["key"]
        expected = 0
        for key, stream in ((erin, False), (erin, False), (ALICE, True)):
            body = {**_chat(stream=stream), "stream_options": {"include_usage": True}} if stream else _chat()
            answer = await http.post("/v1/chat/completions", json=body, headers=_auth(key))
            assert answer.status_code == 200, answer.text
            if not stream and answer.headers["x-onion-served-by"] != "exact_cache":
                usage = answer.json()["usage"]
                expected += usage["prompt_tokens"] * 1000 + usage["completion_tokens"] * 2000
        report = (await http.get("/admin/spend", headers=_auth(ADMIN))).json()
        assert report["by_key"]["erin"]["calls"] == 2
        assert report["by_key"]["erin"]["cache_hits"] == 1  # the repeat was a cache hit, at zero cost
        assert round(report["by_key"]["erin"]["usd"] * 1e9) == expected
        assert set(report["by_team"]) == {"red", "blue"} and set(report["by_model"]) == {"sim-small"}
        assert report["total"]["calls"] == 3 and len(report["by_day"]) == 1
        only = (await http.get("/admin/spend?team=blue", headers=_auth(ADMIN))).json()
        assert set(only["by_key"]) == {"alice"} and only["total"]["calls"] == 1
        bad = await http.get("/admin/spend?from=yesterday", headers=_auth(ADMIN))
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "from"
        assert (await http.get("/admin/spend", headers=_auth(erin))).status_code == 403


def test_prices_reach_every_pricing_layer_and_bad_state_or_prices_are_named() -> None:
    data: dict[str, Any] = {
        "providers": [{"name": "sim", "kind": "simulated", "models": ["sim-small"]}],
        "stack": [{"use": "metrics"}, {"use": "logging"}, {"use": "budget", "prices": {"sim-small": [5.0, 6.0]}}],
        "prices": {
            "sim-small": {"input": 1.0, "output": 2.0, "as_of": "2026-12-01"},
            "gpt-4o": {"input": 9, "output": 9},
        },
    }
    metrics, logging, budget = build_gateway(parse_config(data, env={})).stack.layers
    for layer in (metrics, logging):
        assert layer.prices.lookup("sim-small").input == 1.0  # type: ignore[attr-defined]
        assert layer.prices.lookup("gpt-4o").output == 9  # type: ignore[attr-defined]  # overrides the shipped price
    assert budget.prices.lookup("sim-small").input == 5.0  # type: ignore[attr-defined]  # the layer's own wins
    for bad, field in (
        ({"prices": {"m": {"input": -1, "output": 1}}}, "'m'"),
        ({"prices": {"m": {"input": 1}}}, "'m'"),
        ({"state": {"backend": "redis"}}, "'redis_url'"),
        ({"state": {"backend": "disk"}}, "'backend'"),
    ):
        with pytest.raises(ConfigError, match=field):
            parse_config({**data, **bad}, env={})
