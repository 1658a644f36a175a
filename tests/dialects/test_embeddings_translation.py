"""Laws of the embeddings translation (hypothesis builds the bodies and the vectors):

- a body decoded and sent upstream is the body the caller sent (unknown fields included);
- an answer is encoded in the format the caller asked for, whatever the upstream sent:
  float and base64 carry the same float32 numbers.
"""

from __future__ import annotations

import base64
from array import array
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import Completion, Context, Usage
from onion.wire import embeddings

name = st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True)
inputs = (
    st.text(min_size=1, max_size=20)
    | st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=4)
    | st.lists(st.integers(0, 100_000), min_size=1, max_size=6)
    | st.lists(st.lists(st.integers(0, 100_000), min_size=1, max_size=4), min_size=1, max_size=3)
)
bodies = st.fixed_dictionaries(
    {"model": name, "input": inputs},
    optional={
        "encoding_format": st.sampled_from(["float", "base64"]),
        "dimensions": st.integers(1, 3072),
        "user": name,
        "x_vendor_option": st.integers(),
    },
)


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_a_body_reaches_the_upstream_as_sent(body: dict[str, Any]) -> None:
    request = embeddings.decode(msgspec.json.encode(body), Context())
    assert request.messages == [] and request.embedding is not None
    assert embeddings.request_to_wire(request) == body


float32 = st.floats(-1, 1, width=32)
vectors = st.lists(st.lists(float32, min_size=1, max_size=8), min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(vectors, st.sampled_from(["float", "base64"]), st.sampled_from(["float", "base64"]))
def test_vectors_arrive_in_the_asked_format_with_the_same_numbers(
    vectors: list[list[float]], upstream_format: str, asked: str
) -> None:
    sent: list[Any] = vectors if upstream_format == "float" else [embeddings._to_base64(v) for v in vectors]
    answer = Completion(model="m", usage=Usage(3, 0, 3), finish_reason=None, embeddings=sent)
    body = msgspec.json.encode({"model": "m", "input": ["a"] * len(vectors), "encoding_format": asked})
    request = embeddings.decode(body, Context())
    out = msgspec.json.decode(embeddings.encode_completion(answer, request, "m"))
    assert out["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    got = [item["embedding"] for item in out["data"]]
    if asked == "base64":
        got = [array("f", base64.b64decode(g)).tolist() for g in got]
    assert got == vectors


@settings(max_examples=100, deadline=None)
@given(
    extra=st.dictionaries(name.map(lambda k: "x_" + k), st.integers() | st.text(max_size=8), max_size=3),
    details=st.none() | st.fixed_dictionaries({"cached_tokens": st.integers(0, 99)}),
)
def test_the_upstreams_usage_reaches_the_caller_field_by_field(
    extra: dict[str, Any], details: dict[str, Any] | None
) -> None:
    usage: dict[str, Any] = {"prompt_tokens": 7, "total_tokens": 7, **extra}
    if details is not None:
        usage["prompt_tokens_details"] = details
    answer = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}], "model": "e"}
    request = embeddings.decode(b'{"model": "e", "input": "hi"}', Context())
    completion = embeddings.decode_answer(msgspec.json.encode({**answer, "usage": usage}), request)
    sent = msgspec.json.decode(embeddings.encode_completion(completion, request, "e"))
    assert sent["usage"] == usage
