"""Each law holds on a well-ordered toy stack and is broken, with a report, by a bad one."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onion_toys import (
    BareCache,
    BareOutputGuard,
    ChunkwiseOutputGuard,
    LeakyStream,
    ToyCache,
    ToyFallback,
    ToyInputGuard,
    ToyMetrics,
    ToyOutputGuard,
    ToyRetry,
    run,
)

from onion import Message, Request
from onion.testing import (
    DEFAULT_LAWS,
    BoundedUpstreamCalls,
    CacheServesOnlyCleanAnswers,
    CountedOncePerMetricsLayer,
    FakeClock,
    FaultPlan,
    InputGuardBlocksBeforeCacheAndUpstream,
    LawViolation,
    NoProviderPII,
    Probe,
    Reply,
    Status,
    UpstreamStreamsClosed,
    answer_for,
    check_laws,
    check_pair,
    planned_provider,
)
from onion.testing.strategies import chat_requests, chunk_cuts, fault_plans, orderings

EMAILS = ("alice.smith@example.com", "bob@mail.example.org", "j.doe+llm@corp.example.net")
FEW = st.sampled_from(["hi", "forbidden fruit", "what is an onion?", "more"])
REQUESTS = st.lists(chat_requests(user_texts=FEW, max_messages=1, models=["m"]), min_size=1, max_size=4)


def with_email(email: str):
    """An answer function that plants ``email`` in every answer."""

    def answer(request: Request) -> Reply:
        return Reply(answer_for(request).text + f" write to {email} today")

    return answer


def _fresh(item: Any, clock: FakeClock) -> Any:
    if item is ToyRetry:
        return ToyRetry(clock=clock)
    return item() if isinstance(item, (type, partial)) else item


async def _drive(
    layers: Sequence[Any], requests: Sequence[Request], laws: Sequence[Any], *, provider: Any, pair: bool = False
) -> Probe:
    probe = Probe(layers, provider)
    for request in [*requests, *requests]:
        observation = await probe.send(request)
        check_laws(laws, observation, probe.observations)
    if pair:
        complete, streamed = await probe.send_both(requests[0])
        check_pair(complete, streamed)
    return probe


GOOD = [ToyInputGuard, ToyCache, ToyOutputGuard, ToyRetry, ToyFallback]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=orderings(GOOD),
    requests=REQUESTS,
    plan=fault_plans(["m", "backup"], max_attempts=3),
    cuts=chunk_cuts(max_offset=120),
    email=st.sampled_from(EMAILS),
)
async def test_a_well_ordered_stack_keeps_every_law(
    order: list, requests: list[Request], plan: FaultPlan, cuts: tuple[int, ...], email: str
) -> None:
    clock = FakeClock()
    provider = planned_provider(plan, answer=with_email(email), clock=clock, chunk_cuts=cuts)
    layers = [ToyMetrics(), *(_fresh(item, clock) for item in order)]
    laws = [*DEFAULT_LAWS, NoProviderPII([email]), BoundedUpstreamCalls(attempts=3, models=2)]
    await _drive(layers, requests, laws, provider=provider, pair=True)


def _violation(test: Any) -> LawViolation:
    with pytest.raises(LawViolation) as caught:
        test()
    message = str(caught.value)
    assert "law broken:" in message and "trace:" in message
    return caught.value


def test_pii_split_across_chunks_is_found() -> None:
    @settings(max_examples=100, deadline=None, database=None, derandomize=True)
    @given(cuts=chunk_cuts(max_offset=120), email=st.sampled_from(EMAILS))
    def stream_through(cuts: tuple[int, ...], email: str) -> None:
        provider = planned_provider(answer=with_email(email), chunk_cuts=cuts)
        request = Request(model="m", messages=[Message("user", "hi")], stream=True)
        run(lambda: _drive([ChunkwiseOutputGuard()], [request], [NoProviderPII([email])], provider=provider))

    violation = _violation(stream_through)
    assert violation.law.name == "no-provider-pii"


def test_cache_outside_the_input_guard_is_found() -> None:
    @settings(max_examples=50, deadline=None, database=None, derandomize=True)
    @given(requests=REQUESTS)
    def send(requests: list[Request]) -> None:
        law = InputGuardBlocksBeforeCacheAndUpstream()
        run(lambda: _drive([BareCache(), ToyInputGuard()], requests, [law], provider=planned_provider()))

    assert "bare_cache" in _violation(send).why


def test_cache_storing_a_cut_stream_is_found() -> None:
    @settings(max_examples=60, deadline=None, database=None, derandomize=True)
    @given(requests=REQUESTS, plan=fault_plans(["m"], max_attempts=2))
    def send(requests: list[Request], plan: FaultPlan) -> None:
        requests = [msgspec.structs.replace(r, stream=True) for r in requests]
        layers = [ToyCache(store_partial=True)]
        provider = planned_provider(plan, clock=FakeClock())
        run(lambda: _drive(layers, requests, [CacheServesOnlyCleanAnswers()], provider=provider))

    assert "never came back to it whole" in _violation(send).why


def test_cache_inside_the_output_guard_is_found() -> None:
    def blocked_answer(request: Request) -> Reply:
        return Reply("no surprises here")

    async def send() -> None:
        layers = [BareOutputGuard(), ToyCache()]
        provider = planned_provider(answer=blocked_answer)
        await _drive(layers, [Request(model="m", messages=[])], [CacheServesOnlyCleanAnswers()], provider=provider)

    assert "output guard blocked" in _violation(lambda: run(send)).why


def test_metrics_inside_retry_or_cache_is_found() -> None:
    law = CountedOncePerMetricsLayer()

    async def inside_retry() -> None:
        provider = planned_provider(FaultPlan({"m": (Status(503),)}), clock=FakeClock())
        await _drive([ToyRetry(clock=FakeClock()), ToyMetrics()], [Request("m", [])], [law], provider=provider)

    async def inside_cache() -> None:
        await _drive([ToyCache(), ToyMetrics()], [Request("m", [])], [law], provider=planned_provider())

    assert "'toy_metrics' saw the request 2 time(s)" in _violation(lambda: run(inside_retry)).why
    assert "0 time(s)" in _violation(lambda: run(inside_cache)).why


def test_nested_retries_exceed_the_call_bound() -> None:
    @settings(max_examples=60, deadline=None, database=None, derandomize=True)
    @given(plan=fault_plans(["m"], max_attempts=6, statuses=(503,)))
    def send(plan: FaultPlan) -> None:
        clock = FakeClock()
        layers = [ToyRetry(clock=clock), ToyRetry(clock=clock)]
        provider = planned_provider(plan, clock=clock)
        run(lambda: _drive(layers, [Request("m", [])], [BoundedUpstreamCalls(attempts=3)], provider=provider))

    assert "more than 3 x 1" in _violation(send).why


def test_a_leaking_stream_wrapper_is_found() -> None:
    async def send() -> None:
        probe = Probe([LeakyStream()], planned_provider())
        observation = await probe.send(Request("m", [], stream=True), read=1)
        check_laws([UpstreamStreamsClosed()], observation)

    assert "left open" in _violation(lambda: run(send)).why


def test_stream_and_complete_disagree_under_a_chunkwise_guard() -> None:
    @settings(max_examples=100, deadline=None, database=None, derandomize=True)
    @given(cuts=chunk_cuts(max_offset=120))
    def both(cuts: tuple[int, ...]) -> None:
        provider = planned_provider(answer=with_email(EMAILS[0]), chunk_cuts=cuts)
        run(lambda: _drive([ChunkwiseOutputGuard()], [Request("m", [])], [], provider=provider, pair=True))

    assert _violation(both).law.name == "stream-equals-complete"


async def test_violation_report_holds_law_reason_and_layers() -> None:
    probe = Probe([BareCache(), ToyInputGuard()], planned_provider())
    observation = await probe.send(Request("m", [Message("user", "forbidden")]))
    with pytest.raises(LawViolation) as caught:
        check_laws([InputGuardBlocksBeforeCacheAndUpstream()], observation)
    text = str(caught.value)
    assert text.startswith("law broken: input-guard-first")
    assert "why: the blocked request was seen by the cache layer 'bare_cache'" in text
    assert "trace:    ['bare_cache', 'toy_input_guard']" in text


def _answered(model: str, text: str, stream: bool) -> Any:
    from onion.testing.probe import Observation, Outcome

    outcome = Outcome(kind="answer", parts=[text], streamed=stream)
    request = Request(model="m", messages=[Message("user", "hi")], stream=stream)
    return Observation(request=request, outcome=outcome, served_by="up", visits=[], upstream=[], model=model)


def test_stream_equals_complete_compares_the_answers_of_one_model() -> None:
    # The same model: the texts must agree.
    with pytest.raises(LawViolation, match="stream-equals-complete"):
        check_pair(_answered("m", "one", False), _answered("m", "two", True))
    check_pair(_answered("m", "one", False), _answered("m", "one", True))
    # A breaker open for the complete call sent it to the fallback; closed again, it let
    # the stream through to the first model's cache entry: two models, two texts.
    check_pair(_answered("backup", "one", False), _answered("m", "two", True))
