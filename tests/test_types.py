"""Requests decode from and encode to the OpenAI wire shape; context never leaves."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import Context, Message, Request, RequestOptions, decode_request, request_to_wire

json_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
unknown_keys = st.text(min_size=1, max_size=12).filter(lambda k: k not in Request.__struct_fields__)


@settings(max_examples=100, deadline=None)
@given(
    content=st.text(max_size=50),
    extra=st.dictionaries(unknown_keys, json_values, max_size=4),
    message_extra=st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: k not in Message.__struct_fields__), json_values, max_size=3
    ),
    temperature=st.none() | st.floats(0, 2),
)
def test_unknown_fields_round_trip_untouched(
    content: str, extra: dict[str, object], message_extra: dict[str, object], temperature: float | None
) -> None:
    body: dict[str, object] = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": content, **message_extra}],
        **extra,
    }
    if temperature is not None:
        body["temperature"] = temperature
    request = decode_request(msgspec.json.encode(body))
    assert request_to_wire(request) == body


def test_context_is_never_sent_upstream() -> None:
    request = decode_request(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')
    request.context.caller = "alice"
    request.context.options = RequestOptions(cache=False)
    request.context.trace_headers = {"traceparent": "00-alice"}
    wire = request_to_wire(request)
    assert "context" not in wire and "alice" not in msgspec.json.encode(wire).decode()


def test_copies_share_context_and_the_original_is_unchanged() -> None:
    original = Request(model="m", messages=[Message("user", "a")])
    copy = msgspec.structs.replace(original, model="other")
    assert copy.context is original.context
    assert original.model == "m"
    with pytest.raises(AttributeError):
        original.model = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[1,2]", "JSON object"),
        (b'{"messages": []}', "model"),
        (b'{"model": 3, "messages": []}', "$.model"),
        (b'{"model": "m", "messages": [{"content": "x"}]}', "role"),
        (b'{"model": "m", "messages": "hi"}', "$.messages"),
        (b'{"model": "m", "messages": [], "temperature": "hot"}', "$.temperature"),
        (b"{not json", "JSON"),
    ],
)
def test_bad_bodies_fail_with_the_path(body: bytes, fragment: str) -> None:
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)) as caught:
        decode_request(body)
    assert fragment in str(caught.value)


def test_message_text_joins_text_parts() -> None:
    message = Message(
        "user", [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}, {"type": "text", "text": "b"}]
    )
    assert message.text == "ab"
    assert Message("assistant").text == ""


def test_request_ids_are_unique() -> None:
    ids = {Context().request_id for _ in range(1000)}
    assert len(ids) == 1000


@given(st.integers(min_value=0, max_value=2**40))
def test_law_the_request_id_format_is_the_prefix_and_eight_hex_digits(n: int) -> None:
    # The C-built id (``%08x``) spells a counter value as the f-string ``:08x`` does, past
    # eight digits too; the log's unscanned short cut relies on the 8-digit shape.
    from onion._context import _ID_PREFIX

    assert (_ID_PREFIX + "%08x") % n == f"{_ID_PREFIX}{n:08x}"
    first, second = Context().request_id, Context().request_id
    assert first.startswith(_ID_PREFIX) and second.startswith(_ID_PREFIX)
    assert int(second[len(_ID_PREFIX) :], 16) == int(first[len(_ID_PREFIX) :], 16) + 1


def test_answer_tokens_limit_prefers_the_newer_field() -> None:
    assert Request(model="m", messages=[], max_tokens=5).answer_tokens_limit == 5
    assert Request(model="m", messages=[], max_tokens=5, max_completion_tokens=7).answer_tokens_limit == 7


@pytest.mark.parametrize(("stream", "sent"), [(None, None), (False, None), (True, True)])
def test_stream_reaches_the_upstream_only_when_true(stream: bool | None, sent: bool | None) -> None:
    # false is the upstream's default: left out, as an absent field is.
    body: dict[str, object] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if stream is not None:
        body["stream"] = stream
    wire = request_to_wire(decode_request(msgspec.json.encode(body)))
    assert wire.get("stream") == sent
    assert list(wire)[:2] == ["model", "messages"]
