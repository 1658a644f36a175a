"""onion.RedisClient against a real redis-server that we pause (SIGSTOP): per-operation
deadlines, the breaker, and the layers that fail open (cache) or closed (rate limit)."""

from __future__ import annotations

import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from middlewares.cache.exact import ExactCache
from middlewares.limit.rate_limit import RateLimit
from onion import Message, RateLimiterUnavailable, RedisClient, RedisUnavailable, Request, Stack
from onion.testing import ScriptedProvider


@pytest.fixture
def own_redis(
    tmp_path: Path, redis_starter: Callable[[Path], tuple[str, subprocess.Popen[bytes]]]
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test alone, so pausing it leaves the session's one alone."""
    url, process = redis_starter(tmp_path)
    try:
        yield url, process
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(timeout=10)


def _request(n: int) -> Request:
    return Request(model="m", messages=[Message("user", f"question {n}")])


async def _p50(stack: Stack, start: int, count: int = 60) -> float:
    latencies = []
    for n in range(start, start + count):
        began = time.perf_counter()
        await (await stack(_request(n))).result()
        latencies.append(time.perf_counter() - began)
    return statistics.median(latencies)


async def test_a_paused_redis_costs_the_stack_no_latency(own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, server = own_redis
    shared = Stack(
        [
            RateLimit(requests_per_minute=1_000_000, backend="redis", redis_url=url, fail_open=True),
            ExactCache(backend="redis", redis_url=url),
        ],
        ScriptedProvider(),
    )
    free = Stack([RateLimit(requests_per_minute=1_000_000), ExactCache()], ScriptedProvider())
    await _p50(shared, 0, 10)  # connections made
    baseline = await _p50(free, 0)
    server.send_signal(signal.SIGSTOP)
    try:
        began = time.perf_counter()
        paused = await _p50(shared, 1000)
        took = time.perf_counter() - began
    finally:
        server.send_signal(signal.SIGCONT)
    assert paused - baseline < 0.002, (paused, baseline)
    assert took < 2.0, took  # a few calls pay one 50 ms deadline each, then the breaker skips Redis
    for layer in shared.layers:
        await layer.aclose()


async def test_a_paused_redis_fails_the_closed_rate_limiter_with_503_not_429(
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, server = own_redis
    limiter = RateLimit(requests_per_minute=1000, backend="redis", redis_url=url)
    stack = Stack([limiter], ScriptedProvider())
    await (await stack(_request(0))).result()
    server.send_signal(signal.SIGSTOP)
    try:
        for n in range(10):
            began = time.perf_counter()
            with pytest.raises(RateLimiterUnavailable) as info:
                await stack(_request(n))
            assert time.perf_counter() - began < 0.5
            assert (info.value.status, info.value.code) == (503, "rate_limiter_unavailable")
    finally:
        server.send_signal(signal.SIGCONT)
    await anyio.sleep(1.1)  # the breaker's cool-down: then one call probes and closes it
    await (await stack(_request(99))).result()
    await limiter.aclose()


async def test_the_breaker_skips_a_redis_that_does_not_answer(own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, server = own_redis
    client = RedisClient(url, deadline=0.05, failures=2, cooldown=0.3)
    assert await client.run(client.sync.ping)
    server.send_signal(signal.SIGSTOP)
    try:
        for _ in range(2):
            began = time.perf_counter()
            with pytest.raises(Exception) as info:
                await client.run(client.sync.ping)
            assert "Timeout" in type(info.value).__name__ or isinstance(info.value, RedisUnavailable)
            assert time.perf_counter() - began < 0.5
        assert not client.available
        began = time.perf_counter()
        with pytest.raises(RedisUnavailable):
            await client.run(client.sync.ping)
        assert time.perf_counter() - began < 0.005  # skipped, not tried
    finally:
        server.send_signal(signal.SIGCONT)
    await anyio.sleep(0.35)
    assert await client.run(client.sync.ping)  # the probe succeeds and closes the breaker
    assert client.available
    await client.aclose()
