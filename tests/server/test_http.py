"""The gateway's HTTP mechanics, without an app: a body is read whole or refused as soon
as it passes the limit, a key is compared with every key, only the W3C trace context
reaches the layers, and a layer's header can never inject a line."""

from __future__ import annotations

import hmac
import json
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import BadRequest, RequestTooLarge, Unauthorized
from onion.server import _http
from onion.server._http import (
    ApiKeys,
    cancel_on_disconnect,
    check_json,
    header_pairs,
    read_body,
    read_headers,
    respond,
)


class Client:
    """An ASGI ``receive`` that hands out ``messages`` in order and counts the calls."""

    def __init__(self, *messages: dict[str, Any]) -> None:
        self.messages = list(messages)
        self.received = 0

    async def __call__(self) -> dict[str, Any]:
        self.received += 1
        if not self.messages:
            await anyio.sleep_forever()
        return self.messages.pop(0)


def parts(*pieces: bytes) -> Client:
    return Client(
        *({"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces))
    )


# -- the body ------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=6), st.integers(0, 120))
async def test_a_body_in_any_pieces_is_read_whole_or_refused_at_the_limit(pieces: list[bytes], limit: int) -> None:
    body = b"".join(pieces)
    client = parts(*pieces)
    if len(body) <= limit:
        assert await read_body(client, None, limit) == body
        return
    with pytest.raises(RequestTooLarge) as caught:
        await read_body(client, None, limit)
    assert caught.value.limit == limit
    sizes = [len(b"".join(pieces[:n])) for n in range(1, len(pieces) + 1)]
    assert client.received == next(n for n, size in enumerate(sizes, 1) if size > limit)  # stops at once


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    client = parts(b"x" * 10)
    with pytest.raises(RequestTooLarge):
        await read_body(client, b"99999", 4096)
    assert client.received == 0
    assert await read_body(parts(b"x" * 10), b"10", 4096) == b"x" * 10


@pytest.mark.parametrize("declared", [b"abc", b"", b"1.5"])
async def test_a_malformed_content_length_is_a_bad_request(declared: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        await read_body(parts(b"{}"), declared, 4096)
    error = caught.value
    assert (error.status, error.code, error.public_message) == (
        400,
        "invalid_request_error",
        "invalid Content-Length header",
    )


async def test_a_client_that_goes_away_mid_body_is_a_bad_request() -> None:
    client = Client({"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"})
    with pytest.raises(BadRequest) as caught:
        await read_body(client, None, 4096)
    assert (caught.value.code, caught.value.public_message) == ("client_closed", "the client went away")


# -- the key -------------------------------------------------------------------------


async def test_api_keys_name_the_caller_or_refuse() -> None:
    keys = ApiKeys({"k-alice": "alice", "k-bob": "bob"})
    assert keys.caller(b"Bearer k-alice") == "alice"
    assert keys.caller(b"bearer  k-bob ") == "bob"  # the scheme is case-insensitive, the key stripped
    for missing in (None, b"", b"  "):
        with pytest.raises(Unauthorized, match="missing API key"):
            keys.caller(missing)
    for malformed in (b"k-alice", b"Basic k-alice", b"Bearer ", b"Bearer k-alice k-bob", b"Bearer k-\x01alice"):
        with pytest.raises(BadRequest, match="malformed Authorization header") as refused:
            keys.caller(malformed)
        assert (refused.value.status, refused.value.code) == (400, "invalid_authorization_header")
    with pytest.raises(Unauthorized, match="incorrect API key provided") as caught:
        keys.caller(b"Bearer k-alic")
    assert b"k-alice" not in caught.value.public_message.encode()
    assert ApiKeys().caller(None) is None and ApiKeys({}).caller(b"Bearer anything") is None


def test_a_key_is_compared_with_every_key_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []

    def counting(given: bytes, key: bytes) -> bool:
        compared.append(key)
        return given == key

    monkeypatch.setattr(hmac, "compare_digest", counting)
    keys = ApiKeys({"k1": "a", "k2": "b", "k3": "c"})
    assert keys.caller(b"Bearer k1") == "a"
    assert compared == [b"k1", b"k2", b"k3"]  # the first match does not stop the loop


# -- headers -------------------------------------------------------------------------

CACHE_SWITCHES: list[tuple[list[tuple[bytes, bytes]], bool]] = [
    ([], False),
    ([(b"x-onion-cache", b"no")], True),
    ([(b"x-onion-cache", b" OFF ")], True),
    ([(b"x-onion-cache", b"false")], True),
    ([(b"x-onion-cache", b"yes")], False),
    ([(b"cache-control", b"no-cache")], True),
    ([(b"cache-control", b"max-age=0, No-Store")], True),
    ([(b"cache-control", b"max-age=60")], False),
]


@pytest.mark.parametrize(("headers", "off"), CACHE_SWITCHES)
def test_cache_switches(headers: list[tuple[bytes, bytes]], off: bool) -> None:
    options = read_headers(headers)[2]
    assert (options is not None and not options.cache) is off
    assert options is None or not options.refresh


def test_the_refresh_switch_skips_the_lookup_only() -> None:
    options = read_headers([(b"x-onion-cache", b" Refresh ")])[2]
    assert options is not None and options.cache and options.refresh
    # Turning the cache off wins over refreshing it.
    both = read_headers([(b"x-onion-cache", b"refresh"), (b"cache-control", b"no-store")])[2]
    assert both is not None and not both.cache


def test_only_the_w3c_trace_context_is_kept_for_the_layers() -> None:
    headers = [
        (b"authorization", b"Bearer sk-secret"),
        (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        (b"tracestate", b"v=1"),
        (b"baggage", b"k=v"),
        (b"cookie", b"session=1"),
        (b"content-length", b"12"),
    ]
    authorization, declared, options, trace = read_headers(headers)
    assert (authorization, declared, options) == (b"Bearer sk-secret", b"12", None)
    assert trace == {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "v=1",
        "baggage": "k=v",
    }
    assert read_headers([(b"authorization", b"x")])[3] is None  # no dict made when none came
    with pytest.raises(BadRequest, match="one Authorization header"):
        read_headers([(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")])


def test_a_layers_headers_cannot_inject_a_line() -> None:
    pairs = header_pairs(
        {
            "X-Fine": "ok",
            "x-evil": "a\r\nset-cookie: stolen=1",
            "x-evil\nname": "v",
            "x-unicode": "caf\u00e9 \u2603",
            "x-number": 3,  # type: ignore[dict-item]
        }
    )
    assert pairs == [(b"x-fine", b"ok")]


# -- answers -------------------------------------------------------------------------


async def test_an_answer_is_its_headers_then_length_served_by_and_request_id() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await respond(
        send, 429, b"{}", [(b"content-type", b"application/json"), (b"retry-after", b"3")], b"rate_limit", "r1"
    )
    assert sent == [
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"retry-after", b"3"),
                (b"content-length", b"2"),
                (b"x-onion-served-by", b"rate_limit"),
                (b"x-request-id", b"r1"),
            ],
        },
        {"type": "http.response.body", "body": b"{}"},
    ]


async def test_a_disconnect_cancels_the_stream_and_nothing_else_does() -> None:
    client = Client({"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"})
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(cancel_on_disconnect, client, group.cancel_scope)
            await anyio.sleep_forever()
    assert group.cancel_scope.cancel_called and client.received == 2


# -- check_json's fast path -------------------------------------------------------------

# Keys that collide as decoded but not as written ("\u0061" is "a"), keys and strings with
# colons, and escapes that spell a colon: what could fool a count of colons.
_KEYS = st.sampled_from(['"a"', '"b"', '"a:"', '":"', '"\\u0061"', '"a\\u003a"', '"x:y"', '"model"'])
_STRINGS = st.one_of(
    st.text(alphabet=st.sampled_from(list('ab: é"\\/\n')), max_size=8).map(json.dumps),
    st.sampled_from(['"\\u003a"', '"a:b"', '"\\ud800"', '"\\\\u003a"', '"::"', '"\\/"']),
)
_NUMBERS = st.one_of(
    st.integers(min_value=-(10**120), max_value=10**120).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e999", "-1e-999", "1E5", "-0.0", "0." + "0" * 120 + "1", "NaN", "Infinity"]),
)
_SCALARS = st.one_of(_STRINGS, _NUMBERS, st.sampled_from(["true", "false", "null"]))


def _objects(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pairs = st.lists(st.tuples(_KEYS, st.sampled_from([":", " : "]), children), max_size=5)
    return pairs.map(lambda items: "{" + ",".join(k + colon + v for k, colon, v in items) + "}")


_JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(_objects(children), st.lists(children, max_size=5).map(lambda xs: f"[{','.join(xs)}]")),
    max_leaves=15,
)


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    body = draw(_JSON).encode()
    if draw(st.booleans()):  # a byte flipped, dropped or added anywhere
        at = draw(st.integers(min_value=0, max_value=len(body)))
        body = body[:at] + draw(st.binary(max_size=2)) + body[at + draw(st.integers(0, 2)) :]
    return body


def _full_verdict(body: bytes) -> str | None:
    # check_json's full check alone (stdlib json with its hooks), as check_json reports it.
    try:
        _http._CHECKER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except _http._DuplicateKey:
        return "duplicate_key"
    except (ValueError, RecursionError):
        return "invalid_json"
    return None


def _verdict(body: bytes) -> str | None:
    try:
        check_json(body, 64)
    except BadRequest as refusal:
        return refusal.code
    return None


@settings(max_examples=400)
@given(body=_bodies())
def test_check_json_says_what_its_full_check_says_and_its_fast_path_passes_nothing_else(body: bytes) -> None:
    # The law: the fast path only ever passes a body the full check passes, so check_json
    # refuses exactly what the full check refuses, with the same code.
    if _http._plainly_valid(body):
        assert _full_verdict(body) is None
    assert _verdict(body) == _full_verdict(body)


def test_a_usual_chat_body_takes_the_fast_path_and_a_disguised_duplicate_does_not() -> None:
    usual = b'{"model":"gpt-4o","messages":[{"role":"user","content":"Note: a colon, and 42"}],"temperature":0.2}'
    assert _http._plainly_valid(usual)
    for body in (
        b'{"a":1,"a":2}',
        b'{"a":"x:y","a":2}',  # a colon in a string makes up for the key dropped
        b'{"a":"\\u003a","a":2}',  # so does an escaped one
        b'{"\\u0061":1,"a":2}',
    ):
        assert not _http._plainly_valid(body)
        assert _verdict(body) == "duplicate_key"
    assert not _http._plainly_valid(b'{"a":' + b"1" * 200 + b"}")
    assert _verdict(b'{"a":' + b"1" * 200 + b"}") == "invalid_json"
