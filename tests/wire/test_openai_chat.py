"""The OpenAI chat-completions dialect as pure functions: decoding refuses with a message
and ``param`` naming the field, and every answer it encodes is one the official ``openai``
SDK's own models accept and read back unchanged."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from onion import (
    AllProvidersFailed,
    BadRequest,
    Chunk,
    CircuitOpen,
    Completion,
    Context,
    GuardrailViolation,
    Message,
    ModelNotFound,
    OnionError,
    ProviderError,
    RateLimited,
    Request,
    RequestTooLarge,
    Timeout,
    Unauthorized,
    Usage,
    request_to_wire,
)
from onion.testing.strategies import chat_requests
from onion.wire import openai_chat

# -- decoding ------------------------------------------------------------------------

REFUSED: list[tuple[bytes, str, str | None, str]] = [
    # body, code, param, what the message says
    (b"", "invalid_request_error", None, "the request body is empty; send a JSON object"),
    (b"{model: gpt-4o", "invalid_json", None, "the request body is not valid JSON (UTF-8)"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "\xff"}]}', "invalid_json", None, "not valid JSON"),
    (b"[1, 2]", "invalid_request_error", None, "the request body must be a JSON object"),
    (b'{"model": 7, "messages": []}', "invalid_request_error", "model", "got `int` at 'model'"),
    (b'{"model": "m"}', "invalid_request_error", None, "missing required field `messages`"),
    (b'{"model": "", "messages": [{"role": "user"}]}', "invalid_request_error", "model", "'model' must name"),
    (b'{"model": "m", "messages": []}', "invalid_request_error", "messages", "at least one message"),
    (b'{"model": "m", "messages": ["hi"]}', "invalid_request_error", "messages", "at 'messages[0]'"),
    (b'{"model": "m", "messages": [{"content": "x"}]}', "invalid_request_error", "messages", "field `role`"),
    (
        b'{"model": "m", "messages": [{"role": "user", "content": {"a": 1}}]}',
        "invalid_request_error",
        "messages",
        "at 'messages[0].content'",
    ),
    (
        b'{"model": "m", "messages": [{"role": "user"}], "temperature": "hot"}',
        "invalid_request_error",
        "temperature",
        "temperature",
    ),
    (b'{"model": "m", "messages": [{"role": "user"}], "stop": [1]}', "invalid_request_error", "stop", "at 'stop[0]'"),
    (b'{"model": "m", "messages": [{"role": "user"}], "n": 300}', "invalid_value", "n", "between 1 and 128"),
]


@pytest.mark.parametrize(("body", "code", "param", "says"), REFUSED)
def test_a_refused_body_is_a_bad_request_naming_the_field(body: bytes, code: str, param: str | None, says: str) -> None:
    with pytest.raises(BadRequest) as caught:
        openai_chat.decode(body, Context())
    error = caught.value
    assert (error.status, error.code, error.param) == (400, code, param)
    assert says in error.public_message
    assert error.public_message.startswith("invalid request: ") or "at '" not in error.public_message


def test_decoding_keeps_the_context_unknown_fields_and_takes_the_caller_from_user() -> None:
    context = Context(trace_headers={"traceparent": "00-x"})
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi", "x_m": 1}], "user": "u-1", "x_top": [2]}'
    request = openai_chat.decode(body, context)
    assert request.context is context and context.caller == "u-1"
    assert request.messages == [Message("user", "hi", extra={"x_m": 1})]
    assert request.extra == {"x_top": [2]}
    keyed = openai_chat.decode(body, Context(caller="alice"))
    assert keyed.context.caller == "alice"  # an API key's identity wins over the body's claim


def test_n_of_one_is_accepted() -> None:
    request = openai_chat.decode(b'{"model": "m", "messages": [{"role": "user", "content": ""}], "n": 1}', Context())
    assert request.n == 1


@given(chat_requests())
def test_any_request_round_trips_through_the_wire(request: Request) -> None:
    body = msgspec.json.encode(request_to_wire(request))
    decoded = openai_chat.decode(body, request.context)
    assert decoded == request


# -- complete answers ----------------------------------------------------------------


def ask(**fields: Any) -> Request:
    return Request(model="asked", messages=[Message("user", "hi")], context=Context(request_id="req_1"), **fields)


def test_a_completion_encodes_as_chat_completion() -> None:
    completion = Completion("hello", model="gpt-4o-2024", usage=Usage(3, 2, 5), id="chatcmpl-up", created=7)
    assert msgspec.json.decode(openai_chat.encode_completion(completion, ask(), "served")) == {
        "id": "chatcmpl-up",
        "object": "chat.completion",
        "created": 7,
        "model": "gpt-4o-2024",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def test_a_completion_without_id_model_or_time_takes_the_requests() -> None:
    answer = msgspec.json.decode(openai_chat.encode_completion(Completion("hi"), ask(), "served"))
    assert answer["id"] == "chatcmpl-req_1" and answer["model"] == "served"
    assert answer["created"] > 1_700_000_000 and answer["usage"] is None


# -- streamed answers ----------------------------------------------------------------

PREFIX = b'data: {"id":"chatcmpl-req_1","object":"chat.completion.chunk","created":9,"model":"served","choices":'


def encoder(**fields: Any) -> openai_chat.ChunkEncoder:
    return openai_chat.ChunkEncoder(ask(stream=True, **fields), "served", created=9)


def test_chunks_encode_as_chat_completion_chunk_events() -> None:
    stream = encoder()
    # The role waits for what comes next: before text its content is "", as OpenAI's.
    assert stream.event(Chunk("", role="assistant")) is None
    role = b'[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
    hi = b'[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}\n\n'
    assert stream.event(Chunk("Hi")) == PREFIX + role + PREFIX + hi
    stop = b'[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
    assert stream.event(Chunk(finish_reason="stop")) == PREFIX + stop
    assert stream.event(Chunk()) is None
    assert stream.event(Chunk(usage=Usage(1, 2, 3))) is None
    assert stream.end() == b"data: [DONE]\n\n"  # usage is sent only when asked for


CALL = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
TOOL_EVENT = b'[{"index":0,"delta":{"tool_calls":[' + msgspec.json.encode(CALL) + b"]}"
NULL_ROLE = b'[{"index":0,"delta":{"role":"assistant","content":null'


def test_a_first_delta_before_tool_calls_says_content_null_as_openais() -> None:
    # A bare role, then the call: the role's content is null (a tool-only answer has no
    # text; the SDKs' stream helpers then end with content None, as the complete answer).
    stream = encoder()
    assert stream.event(Chunk(role="assistant")) is None
    first, second = stream.event(Chunk(tool_calls=[CALL])).split(b"\n\n", 1)  # type: ignore[union-attr]
    assert first == PREFIX + NULL_ROLE + b'},"logprobs":null,"finish_reason":null}]}'
    assert second == PREFIX + TOOL_EVENT + b',"logprobs":null,"finish_reason":null}]}\n\n'
    # The role and the call in one delta (as OpenAI sends them): one event, content null.
    together = encoder().event(Chunk(role="assistant", tool_calls=[CALL]))
    assert (
        together
        == PREFIX
        + NULL_ROLE
        + b',"tool_calls":['
        + msgspec.json.encode(CALL)
        + b']},"logprobs":null,"finish_reason":null}]}\n\n'
    )
    # Before a refusal, null too; text with the role carries it.
    stream = encoder()
    stream.event(Chunk(role="assistant"))
    assert stream.event(Chunk(refusal="no")).startswith(PREFIX + NULL_ROLE)  # type: ignore[union-attr]
    assert b'"role":"assistant","content":"Hi"' in encoder().event(Chunk("Hi", role="assistant"))  # type: ignore[operator]


def test_a_role_with_nothing_after_it_still_goes_out_before_done() -> None:
    stream = encoder()
    assert stream.event(Chunk(role="assistant")) is None
    role = b'[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
    stop = b'[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
    assert stream.event(Chunk(finish_reason="stop")) == PREFIX + role + PREFIX + stop
    # Two choices' roles, one cut before anything else: each goes out, in its place.
    stream = encoder()
    assert stream.event(Chunk(role="assistant")) is None
    assert stream.event(Chunk(role="assistant", index=1)) is None
    assert stream.event(Chunk("x", index=1)).startswith(PREFIX + b'[{"index":1,"delta":{"role"')  # type: ignore[union-attr]
    assert stream.end() == PREFIX + role + b"data: [DONE]\n\n"


def test_the_usage_event_comes_before_done_when_asked_for() -> None:
    stream = encoder(stream_options={"include_usage": True})
    assert stream.end() == b"data: [DONE]\n\n"  # no usage reported, none invented
    # Every event before it says ``"usage": null``, as OpenAI's do when it was asked for.
    x = b'[{"index":0,"delta":{"content":"x"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    assert stream.event(Chunk("x", usage=Usage(1, 2, 3))) == PREFIX + x
    assert stream.end() == (
        PREFIX + b'[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\ndata: [DONE]\n\n'
    )


def test_a_cut_stream_ends_with_an_error_event_naming_the_request() -> None:
    event = encoder().error(ProviderError("cut at 10.0.0.7"))
    assert event.startswith(b"data: ") and event.endswith(b"\n\n") and b"[DONE]" not in event
    assert msgspec.json.decode(event[6:]) == {
        "error": {
            "message": "the model provider failed to answer (request id req_1)",
            "type": "server_error",
            "param": None,
            "code": "upstream_error",
        }
    }


# -- errors --------------------------------------------------------------------------

ANSWERS: list[tuple[Exception, int, str, str, str | None]] = [
    # error, status, type, code, Retry-After
    (BadRequest("bad 'x'", param="x"), 400, "invalid_request_error", "invalid_request_error", None),
    (BadRequest("gone", code="client_closed"), 400, "invalid_request_error", "client_closed", None),
    (ModelNotFound("gpt-9"), 404, "invalid_request_error", "model_not_found", None),
    (RequestTooLarge(4096), 413, "invalid_request_error", "request_too_large", None),
    (Unauthorized("incorrect API key provided"), 401, "authentication_error", "invalid_api_key", None),
    (GuardrailViolation(stage="input", rule="pii"), 400, "invalid_request_error", "guardrail_violation", None),
    (RateLimited("secret", retry_after=2.2), 429, "rate_limit_error", "rate_limit_exceeded", "3"),
    (RateLimited("secret", retry_after=0.01), 429, "rate_limit_error", "rate_limit_exceeded", "1"),
    (CircuitOpen("secret", retry_after=4.2), 503, "server_error", "service_unavailable", "5"),
    (CircuitOpen("secret"), 503, "server_error", "service_unavailable", None),
    (ProviderError("secret", upstream_status=500, retry_after=3), 502, "server_error", "upstream_error", None),
    (AllProvidersFailed([ProviderError("secret", upstream_status=429)]), 502, "server_error", "upstream_error", None),
    (Timeout("secret", phase="idle"), 504, "server_error", "timeout", None),
]


@pytest.mark.parametrize(("error", "status", "kind", "code", "retry_after"), ANSWERS)
def test_typed_errors_map_to_status_body_and_headers(
    error: OnionError, status: int, kind: str, code: str, retry_after: str | None
) -> None:
    answer = openai_chat.encode_error(error, "req_1")
    assert answer.status == status
    # A 5xx names the request id, so a user can quote it; a 4xx is about their own input.
    message = error.public_message + (" (request id req_1)" if status >= 500 else "")
    body = {"error": {"message": message, "type": kind, "param": error.param, "code": code}}
    assert msgspec.json.decode(answer.body) == body
    retry = (b"x-should-retry", b"true" if error.should_retry else b"false")
    assert answer.headers == [retry, *([(b"retry-after", retry_after.encode())] if retry_after else [])]
    assert b"secret" not in answer.body


@pytest.mark.parametrize(("retry_after", "header"), [(7.0, [(b"retry-after", b"7")]), (None, [])])
def test_an_upstream_429_is_a_429_so_clients_back_off(retry_after: float | None, header: list[Any]) -> None:
    answer = openai_chat.encode_error(ProviderError("secret", upstream_status=429, retry_after=retry_after), "req_1")
    assert (answer.status, answer.headers) == (429, [(b"x-should-retry", b"false"), *header])
    assert msgspec.json.decode(answer.body)["error"] == {
        "message": "the model provider is rate limiting requests; retry later",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }


def test_an_untyped_error_is_a_500_that_names_only_the_request_id() -> None:
    answer = openai_chat.encode_error(RuntimeError("postgres://admin:pw@10.0.0.3"), "req_1")
    assert (answer.status, answer.headers) == (500, [(b"x-should-retry", b"true")])
    assert msgspec.json.decode(answer.body)["error"] == {
        "message": "internal error (request id req_1)",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }


def test_the_error_body_keeps_openais_field_order() -> None:
    assert openai_chat.error_body(404, "no such endpoint", "not_found") == (
        b'{"error":{"message":"no such endpoint","type":"invalid_request_error","param":null,"code":"not_found"}}'
    )


def test_without_a_request_id_a_5xx_names_none() -> None:
    assert b"request id" not in openai_chat.encode_error(Timeout()).body
    assert b"request id" not in openai_chat.encode_error(RuntimeError()).body


# -- the official SDK reads what we write ---------------------------------------------

FINISH_REASONS = st.sampled_from(["stop", "length", "tool_calls", "content_filter"])
texts = st.text(max_size=30)
usages = st.builds(Usage, st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 2 * 10**6))
tool_calls = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.text(min_size=1, max_size=8),
            "type": st.just("function"),
            "function": st.fixed_dictionaries({"name": st.text(min_size=1, max_size=8), "arguments": texts}),
        }
    ),
    min_size=1,
    max_size=2,
)
completions = st.builds(
    Completion,
    content=texts,
    model=texts,
    tool_calls=st.none() | tool_calls,
    finish_reason=FINISH_REASONS,
    usage=st.none() | usages,
    id=texts,
    created=st.integers(0, 2**40),
)


@given(completions, st.text(min_size=1, max_size=12))
def test_any_completion_is_a_chat_completion_the_sdk_reads_back(completion: Completion, served: str) -> None:
    parsed = ChatCompletion.model_validate_json(openai_chat.encode_completion(completion, ask(), served))
    assert parsed.id == (completion.id or "chatcmpl-req_1")
    assert parsed.model == (completion.model or served)
    assert parsed.created == (completion.created or parsed.created)
    [choice] = parsed.choices
    assert choice.message.role == "assistant" and choice.message.content == completion.content
    assert choice.finish_reason == completion.finish_reason
    tools = [call.model_dump(exclude_none=True) for call in choice.message.tool_calls or []]
    assert tools == (completion.tool_calls or [])
    assert (parsed.usage and parsed.usage.model_dump(exclude_none=True)) == (
        completion.usage and {k: v for k, v in msgspec.structs.asdict(completion.usage).items() if v is not None}
    )


stream_chunks = st.builds(
    Chunk,
    content=texts,
    role=st.none() | st.just("assistant"),
    tool_calls=st.none()
    | st.lists(
        st.fixed_dictionaries(
            {"index": st.integers(0, 3)},
            optional={
                "id": texts,
                "type": st.just("function"),
                "function": st.fixed_dictionaries({"arguments": texts}),
            },
        ),
        min_size=1,
        max_size=2,
    ),
    finish_reason=st.none() | FINISH_REASONS,
    usage=st.none() | usages,
)


@given(st.lists(stream_chunks, max_size=8), st.booleans())
def test_any_chunk_sequence_is_chat_completion_chunks_the_sdk_reads_back(
    chunks: list[Chunk], include_usage: bool
) -> None:
    stream = encoder(stream_options={"include_usage": include_usage})
    body = b"".join(e for e in map(stream.event, chunks) if e is not None) + stream.end()
    events = [e.removeprefix(b"data: ") for e in body.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    parsed = [ChatCompletionChunk.model_validate_json(e) for e in events[:-1]]
    assert all(p.id == "chatcmpl-req_1" and p.model == "served" and p.created == 9 for p in parsed)
    shown = [c for c in chunks if c.content or c.role or c.tool_calls or c.finish_reason]
    deltas = [p.choices[0] for p in parsed if p.choices]
    assert len(deltas) == len(shown)
    assert "".join(d.delta.content or "" for d in deltas) == "".join(c.content for c in shown)
    assert [d.finish_reason for d in deltas] == [c.finish_reason for c in shown]
    assert [d.delta.role for d in deltas] == [c.role for c in shown]
    assert [[t.model_dump(exclude_none=True) for t in d.delta.tool_calls or []] for d in deltas] == [
        c.tool_calls or [] for c in shown
    ]
    reported = [c.usage for c in chunks if c.usage is not None]
    usage = [p.usage.model_dump(exclude_none=True) for p in parsed if not p.choices and p.usage]
    expected = [msgspec.to_builtins(reported[-1])] if include_usage and reported else []
    assert usage == [{"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, **u} for u in expected]


# -- what an upstream would refuse, refused at the gateway naming the field -----------

INVALID_MESSAGES: list[tuple[list[dict[str, Any]], str, str]] = [
    # messages, param, code
    ([{"role": "user"}], "messages[0].content", "invalid_request_error"),
    ([{"role": "user", "content": None}], "messages[0].content", "invalid_request_error"),
    (
        [{"role": "system", "content": None}, {"role": "user", "content": "x"}],
        "messages[0].content",
        "invalid_request_error",
    ),
    (
        [{"role": "user", "content": "a"}, {"role": "assistant"}, {"role": "user", "content": "b"}],
        "messages[1].content",
        "invalid_request_error",
    ),
    ([{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}], "messages[1].role", "invalid_value"),
    (
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "tool", "content": "42"}],
        "messages[2].tool_call_id",
        "invalid_request_error",
    ),
    (
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "tool", "tool_call_id": "c"},
        ],
        "messages[2].content",
        "invalid_request_error",
    ),
    # A part the guards could not read: its text not a string, or no type.
    (
        [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": ["b"]}]}],
        "messages[0].content[1].text",
        "invalid_request_error",
    ),
    ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text", "invalid_request_error"),
    ([{"role": "user", "content": [{"text": "a"}]}], "messages[0].content[0]", "invalid_request_error"),
    ([{"role": "user", "content": [{"type": 3, "text": "a"}]}], "messages[0].content[0]", "invalid_request_error"),
]


@pytest.mark.parametrize(("messages", "param", "code"), INVALID_MESSAGES)
def test_a_message_the_upstream_would_refuse_is_a_400_naming_its_path(
    messages: list[dict[str, Any]], param: str, code: str
) -> None:
    body = msgspec.json.encode({"model": "m", "messages": messages})
    with pytest.raises(BadRequest) as caught:
        openai_chat.decode(body, Context())
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, param, code)
    assert param in caught.value.public_message


@pytest.mark.parametrize("function", [None, [[]], "f", {"description": "no name"}, {"name": 3}])
def test_a_function_tool_without_a_named_function_is_a_400(function: Any) -> None:
    tool = {"type": "function"} if function is None else {"type": "function", "function": function}
    ok = {"type": "function", "function": {"name": "f"}}
    body = msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [ok, tool]})
    with pytest.raises(BadRequest) as caught:
        openai_chat.decode(body, Context())
    assert (caught.value.status, caught.value.param) == (400, "tools[1].function")


@pytest.mark.parametrize("n", [0, -1, 129, 10_000])
def test_n_outside_1_to_128_is_a_400(n: int) -> None:
    body = msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": n})
    with pytest.raises(BadRequest) as caught:
        openai_chat.decode(body, Context())
    assert (caught.value.param, caught.value.code) == ("n", "invalid_value")


def test_an_assistant_message_may_hold_only_tool_calls() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    request = openai_chat.decode(msgspec.json.encode({"model": "m", "messages": messages}), Context())
    assert request.messages[1].tool_calls == [call]


def test_a_masked_errors_request_id_is_not_repeated() -> None:
    public = "the model provider failed to answer (request id req_1)"
    answer = openai_chat.encode_error(ProviderError("secret", public_message=public), "req_1")
    assert answer.body.count(b"req_1") == 1
