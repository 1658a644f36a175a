"""rate_limit: exact windows, Retry-After, tokens reserved and reconciled, Redis shared."""

from __future__ import annotations

import socket

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from middlewares.limit.rate_backends import MemoryBackend, RedisBackend
from middlewares.limit.rate_limit import RateLimit, estimate_tokens
from onion import (
    ConfigError,
    Context,
    Message,
    RateLimited,
    RateLimiterUnavailable,
    Request,
    Stack,
    Usage,
    prompt_tokens,
)
from onion.testing import Fail, FakeClock, Reply, ScriptedProvider


def _request(caller: str | None = "alice", stream: bool = False, max_tokens: int | None = 10) -> Request:
    return Request(
        model="m",
        messages=[Message("user", "x" * 40)],
        stream=stream,
        max_tokens=max_tokens,
        context=Context(caller=caller),
    )


async def test_admits_the_limit_then_rejects_with_an_exact_retry_after() -> None:
    clock = FakeClock(0.0)
    stack = Stack([RateLimit(requests_per_minute=3, clock=clock)], ScriptedProvider())
    for _ in range(3):
        await stack(_request())
        clock.advance(10)
    with pytest.raises(RateLimited) as info:
        await stack(_request())
    # The first admission (t=0) expires at t=60; it is now t=30.
    assert info.value.retry_after == pytest.approx(30)
    assert info.value.public_message == "too many requests, retry after 30 s"
    clock.advance(30)
    await stack(_request())


async def test_callers_have_separate_windows_and_global_is_shared() -> None:
    clock = FakeClock(0.0)
    per_caller = Stack([RateLimit(requests_per_minute=1, clock=clock)], ScriptedProvider())
    await per_caller(_request("alice"))
    await per_caller(_request("bob"))
    await per_caller(Request(model="m", messages=[Message("user", "hi")], user="carol"))
    with pytest.raises(RateLimited):
        await per_caller(_request("alice"))
    shared = Stack([RateLimit(requests_per_minute=1, per="global", clock=clock)], ScriptedProvider())
    await shared(_request("alice"))
    with pytest.raises(RateLimited):
        await shared(_request("bob"))


async def test_tokens_are_reserved_then_reconciled_with_real_usage() -> None:
    clock = FakeClock(0.0)
    # 40 ASCII chars / 4 + 3 framing + 3 reply priming (onion.prompt_tokens) + max_tokens 10.
    estimate = estimate_tokens(_request())
    assert estimate == 26 == prompt_tokens(_request().messages) + 10
    provider = ScriptedProvider(default=Reply("ok", usage=Usage(2, 3, 5)))
    stack = Stack([RateLimit(tokens_per_minute=50, clock=clock)], provider)
    # Reserved 26 each, reconciled to 5 each: 5 calls fit (4 * 5 + 26 <= 50), not 50 // 26 = 1.
    for _ in range(5):
        await (await stack(_request())).result()
    with pytest.raises(RateLimited) as info:
        await stack(_request())
    assert info.value.limit == "tokens"


async def test_streams_are_reconciled_when_they_end() -> None:
    clock = FakeClock(0.0)
    provider = ScriptedProvider(default=Reply("a b", usage=Usage(1, 1, 2)))
    stack = Stack([RateLimit(tokens_per_minute=50, clock=clock)], provider)
    for _ in range(12):  # each reserves 26 and is reconciled to 2 when its stream ends
        await (await stack(_request(stream=True))).result()
    response = await stack(_request(stream=True))  # 12 * 2 + 26 = 50: fits exactly
    # While that stream is open its whole estimate stays reserved: nothing else fits.
    with pytest.raises(RateLimited):
        await stack(_request(stream=True))
    await response.result()  # reconciled to 2: 26 in use, room for a reservation of 24
    await (await stack(_request(stream=True, max_tokens=8))).result()


async def test_a_failed_call_refunds_its_tokens() -> None:
    clock = FakeClock(0.0)
    provider = ScriptedProvider(default=Fail(RuntimeError("upstream down")))
    stack = Stack([RateLimit(tokens_per_minute=30, clock=clock)], provider)
    for _ in range(5):
        with pytest.raises(RuntimeError):
            await stack(_request())


@settings(max_examples=30, deadline=None)
@given(
    limit=st.integers(1, 8),
    bursts=st.lists(st.tuples(st.integers(1, 12), st.floats(0, 40)), min_size=1, max_size=12),
)
async def test_law_never_admits_more_than_the_limit_in_any_window(limit: int, bursts: list[tuple[int, float]]) -> None:
    clock = FakeClock(0.0)
    admitted: list[float] = []

    async def handler(request: Request):
        admitted.append(clock.now())
        await anyio.lowlevel.checkpoint()
        return await ScriptedProvider()(request)

    stack = Stack([RateLimit(requests_per_minute=limit, clock=clock)], handler)

    async def one() -> None:
        try:
            await stack(_request())
        except RateLimited as error:
            assert 0 < error.retry_after <= 60

    for count, gap in bursts:
        clock.advance(gap)
        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(one)
    for start in admitted:
        assert sum(1 for t in admitted if start <= t < start + 60) <= limit


def test_toml_parameters_and_validation() -> None:
    stack = Stack.from_config(
        [{"use": "rate_limit", "requests_per_minute": 10, "tokens_per_minute": 1000, "per": "global"}],
        ScriptedProvider(),
    )
    assert isinstance(stack.layers[0].store, MemoryBackend)
    with pytest.raises(ConfigError):
        Stack.from_config([{"use": "rate_limit", "per": "everyone", "requests_per_minute": 1}], ScriptedProvider())
    with pytest.raises(ConfigError):
        Stack.from_config([{"use": "rate_limit"}], ScriptedProvider())
    with pytest.raises(ConfigError):
        Stack.from_config([{"use": "rate_limit", "requests_per_minute": 1, "backend": "redis"}], ScriptedProvider())


# Redis: the session's one redis-server is shared by both event loops' runs of a test, so
# each run keys its windows by its backend (``anyio_backend``).


async def test_redis_two_stacks_sharing_it_never_admit_more_than_one_limit(redis_url: str, anyio_backend: str) -> None:
    prefix = f"t1:{anyio_backend}"
    layers = [
        RateLimit(requests_per_minute=7, per="global", backend="redis", redis_url=redis_url, key_prefix=prefix)
        for _ in range(2)
    ]
    stacks = [Stack([layer], ScriptedProvider()) for layer in layers]
    outcomes: list[str] = []

    async def one(stack: Stack) -> None:
        try:
            await stack(_request())
            outcomes.append("ok")
        except RateLimited as error:
            assert 0 < error.retry_after <= 60
            outcomes.append("limited")

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(one, stacks[i % 2])
    assert outcomes.count("ok") == 7
    assert outcomes.count("limited") == 33
    for layer in layers:
        await layer.store.aclose()


async def test_redis_tokens_reconcile_and_retry_after(redis_url: str, anyio_backend: str) -> None:
    prefix = f"t2:{anyio_backend}"
    layer = RateLimit(tokens_per_minute=60, backend="redis", redis_url=redis_url, key_prefix=prefix)
    provider = ScriptedProvider(default=Reply("ok", usage=Usage(1, 1, 2)))
    stack = Stack([layer], provider)
    for _ in range(12):  # 24 reserved, 2 kept: 12 x 2 = 24 <= 60
        await (await stack(_request())).result()
    big = RateLimit(tokens_per_minute=60, backend="redis", redis_url=redis_url, key_prefix=prefix)
    with pytest.raises(RateLimited) as info:
        await Stack([big], provider)(_request(max_tokens=50))  # 64 capped to 60, 24 in use
    assert 55 < info.value.retry_after <= 60
    await layer.store.aclose()
    await big.store.aclose()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_redis_unreachable_fails_closed_or_open_as_configured() -> None:
    # Runs on asyncio and trio: a dead Redis is "backend down" on both, never a crash.
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    for limits in ({"requests_per_minute": 5}, {"tokens_per_minute": 100}):
        closed_layer = RateLimit(**limits, backend="redis", redis_url=url)
        closed_provider = ScriptedProvider()
        with capture_logs() as logs, pytest.raises(RateLimiterUnavailable) as info:
            await Stack([closed_layer], closed_provider)(_request())
        # A 503 that blames the gateway, not a 429 that blames the caller.
        assert not isinstance(info.value, RateLimited)
        assert (info.value.status, info.value.code, info.value.retry_after) == (503, "rate_limiter_unavailable", 1.0)
        assert closed_provider.calls == 0
        assert any(e.get("action") == "rejected (fail closed)" for e in logs)
        await closed_layer.aclose()

        provider = ScriptedProvider(default=Reply("ok", usage=Usage(1, 1, 2)))
        with capture_logs() as logs:
            opened_layer = RateLimit(**limits, backend="redis", redis_url=url, fail_open=True)
            await (await Stack([opened_layer], provider)(_request())).result()
        assert provider.calls == 1
        assert any(e.get("action") == "admitted (fail open)" for e in logs)
        assert all(url not in str(e) for e in logs), "the Redis URL stays out of the log"
        await opened_layer.aclose()


async def test_redis_reconcile_against_a_dead_redis_only_logs(redis_url: str, anyio_backend: str) -> None:
    # Redis dies between the reservation and the reconciliation: the answer is still served.
    backend = RedisBackend(redis_url)
    dead = RedisBackend(f"redis://127.0.0.1:{_closed_port()}/0")
    layer = RateLimit(tokens_per_minute=100, key_prefix=f"t3:{anyio_backend}", store=backend)
    backend._adjust = dead._adjust  # the reservation succeeds, the reconciliation cannot connect
    provider = ScriptedProvider(default=Reply("ok", usage=Usage(1, 1, 2)))
    with capture_logs() as logs:
        completion = await (await Stack([layer], provider)(_request())).result()
    assert completion.content == "ok"
    assert any(e.get("event") == "rate limit backend unreachable while reconciling" for e in logs)
    await backend.aclose()
    await dead.aclose()


def test_redis_backend_keys_share_one_cluster_slot() -> None:
    keys = RedisBackend._keys("onion:rl:caller:alice:req")
    assert len({k[: k.index("}") + 1] for k in keys}) == 1


async def test_memory_forgets_callers_whose_window_expired() -> None:
    clock = FakeClock(0.0)
    store = MemoryBackend(clock, sweep_every=4)
    stack = Stack([RateLimit(requests_per_minute=5, store=store)], ScriptedProvider())
    for i in range(30):
        await stack(_request(f"caller-{i}"))
    assert len(store) >= 20
    clock.advance(61)
    for _ in range(5):  # a sweep falls among these calls
        await stack(_request("regular"))
    assert len(store) == 1


async def test_backend_down_is_logged_once_per_interval_with_the_count_suppressed() -> None:
    # A request rate of warnings while Redis is down would flood the log: one line per
    # log_every_seconds, and the next line says how many it held back.
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    clock = FakeClock()
    layer = RateLimit(
        requests_per_minute=5, backend="redis", redis_url=url, fail_open=True, log_every_seconds=10, clock=clock
    )
    provider = ScriptedProvider(default=Reply("ok", usage=Usage(1, 1, 2)))
    stack = Stack([layer], provider)
    with capture_logs() as logs:
        for _ in range(30):
            await (await stack(_request())).result()
            clock.advance(0.1)
        first = [e for e in logs if e["event"] == "rate limit backend unreachable"]
        clock.advance(10)
        await (await stack(_request())).result()
    warnings = [e for e in logs if e["event"] == "rate limit backend unreachable"]
    assert provider.calls == 31  # fail open: every call admitted
    assert len(first) == 1 and first[0]["suppressed"] == 0 and first[0]["log_level"] == "warning"
    assert len(warnings) == 2 and warnings[1]["suppressed"] == 29
    await layer.aclose()


async def test_a_virtual_keys_rpm_and_tpm_replace_the_layers_limits() -> None:
    from onion import KeyPolicy

    clock = FakeClock()
    limited = RateLimit(keys_only=True, clock=clock)
    layered = RateLimit(requests_per_minute=100, clock=clock)
    for layer in (limited, layered):
        stack = Stack([layer], ScriptedProvider([Reply("ok", usage=Usage(5, 1, 6))] * 10))

        def ask(policy: KeyPolicy | None) -> Request:
            request = _request(policy.name if policy else "carol")
            return Request(
                model="m",
                messages=request.messages,
                max_tokens=10,
                context=Context(caller=request.context.caller, key=policy),
            )

        two = KeyPolicy(name="alice", rpm=2)
        await stack(ask(two))
        await stack(ask(two))
        with pytest.raises(RateLimited):
            await stack(ask(two))
        # tpm: the worst case (prompt + max_tokens) of one call is all the key has.
        tight = KeyPolicy(name="bob", tpm=estimate_tokens(ask(None)))
        await stack(ask(tight))
        with pytest.raises(RateLimited):
            await stack(ask(tight))
        await stack(ask(KeyPolicy(name="dave")))  # a key without limits: the layer's own (or none)
    with pytest.raises(ConfigError):
        Stack.from_config([{"use": "rate_limit", "keys_only": True, "per": "global"}], ScriptedProvider())
