"""The probe watches without changing anything: same trace, same answers, honest records."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from onion_toys import ToyCache, ToyInputGuard, ToyMetrics, ToyOutputGuard, ToyRetry

from onion import Message, Request, Stack
from onion.testing import FakeClock, FaultPlan, Probe, Status, answer_for, planned_provider
from onion.testing.probe import fresh_context
from onion.testing.strategies import chat_requests, instantiate, orderings

LAYERS = [ToyInputGuard, ToyCache, ToyOutputGuard, ToyRetry, ToyMetrics]
FEW = st.sampled_from(["hi", "forbidden fruit", "an onion?"])


def _request(text: str = "hi", stream: bool = False) -> Request:
    return Request(model="m", messages=[Message("user", text)], stream=stream)


@settings(max_examples=30, deadline=None)
@given(order=orderings(LAYERS), request=chat_requests(user_texts=FEW, max_messages=2))
async def test_probe_keeps_trace_and_answer_of_the_plain_stack(order: list, request: Request) -> None:
    plain_request = fresh_context(request)
    plain = Stack([instantiate(item) for item in order], handler=planned_provider())
    try:
        plain_text = (await (await plain(plain_request)).result()).content
    except Exception as error:
        plain_text = type(error).__name__
    probe = Probe([instantiate(item) for item in order], planned_provider())
    observation = await probe.send(request)
    probed_text = (
        observation.outcome.text if observation.outcome.kind == "answer" else type(observation.outcome.error).__name__
    )
    assert probed_text == plain_text
    assert observation.trace == plain_request.context.trace
    assert [v.name for v in observation.visits if v.index < len(order)] == [
        name for name in observation.trace if name != "scripted"
    ]


async def test_visits_record_short_circuits_retries_and_upstream_calls() -> None:
    clock = FakeClock()
    provider = planned_provider(FaultPlan({"m": (Status(503),)}), clock=clock)
    probe = Probe([ToyInputGuard(), ToyCache(), ToyRetry(clock=clock)], provider)

    first = await probe.send(_request())
    assert first.outcome.kind == "answer" and first.outcome.text == answer_for(_request()).text
    assert len(first.upstream) == 2
    retry = first.visits[2]
    assert retry.name == "toy_retry" and [o.kind for o in retry.inner] == ["error", "answer"]
    assert first.trace == ["toy_input_guard", "toy_cache", "toy_retry", "scripted", "scripted"]

    hit = await probe.send(_request())
    assert hit.served_by == "toy_cache" and hit.visits[1].answered_early and not hit.upstream

    blocked = await probe.send(_request("forbidden"))
    assert blocked.input_blocked is True and blocked.outcome.kind == "error"
    assert blocked.visits[0].answered_early and len(blocked.visits) == 1
    assert first.input_blocked is False


async def test_streams_record_cut_and_early_close() -> None:
    provider = planned_provider()
    probe = Probe([ToyMetrics()], provider)
    closed = await probe.send(_request(stream=True), read=1)
    assert closed.outcome.kind == "closed"
    assert [v.outcome.kind for v in closed.visits] == ["closed", "closed"]
    assert provider.streams[0].closed and not provider.streams[0].completed

    whole = await probe.send(_request("more", stream=True))
    assert whole.outcome.kind == "answer" and whole.outcome.streamed
    assert whole.outcome.text == answer_for(_request("more")).text


async def test_report_names_layers_trace_and_outcomes() -> None:
    probe = Probe([ToyInputGuard(), ToyCache()], planned_provider())
    observation = await probe.send(_request("forbidden"))
    report = observation.report()
    assert "trace:    ['toy_input_guard']" in report
    assert "GuardrailViolation(input/banned_word)" in report
    assert "input guard verdict: blocked" in report
    assert "toy_input_guard > toy_cache" in report
