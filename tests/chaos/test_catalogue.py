"""The fault catalogue over real HTTP: each scenario of ``onion.testing.catalogue`` against
the embedded default stack and the recommended one, complete and streamed, on asyncio and
trio, asserting what the caller received, how many attempts each model got and how long
it took. Every duration (faults and limits alike) is scaled by ``K`` so the catalogue runs
in seconds; the elapsed bounds are stated at full size, as in the note's table."""

from __future__ import annotations

import time
from typing import Any

import pytest

from middlewares.resilience import CircuitBreaker, Deadline, Fallback, Retry
from middlewares.resilience.circuit_breaker import BreakerPolicy
from onion import Message, OnionError, Request, Stack
from onion.config import DEFAULT_STACK
from onion.providers import OpenAIProvider, Router
from onion.testing.catalogue import CATALOGUE, answer_words
from onion.testing.upstream import FakeUpstream

K = 0.02  # 1 s of the catalogue is 20 ms here
# Scenarios whose margin between fault and limit is small (20 s vs 25 s) run less scaled,
# so a loaded machine's scheduling cannot eat the margin.
SCALE_OF = {"first_token_20s": 0.06}
SLACK = 1.5  # real seconds a loaded 2-core machine may add to a run
WORDS = 60
_SCALED = {
    "seconds",
    "first_token_seconds",
    "idle_seconds",
    "answer_seconds",
    "base_delay",
    "max_delay",
    "open_seconds",
    "window_seconds",
}


def default_stack(k: float = K) -> list[Any]:
    """The resilience layers of the embedded ``DEFAULT_STACK``, durations scaled by ``k``."""
    # The breaker's windows are class defaults, not in the table: scaled too, or a
    # breaker opened by a scaled outage stays open for a full 15 s (a flaky test).
    policy = BreakerPolicy()
    breaker = {"open_seconds": policy.open_seconds, "window_seconds": policy.window_seconds}
    tables = [
        {
            key: value * k if key in _SCALED and value is not None else value
            for key, value in ({**breaker, **table} if table["use"] == "circuit_breaker" else table).items()
        }
        for table in DEFAULT_STACK
        if table["use"] in ("timeout", "retry", "circuit_breaker")
    ]
    return list(Stack.from_config(tables, lambda request: None).layers)  # type: ignore[arg-type, return-value]


def recommended_stack(k: float = K, **fallback: Any) -> list[Any]:
    """``timeout > fallback > retry > circuit_breaker``, as the README recommends."""
    return [
        Deadline(seconds=60 * k, first_token_seconds=10 * k, idle_seconds=10 * k, answer_seconds=30 * k),
        Fallback(["m1", "m2"], **fallback),
        Retry(attempts=3, base_delay=0.2 * k, max_delay=8 * k),
        CircuitBreaker(min_calls=5, open_seconds=15 * k, window_seconds=30 * k),
    ]


# scenario -> stack -> (outcome, m1 attempts, m2 attempts, full-size seconds at most);
# outcome "m1"/"m2": the whole answer, served by that model; an int: the status received.
# The same for complete and streamed calls unless a (complete, stream) pair is given.
EXPECTED: dict[str, dict[str, Any]] = {
    "429_retry_after": {"default": ("m1", 2, 0, 10), "recommended": ("m1", 2, 0, 10)},
    "429_no_retry_after": {"default": ("m1", 2, 0, 10), "recommended": ("m1", 2, 0, 10)},
    "500_once": {"default": ("m1", 2, 0, 10), "recommended": ("m1", 2, 0, 10)},
    "503_persistent": {"default": (503, 2, 0, 10), "recommended": ("m2", 3, 1, 10)},
    "tcp_reset": {"default": ("m1", 2, 0, 10), "recommended": ("m1", 2, 0, 10)},
    "no_response": {"default": (504, 2, 0, 60), "recommended": ("m2", 1, 1, 40)},
    "first_token_20s": {
        "default": ("m1", 1, 0, 30),
        "recommended": (("m1", 1, 0, 30), ("m2", 1, 1, 20)),
    },
    "cut_40_of_60": {"default": ("m1", 2, 0, 10), "recommended": ("m1", 2, 0, 10)},
    "stall_30s": {"default": ("m1", 2, 0, 45), "recommended": ("m2", 1, 1, 40)},
    "malformed_sse": {"default": ("m1", 2, 0, 10), "recommended": ("m1", 2, 0, 10)},
    "no_done": {"default": ("m1", 1, 0, 10), "recommended": ("m1", 1, 0, 10)},
    "context_length_400": {"default": (400, 1, 0, 10), "recommended": (400, 1, 0, 10)},
    "content_filter_400": {"default": (400, 1, 0, 10), "recommended": (400, 1, 0, 10)},
    "cut_prefill_rejected": {"default": (502, 2, 0, 10), "recommended": (("m2", 3, 1, 15), ("m2", 3, 2, 15))},
}


async def _run(
    scenario: str, layers: list[Any], stream: bool, requests: int = 1, gap: float = 0.0, k: float = K
) -> dict[str, Any]:
    import anyio

    async with FakeUpstream(models=("m1", "m2")) as upstream:
        CATALOGUE[scenario].install(upstream, primary="m1", fallback="m2", scale=k)
        primary = OpenAIProvider(name="p1", base_url=upstream.base_url, models=["m1"])
        # The fallback can continue an assistant prefix (vLLM's continue_final_message).
        backup = OpenAIProvider(name="p2", base_url=upstream.base_url, models=["m2"], continue_final_message=True)
        stack = Stack(layers, Router([primary, backup]))
        outcomes: list[Any] = []
        began = time.perf_counter()
        try:
            for index in range(requests):
                request = Request(model="m1", messages=[Message("user", answer_words(WORDS))], stream=stream)
                try:
                    response = await stack(request)
                    completion = await response.result()
                except OnionError as error:
                    outcomes.append(error.status)
                else:
                    # The whole answer, exactly once (no replayed or lost text).
                    assert completion.content == "You said: " + answer_words(WORDS)
                    outcomes.append(response.model)
                if gap and index + 1 < requests:
                    await anyio.sleep(gap)
            elapsed = time.perf_counter() - began
        finally:
            await primary.aclose()
            await backup.aclose()
        calls = [body.get("model") for _, _, body in upstream.requests if isinstance(body, dict)]
    return {"outcomes": outcomes, "m1": calls.count("m1"), "m2": calls.count("m2"), "elapsed": elapsed}


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("stack", ["default", "recommended"])
@pytest.mark.parametrize("scenario", list(EXPECTED))
async def test_the_catalogue(scenario: str, stack: str, stream: bool) -> None:
    expected = EXPECTED[scenario][stack]
    if isinstance(expected[0], tuple):
        expected = expected[1] if stream else expected[0]
    outcome, m1, m2, seconds = expected
    k = SCALE_OF.get(scenario, K)
    layers = default_stack(k) if stack == "default" else recommended_stack(k)
    got = await _run(scenario, layers, stream, k=k)
    assert (got["outcomes"][0], got["m1"], got["m2"]) == (outcome, m1, m2), got
    assert got["elapsed"] <= seconds * k + SLACK, got


async def test_a_context_length_400_goes_only_to_a_model_listed_with_a_larger_window() -> None:
    got = await _run("context_length_400", recommended_stack(context_fallbacks={"m1": ["m2"]}), stream=True)
    assert (got["outcomes"], got["m1"], got["m2"]) == (["m2"], 1, 1)


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_primary_down_for_60_s_under_traffic(stream: bool) -> None:
    # 12 requests 8 s apart (full size): the primary is down for the first 60 s.
    requests, gap = 12, 8 * K
    got = await _run("primary_down_60s", recommended_stack(), stream, requests=requests, gap=gap)
    assert all(outcome in ("m1", "m2") for outcome in got["outcomes"]), got
    assert got["outcomes"][-1] == "m1"  # the breaker let the primary back in
    # 8 requests fall in the outage: retries alone would send 24 attempts; the breaker
    # opens after 5 failures and only probes after that.
    assert got["m1"] <= 18, got
    default = await _run("primary_down_60s", default_stack(), stream, requests=requests, gap=gap)
    # No fallback: calls in the outage fail (twice billed at most), and the primary is
    # back once it recovers.
    assert "m1" in default["outcomes"][-3:] and default["m1"] <= 2 * requests, default
