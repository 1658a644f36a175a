"""Laws of the ASGI app, checked in process (no sockets) so hypothesis can try many bodies."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onion import Stack
from onion.providers import Router, SimulatedProvider
from onion.server import GatewayApp


def make_app() -> GatewayApp:
    router = Router([SimulatedProvider(name="sim", models=["m"], ttft=0, tokens_per_second=0, answer_tokens=6)])
    return GatewayApp(Stack([], router), models=router.models(), max_body_bytes=64 * 1024)


async def call(app: GatewayApp, body: bytes, path: str = "/v1/chat/completions") -> tuple[int, dict[str, str], bytes]:
    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
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
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", 7]), "content": json_values | st.text(max_size=20)}
    ),
    max_size=3,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"model": st.sampled_from(["m", "sim/m", "x", "", 3]), "messages": messages | json_values},
        optional={"stream": st.booleans() | json_values, "n": st.integers(-1, 3), "temperature": json_values},
    ),
)

APP = make_app()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
async def test_no_body_makes_the_gateway_fail_with_500(body: Any) -> None:
    status, headers, data = await call(APP, msgspec.json.encode(body))
    assert status < 500, data
    assert headers["x-onion-served-by"]
    if status >= 400:
        error = msgspec.json.decode(data)["error"]
        assert isinstance(error["message"], str) and error["message"]
    elif headers["content-type"].startswith("text/event-stream"):
        assert data.endswith(b"data: [DONE]\n\n")
    else:
        assert msgspec.json.decode(data)["object"] == "chat.completion"


# A valid body for each route, the shapes its decoder reads: the law below breaks them
# one place at a time, as a fuzzer does.
VALID = {
    "/v1/chat/completions": {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c", "content": "42"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "max_tokens": 20,
        "stop": ["x"],
        "response_format": {"type": "text"},
        "stream_options": {"include_usage": True},
    },
    "/v1/responses": {
        "model": "m",
        "instructions": "be brief",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "42"},
        ],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "max_output_tokens": 20,
        "text": {"format": {"type": "text"}},
    },
    "/v1/messages": {
        "model": "m",
        "max_tokens": 20,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "42"}]},
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "metadata": {"user_id": "u"},
    },
    "/v1/messages/count_tokens": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/embeddings": {"model": "m", "input": ["hi", "there"], "dimensions": 8, "encoding_format": "float"},
}


def _places(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at] if at else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        found += _places(inner, (*at, key))
    return found


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(VALID)), st.data())
async def test_no_body_broken_in_one_place_on_any_route_is_a_500(path: str, data: st.DataObject) -> None:
    # Before: a Responses item whose role was a list or an object, and a chat tool whose
    # function was not an object, were 500s (a TypeError in the decoder, an
    # AttributeError in the provider).
    body = msgspec.json.decode(msgspec.json.encode(VALID[path]))
    for _ in range(data.draw(st.integers(1, 3))):
        place = data.draw(st.sampled_from(_places(body)))
        parent = body
        for key in place[:-1]:
            parent = parent[key]
        parent[place[-1]] = data.draw(json_values | st.sampled_from(["user", "function", "text", "input_text", 10**30]))
    if data.draw(st.booleans()) and isinstance(body, dict) and path != "/v1/embeddings":
        body["stream"] = True
    status, headers, answer = await call(APP, msgspec.json.encode(body), path)
    assert status < 500, f"{path}: {msgspec.json.encode(body)[:600]!r} -> {answer[:300]!r}"
    assert headers["x-onion-served-by"]


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=200))
async def test_arbitrary_bytes_get_a_4xx(body: bytes) -> None:
    status, _, data = await call(APP, body)
    assert status < 500, data


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=40), st.booleans())
async def test_streamed_and_complete_answers_carry_the_same_text(text: str, include_usage: bool) -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": text}]}
    _, _, complete = await call(APP, msgspec.json.encode(base))
    streamed_body = {**base, "stream": True, "stream_options": {"include_usage": include_usage}}
    _, _, streamed = await call(APP, msgspec.json.encode(streamed_body))
    answer = msgspec.json.decode(complete)
    events = [e.removeprefix(b"data: ") for e in streamed.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    chunks = [msgspec.json.decode(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    text_out = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text_out == answer["choices"][0]["message"]["content"]
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert usage == ([answer["usage"]] if include_usage else [])
