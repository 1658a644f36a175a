"""Laws of the Responses translation (hypothesis builds the requests and the answers):

- a Responses request decoded into the internal request and encoded back is itself,
  on everything both APIs express (a leading system message with text is ``instructions``);
- a chat answer, complete or streamed in any pieces, is the same Responses output: the
  stream's ``response.completed`` equals the complete answer, and nothing of the text,
  refusal, tool calls or usage is lost.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import openai
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import Chunk, Completion, Context, Usage
from onion._response import tool_call_deltas
from onion.wire import responses

text = st.text(max_size=30)
name = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(name, inner, max_size=3),
    max_leaves=6,
)


def _user_part() -> st.SearchStrategy[dict[str, Any]]:
    image = st.builds(
        lambda url, detail: {"type": "input_image", "image_url": url, **({"detail": detail} if detail else {})},
        st.sampled_from(["https://x.test/a.png", "data:image/png;base64,AAAA"]),
        st.sampled_from([None, "low", "high", "auto"]),
    )
    file = st.builds(lambda d, f: {"type": "input_file", "file_data": d, "filename": f}, text, name)
    audio = st.builds(lambda d: {"type": "input_audio", "input_audio": {"data": d, "format": "wav"}}, text)
    return st.builds(lambda t: {"type": "input_text", "text": t}, text) | image | file | audio


assistant_part = st.builds(lambda t: {"type": "output_text", "text": t}, text) | st.builds(
    lambda r: {"type": "refusal", "refusal": r}, text
)


@st.composite
def message_item(draw: st.DrawFn) -> dict[str, Any]:
    role = draw(st.sampled_from(["user", "assistant", "system", "developer"]))
    parts = assistant_part if role == "assistant" else _user_part()
    content = draw(text | st.lists(parts, min_size=1, max_size=3))
    return {"type": "message", "role": role, "content": content}


function_call = st.builds(
    lambda c, n, a: {"type": "function_call", "call_id": c, "name": n, "arguments": a}, name, name, text
)
call_output = st.builds(
    lambda c, o: {"type": "function_call_output", "call_id": c, "output": o},
    name,
    text | st.lists(st.builds(lambda t: {"type": "input_text", "text": t}, text), min_size=1, max_size=2),
)
tool = st.builds(
    lambda n, d, p, s: {
        "type": "function",
        "name": n,
        **({"description": d} if d is not None else {}),
        **({"parameters": p} if p is not None else {}),
        **({"strict": s} if s is not None else {}),
    },
    name,
    st.none() | text,
    st.none() | st.dictionaries(name, json_value, max_size=3),
    st.none() | st.booleans(),
)
text_format = st.sampled_from([{"type": "text"}, {"type": "json_object"}]) | st.builds(
    lambda n, s, strict: {"type": "json_schema", "name": n, "schema": s, **({"strict": strict} if strict else {})},
    name,
    st.dictionaries(name, json_value, max_size=3),
    st.booleans(),
)
optional = {
    "instructions": text,
    "tools": st.lists(tool, min_size=1, max_size=3),
    "tool_choice": st.sampled_from(["auto", "none", "required"])
    | st.builds(lambda n: {"type": "function", "name": n}, name),
    "text": st.fixed_dictionaries({}, optional={"format": text_format, "verbosity": st.sampled_from(["low", "high"])}),
    "reasoning": st.builds(lambda e: {"effort": e}, st.sampled_from(["low", "medium", "high"])),
    "max_output_tokens": st.integers(1, 10_000),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "user": name,
    "parallel_tool_calls": st.booleans(),
    "stream": st.just(True),
    "metadata": st.dictionaries(name, text, max_size=3),
    "service_tier": st.sampled_from(["auto", "default", "flex"]),
    "safety_identifier": name,
    "prompt_cache_key": name,
}
bodies = st.fixed_dictionaries(
    {"model": name, "input": st.lists(message_item() | function_call | call_output, min_size=1, max_size=6)},
    optional=optional,
)


def canonical(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as ``to_responses`` spells it: a first system item with text content and
    no ``instructions`` is the instructions; an empty ``text`` object is left out."""
    out = dict(body)
    first = out["input"][0]
    if "instructions" not in out and first.get("role") == "system" and isinstance(first["content"], str):
        out["instructions"], out["input"] = first["content"], out["input"][1:]
    if out.get("text") == {}:
        del out["text"]
    return out


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_a_responses_request_round_trips_through_the_internal_request(body: dict[str, Any]) -> None:
    request = responses.decode(msgspec.json.encode(body), Context())
    assert responses.to_responses(request) == canonical(body)


# -- answers -----------------------------------------------------------------------

calls = st.lists(
    st.builds(
        lambda i, n, a: {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}},
        name,
        name,
        text,
    ),
    max_size=3,
)


@st.composite
def answers(draw: st.DrawFn) -> Completion:
    tool_calls = draw(calls) or None
    refusal = draw(st.none() | st.text(min_size=1, max_size=20))
    content = "" if refusal else draw(text)
    finish = draw(st.sampled_from(["stop", "length", "content_filter"] + (["tool_calls"] if tool_calls else [])))
    usage = draw(
        st.none()
        | st.builds(lambda p, c: Usage(p, c, p + c, {"cached_tokens": p // 2}), st.integers(0, 99), st.integers(0, 99))
    )
    reasoning = draw(st.none() | st.text(min_size=1, max_size=20))
    return Completion(
        content=content,
        tool_calls=tool_calls,
        refusal=refusal,
        finish_reason=finish,
        usage=usage,
        model="m",
        message_extra={"reasoning_content": reasoning} if reasoning else {},
    )


def _pieces(draw: st.DrawFn, value: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(value) - 1)), max_size=4))) if len(value) > 1 else []
    bounds = [0, *cuts, len(value)]
    return [value[a:b] for a, b in itertools.pairwise(bounds) if value[a:b]]


@st.composite
def streamed(draw: st.DrawFn) -> tuple[Completion, list[Chunk]]:
    answer = draw(answers())
    chunks = [Chunk(role="assistant", model="m")]
    reasoning = answer.message_extra.get("reasoning_content", "")
    chunks += [Chunk(delta_extra={"reasoning_content": piece}) for piece in _pieces(draw, reasoning)]
    chunks += [Chunk(content=piece) for piece in _pieces(draw, answer.content)]
    chunks += [Chunk(refusal=piece) for piece in _pieces(draw, answer.refusal or "")]
    piece_chars = draw(st.integers(0, 5))
    chunks += [Chunk(tool_calls=deltas) for deltas in tool_call_deltas(answer.tool_calls or [], piece_chars)]
    chunks.append(Chunk(finish_reason=answer.finish_reason, usage=answer.usage))
    return answer, chunks


def _events(data: bytes) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: ")]


@settings(max_examples=300, deadline=None)
@given(streamed())
def test_a_chat_answer_is_the_same_responses_output_complete_or_streamed(case: tuple[Completion, list[Chunk]]) -> None:
    answer, chunks = case
    request = responses.decode(b'{"model": "m", "input": "hi", "stream": true}', Context())
    complete = msgspec.json.decode(responses.encode_completion(answer, request, "m"))
    encoder = responses.encode_stream(request, "m")
    data = b"".join(encoder.event(chunk) or b"" for chunk in chunks) + encoder.end()
    events = _events(data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert events[-1]["type"] == ("response.completed" if complete["status"] == "completed" else "response.incomplete")
    for field in ("output", "status", "incomplete_details", "usage", "id", "model"):
        assert final[field] == complete[field], field
    # Nothing lost: the text, the refusal, every call.
    message = [i for i in complete["output"] if i["type"] == "message"]
    texts = [p.get("text", "") for m in message for p in m["content"] if p["type"] == "output_text"]
    assert "".join(texts) == answer.content
    refusals = [p["refusal"] for m in message for p in m["content"] if p["type"] == "refusal"]
    assert refusals == ([answer.refusal] if answer.refusal else [])
    got = [(i["call_id"], i["name"], i["arguments"]) for i in complete["output"] if i["type"] == "function_call"]
    want = [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in answer.tool_calls or ()]
    assert got == want
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == answer.content
    # Reasoning text is a reasoning item first, complete or streamed, as the SDK reads it.
    reasoning = answer.message_extra.get("reasoning_content")
    parsed = openai.types.responses.Response.model_validate(final)
    items = [i for i in parsed.output if i.type == "reasoning"]
    assert [c.text for i in items for c in i.content or ()] == ([reasoning] if reasoning else [])
    assert not items or parsed.output[0].type == "reasoning"
    thought = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
    assert thought == (reasoning or "")


def test_text_after_a_call_opens_a_message_item_of_its_own() -> None:
    # Anthropic models write text, a tool call, then more text; the Responses API has
    # each as its own item, and clients key items by id, so the second message item
    # must not take the first one's id.
    request = responses.decode(b'{"model": "m", "input": "hi", "stream": true}', Context())
    encoder = responses.encode_stream(request, "m")
    head = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    chunks = [
        Chunk(content="Let me look.", role="assistant"),
        Chunk(tool_calls=[head]),
        Chunk(content="Then this."),
        Chunk(finish_reason="tool_calls"),
    ]
    events = _events(b"".join(encoder.event(chunk) or b"" for chunk in chunks) + encoder.end())
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["message", "function_call", "message"]
    ids = [item["id"] for item in output]
    assert len(set(ids)) == 3
    added = {e["output_index"]: e["item"]["id"] for e in events if e["type"] == "response.output_item.added"}
    assert added == dict(enumerate(ids))
    for event in events:
        if "item_id" in event:
            assert event["item_id"] == ids[event["output_index"]], event
    texts = [part["text"] for item in output if item["type"] == "message" for part in item["content"]]
    assert texts == ["Let me look.", "Then this."]
