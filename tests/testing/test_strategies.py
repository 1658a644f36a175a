"""The strategies draw valid requests, chunkings that join back, and only accepted orders."""

from __future__ import annotations

from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onion_toys import BareCache, ToyCache, ToyFallback, ToyInputGuard, ToyMetrics, ToyOutputGuard, ToyRetry

from onion import ConfigError, Layer, Order, Request, Stack, decode_request, request_to_wire
from onion.testing import ScriptedProvider
from onion.testing.strategies import (
    all_orderings,
    chat_requests,
    chunkings,
    declared,
    instantiate,
    messages,
    orderings,
    pii_values,
)

LAYERS = [ToyInputGuard, ToyCache, ToyOutputGuard, ToyRetry, ToyFallback, ToyMetrics]


@settings(max_examples=60, deadline=None)
@given(request=chat_requests(models=["a", "b"]))
def test_requests_survive_the_wire(request: Request) -> None:
    assert request.messages[-1].role == "user"
    assert request.model in ("a", "b")
    again = decode_request(request_to_wire(request))
    assert again.messages == request.messages and again.stream == request.stream


def test_requests_cover_roles_tools_unicode_and_sizes() -> None:
    seen: set[str] = set()

    @settings(max_examples=100, deadline=None)
    @given(message=messages())
    def collect(message) -> None:
        seen.add(message.role)
        if message.tool_calls:
            seen.add("tool_calls")
        text = message.text
        if text == "":
            seen.add("empty")
        if len(text) > 1000:
            seen.add("long")
        if any(ord(c) > 127 for c in text):
            seen.add("unicode")

    collect()
    assert {"system", "user", "assistant", "tool", "tool_calls", "empty", "long", "unicode"} <= seen


@settings(max_examples=60, deadline=None)
@given(data=st.data(), text=st.text(max_size=40))
def test_chunkings_join_back(data: st.DataObject, text: str) -> None:
    pieces = data.draw(chunkings(text))
    assert "".join(pieces) == text


@settings(max_examples=30, deadline=None)
@given(value=pii_values())
def test_pii_values_are_non_empty(value: str) -> None:
    assert len(value) > 8


@settings(max_examples=50, deadline=None)
@given(order=orderings(LAYERS))
def test_every_drawn_order_is_accepted_by_stack(order: list) -> None:
    assert sorted(layer.__name__ for layer in order) == sorted(layer.__name__ for layer in LAYERS)
    Stack([instantiate(item) for item in order], handler=ScriptedProvider())


def test_every_accepted_order_can_be_drawn() -> None:
    items = [ToyInputGuard, ToyCache, ToyOutputGuard, ToyMetrics]
    accepted, rejected = all_orderings(items)
    assert len(accepted) + len(rejected) == 24
    # guard.input before cache before guard.output: 4!/3! = 4 orders.
    assert len(accepted) == 4
    drawn: set[tuple[str, ...]] = set()

    @settings(max_examples=80, deadline=None)
    @given(order=orderings(items))
    def collect(order: list) -> None:
        drawn.add(tuple(layer.__name__ for layer in order))

    collect()
    assert drawn == {tuple(layer.__name__ for layer in order) for order in accepted}
    for order in rejected:
        with pytest.raises(ConfigError):
            Stack([instantiate(item) for item in order], handler=ScriptedProvider())


def test_partials_and_instances_declare_like_their_class() -> None:
    assert declared(partial(ToyRetry, attempts=2)).provides == frozenset({"retry"})
    assert declared(ToyCache()).ordering == ToyCache.ordering
    assert declared(BareCache).ordering == ()
    assert isinstance(instantiate(partial(ToyRetry, attempts=2)), ToyRetry)


def test_contradictory_constraints_are_reported() -> None:
    class A(Layer):
        provides = frozenset({"a"})
        ordering = (Order("b", "inside", "a needs b outside"),)

    class B(Layer):
        provides = frozenset({"b"})
        ordering = (Order("a", "inside", "b needs a outside"),)

    @given(order=orderings([A, B]))
    def draw(order: list) -> None:
        pass

    with pytest.raises(ConfigError, match="contradict"):
        draw()
