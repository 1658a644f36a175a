"""A fake Anthropic Messages API over real HTTP that checks what it receives.

``AnthropicUpstream`` serves ``POST /v1/messages`` on a loopback port (uvicorn in a
thread, so either anyio backend may use it: ``with AnthropicUpstream() as up:``). Every
request is checked against the Messages schema (``problems``): the required fields and
their types, alternating roles that start with a user turn, known content blocks with
their required fields, tools with ``name`` and ``input_schema``, a valid ``tool_choice``,
each ``tool_result`` answering a ``tool_use`` of the turn before, and no top-level field
the API does not know. A request that breaks it gets Anthropic's 400
``invalid_request_error`` naming the problem, and is kept in ``rejected``.

Answers: after tool results, a text that quotes them; with tools (and a ``tool_choice``
other than none), a ``tool_use`` of the first (or the named) tool; else ``reply`` (by
default ``echo: <last user text>``), complete or as the real event sequence with
``input_json_delta`` for tool input. Usage reports its service tier, and cache reads
(with the per-TTL ``cache_creation`` split) when a block carries ``cache_control``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from .upstream import ThreadedServer, upstream_answer_headers

__all__ = ["AnthropicUpstream", "problems"]

_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "system", "stop_sequences", "temperature", "top_p", "top_k",
        "stream", "metadata", "tools", "tool_choice", "thinking", "service_tier", "container", "mcp_servers",
    }
)  # fmt: skip
_BLOCK_NEEDS = {
    "text": ("text",),
    "image": ("source",),
    "document": ("source",),
    "tool_use": ("id", "name", "input"),
    "tool_result": ("tool_use_id",),
    "thinking": ("thinking", "signature"),
    "redacted_thinking": ("data",),
    "search_result": ("source", "title", "content"),
}
# A document's source kinds, and what each needs (Anthropic reads a PDF as base64 and
# plain text as text).
_DOCUMENT_SOURCES = {
    "base64": {"media_type": "application/pdf", "data": None},
    "text": {"media_type": "text/plain", "data": None},
    "url": {"url": None},
    "content": {"content": None},
    "file": {"file_id": None},
}


def _block_problems(block: Any, where: str, asked: set[str]) -> list[str]:
    if not isinstance(block, dict) or block.get("type") not in _BLOCK_NEEDS:
        return [f"{where}: not a known content block"]
    out = [f"{where}.{f}: required" for f in _BLOCK_NEEDS[block["type"]] if f not in block]
    if block["type"] == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64" and not (source.get("media_type") and source.get("data")):
            out.append(f"{where}.source: base64 needs media_type and data")
        elif source.get("type") not in ("base64", "url", "file"):
            out.append(f"{where}.source.type: unknown")
    if block["type"] == "document":
        source = block.get("source") or {}
        needs = _DOCUMENT_SOURCES.get(source.get("type"))
        if needs is None:
            out.append(f"{where}.source.type: unknown")
        else:
            out += [
                f"{where}.source.{k}: " + (f"must be {v!r}" if v else "required")
                for k, v in needs.items()
                if source.get(k) is None or (v is not None and source.get(k) != v)
            ]
    if block["type"] == "tool_result" and block.get("tool_use_id") not in asked:
        out.append(f"{where}.tool_use_id: answers no tool_use of the turn before")
    return out


def problems(body: Any) -> list[str]:
    """What in ``body`` the Messages API would refuse (empty when it is valid)."""
    if not isinstance(body, dict):
        return ["body: not an object"]
    out = [f"{k}: unknown field" for k in body if k not in _FIELDS]
    if not isinstance(body.get("model"), str):
        out.append("model: required string")
    if not isinstance(body.get("max_tokens"), int):
        out.append("max_tokens: required integer")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*out, "messages: required non-empty list"]
    asked: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role != ("user" if i % 2 == 0 else "assistant"):
            out.append(f"messages[{i}].role: roles must alternate, starting with user")
        content = message.get("content") if isinstance(message, dict) else None
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            out.append(f"messages[{i}].content: string or list of blocks")
            continue
        for j, block in enumerate(blocks):
            out += _block_problems(block, f"messages[{i}].content[{j}]", asked)
        asked = {b["id"] for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use" and "id" in b}
    for i, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, dict) or "name" not in tool or ("input_schema" not in tool and "type" not in tool):
            out.append(f"tools[{i}]: needs name and input_schema")
    choice = body.get("tool_choice")
    if choice is not None and (
        not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none")
    ):
        out.append("tool_choice.type: auto, any, tool or none")
    if isinstance(choice, dict) and choice.get("type") == "tool" and not isinstance(choice.get("name"), str):
        out.append("tool_choice.name: required for type tool")
    if "system" in body and not isinstance(body["system"], (str, list)):
        out.append("system: string or list of text blocks")
    return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in content or () if isinstance(b, dict) and b.get("type") == "text")


def _cached(body: dict[str, Any]) -> bool:
    system = body.get("system")
    blocks = list(system) if isinstance(system, list) else []
    for message in body["messages"]:
        if isinstance(message["content"], list):
            blocks += message["content"]
    return any(isinstance(b, dict) and "cache_control" in b for b in blocks + list(body.get("tools") or ()))


def _answer(body: dict[str, Any], reply: Callable[[dict[str, Any]], str]) -> tuple[list[dict[str, Any]], str]:
    last = body["messages"][-1]["content"]
    results = [b for b in last if b.get("type") == "tool_result"] if isinstance(last, list) else []
    tools = [t for t in body.get("tools") or () if "input_schema" in t]
    choice = body.get("tool_choice") or {"type": "auto"}
    if results:
        quoted = "; ".join(("error: " if b.get("is_error") else "") + _text(b.get("content", "")) for b in results)
        return [{"type": "text", "text": f"results: {quoted}"}], "end_turn"
    if tools and choice["type"] != "none":
        tool = next((t for t in tools if t["name"] == choice.get("name")), tools[0])
        block = {
            "type": "tool_use",
            "id": f"toolu_{len(body['messages'])}",
            "name": tool["name"],
            "input": {"q": _text(last)},
        }
        return [block], "tool_use"
    return [{"type": "text", "text": reply(body)}], "end_turn"


class AnthropicUpstream:
    """A fake Anthropic API; ``requests`` holds each valid body, ``rejected`` the others.

    Each answer carries Anthropic's ``anthropic-ratelimit-*`` and ``request-id`` headers
    (``upstream_answer_headers``); ``sent_headers`` keeps them, one dict per answer."""

    def __init__(self, *, reply: Callable[[dict[str, Any]], str] | None = None, api_key: str | None = None) -> None:
        self.reply = reply or (lambda body: "echo: " + _text(body["messages"][-1]["content"]))
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.sent_headers: list[dict[str, str]] = []
        self.rejected: list[tuple[dict[str, Any], list[str]]] = []
        self._server = ThreadedServer(self._app)

    @property
    def base_url(self) -> str:
        """The URL to give ``AnthropicProvider(base_url=...)``."""
        return self._server.url + "/v1"

    def __enter__(self) -> AnthropicUpstream:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop()

    async def __aenter__(self) -> AnthropicUpstream:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__()

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if scope["path"] != "/v1/messages":
            return await self._send(send, 404, _error("not_found_error", "no such route"))
        if self.api_key is not None and headers.get("x-api-key") != self.api_key:
            return await self._send(send, 401, _error("authentication_error", "invalid x-api-key"))
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return await self._send(send, 400, _error("invalid_request_error", "body is not JSON"))
        found = problems(data) + ([] if "anthropic-version" in headers else ["anthropic-version header: required"])
        if found:
            self.rejected.append((data, found))
            return await self._send(send, 400, _error("invalid_request_error", "; ".join(found)))
        self.requests.append(data)
        self.headers.append(headers)
        content, reason = _answer(data, self.reply)
        usage: dict[str, Any] = {"input_tokens": 10, "output_tokens": 5, "service_tier": "standard"}
        if _cached(data):
            usage |= {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 7}
            usage["cache_creation"] = {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
        message = {
            "id": f"msg_fake{len(self.requests)}", "type": "message", "role": "assistant", "model": data["model"],
            "content": content, "stop_reason": reason, "stop_sequence": None, "usage": usage,
        }  # fmt: skip
        if data.get("stream"):
            return await self._stream(send, message)
        await self._send(send, 200, msgspec.json.encode(message))

    def _answer_headers(self) -> list[tuple[bytes, bytes]]:
        pairs = upstream_answer_headers(len(self.sent_headers) + 1, anthropic=True)
        self.sent_headers.append({name.decode(): value.decode() for name, value in pairs})
        return pairs

    async def _send(self, send: Any, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), *self._answer_headers()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, send: Any, message: dict[str, Any]) -> None:
        headers = [(b"content-type", b"text/event-stream"), *self._answer_headers()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
        events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                events.append(
                    {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
                )
                words = block["text"].split(" ")
                for word in [w + " " for w in words[:-1]] + words[-1:]:
                    piece = {"type": "text_delta", "text": word}
                    events.append({"type": "content_block_delta", "index": index, "delta": piece})
            else:
                events.append({"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}})
                raw = msgspec.json.encode(block["input"]).decode()
                for part in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
                    piece = {"type": "input_json_delta", "partial_json": part}
                    events.append({"type": "content_block_delta", "index": index, "delta": piece})
            events.append({"type": "content_block_stop", "index": index})
        delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        events += [{"type": "message_delta", "delta": delta, "usage": {"output_tokens": 5}}, {"type": "message_stop"}]
        for event in events:
            data = b"event: " + event["type"].encode() + b"\ndata: " + msgspec.json.encode(event) + b"\n\n"
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def _error(kind: str, message: str) -> bytes:
    return msgspec.json.encode({"type": "error", "error": {"type": kind, "message": message}})
