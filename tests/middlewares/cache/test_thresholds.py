"""Per-entry adaptive thresholds under a bound on wrong hits: nothing is served before
the bound is measured, verified outcomes open and close it, an entry's own wrong answer
raises only its threshold; exploration and shadow checks learn off the request's path
(on asyncio and trio); the shadow queue is bounded."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlewares.cache.semantic import SemanticCache
from middlewares.cache.thresholds import EXPLORE, MISS, SERVE, AdaptiveThresholds, WrongHitBound, wilson_upper
from onion import Context, Message, Request, Stack
from onion.testing import Reply, ScriptedProvider


def req(text: str) -> Request:
    return Request(model="m", messages=[Message("user", text)], context=Context(caller="alice"))


def thresholds(rate: float = 0.01, floor: float = 0.5) -> AdaptiveThresholds:
    return AdaptiveThresholds(WrongHitBound(max_wrong_hit_rate=rate), floor)


def test_nothing_is_served_before_the_bound_is_measured() -> None:
    learned = thresholds()
    assert learned.decide("a", 0.99) == EXPLORE
    assert learned.decide("a", 0.3) == MISS


def test_right_outcomes_open_the_bound_and_wrong_ones_close_it() -> None:
    learned = thresholds(rate=0.05)
    for i in range(80):
        learned.record(f"e{i}", 0.8 + (i % 20) / 100, True)
    assert learned.global_threshold <= 0.8
    assert learned.decide("new", 0.85) == SERVE
    for i in range(10):
        learned.record(f"w{i}", 0.82, False)
    assert learned.global_threshold > 0.82
    assert learned.decide("new", 0.81) == EXPLORE


def test_an_entrys_own_wrong_outcome_raises_only_its_threshold() -> None:
    learned = thresholds(rate=0.05)
    for i in range(100):
        learned.record(f"e{i}", 0.75 + (i % 25) / 100, True)
    learned.record("bad", 0.9, False)
    assert learned.decide("bad", 0.9) == EXPLORE
    assert learned.decide("bad", 0.95) == SERVE
    assert learned.decide("good", 0.9) == SERVE
    learned.forget("bad")
    assert learned.decide("bad", 0.9) == SERVE


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.5, 1.0), st.booleans()), min_size=1, max_size=400),
    st.sampled_from([0.01, 0.05, 0.1]),
)
def test_law_the_served_region_holds_the_bound_on_what_was_verified(
    outcomes: list[tuple[float, bool]], rate: float
) -> None:
    learned = thresholds(rate=rate)
    for i, (similarity, correct) in enumerate(outcomes):
        learned.record(str(i), similarity, correct)
    above = [correct for similarity, correct in outcomes if int(similarity * 100) / 100 >= learned.global_threshold]
    if above:
        assert above.count(False) / len(above) <= rate
        assert wilson_upper(above.count(False), len(above), 1.64) <= rate + 1e-9


def topic_provider(answers: dict[str, str]) -> ScriptedProvider:
    """Answers by the first keyword of the question it finds, like a model would."""

    def script(request: Request, _: int) -> Reply:
        text = request.messages[-1].text.lower()
        return Reply(next((a for k, a in answers.items() if k in text), "I do not know."))

    return ScriptedProvider(script)


def bounded(**params: Any) -> SemanticCache:
    params.setdefault("threshold", 0.7)
    return SemanticCache(**params)


async def test_a_candidate_the_bound_does_not_allow_is_explored_and_learned_from() -> None:
    provider = topic_provider({"password": "Use the reset link."})
    semantic = bounded(max_wrong_hit_rate=0.01)
    stack = Stack([semantic], provider)
    await (await stack(req("How do I reset my password?"))).result()
    response = await stack(req("how do I reset my password please"))
    assert response.served_by == "scripted"  # not yet served from the cache
    assert (await response.result()).content == "Use the reset link."
    assert semantic.stats.explored == 1
    assert semantic.stats.verified == 1 and semantic.stats.verified_wrong == 0
    assert semantic.thresholds is not None and semantic.thresholds.outcomes == 1


async def test_learned_outcomes_let_hits_through_under_a_loose_bound() -> None:
    words = [f"topic{i}" for i in range(60)]
    provider = topic_provider({w: f"answer about {w}" for w in words})
    semantic = bounded(bound=WrongHitBound(max_wrong_hit_rate=0.1, verify_rate=0.0))
    stack = Stack([semantic], provider)
    for w in words:
        await (await stack(req(f"Tell me about {w} in detail"))).result()
        await (await stack(req(f"tell me about {w} in detail please"))).result()
    assert semantic.stats.verified >= 20
    hit = await stack(req("Tell me about topic3 in detail, please!"))
    assert hit.served_by == "semantic_cache"
    assert (await hit.result()).content == "answer about topic3"


async def test_shadow_checks_run_in_a_task_group_and_a_wrong_hit_closes_its_entry() -> None:
    answers = {"password": "Use the reset link."}
    provider = topic_provider(answers)
    semantic = bounded(bound=WrongHitBound(max_wrong_hit_rate=0.2, verify_rate=1.0))
    stack = Stack([semantic], provider)
    assert semantic.thresholds is not None
    for i in range(30):  # open the bound with outcomes of other entries
        semantic.thresholds.record(f"other{i}", 0.8, True, "latin")
    await (await stack(req("How do I reset my password?"))).result()
    async with anyio.create_task_group() as tg:
        tg.start_soon(semantic.run_verifier)
        answers["password"] = "Passwords are reset by an admin now."  # the cached answer goes stale
        hit = await stack(req("how do I reset my password please"))
        assert hit.served_by == "semantic_cache"
        for _ in range(500):  # the verifier's turn comes after a few scheduler passes
            if semantic.shadow.done:
                break
            await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()
    assert semantic.stats.verified_wrong == 1
    again = await stack(req("how do I reset my password please"))
    assert again.served_by == "scripted"  # this entry now needs more than that similarity


async def test_shadow_queue_is_bounded_without_a_verifier() -> None:
    provider = topic_provider({"password": "Use the reset link."})
    semantic = bounded(bound=WrongHitBound(max_wrong_hit_rate=0.2, verify_rate=1.0, max_pending=2))
    stack = Stack([semantic], provider)
    assert semantic.thresholds is not None
    for i in range(30):
        semantic.thresholds.record(f"other{i}", 0.8, True, "latin")
    await (await stack(req("How do I reset my password?"))).result()
    for _ in range(5):
        assert (await stack(req("how do I reset my password please"))).served_by == "semantic_cache"
    assert len(semantic.shadow.pending) == 2 and semantic.shadow.dropped == 3
    assert provider.calls == 1  # no request waited for a shadow check


def test_strata_pool_their_outcomes_apart() -> None:
    learned = thresholds(rate=0.05)
    for i in range(100):
        learned.record(f"e{i}", 0.9, True, "latin")
        learned.record(f"j{i}", 0.9, i % 3 != 0, "cjk")  # a third of Japanese hits wrong
    assert learned.decide("x", 0.92, "latin") == SERVE
    assert learned.decide("x", 0.92, "cjk") == EXPLORE


def test_bound_must_be_a_rate() -> None:
    with pytest.raises(ValueError, match="max_wrong_hit_rate"):
        WrongHitBound(max_wrong_hit_rate=1.5)


def _above(outcomes: list[tuple[float, bool, str]], learned: AdaptiveThresholds, stratum: str) -> list[bool]:
    threshold = learned.thresholds.get(stratum, float("inf"))
    return [ok for s, ok, name in outcomes if name == stratum and int(s * 100) / 100 >= threshold]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.5, 1.0), st.booleans() | st.just(True), st.sampled_from(["latin", "cjk"])),
        min_size=1,
        max_size=600,
    ),
    st.sampled_from([0.01, 0.05, 0.1]),
)
def test_law_pooled_the_cache_holds_the_bound_and_no_stratum_is_worse_than_it(
    outcomes: list[tuple[float, bool, str]], rate: float
) -> None:
    # holds_for="cache": the outcomes at or above each stratum's threshold, pooled, hold
    # the bound with confidence; an open stratum has enough outcomes of its own there and
    # their measured rate is within the bound.
    learned = thresholds(rate=rate)
    for i, (similarity, correct, stratum) in enumerate(outcomes):
        learned.record(str(i), similarity, correct, stratum)
    pooled: list[bool] = []
    for stratum in ("latin", "cjk"):
        own = _above(outcomes, learned, stratum)
        if own:
            assert own.count(False) <= rate * len(own) + 1e-9
            assert (
                len(own) >= learned.bound.min_stratum_outcomes
                or wilson_upper(own.count(False), len(own), 1.64) <= rate + 1e-9
            )
        pooled += own
    if pooled:
        assert wilson_upper(pooled.count(False), len(pooled), 1.64) <= rate + 1e-9


def test_pooled_a_script_with_few_clean_outcomes_opens_beside_a_measured_one() -> None:
    # The point of pooling: 40 clean Japanese outcomes cannot bound 1 % alone (that takes
    # about 266), but beside 400 clean English ones the cache's hits can.
    for holds_for, opens in (("cache", True), ("stratum", False)):
        learned = AdaptiveThresholds(WrongHitBound(max_wrong_hit_rate=0.01, holds_for=holds_for), 0.5)
        for i in range(400):
            learned.record(f"e{i}", 0.9, True, "latin")
        for i in range(40):
            learned.record(f"j{i}", 0.9, True, "cjk")
        assert learned.decide("x", 0.95, "latin") == SERVE
        assert (learned.decide("x", 0.95, "cjk") == SERVE) is opens


def test_pooled_a_scripts_own_wrong_outcomes_close_it() -> None:
    learned = thresholds(rate=0.01)
    for i in range(2000):
        learned.record(f"e{i}", 0.9, True, "latin")
    for i in range(60):
        learned.record(f"j{i}", 0.9, i != 0, "cjk")  # 1 wrong of 60: 1.7 %, over the bound
    assert learned.decide("x", 0.95, "latin") == SERVE
    assert learned.decide("x", 0.95, "cjk") == EXPLORE
    for i in range(30):  # clean outcomes above the wrong one open it above that similarity
        learned.record(f"k{i}", 0.97, True, "cjk")
    assert learned.decide("x", 0.97, "cjk") == SERVE
    assert learned.decide("x", 0.905, "cjk") == EXPLORE  # the bin of the wrong one stays shut


def test_holds_for_is_checked() -> None:
    with pytest.raises(ValueError, match="holds_for"):
        WrongHitBound(holds_for="everything")  # type: ignore[arg-type]
