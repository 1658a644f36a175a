"""The gateway's HTTP mechanics, without an app: a body is read whole or refused as soon
as it passes the limit, a key is compared with every key, only the W3C trace context
reaches the layers, and a layer's header can never inject a line."""

from __future__ import annotations

import hmac
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onion import BadRequest, RequestTooLarge, Unauthorized
from onion.server._http import (
    ApiKeys,
    cancel_on_disconnect,
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
