"""A second dialect is a module and one route: the app serves it with the same stack,
keys, body limit, streaming and error handling, and the dialect shapes every byte of
its answers, refusals included."""

from __future__ import annotations

import types
from typing import Any

import anyio
import msgspec
import pytest

from onion import BadRequest, Chunk, Context, Message, OnionError, Request, Stack
from onion.server import GatewayApp, _app
from onion.testing import Reply, ScriptedProvider
from onion.wire import ErrorAnswer


class _Lines:
    """Streams each chunk as one text line, then ``.``."""

    def event(self, chunk: Chunk) -> bytes | None:
        return chunk.content.encode() + b"\n" if chunk.content else None

    def end(self) -> bytes:
        return b".\n"

    def error(self, error: BaseException) -> bytes:
        return b"! " + type(error).__name__.encode() + b"\n"


def _decode(body: bytes, context: Context) -> Request:
    if not body:
        raise BadRequest("say something", param="text")
    text = body.decode()
    return Request(model="m", messages=[Message("user", text)], stream=text.endswith("..."), context=context)


def _encode_error(error: BaseException, request_id: str | None = None) -> ErrorAnswer:
    status = error.status if isinstance(error, OnionError) else 500
    return ErrorAnswer(status, msgspec.json.encode({"oops": getattr(error, "code", "internal")}), [])


# A module, as a real dialect is: onion/wire/<dialect>.py.
plain_text = types.ModuleType("plain_text")
plain_text.decode = _decode  # type: ignore[attr-defined]
plain_text.encode_completion = lambda completion, request, model: f"{model}: {completion.content}".encode()  # type: ignore[attr-defined]
plain_text.encode_stream = lambda request, model: _Lines()  # type: ignore[attr-defined]
plain_text.encode_error = _encode_error  # type: ignore[attr-defined]
plain_text.json_body = False  # type: ignore[attr-defined]  # the server's JSON checks do not apply


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> GatewayApp:
    monkeypatch.setitem(_app._DIALECTS, "/v1/text", plain_text)
    stack = Stack([], ScriptedProvider(default=Reply("one two", model="served")))
    return GatewayApp(stack, api_keys={"k": "alice"}, max_body_bytes=64)


async def call(app: GatewayApp, body: bytes, key: bytes = b"Bearer k") -> tuple[int, dict[str, str], bytes]:
    scope = {"type": "http", "method": "POST", "path": "/v1/text", "headers": [(b"authorization", key)]}
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


async def test_the_route_speaks_its_dialect_through_the_same_stack(app: GatewayApp) -> None:
    status, headers, body = await call(app, b"hello")
    assert (status, body) == (200, b"served: one two")
    assert headers["x-onion-served-by"] == "scripted" and headers["x-request-id"].startswith("req_")
    status, headers, body = await call(app, b"go on...")
    assert (status, body) == (200, b"one \ntwo\n.\n")
    assert headers["content-type"].startswith("text/event-stream")


@pytest.mark.parametrize(
    ("body", "key", "status", "oops"),
    [
        (b"", b"Bearer k", 400, "invalid_request_error"),
        (b"hi", b"Bearer nope", 401, "invalid_api_key"),
        (b"x" * 65, b"Bearer k", 413, "request_too_large"),
    ],
)
async def test_refusals_are_shaped_by_the_dialect(
    app: GatewayApp, body: bytes, key: bytes, status: int, oops: str
) -> None:
    got, _, answer = await call(app, body, key)
    assert (got, msgspec.json.decode(answer)) == (status, {"oops": oops})


def test_a_dialect_module_needs_only_what_openai_chat_has() -> None:
    from onion.wire import openai_chat

    needed = {"decode", "encode_completion", "encode_stream", "encode_error"}
    assert needed <= set(vars(openai_chat)) and needed <= set(vars(plain_text))
