"""A client that leaves mid-call leaves no state behind: through a real ``onion serve``
with a real ``redis-server``, the rate limiter's token reservation is settled (complete
and streamed calls). The breaker's trial on a left call: tests/server/test_app_edges.py
and tests/middlewares/resilience/test_circuit_breaker.py."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from onion.testing.upstream import FakeUpstream, Fault


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def write_config(tmp_path: Path, upstream: FakeUpstream, redis_url: str, prefix: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[[providers]]\nname = "p"\nkind = "openai"\nbase_url = "{upstream.base_url}"\nmodels = ["gpt-4o"]\n\n'
        f'[[stack]]\nuse = "rate_limit"\ntokens_per_minute = 100000\nper = "global"\nbackend = "redis"\n'
        f'redis_url = "{redis_url}"\nkey_prefix = "{prefix}"\n'
    )
    return path


def send(port: int, *, stream: bool) -> socket.socket:
    body = json.dumps(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "w " * 20}], "max_tokens": 50, "stream": stream}
    ).encode()
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    return conn


def wait_for(condition: Callable[[], bool], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_a_client_that_leaves_settles_the_rate_limit_reservation(
    tmp_path: Path, upstream: FakeUpstream, redis_url: str, gateway: Callable[..., Any]
) -> None:
    prefix = f"t16:{time.monotonic_ns()}"
    served = gateway(write_config(tmp_path, upstream, redis_url, prefix))
    store = redis.Redis.from_url(redis_url)

    def reserved() -> int:
        return int(store.get(f"{{{prefix}:global:tok}}:total") or 0)

    # Complete: the reservation is refunded when the client leaves before any answer.
    upstream.push(Fault(delay=10))
    conn = send(served.port, stream=False)
    assert wait_for(lambda: upstream.stats.requests == 1)
    estimate = reserved()
    assert estimate > 50  # the prompt and max_tokens, reserved before the call
    conn.close()
    assert wait_for(lambda: reserved() == 0), reserved()

    # Streamed: the client leaves after the first chunks; what it cost upstream is not
    # known (no usage arrived), so the reservation stands as the charge, and no more.
    upstream.push(Fault(chunk_delay=0.2))
    conn = send(served.port, stream=True)
    assert wait_for(lambda: b'"content"' in conn.recv(65536))
    assert reserved() == estimate
    conn.close()
    assert wait_for(lambda: upstream.stats.streams_disconnected == 1)
    assert reserved() == estimate

    store.close()


def test_a_client_that_leaves_a_half_open_trial_frees_it_without_closing_the_breaker(
    tmp_path: Path, upstream: FakeUpstream, gateway: Callable[..., Any]
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[[providers]]\nname = "p"\nkind = "openai"\nbase_url = "{upstream.base_url}"\nmodels = ["gpt-4o"]\n\n'
        '[[stack]]\nuse = "circuit_breaker"\nmin_calls = 2\nfailure_ratio = 1.0\nopen_seconds = 0.5\n'
    )
    served = gateway(path)
    chat = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
    url = served.url + "/v1/chat/completions"
    # A left call is no verdict: after it, two failures still open the breaker (had it
    # counted as a success, one in three would not reach the ratio of 1.0).
    upstream.push(Fault(delay=10))
    conn = send(served.port, stream=False)
    assert wait_for(lambda: upstream.stats.requests == 1)
    conn.close()
    assert wait_for(lambda: len(upstream.stats.closed_at) >= 1)
    for stream in (False, True):
        upstream.push(Fault(status=500), Fault(status=500))
        assert [httpx.post(url, content=chat, timeout=10).status_code for _ in range(2)] == [502, 502]
        opened = httpx.post(url, content=chat, timeout=10)
        assert opened.status_code == 503 and opened.json()["error"]["code"] == "service_unavailable", opened.text
        time.sleep(0.6)  # open_seconds: the next call is the (only) trial
        upstream.push(Fault(delay=10))
        before = upstream.stats.requests
        conn = send(served.port, stream=stream)
        assert wait_for(lambda before=before: upstream.stats.requests == before + 1)
        conn.close()
        time.sleep(0.2)
        # The trial's client left: its slot is free, so the next call may try (and closes it).
        again = httpx.post(url, content=chat, timeout=10)
        assert again.status_code == 200, (stream, again.text)
