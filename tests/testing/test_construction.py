"""law_status reads only declarations: what is guaranteed, what needs a test, what is broken."""

from __future__ import annotations

from onion_toys import (
    BareCache,
    BareOutputGuard,
    ToyCache,
    ToyFallback,
    ToyInputGuard,
    ToyMetrics,
    ToyOutputGuard,
    ToyRetry,
)

from onion import Stack
from onion.testing import ScriptedProvider, describe_law_status, law_status


def _verdicts(layers: list) -> dict[str, str]:
    return {status.law: status.verdict for status in law_status(layers)}


def test_declared_orders_hold_by_construction() -> None:
    stack = Stack(
        [ToyMetrics(), ToyInputGuard(), ToyCache(), ToyOutputGuard(), ToyFallback(), ToyRetry()],
        handler=ScriptedProvider(),
    )
    verdicts = {status.law: status for status in law_status(stack)}
    assert verdicts["input-guard-first"].verdict == "by construction"
    assert verdicts["cache-clean"].verdict == "needs a test"
    assert verdicts["metrics-once"].verdict == "needs a test"  # outermost, but nothing declares it
    assert verdicts["bounded-calls"].verdict == "needs a test"
    assert verdicts["no-provider-pii"].verdict == "needs a test"
    assert verdicts["stream-equals-complete"].verdict == "needs a test"
    assert "toy_output_guard" in verdicts["stream-equals-complete"].reason


def test_undeclared_but_right_order_needs_a_test() -> None:
    assert _verdicts([ToyInputGuard(), BareCache()])["input-guard-first"] == "needs a test"


def test_broken_orders_are_named() -> None:
    assert _verdicts([BareCache(), ToyInputGuard()])["input-guard-first"] == "broken by this order"
    assert _verdicts([BareOutputGuard(), ToyCache()])["cache-clean"] == "broken by this order"
    assert _verdicts([ToyRetry(), ToyMetrics()])["metrics-once"] == "broken by this order"
    assert _verdicts([ToyCache(), ToyMetrics()])["metrics-once"] == "broken by this order"
    assert _verdicts([ToyRetry(), ToyRetry()])["bounded-calls"] == "broken by this order"
    assert _verdicts([ToyRetry()])["no-provider-pii"] == "broken by this order"


def test_absent_capabilities_are_not_applicable() -> None:
    verdicts = _verdicts([])
    assert verdicts["input-guard-first"] == "not applicable"
    assert verdicts["cache-clean"] == "not applicable"
    assert verdicts["metrics-once"] == "not applicable"
    assert verdicts["bounded-calls"] == "by construction"


def test_description_has_one_entry_per_law() -> None:
    text = describe_law_status([BareCache(), ToyInputGuard()])
    assert text.startswith("laws:")
    assert "✗ broken by this order" in text and "'bare_cache' sits inside 'toy_input_guard'" not in text
    assert "'toy_input_guard' sits inside 'bare_cache'" in text
    assert len([line for line in text.splitlines() if line.startswith("  ")]) == len(law_status([])) * 2
