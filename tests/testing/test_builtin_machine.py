"""A stateful run of a built-in stack: the cache fills, the breaker opens, the limit runs out."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from middlewares.circuit_breaker import CircuitBreaker
from middlewares.exact_cache import ExactCache
from middlewares.input_guard import InputGuard
from middlewares.metrics import Metrics
from middlewares.output_guard import OutputGuard
from middlewares.rate_limit import RateLimit
from middlewares.retry import Retry
from onion.testing import (
    DEFAULT_LAWS,
    BoundedUpstreamCalls,
    Cut,
    FaultPlan,
    NoProviderPII,
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


class BuiltinStack(StackMachine):
    laws = (*DEFAULT_LAWS, NoProviderPII([EMAIL]), BoundedUpstreamCalls(attempts=3), StreamMatchesComplete())

    def make_probe(self) -> Probe:
        clock = self.clock
        layers = [
            Metrics(clock=clock, overhead_header=False),
            RateLimit(requests_per_minute=20, per="global", clock=clock),
            InputGuard(),
            ExactCache(scope="shared", clock=clock),
            OutputGuard(),
            Retry(attempts=3, budget=1.0, clock=clock, seed=3),
            CircuitBreaker(min_calls=4, open_seconds=30.0, clock=clock),
        ]
        return Probe(layers, planned_provider(PLAN, answer=_answer, clock=clock))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_builtin_stack_keeps_the_laws_across_requests(backend: str) -> None:
    machine = type("Machine", (BuiltinStack,), {"backend": backend})
    run_state_machine_as_test(machine, settings=settings(max_examples=20, stateful_step_count=15, deadline=None))
