"""Every response field round-trips: what the client receives through the default stack
equals what it would receive from the upstream directly, field by field, complete and
streamed, fresh and replayed by the exact cache.

The upstream is the testing kit's ``FakeUpstream`` answering a ``chat.completion`` that
hypothesis builds (several choices, logprobs, refusals, annotations, audio, tool calls,
usage details, ``system_fingerprint``, ``service_tier``, unknown fields at the top, in
choices, in messages and in the usage). A complete answer is compared as JSON, exactly; a stream is folded per choice
(text and refusal joined, logprobs lists joined, tool-call deltas merged by index) and
compared, with the stream's ``id`` and ``created`` (every event's the same).
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onion.config import DEFAULT_STACK, build_gateway, parse_config
from onion.server import create_app
from onion.testing.upstream import FakeUpstream, ThreadedServer

EXAMPLES = 50
_nonce = itertools.count()


def _gateway(upstream: FakeUpstream, *, without: tuple[str, ...] = ()) -> Any:
    stack = [dict(t) for t in DEFAULT_STACK if t["use"] not in without]
    providers = [{"name": "primary", "kind": "openai", "base_url": upstream.base_url, "models": ["gpt-4o"]}]
    return build_gateway(parse_config({"providers": providers, "stack": stack}, env={}))


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream) -> Iterator[ThreadedServer]:
    with ThreadedServer(create_app(_gateway(upstream)), lifespan="on") as server:
        yield server


@pytest.fixture(scope="module")
def unguarded(upstream: FakeUpstream) -> Iterator[ThreadedServer]:
    # The default stack without the output guard, for the refusal case below.
    with ThreadedServer(create_app(_gateway(upstream, without=("output_guard",))), lifespan="on") as server:
        yield server


# -- what the upstream may answer --------------------------------------------------------

# No digits or "@": what the output guard would redact (e-mails, card numbers) is not the point.
words = st.text(alphabet=string.ascii_letters + " .,!?'éü中", max_size=24)
names = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8)
unknown_keys = names.map(lambda k: "x_" + k)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | words,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=6,
)
logprob = st.fixed_dictionaries(
    {
        "token": words,
        "logprob": st.floats(-20, 0),
        "bytes": st.none() | st.lists(st.integers(0, 255), max_size=3),
        "top_logprobs": st.lists(st.fixed_dictionaries({"token": words, "logprob": st.floats(-20, 0)}), max_size=2),
    }
)
logprobs = st.none() | st.fixed_dictionaries(
    {"content": st.none() | st.lists(logprob, max_size=3), "refusal": st.none() | st.lists(logprob, max_size=2)}
)
tool_call = st.fixed_dictionaries(
    {
        "id": names.map(lambda n: "call_" + n),
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": names, "arguments": words}),
    }
)
annotation = st.fixed_dictionaries(
    {
        "type": st.just("url_citation"),
        "url_citation": st.fixed_dictionaries(
            {"start_index": st.integers(0, 9), "end_index": st.integers(0, 9), "title": words, "url": names}
        ),
    }
)
audio = st.fixed_dictionaries({"id": names, "data": words, "transcript": words, "expires_at": st.integers(0, 10**9)})
details = st.none() | st.dictionaries(
    st.sampled_from(["cached_tokens", "reasoning_tokens", "audio_tokens"]), st.integers(0, 99), max_size=3
)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    calls = draw(st.none() | st.lists(tool_call, min_size=1, max_size=2))
    message: dict[str, Any] = {
        "role": "assistant",
        "content": draw(st.none() | words) if calls else draw(words),
        "refusal": draw(st.none() | words),
    }
    if calls:
        message["tool_calls"] = calls
    for key, values in (("annotations", st.lists(annotation, max_size=2)), ("audio", audio)):
        if draw(st.booleans()):
            message[key] = draw(values)
    message.update(draw(st.dictionaries(unknown_keys, json_values, max_size=2)))
    return message


@st.composite
def completions(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 3))
    choices = [
        {
            "index": i,
            "message": draw(messages()),
            "logprobs": draw(logprobs),
            "finish_reason": draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter"])),
            **draw(st.dictionaries(unknown_keys, json_values, max_size=2)),  # a choice's own (vLLM's stop_reason)
        }
        for i in range(n)
    ]
    usage = None
    if draw(st.booleans()):
        prompt, answer = draw(st.integers(0, 999)), draw(st.integers(0, 999))
        usage = {"prompt_tokens": prompt, "completion_tokens": answer, "total_tokens": prompt + answer}
        for key in ("prompt_tokens_details", "completion_tokens_details"):
            value = draw(details)
            if value is not None:
                usage[key] = value
        usage.update(draw(st.dictionaries(unknown_keys, json_values, max_size=2)))  # queue_time, …
    body: dict[str, Any] = {
        "id": "chatcmpl-" + draw(names),
        "object": "chat.completion",
        "created": draw(st.integers(1, 2**31)),
        "model": "gpt-4o-2024-08-06",
        "choices": choices,
        "usage": usage,
    }
    for key, value in (
        ("system_fingerprint", "fp_" + draw(names)),
        ("service_tier", draw(st.sampled_from(["default", "flex"]))),
    ):
        if draw(st.booleans()):
            body[key] = value
    body.update(draw(st.dictionaries(unknown_keys, json_values, max_size=2)))
    return body


# -- what a client sees --------------------------------------------------------------------


def _events(text: str) -> list[dict[str, Any]]:
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e.strip()]
    assert events[-1] == "[DONE]", events[-3:]
    return [msgspec.json.decode(e) for e in events[:-1]]


def fold(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A stream as one value: per choice, text and refusal joined, logprobs joined,
    tool calls merged by index; the chunks' other fields as last sent."""
    top: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    names = {(event["id"], event["created"]) for event in events}
    assert len(names) == 1, names  # one id and time for the whole stream
    for event in events:
        assert "error" not in event, event
        top.update((k, v) for k, v in event.items() if k not in ("choices", "usage"))
        usage = event.get("usage") or usage
        for choice in event["choices"]:
            into = choices.setdefault(choice["index"], {"content": "", "refusal": None, "tools": {}, "logprobs": None})
            for key, value in choice["delta"].items():
                if key == "content":
                    into["content"] += value or ""
                elif key == "refusal" and value is not None:
                    into["refusal"] = (into["refusal"] or "") + value
                elif key == "tool_calls":
                    for delta in value:
                        call = into["tools"].setdefault(delta["index"], {"arguments": ""})
                        call.update((k, v) for k, v in delta.items() if k not in ("index", "function"))
                        function = delta.get("function") or {}
                        call["arguments"] += function.get("arguments") or ""
                        call["name"] = function.get("name") or call.get("name")
                elif key != "refusal":
                    into[key] = value
            if choice.get("logprobs") is not None:
                merged = into["logprobs"] or {}
                for key, value in choice["logprobs"].items():
                    merged[key] = (merged.get(key) or []) + value if isinstance(value, list) else merged.get(key)
                into["logprobs"] = merged
            if choice.get("finish_reason") is not None:
                into["finish_reason"] = choice["finish_reason"]
            # The choice's own unknown fields, as last sent.
            into.update((k, v) for k, v in choice.items() if k not in ("index", "delta", "logprobs", "finish_reason"))
    return {"top": top, "choices": choices, "usage": usage}


def _ask(http: httpx.Client, url: str, n: int, stream: bool, nonce: int) -> httpx.Response:
    body: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"question {nonce}"}], "n": n}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    answer = http.post(url + "/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    return answer


def _check_round_trip(upstream: FakeUpstream, server: ThreadedServer, answer: dict[str, Any], stream: bool) -> None:
    upstream.completion_for = lambda body: answer
    n = len(answer["choices"])
    nonce = next(_nonce)
    with httpx.Client(timeout=10) as http:
        direct = _ask(http, upstream.url, n, stream, nonce)
        fresh = _ask(http, server.url, n, stream, nonce)
        again = _ask(http, server.url, n, stream, nonce)  # from the exact cache when n == 1
    if stream:
        expected = fold(_events(direct.text))
        assert fold(_events(fresh.text)) == expected
        assert fold(_events(again.text)) == expected
    else:
        assert direct.json() == answer
        assert fresh.json() == answer
        assert again.json() == answer


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=completions())
def test_any_upstream_answer_reaches_the_client_field_by_field_complete(
    upstream: FakeUpstream, gateway: ThreadedServer, answer: dict[str, Any]
) -> None:
    _check_round_trip(upstream, gateway, answer, stream=False)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=completions())
def test_any_upstream_answer_reaches_the_client_field_by_field_streamed(
    upstream: FakeUpstream, gateway: ThreadedServer, answer: dict[str, Any]
) -> None:
    # The whole default stack, output guard included: it holds text back per choice and
    # per tool call, so chunk boundaries move, but the folded answer is unchanged.
    _check_round_trip(upstream, gateway, answer, stream=True)


REFUSED = {
    "id": "chatcmpl-refused",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": None,
}


def test_a_streamed_refusal_passes_the_default_stacks_output_guard(
    upstream: FakeUpstream, gateway: ThreadedServer
) -> None:
    _check_round_trip(upstream, gateway, REFUSED, stream=True)


def test_a_streamed_refusal_passes_without_the_output_guard(upstream: FakeUpstream, unguarded: ThreadedServer) -> None:
    _check_round_trip(upstream, unguarded, REFUSED, stream=True)


PAYMENT = '{"card": "4111 1111 1111 1111", "n": 4111111111111111}'
PERSONAL = {
    "id": "chatcmpl-personal",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "nothing here"}, "finish_reason": "stop"},
        {
            "index": 1,
            "message": {
                "role": "assistant",
                "content": "write to bob@example.com",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "pay",
                            "arguments": '{"card": "4111 1111 1111 1111", "n": 4111111111111111}',
                        },
                    }
                ],
            },
            "finish_reason": "tool_calls",
        },
    ],
    "usage": None,
}


@pytest.mark.parametrize("stream", [False, True])
def test_the_default_stacks_output_guard_redacts_every_choice_and_tool_call(
    upstream: FakeUpstream, gateway: ThreadedServer, stream: bool
) -> None:
    upstream.completion_for = lambda body: PERSONAL
    with httpx.Client(timeout=10) as http:
        answer = _ask(http, gateway.url, 2, stream, next(_nonce))
    assert "4111" not in answer.text and "bob@" not in answer.text
    if stream:
        choices = fold(_events(answer.text))["choices"]
        content, arguments = choices[1]["content"], choices[1]["tools"][0]["arguments"]
    else:
        choices = answer.json()["choices"]
        content = choices[1]["message"]["content"]
        arguments = choices[1]["message"]["tool_calls"][0]["function"]["arguments"]
    assert (choices[0]["content"] if stream else choices[0]["message"]["content"]) == "nothing here"
    assert content == "write to [EMAIL]"
    assert msgspec.json.decode(arguments) == {"card": "[CARD]", "n": "[CARD]"}
