"""StackMachine: stateful runs across many requests keep the laws, and find a stale bug."""

from __future__ import annotations

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test
from onion_toys import ToyCache, ToyInputGuard, ToyMetrics, ToyOutputGuard, ToyRetry

from onion.testing import (
    DEFAULT_LAWS,
    Cut,
    FaultPlan,
    LawViolation,
    Probe,
    Status,
    StreamMatchesComplete,
    planned_provider,
)
from onion.testing.machine import StackMachine

# Every model's first attempts fail, counted over the whole run: early requests see
# errors and cut streams, later ones succeed and fill the cache.
PLAN = FaultPlan({"m": (Status(503), Cut(1), None, Cut(0), Status(500))}, per="run")
SETTINGS = settings(max_examples=15, stateful_step_count=12, deadline=None, database=None)


class WellOrdered(StackMachine):
    laws = (*DEFAULT_LAWS, StreamMatchesComplete())

    def make_probe(self) -> Probe:
        layers = [ToyMetrics(), ToyInputGuard(), ToyCache(), ToyOutputGuard(), ToyRetry(clock=self.clock)]
        return Probe(layers, planned_provider(PLAN, clock=self.clock))


class StoresCutStreams(WellOrdered):
    def make_probe(self) -> Probe:
        layers = [ToyCache(store_partial=True), ToyRetry(clock=self.clock)]
        return Probe(layers, planned_provider(PLAN, clock=self.clock))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_well_ordered_stack_keeps_the_laws_across_requests(backend: str) -> None:
    machine = type("Machine", (WellOrdered,), {"backend": backend})
    run_state_machine_as_test(machine, settings=SETTINGS)


def test_a_cache_that_stores_cut_streams_is_caught() -> None:
    with pytest.raises(LawViolation) as caught:
        # No shrinking here: finding it is the point (shrinking many machine runs is slow).
        fast = settings(SETTINGS, max_examples=60, phases=(Phase.generate,))
        run_state_machine_as_test(StoresCutStreams, settings=fast)
    assert caught.value.law.name == "cache-clean"
