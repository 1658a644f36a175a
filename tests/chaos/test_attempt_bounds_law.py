"""Law: for any fault plan and any accepted order of ``timeout``, ``fallback``, ``retry``
and ``circuit_breaker``, the provider is called at most attempts x models times, and no
call outlives the outer deadline (complete and streamed, asyncio and trio). Faults and
limits are small real durations, so each example takes well under a second."""

from __future__ import annotations

import contextlib
import time
from functools import partial

import anyio
import pytest
from hypothesis import HealthCheck, example, given, settings

from middlewares.resilience import CircuitBreaker, Deadline, Fallback, Retry
from onion import Message, OnionError, Request, Stack
from onion.testing.faults import Cut, FaultPlan, Status, TimedOut, planned_provider
from onion.testing.strategies import fault_plans, instantiate, orderings

ATTEMPTS = 2
MODELS = ("m1", "m2")
OUTER = 0.25  # the outer deadline (seconds)
SLACK = 0.25  # scheduling on a loaded machine

LAYERS = [
    partial(Deadline, seconds=0.15, first_token_seconds=0.05, idle_seconds=0.05, answer_seconds=0.1),
    partial(Fallback, list(MODELS)),
    partial(Retry, attempts=ATTEMPTS, base_delay=0.01, max_delay=0.05),
    partial(CircuitBreaker, min_calls=3),
]

# TimedOut (1 s or 30 s of silence) is the "no answer" fault: longer than any limit here.
plans = fault_plans(MODELS, max_attempts=3, statuses=(429, 500, 503, 400), max_latency=0.2)


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=orderings(LAYERS), plan=plans)
# Found by this law: a stream cut on m1 falls back to m2, whose retries end in a 400; the
# resumption took the 400 for an upstream refusing the assistant prefix and re-issued
# through the retry layer (a fifth call), though nothing had been prefilled.
@example(
    order=LAYERS,
    plan=FaultPlan({"m1": (Cut(after_chunks=0), Cut(after_chunks=1)), "m2": (TimedOut(1.0), Status(400))}),
)
def test_calls_are_bounded_and_no_call_outlives_the_outer_deadline(
    anyio_backend: str, stream: bool, order, plan
) -> None:
    provider = planned_provider(plan)
    stack = Stack([instantiate(item) for item in order], provider)

    async def call() -> None:
        request = Request(model="m1", messages=[Message("user", "a b c")], stream=stream)
        request.context.deadline = anyio.current_time() + OUTER
        with contextlib.suppress(OnionError):
            await (await stack(request)).result()

    began = time.perf_counter()
    # The scripted "no answer" fault sleeps 1 s or 30 s: only the layers can end it in time.
    anyio.run(call, backend=anyio_backend)
    elapsed = time.perf_counter() - began
    assert provider.calls <= ATTEMPTS * len(MODELS), (provider.calls, order, plan)
    assert elapsed <= OUTER + SLACK, (elapsed, order, plan)
    assert all(s.closed for s in provider.streams)
