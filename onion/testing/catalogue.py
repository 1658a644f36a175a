"""The fault catalogue: the upstream misfortunes a gateway must survive, as HTTP faults.

Each ``Scenario`` scripts a ``FakeUpstream`` (real HTTP on a loopback port) for a
*primary* model and, where the scenario needs it, its *fallback* model: which request
fails and how. Durations are given at full size (the catalogue's seconds) and multiplied
by ``scale`` when installed, so a test runs the whole catalogue in a few seconds with
limits scaled the same way::

    async with FakeUpstream(models=("m1", "m2")) as upstream:
        CATALOGUE["stall_30s"].install(upstream, primary="m1", fallback="m2", scale=0.02)

=============================  ===================================================
``429_retry_after``            one 429 with ``Retry-After: 1``
``429_no_retry_after``         one 429 without it
``500_once``                   one 500
``503_persistent``             every call 503
``tcp_reset``                  one connection reset (RST) before any byte
``no_response``                every call: headers never come
``first_token_20s``            every call: the first token after 20 s
``cut_40_of_60``               one stream cut after 40 of its 60 chunks
``stall_30s``                  one stream stalls 30 s after 20 chunks
``malformed_sse``              one stream with an invalid event (a complete call: body)
``no_done``                    streams end without ``data: [DONE]`` (finish reason sent)
``context_length_400``         every call: 400 ``context_length_exceeded``
``content_filter_400``         every call: 400 ``content_filter``
``cut_prefill_rejected``       every primary stream cut at 40; the fallback rejects prefill
``primary_down_60s``           the primary answers 503 for 60 s, then recovers
=============================  ===================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .upstream import FakeUpstream, Fault

__all__ = ["CATALOGUE", "Scenario", "answer_words"]

Plan = Callable[[int, float, bool, float], Fault | None]
"""``plan(index, elapsed, stream, scale)``: the fault of the model's call number
``index`` (0-based), ``elapsed`` seconds after install; ``None`` answers normally."""


def answer_words(count: int = 60) -> str:
    """A user message whose echoed answer streams as ``count`` content chunks."""
    return " ".join(f"w{i}" for i in range(count - 2))


class Scenario:
    """One fault of the catalogue: a plan for the primary and one for the fallback."""

    __slots__ = ("fallback", "name", "primary", "title")

    def __init__(self, name: str, title: str, primary: Plan, fallback: Plan | None = None) -> None:
        self.name = name
        self.title = title
        self.primary = primary
        self.fallback = fallback

    def install(self, upstream: FakeUpstream, *, primary: str, fallback: str | None = None, scale: float = 1.0) -> None:
        """Script ``upstream`` with this scenario for the models ``primary``/``fallback``."""
        counts: dict[str, int] = {}
        began = time.monotonic()
        plans = {primary: self.primary}
        if fallback is not None and self.fallback is not None:
            plans[fallback] = self.fallback

        def fault_for(body: dict[str, Any]) -> Fault | None:
            model = str(body.get("model", ""))
            plan = plans.get(model)
            index = counts.get(model, 0)
            counts[model] = index + 1
            if plan is None:
                return None
            return plan(index, time.monotonic() - began, bool(body.get("stream")), scale)

        upstream.fault_for = fault_for

    def __repr__(self) -> str:
        return f"Scenario({self.name!r})"


def _once(fault: Fault) -> Plan:
    return lambda index, elapsed, stream, scale: fault if index == 0 else None


def _always(fault: Fault) -> Plan:
    return lambda index, elapsed, stream, scale: fault


def _retry_after(index: int, elapsed: float, stream: bool, scale: float) -> Fault | None:
    return Fault(status=429, retry_after=f"{scale:g}") if index == 0 else None


def _first_token(index: int, elapsed: float, stream: bool, scale: float) -> Fault:
    # A stream's headers come at once and its first token late; a complete answer is late.
    return Fault(stall_after=0, stall=20 * scale) if stream else Fault(delay=20 * scale)


def _stall(index: int, elapsed: float, stream: bool, scale: float) -> Fault | None:
    if index:
        return None
    return Fault(stall_after=20, stall=30 * scale) if stream else Fault(stall_after=0, stall=30 * scale)


def _down(index: int, elapsed: float, stream: bool, scale: float) -> Fault | None:
    return Fault(status=503) if elapsed < 60 * scale else None


def _malformed(index: int, elapsed: float, stream: bool, scale: float) -> Fault | None:
    if index:
        return None
    return Fault(malformed_at=10) if stream else Fault(malformed=True)


_HANG = Fault(delay=3600)

CATALOGUE: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("429_retry_after", "429 with Retry-After: 1", _retry_after),
        Scenario("429_no_retry_after", "429 without Retry-After", _once(Fault(status=429))),
        Scenario("500_once", "500 once", _once(Fault(status=500))),
        Scenario("503_persistent", "503 on every call", _always(Fault(status=503))),
        Scenario("tcp_reset", "TCP reset before any byte", _once(Fault(reset=True))),
        Scenario("no_response", "no response at all", _always(_HANG)),
        Scenario("first_token_20s", "first token after 20 s", _first_token),
        Scenario("cut_40_of_60", "stream cut after 40 of 60 chunks", _once(Fault(cut_after=40))),
        Scenario("stall_30s", "stream stalled 30 s after 20 chunks", _stall),
        Scenario("malformed_sse", "a malformed SSE event", _malformed),
        Scenario("no_done", "a stream without [DONE]", _always(Fault(done=False))),
        Scenario(
            "context_length_400",
            "400 context_length_exceeded",
            _always(Fault(status=400, error_code="context_length_exceeded", error_type="invalid_request_error")),
        ),
        Scenario(
            "content_filter_400",
            "400 content_filter",
            _always(Fault(status=400, error_code="content_filter", error_type="invalid_request_error")),
        ),
        Scenario(
            "cut_prefill_rejected",
            "cut stream; the fallback rejects an assistant prefill",
            _always(Fault(cut_after=40)),
            _always(Fault(reject_prefill=True)),
        ),
        Scenario("primary_down_60s", "primary down for 60 s under traffic", _down),
    )
}
"""Every scenario, by name."""
