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
