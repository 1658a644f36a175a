"""The gateway at its edges, over real sockets: a client that leaves, malformed bodies,
unexpected exceptions, shutdown past the grace period (``onion/server/_app.py``)."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from onion.testing.upstream import FakeUpstream, Fault


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def write_config(tmp_path: Path, upstream: FakeUpstream, server: str = "", stack: str = "") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"[server]\n{server}\n\n"
        f'[[providers]]\nname = "p"\nkind = "openai"\nbase_url = "{upstream.base_url}"\nmodels = ["gpt-4o"]\n\n'
        f"{stack}"
    )
    return path


def post(port: int, body: bytes) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )


def chat(content: str = "hi", **extra: Any) -> bytes:
    return json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **extra}).encode()


METRICS_AND_BREAKER = '[[stack]]\nuse = "metrics"\n\n[[stack]]\nuse = "circuit_breaker"\n'


def test_a_client_that_leaves_a_complete_call_cancels_the_upstream_call(
    tmp_path: Path, upstream: FakeUpstream, gateway: Callable[..., Any]
) -> None:
    served = gateway(write_config(tmp_path, upstream, stack=METRICS_AND_BREAKER))
    upstream.push(Fault(delay=10))  # a complete answer that takes 10 s
    closed_before = len(upstream.stats.closed_at)
    client = socket.create_connection(("127.0.0.1", served.port))
    client.sendall(post(served.port, chat()))
    for _ in range(500):
        if upstream.stats.requests:
            break
        time.sleep(0.01)
    assert upstream.stats.requests == 1
    left = time.monotonic()
    client.close()
    for _ in range(200):
        if len(upstream.stats.closed_at) > closed_before:
            break
        time.sleep(0.005)
    assert len(upstream.stats.closed_at) > closed_before, "the upstream connection stayed open"
    assert upstream.stats.closed_at[closed_before] - left < 0.1
    # The layers' end-of-answer code ran: metrics counted it as cancelled, the breaker let
    # the next call through.
    metrics = httpx.get(served.url + "/metrics").text
    assert 'error_type="cancelled"' in metrics, metrics[:3000]
    reply = httpx.post(served.url + "/v1/chat/completions", content=chat("again"), timeout=5)
    assert reply.status_code == 200, reply.text


MALFORMED = [
    (
        "deep nesting",
        b'{"model": "gpt-4o", "messages": [], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "json_too_deep",
    ),
    ("deep objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "json_too_deep"),
    ("huge number", b'{"model": "gpt-4o", "max_tokens": ' + b"9" * 10_000 + b', "messages": []}', "invalid_json"),
    ("huge exponent", b'{"model": "gpt-4o", "temperature": 1e999999, "messages": []}', "invalid_json"),
    ("invalid utf-8", b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "\xff\xfe"}]}', "invalid_json"),
    ("duplicate keys", b'{"model": "gpt-4o", "model": "gpt-4o-mini", "messages": []}', "duplicate_key"),
]


@pytest.mark.parametrize(("case", "body", "code"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_body_is_a_4xx_json_error_with_the_request_id(
    case: str, body: bytes, code: str, tmp_path: Path, upstream: FakeUpstream, gateway: Callable[..., Any]
) -> None:
    served = gateway(write_config(tmp_path, upstream))
    reply = httpx.post(served.url + "/v1/chat/completions", content=body, timeout=10)
    assert 400 <= reply.status_code < 500, (case, reply.status_code, reply.text[:300])
    assert reply.json()["error"]["code"] == code
    assert reply.headers["x-request-id"].startswith("req_")
    assert upstream.stats.requests == 0


ROUTES_WITH_BODIES = [
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/embeddings",
]


def test_every_route_that_reads_a_body_answers_with_the_request_id(
    tmp_path: Path, upstream: FakeUpstream, gateway: Callable[..., Any]
) -> None:
    # Before: POST /v1/messages/count_tokens answered (a 200, or a 400 for a malformed
    # body) without x-request-id, which every other route that reads a body sends.
    served = gateway(write_config(tmp_path, upstream))
    for path in ROUTES_WITH_BODIES:
        for _, body, code in MALFORMED[2:]:
            reply = httpx.post(served.url + path, content=body, timeout=10)
            assert 400 <= reply.status_code < 500, (path, reply.status_code, reply.text[:300])
            assert reply.headers["x-request-id"].startswith("req_"), (path, code)
    counted = httpx.post(
        served.url + "/v1/messages/count_tokens",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]},
        timeout=10,
    )
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0
    assert counted.headers["x-request-id"].startswith("req_")
    assert upstream.stats.requests == 0


def test_an_unexpected_exception_is_a_json_500_and_a_logged_traceback(
    tmp_path: Path, upstream: FakeUpstream, gateway: Callable[..., Any]
) -> None:
    layer = tmp_path / "exploding_layer.py"
    layer.write_text(
        "class Explode:\n"
        "    name = 'explode'\n"
        "    async def __call__(self, request, call_next):\n"
        "        raise KeyError('a bug in a layer')\n"
    )
    config = write_config(tmp_path, upstream, stack='[[stack]]\nuse = "exploding_layer:Explode"\n')
    import os

    os.environ["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    try:
        served = gateway(config)
    finally:
        os.environ["PYTHONPATH"] = os.environ["PYTHONPATH"].split(os.pathsep, 1)[1]
    reply = httpx.post(served.url + "/v1/chat/completions", content=chat(), timeout=5)
    assert reply.status_code == 500
    request_id = reply.headers["x-request-id"]
    assert request_id in reply.json()["error"]["message"]
    assert "a bug in a layer" not in reply.text and "Traceback" not in reply.text
    time.sleep(0.3)
    line = next(json.loads(x) for x in served.output if request_id in x and '"level":"error"' in x)
    assert "Traceback (most recent call last)" in line["exception"] and "KeyError" in line["exception"]
    assert "<traceback object" not in served.text()


def test_sigterm_past_the_grace_period_ends_calls_cleanly_and_exits_0(
    tmp_path: Path, upstream: FakeUpstream, gateway: Callable[..., Any]
) -> None:
    served = gateway(write_config(tmp_path, upstream, server="shutdown_grace_seconds = 1.0"))
    upstream.push(Fault(chunk_delay=0.5), Fault(delay=20))  # a 20 s stream, a 20 s complete call
    events: list[str] = []
    complete: list[httpx.Response] = []

    def stream() -> None:
        body = json.loads(chat(" ".join(["w"] * 40), stream=True))
        with httpx.stream("POST", served.url + "/v1/chat/completions", json=body, timeout=30) as response:
            events.extend(line for line in response.iter_lines() if line)

    def call() -> None:
        complete.append(httpx.post(served.url + "/v1/chat/completions", content=chat(), timeout=30))

    readers = [threading.Thread(target=stream, daemon=True)]
    readers[0].start()
    for _ in range(500):
        if any('"content"' in e for e in events):
            break
        time.sleep(0.01)
    readers.append(threading.Thread(target=call, daemon=True))
    readers[1].start()
    for _ in range(500):
        if upstream.stats.requests >= 2:
            break
        time.sleep(0.01)
    sent = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.ConnectError):  # new connections are refused at once
        httpx.get(served.url + "/healthz", timeout=1)
    code = served.process.wait(timeout=10)
    took = time.monotonic() - sent
    for reader in readers:
        reader.join(timeout=5)
    assert code == 0, served.text()[-3000:]
    assert 0.8 <= took <= 4, took
    assert events[-1].startswith("data: {") and '"code":"shutting_down"' in events[-1], events[-3:]
    assert complete and complete[0].status_code == 503, complete
    assert complete[0].json()["error"]["code"] == "shutting_down"


def test_metrics_need_a_key_and_authorization_is_one_well_formed_header(
    tmp_path: Path, upstream: FakeUpstream, gateway: Callable[..., Any]
) -> None:
    served = gateway(write_config(tmp_path, upstream, server='api_keys = ["k-test"]', stack=METRICS_AND_BREAKER))
    assert httpx.get(served.url + "/metrics").status_code == 401
    assert httpx.get(served.url + "/metrics", headers={"authorization": "Bearer k-test"}).status_code == 200
    twice = [(b"authorization", b"Bearer nope"), (b"authorization", b"Bearer k-test")]
    reply = httpx.post(served.url + "/v1/chat/completions", content=chat(), headers=twice)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_authorization_header"
    reply = httpx.post(served.url + "/v1/chat/completions", content=chat(), headers={"authorization": "k-test"})
    assert reply.status_code == 400
    reply = httpx.post(served.url + "/v1/chat/completions", content=chat(), headers={"authorization": "Bearer k-test"})
    assert reply.status_code == 200, reply.text
    open_metrics = tmp_path / "open"
    open_metrics.mkdir()
    server = 'api_keys = ["k-test"]\nmetrics_auth = false'
    served = gateway(write_config(open_metrics, upstream, server=server, stack=METRICS_AND_BREAKER))
    assert httpx.get(served.url + "/metrics").status_code == 200
