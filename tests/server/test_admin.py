"""The admin API's key check and routing, over a real socket: the admin key opens it, a
client key gets 403, a wrong or missing key 401, and an unset admin key turns it off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from onion.config import build_gateway, parse_config
from onion.errors import BadRequest
from onion.server import AdminAnswer, AdminRequest, AdminRoutes, create_app
from onion.testing.upstream import ThreadedServer

ADMIN = "admin-secret-0123456789"
CLIENT = "client-secret-0123456789"


def _app(admin_key: str | None) -> Any:
    server: dict[str, Any] = {"api_keys": ["env:CLIENT"]}
    if admin_key is not None:
        server["admin_key"] = "env:ADMIN"
    config = parse_config(
        {"server": server, "providers": [{"name": "sim", "kind": "simulated", "models": ["sim-small"]}]},
        env={"ADMIN": ADMIN, "CLIENT": CLIENT},
    )
    app = create_app(build_gateway(config))
    seen: list[AdminRequest] = []

    async def echo(request: AdminRequest) -> AdminAnswer:
        seen.append(request)
        payload = request.json()
        if payload == "bad":
            raise BadRequest("payload must be an object", param="body")
        return AdminAnswer(200, {"tail": request.tail, "query": dict(request.query), "body": payload})

    app.admin.add("POST", "/admin/echo", echo)
    app.admin.add("DELETE", "/admin/echo/", echo)
    app.seen = seen
    return app


@pytest.fixture
async def admin_on() -> AsyncIterator[tuple[ThreadedServer, Any]]:
    app = _app(ADMIN)
    async with ThreadedServer(app) as server:
        yield server, app


async def test_the_admin_key_opens_a_route(admin_on: tuple[ThreadedServer, Any]) -> None:
    server, _ = admin_on
    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.post("/admin/echo?model=m&x=1", json={"a": 1}, headers={"Authorization": f"Bearer {ADMIN}"})
        assert answer.status_code == 200
        assert answer.json() == {"tail": "", "query": {"model": "m", "x": "1"}, "body": {"a": 1}}
        gone = await http.delete("/admin/echo/key-7", headers={"Authorization": f"Bearer {ADMIN}"})
        assert gone.json()["tail"] == "key-7"


@pytest.mark.parametrize(
    ("authorization", "status"),
    [(None, 401), ("Bearer wrong-key-000000000", 401), (f"Bearer {CLIENT}", 403), (f"Basic {ADMIN}", 401)],
)
async def test_only_the_admin_key_is_accepted(
    admin_on: tuple[ThreadedServer, Any], authorization: str | None, status: int
) -> None:
    server, app = admin_on
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.post("/admin/echo", json={}, headers=headers)
    assert answer.status_code == status
    assert ADMIN not in answer.text and CLIENT not in answer.text
    assert answer.json()["error"]["message"]
    assert app.seen == []  # the handler never ran


async def test_unknown_routes_methods_and_bad_bodies(admin_on: tuple[ThreadedServer, Any]) -> None:
    server, _ = admin_on
    auth = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=server.url, headers=auth) as http:
        assert (await http.get("/admin/nothing")).status_code == 404
        wrong = await http.get("/admin/echo")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
        not_json = await http.post("/admin/echo", content=b"{nope", headers={"content-type": "application/json"})
        assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
        refused = await http.post("/admin/echo", json="bad")
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "body"
        huge = await http.post("/admin/echo", content=b"[" + b"1," * 40_000 + b"1]")
        assert huge.status_code == 413


async def test_without_an_admin_key_the_admin_api_is_off() -> None:
    async with ThreadedServer(_app(None)) as server, httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.post("/admin/echo", json={}, headers={"Authorization": f"Bearer {CLIENT}"})
    assert answer.status_code == 403
    assert "admin_key" in answer.json()["error"]["message"]


def test_routes_live_under_admin_and_are_listed() -> None:
    routes = AdminRoutes(ADMIN)

    async def handler(request: AdminRequest) -> AdminAnswer:
        return AdminAnswer(204, None)

    with pytest.raises(ValueError, match="/admin/"):
        routes.add("GET", "/keys", handler)
    routes.add("GET", "/admin/keys", handler)
    routes.add("DELETE", "/admin/keys/", handler)
    assert routes.routes() == ["GET /admin/keys", "DELETE /admin/keys/{id}"]


def test_the_admin_key_must_differ_from_client_keys() -> None:
    from onion.errors import ConfigError

    with pytest.raises(ConfigError, match="admin_key"):
        parse_config(
            {
                "server": {"api_keys": ["env:K"], "admin_key": "env:K"},
                "providers": [{"name": "s", "kind": "simulated"}],
            },
            env={"K": CLIENT},
        )
