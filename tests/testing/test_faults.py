"""The planned provider follows a fault plan: statuses, timeouts, cut streams, latency."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import Message, ProviderError, Request
from onion.testing import (
    Cut,
    FakeClock,
    FaultPlan,
    Slow,
    Status,
    TimedOut,
    answer_for,
    planned_provider,
    split_at,
)
from onion.testing.strategies import chunk_cuts, fault_plans


def _request(text: str = "hi", model: str = "m", stream: bool = False) -> Request:
    return Request(model=model, messages=[Message("user", text)], stream=stream)


async def _text(provider, request: Request) -> str:
    response = await provider(request)
    return (await response.result()).content


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=60), cuts=chunk_cuts(max_offset=70))
def test_split_at_joins_back(text: str, cuts: tuple[int, ...]) -> None:
    pieces = split_at(text, cuts)
    assert "".join(pieces) == text
    assert len(pieces) == len({max(0, min(len(text), c)) for c in cuts}) + 1


def test_answer_depends_on_model_and_messages_only() -> None:
    a = _request("hello", stream=False)
    b = _request("hello", stream=True)
    assert answer_for(a) == answer_for(b)
    assert answer_for(a) != answer_for(_request("hello!"))
    assert answer_for(a) != answer_for(_request("hello", model="other"))


async def test_status_fault_then_answer() -> None:
    plan = FaultPlan({"m": (Status(503, retry_after=2.0), Status(400))})
    provider = planned_provider(plan)
    request = _request()
    with pytest.raises(ProviderError) as first:
        await provider(request)
    assert first.value.upstream_status == 503 and first.value.retryable and first.value.retry_after == 2.0
    with pytest.raises(ProviderError) as second:
        await provider(request)
    assert second.value.upstream_status == 400 and not second.value.retryable
    assert await _text(provider, request) == answer_for(request).text


async def test_attempts_count_per_request_or_per_run() -> None:
    faults = {"m": (Status(500),)}
    per_request = planned_provider(FaultPlan(faults))
    per_run = planned_provider(FaultPlan(faults, per="run"))
    for provider, second_fails in ((per_request, True), (per_run, False)):
        with pytest.raises(ProviderError):
            await provider(_request("one"))
        if second_fails:
            with pytest.raises(ProviderError):
                await provider(_request("two"))
        else:
            assert await _text(provider, _request("two"))


async def test_other_models_are_not_affected() -> None:
    provider = planned_provider(FaultPlan({"m": (Status(500),)}))
    assert await _text(provider, _request(model="backup"))


async def test_timeout_and_latency_sleep_on_the_fake_clock() -> None:
    clock = FakeClock()
    provider = planned_provider(FaultPlan({"m": (TimedOut(after=30.0), Slow(2.5))}), clock=clock)
    start = clock.now()
    request = _request()
    with pytest.raises(ProviderError) as caught:
        await provider(request)
    assert caught.value.upstream_status is None and caught.value.retryable
    assert clock.now() - start == pytest.approx(30.0)
    assert await _text(provider, request)
    assert clock.now() - start == pytest.approx(32.5)


@settings(max_examples=30, deadline=None)
@given(after=st.integers(0, 8))
async def test_cut_stream_sends_a_prefix_then_fails(after: int) -> None:
    provider = planned_provider(FaultPlan({"m": (Cut(after),)}))
    request = _request("a longer question", stream=True)
    expected = answer_for(request).pieces()
    seen: list[str] = []
    response = await provider(request)
    with pytest.raises(ProviderError):
        async with response:
            async for chunk in response:
                seen.append(chunk.content)
    assert seen == expected[:after]
    assert provider.streams[0].closed and not provider.streams[0].completed


async def test_cut_fails_a_complete_call_at_once() -> None:
    provider = planned_provider(FaultPlan({"m": (Cut(3),)}))
    with pytest.raises(ProviderError):
        await provider(_request())


@settings(max_examples=30, deadline=None)
@given(cuts=chunk_cuts(max_offset=40))
async def test_chunk_cuts_set_the_stream_boundaries(cuts: tuple[int, ...]) -> None:
    provider = planned_provider(chunk_cuts=cuts)
    request = _request(stream=True)
    text = answer_for(request).text
    response = await provider(request)
    pieces = [chunk.content async for chunk in response][:-1]
    assert tuple(pieces) == split_at(text, cuts)


@settings(max_examples=30, deadline=None)
@given(plan=fault_plans(["m", "backup"], max_attempts=3))
def test_drawn_plans_round_trip_and_count_failures(plan: FaultPlan) -> None:
    assert msgspec.json.decode(msgspec.json.encode(plan), type=FaultPlan) == plan
    for model in ("m", "backup"):
        planned = plan.faults.get(model, ())
        assert plan.failing_attempts(model) == sum(1 for f in planned if f is not None and not isinstance(f, Slow))
        assert plan.fault_for(model, len(planned)) is None
