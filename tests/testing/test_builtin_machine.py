"""A stateful run of a built-in stack: the cache fills, the breaker opens, the limit runs out."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from middlewares.cache.exact import ExactCache
from middlewares.guard.input import InputGuard
from middlewares.guard.output import OutputGuard
from middlewares.limit.rate_limit import RateLimit
from middlewares.observe.metrics import Metrics
from middlewares.resilience.circuit_breaker import CircuitBreaker
from middlewares.resilience.retry import Retry
from onion.errors import CircuitOpen, RateLimited
from onion.testing import (
    DEFAULT_LAWS,
    BoundedUpstreamCalls,
    Cut,
    FaultPlan,
    NoProviderPII,
    Observation,
    Probe,
    Reply,
    Status,
    StreamMatchesComplete,
    TimedOut,
    answer_for,
    planned_provider,
)
from onion.testing.machine import StackMachine

EMAIL = "alice.smith@example.com"
# Counted over the whole run: failures interleaved with answers early on, then a burst
# (the breaker may open and, as fake time passes, close again), then health.
PLAN = FaultPlan(
    {"m": (Status(503), None, Cut(1), None, TimedOut(5.0), None, Status(500), Status(502), Status(503), Cut(0))},
    per="run",
)


def _answer(request):
    return Reply(answer_for(request).text + f" write to {EMAIL}")


def _ending(observation: Observation) -> str:
    """How one request ended for the caller, with the checks that ending implies."""
    outcome = observation.outcome
    if outcome.kind == "answer" and observation.served_by == "exact_cache":
        # A hit: answered by the cache itself, nothing sent upstream.
        (cache,) = observation.visits_to("cache")
        assert cache.answered_early and not observation.upstream, observation.report()
        return "exact_cache hit"
    if isinstance(outcome.error, RateLimited):
        # Refused before any layer inside the limit ran.
        assert not observation.upstream and not observation.visits_to("cache"), observation.report()
        return "RateLimited"
    if isinstance(outcome.error, CircuitOpen):
        # The breaker failed the last attempt fast, without sending it.
        breaker = observation.visits_to("circuit_breaker")[-1]
        assert breaker.answered_early, observation.report()
        return "CircuitOpen"
    return f"{outcome.kind}: {type(outcome.error).__name__}" if outcome.error is not None else outcome.kind


class BuiltinStack(StackMachine):
    laws = (*DEFAULT_LAWS, NoProviderPII([EMAIL]), BoundedUpstreamCalls(attempts=3), StreamMatchesComplete())
    # Endings over all runs of one test (requests, and runs with at least one of each).
    endings: ClassVar[Counter[str]] = Counter()
    runs_with: ClassVar[Counter[str]] = Counter()

    def make_probe(self) -> Probe:
        clock = self.clock
        layers = [
            Metrics(clock=clock, overhead_header=False),
            RateLimit(requests_per_minute=10, per="global", clock=clock),
            InputGuard(),
            ExactCache(scope="shared", clock=clock),
            OutputGuard(),
            Retry(attempts=3, budget=1.0, clock=clock, seed=3),
            CircuitBreaker(min_calls=4, open_seconds=30.0, clock=clock),
        ]
        return Probe(layers, planned_provider(PLAN, answer=_answer, clock=clock))

    def teardown(self) -> None:
        endings = [_ending(observation) for observation in self.probe.observations]
        type(self).endings.update(endings)
        type(self).runs_with.update(set(endings))
        super().teardown()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_builtin_stack_keeps_the_laws_across_requests(backend: str) -> None:
    machine = type("Machine", (BuiltinStack,), {"backend": backend, "endings": Counter(), "runs_with": Counter()})
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=20, stateful_step_count=15, deadline=None, derandomize=True, database=None),
    )
    # The laws held while the state the machine is for actually built up: the cache
    # filled and answered repeats, the breaker opened, the rate limit ran out.
    for ending in ("exact_cache hit", "CircuitOpen", "RateLimited"):
        assert machine.runs_with[ending] >= 2, (ending, dict(machine.endings))
