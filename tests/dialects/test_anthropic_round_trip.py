"""OpenAI -> Anthropic -> OpenAI is the identity on everything both formats express,
for requests and for answers (hypothesis builds both)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import BadRequest, Completion, Context, Message, Request, Usage
from onion.wire._anthropic_shapes import (
    completion_from_message,
    completion_to_message,
    request_from_anthropic,
    request_to_anthropic,
)

_text = st.text(min_size=1, max_size=20)
_name = st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True)
_args = st.dictionaries(_name, st.integers() | _text, max_size=3).map(lambda d: json.dumps(d, separators=(",", ":")))


@st.composite
def _conversation(draw: st.DrawFn) -> list[Message]:
    out: list[Message] = []
    if draw(st.booleans()):
        out.append(Message("system", draw(_text)))
    for turn in range(draw(st.integers(1, 3))):
        out.append(Message("user", draw(_text)))
        if draw(st.booleans()):
            calls = [
                {
                    "id": f"call_{turn}_{i}",
                    "type": "function",
                    "function": {"name": draw(_name), "arguments": draw(_args)},
                }
                for i in range(draw(st.integers(1, 3)))
            ]
            out.append(Message("assistant", draw(st.none() | _text), tool_calls=calls))
            for call in calls:
                extra = {"is_error": True} if draw(st.booleans()) else {}
                out.append(Message("tool", draw(_text), tool_call_id=call["id"], extra=extra))
            out.append(Message("assistant", draw(_text)))
        else:
            out.append(Message("assistant", draw(_text)))
    return out


_tool = st.builds(
    lambda name, description: {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": {"type": "object", "properties": {}}},
    },
    _name,
    _text,
)


@st.composite
def _requests(draw: st.DrawFn) -> Request:
    tools = draw(st.none() | st.lists(_tool, min_size=1, max_size=2, unique_by=lambda t: t["function"]["name"]))
    choice = None
    if tools:
        named = {"type": "function", "function": {"name": tools[0]["function"]["name"]}}
        choice = draw(st.sampled_from([None, "auto", "required", "none", named]))
    return Request(
        model=draw(_name),
        messages=draw(_conversation()),
        max_tokens=draw(st.integers(1, 4096)),
        temperature=draw(st.none() | st.floats(0, 1)),
        top_p=draw(st.none() | st.floats(0, 1)),
        stop=draw(st.none() | st.lists(_text, min_size=1, max_size=3)),
        user=draw(st.none() | _name),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=draw(st.sampled_from([None, False])) if choice not in (None, "none") else None,
        stream=draw(st.booleans()),
    )


def _shape(request: Request) -> dict[str, Any]:
    fields = ("model", "messages", "max_tokens", "temperature", "top_p", "stop", "user", "tools", "tool_choice")
    return {f: getattr(request, f) for f in (*fields, "parallel_tool_calls", "stream", "extra")}


@settings(max_examples=150, deadline=None)
@given(_requests())
def test_a_request_survives_the_round_trip(request: Request) -> None:
    back = request_from_anthropic(request_to_anthropic(request, 1024), Context())
    assert _shape(back) == _shape(request)


_calls = st.lists(
    st.builds(
        lambda i, n, a: {"id": f"toolu_{i}", "type": "function", "function": {"name": n, "arguments": a}},
        st.integers(0, 99),
        _name,
        _args,
    ),
    max_size=2,
    unique_by=lambda c: c["id"],
)


@st.composite
def _completions(draw: st.DrawFn) -> Completion:
    calls = draw(_calls)
    content = draw(_text) if not calls or draw(st.booleans()) else ""
    cached = draw(st.integers(0, 50))
    created = draw(st.integers(0, 50))
    fresh, output = draw(st.integers(0, 500)), draw(st.integers(0, 500))
    details = {"cached_tokens": cached, "cache_creation_tokens": created} if cached or created else None
    usage = Usage(fresh + cached + created, output, fresh + cached + created + output, details)
    thinking = draw(st.booleans())
    extra = {}
    if thinking:
        block = {"type": "thinking", "thinking": draw(_text), "signature": draw(_name)}
        extra = {"reasoning_content": block["thinking"], "thinking_blocks": [block]}
    return Completion(
        content=content,
        model=draw(_name),
        tool_calls=calls or None,
        finish_reason="tool_calls" if calls else draw(st.sampled_from(["stop", "length", "content_filter"])),
        usage=usage,
        id=f"msg_{draw(_name)}",
        message_extra=extra,
        content_null=not content and bool(calls),
    )


@settings(max_examples=150, deadline=None)
@given(_completions())
def test_an_answer_survives_the_round_trip(completion: Completion) -> None:
    request = Request(model="m", messages=[Message("user", "x")])
    back = completion_from_message(completion_to_message(completion, "m", "msg_x"), request)
    assert back == completion


_base64 = st.binary(min_size=1, max_size=30).map(lambda b: base64.b64encode(b).decode())
_pdf_document = st.fixed_dictionaries(
    {
        "type": st.just("document"),
        "source": st.builds(lambda d: {"type": "base64", "media_type": "application/pdf", "data": d}, _base64),
    },
    optional={
        "title": _text,
        "context": _text,
        "citations": st.builds(lambda on: {"enabled": on}, st.booleans()),
        "cache_control": st.just({"type": "ephemeral"}),
    },
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_pdf_document | st.builds(lambda t: {"type": "text", "text": t}, _text), min_size=1, max_size=3))
def test_a_pdf_document_survives_both_round_trips(blocks: list[dict[str, Any]]) -> None:
    # Anthropic -> the internal OpenAI file part -> Anthropic: the same blocks.
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": blocks}]}
    request = request_from_anthropic(body, Context())
    parts = request.messages[0].content
    assert isinstance(parts, list) and [p["type"] for p in parts] == [
        "file" if b["type"] == "document" else "text" for b in blocks
    ]
    assert request_to_anthropic(request, 10)["messages"][0]["content"] == blocks
    # OpenAI -> Anthropic -> OpenAI: the same parts.
    again = request_from_anthropic(request_to_anthropic(request, 10), Context())
    assert again.messages[0].content == parts


def test_a_stream_field_that_is_not_a_boolean_is_a_400() -> None:
    # Read as truthy, 1 or 1e308 streamed; Anthropic's API refuses them.
    base = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    for value in (1, 1e308, "yes", [], {}):
        with pytest.raises(BadRequest) as caught:
            request_from_anthropic({**base, "stream": value}, Context())
        assert caught.value.param == "stream"
    assert [request_from_anthropic({**base, "stream": v}, Context()).stream for v in (True, False, None)] == [
        True,
        False,
        False,
    ]
