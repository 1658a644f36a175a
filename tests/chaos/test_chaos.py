"""Chaos: hundreds of concurrent calls through timeout + fallback + retry + breaker to two
real HTTP upstreams, one failing at random (500, 429 + Retry-After, read timeouts, stalls,
cut streams) and one healthy. Every call must be answered in full, within its deadline,
and nothing (connections, upstream streams, tasks) may be left behind."""

from __future__ import annotations

import random

import anyio
import pytest

from middlewares.resilience.circuit_breaker import CircuitBreaker
from middlewares.resilience.fallback import Fallback
from middlewares.resilience.retry import Retry
from middlewares.resilience.timeout import Deadline
from onion import Message, Request, Stack
from onion.providers import OpenAIProvider, Router
from onion.testing.upstream import FakeUpstream, Fault

CALLS = 300
DEADLINE = 10.0


def _chaos(seed: int):
    rng = random.Random(seed)

    def fault_for(body: dict) -> Fault | None:
        roll = rng.random()
        stream = bool(body.get("stream"))
        if roll < 0.15:
            return Fault(status=500)
        if roll < 0.25:
            return Fault(status=429, retry_after="1")
        if roll < 0.32:
            return Fault(delay=3.0)  # no headers before the provider's read timeout
        if roll < 0.42:
            return Fault(stall_after=2 if stream else 0, stall=3.0)  # stalls mid-answer
        if roll < 0.57:
            return Fault(cut_after=2, cut_mode="close")  # connection dropped mid-answer
        return None

    return fault_for


@pytest.mark.parametrize("seed", [7])
async def test_every_call_is_answered_in_full_within_its_deadline_and_nothing_leaks(seed: int) -> None:
    async with FakeUpstream(models=("primary",)) as flaky, FakeUpstream(models=("backup",)) as healthy:
        flaky.fault_for = _chaos(seed)
        options = {"read_timeout": 1.0, "connect_timeout": 1.0}
        router = Router(
            [
                OpenAIProvider(name="flaky", base_url=flaky.base_url, models=["primary"], **options),
                OpenAIProvider(name="healthy", base_url=healthy.base_url, models=["backup"], **options),
            ]
        )
        breaker = CircuitBreaker(failure_ratio=0.5, window_seconds=5, min_calls=20, open_seconds=1)
        stack = Stack(
            [
                Deadline(seconds=DEADLINE, first_token_seconds=3, idle_seconds=0.5),
                Fallback(["primary", "backup"]),
                Retry(attempts=3, base_delay=0.02, max_delay=1.5, budget=0.3),
                breaker,
            ],
            router,
        )
        tasks_before = len(anyio.get_running_tasks())
        late: list[float] = []
        wrong: list[str] = []
        fell_back = 0

        async def one(i: int) -> None:
            nonlocal fell_back
            question = f"question {i} about the state of things today"
            request = Request(model="primary", messages=[Message("user", question)], stream=i % 2 == 0)
            start = anyio.current_time()
            response = await stack(request)
            async with response:
                if request.stream:
                    text = "".join([chunk.content async for chunk in response])
                else:
                    text = (await response.result()).content
            elapsed = anyio.current_time() - start
            if elapsed > DEADLINE + 0.5:
                late.append(elapsed)
            if text != f"You said: {question}":
                wrong.append(text)
            fell_back += response.fallback == "backup"

        async with anyio.create_task_group() as group:
            for i in range(CALLS):
                group.start_soon(one, i)

        assert wrong == [], f"{len(wrong)} answers were not delivered in full, e.g. {wrong[:3]}"
        assert late == []
        assert fell_back > 0, "the chaos must have forced some calls onto the backup"
        assert flaky.stats.requests > CALLS // 2
        # Nothing left behind: no task, no open upstream stream, no connection once closed.
        assert len(anyio.get_running_tasks()) == tasks_before
        for upstream in (flaky, healthy):
            stats = await upstream.wait_settled(within=5.0)
            assert stats.open_streams == 0, stats
        await router.aclose()
        for upstream in (flaky, healthy):
            stats = await upstream.wait_settled(within=5.0, connections=True)
            assert stats.open_connections == 0, stats
