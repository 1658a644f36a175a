"""The simulated model: its answers are consistent and its faults happen at their rates."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import Message, ProviderError, Request
from onion.providers import SimulatedProvider
from onion.testing import FakeClock


def ask(text: str = "hello", *, stream: bool = False, max_tokens: int | None = None) -> Request:
    return Request(model="sim", messages=[Message("user", text)], stream=stream, max_tokens=max_tokens)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=60), st.integers(1, 64), st.booleans())
async def test_stream_and_complete_give_the_same_answer_and_usage(text: str, tokens: int, stream: bool) -> None:
    provider = SimulatedProvider(ttft=0, tokens_per_second=0, answer_tokens=tokens)
    complete = await (await provider(ask(text))).result()
    streamed = await (await provider(ask(text, stream=True))).result()
    assert streamed.content == complete.content
    assert streamed.usage == complete.usage
    assert complete.usage is not None and complete.usage.completion_tokens == tokens
    assert complete.usage.total_tokens == complete.usage.prompt_tokens + tokens


async def test_max_tokens_caps_the_answer() -> None:
    provider = SimulatedProvider(ttft=0, tokens_per_second=0, answer_tokens=50)
    completion = await (await provider(ask(max_tokens=5))).result()
    assert completion.usage is not None and completion.usage.completion_tokens == 5


async def test_latency_follows_ttft_and_pace() -> None:
    clock = FakeClock()
    provider = SimulatedProvider(ttft=0.5, tokens_per_second=10, answer_tokens=5, clock=clock)
    request = ask(stream=True)
    await (await provider(request)).result()
    assert clock.now() - 1000.0 == pytest.approx(0.5 + 4 * 0.1)


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (400, False)])
async def test_error_rates(status: int, retryable: bool) -> None:
    provider = SimulatedProvider(ttft=0, error_rates={status: 1.0})
    with pytest.raises(ProviderError) as caught:
        await provider(ask())
    assert caught.value.upstream_status == status and caught.value.retryable is retryable
    assert (caught.value.retry_after is not None) is (status == 429)


async def test_cut_streams_fail_half_way() -> None:
    provider = SimulatedProvider(ttft=0, tokens_per_second=0, answer_tokens=10, cut_rate=1.0)
    got = []
    with pytest.raises(ProviderError) as caught:
        async for chunk in await provider(ask(stream=True)):
            got.append(chunk)
    assert len(got) == 5 and caught.value.retryable


async def test_timeouts_stall_then_fail() -> None:
    clock = FakeClock()
    provider = SimulatedProvider(ttft=0, timeout_rate=1.0, stall_seconds=30, clock=clock)
    with pytest.raises(ProviderError):
        await provider(ask())
    assert clock.now() - 1000.0 >= 30


async def test_seeded_faults_are_reproducible() -> None:
    async def outcomes(seed: int) -> list[bool]:
        provider = SimulatedProvider(ttft=0, tokens_per_second=0, error_rates={500: 0.5}, seed=seed)
        results = []
        for _ in range(30):
            try:
                await (await provider(ask())).result()
                results.append(True)
            except ProviderError:
                results.append(False)
        return results

    first = await outcomes(7)
    assert first == await outcomes(7)
    assert 5 < first.count(False) < 25
