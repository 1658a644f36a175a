"""Running cases end to end: in process through a Stack, and over HTTP to a gateway."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import Message, RateLimited, Request, Response, Stack
from onion.eval import GatewayTarget, handler_target, parse_cases, run_eval
from onion.testing import Fail, Reply, ScriptedProvider
from onion.testing.upstream import FakeUpstream, Fault

CASES = parse_cases(
    "\n".join(
        [
            '{"id": "capital", "input": "capital of France?", "expect": ["paris"], "tags": ["geo"]}',
            '{"id": "json", "input": "give json", "schema": {"type": "object", "required": ["ok"]}, "tags": ["fmt"]}',
            '{"id": "polite", "input": "insult me", "forbid": ["idiot"], "tags": ["safety"]}',
        ]
    )
)


def _answers(request: Request, index: int) -> Reply:
    question = request.messages[-1].text
    return Reply(
        {"capital of France?": "It is Paris.", "give json": '{"ok": true}', "insult me": "you idiot"}[question]
    )


async def _tagged(request: Request, call_next) -> Response:
    # A layer in the stack, so the eval provably runs through a stack, not the provider.
    response = await call_next(request)
    response.attrs["seen"] = True
    return response


@pytest.mark.parametrize("stream", [False, True])
async def test_in_process_run_scores_each_case(stream: bool) -> None:
    provider = ScriptedProvider(_answers)
    stack = Stack([_tagged], handler=provider)
    report = await run_eval(CASES, handler_target(stack), model="m", stream=stream, target="stack")
    assert [(c.id, c.passed) for c in report.cases] == [("capital", True), ("json", True), ("polite", False)]
    assert report.cases[2].first_failure() == "forbidden 'idiot'"
    assert report.totals.cases_passed == 2
    assert report.totals.pass_rate == pytest.approx(2 / 3)
    assert report.by_tag == {"fmt": 1.0, "geo": 1.0, "safety": 0.0}
    assert all(r.stream == stream and r.model == "m" for r in provider.requests)
    assert all(s.completed and s.closed for s in provider.streams)
    assert report.cases[0].samples[0].served_by == "scripted"


async def test_samples_give_a_pass_rate_not_one_lucky_answer() -> None:
    (case,) = parse_cases('{"id": "s", "input": "q", "expect": ["yes"], "temperature": 0.9}')
    provider = ScriptedProvider(lambda request, index: Reply("yes" if index % 5 < 3 else "no"))
    report = await run_eval([case], handler_target(provider), model="m", default_samples=5)
    result = report.cases[0]
    assert len(result.samples) == 5 and provider.calls == 5
    assert result.pass_rate == pytest.approx(0.6)
    assert not result.passed
    # Each sample is a fresh request with its own context.
    assert len({id(r.context) for r in provider.requests}) == 5
    assert all(r.temperature == 0.9 for r in provider.requests)


async def test_errors_are_failed_samples_with_a_safe_message() -> None:
    provider = ScriptedProvider([Fail(RateLimited("key k-secret over its limit", retry_after=3))])
    report = await run_eval(CASES[:1], handler_target(provider), model="m")
    sample = report.cases[0].samples[0]
    assert not sample.passed and sample.error is not None
    assert sample.error.startswith("RateLimited: ")
    assert "k-secret" not in sample.error
    assert report.totals.errors == 1


async def test_time_limit_fails_a_slow_answer() -> None:
    provider = ScriptedProvider(default=Reply("Paris", first_delay=30))
    report = await run_eval(CASES[:1], handler_target(provider), model="m", time_limit=0.05)
    assert report.cases[0].samples[0].error == "Timeout: no answer in time"


async def test_concurrency_is_bounded_and_reached() -> None:
    in_flight = peak = 0

    async def handler(request: Request) -> Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.01)
        in_flight -= 1
        return Response.complete(_completion("Paris"))

    (case,) = parse_cases('{"input": "q", "expect": ["paris"], "samples": 12}')
    report = await run_eval([case], handler_target(handler), model="m", concurrency=3)
    assert peak == 3
    assert report.cases[0].pass_rate == 1.0


def _completion(text: str):
    from onion import Completion

    return Completion(content=text, model="m")


async def test_results_keep_case_order_whatever_finishes_first() -> None:
    cases = parse_cases("\n".join(f'{{"id": "c{i}", "input": "{i}", "expect": ["{i}"]}}' for i in range(6)))

    async def handler(request: Request) -> Response:
        number = int(request.messages[-1].text)
        await anyio.sleep(0.002 * (6 - number))  # the first case answers last
        return Response.complete(_completion(f"answer {number}"))

    report = await run_eval(cases, handler_target(handler), model="m", concurrency=6)
    assert [c.id for c in report.cases] == [f"c{i}" for i in range(6)]
    assert all(c.passed for c in report.cases)


def test_a_case_without_model_needs_a_default() -> None:
    from onion.eval import build_request

    with pytest.raises(ValueError, match="names no model"):
        build_request(CASES[0], model=None)
    request = build_request(CASES[0], model="m")
    assert request.messages == [Message("user", "capital of France?")]


def _gateway_reply(body: dict) -> str:
    question = body["messages"][-1]["content"]
    return {"capital of France?": "Paris!", "give json": '```json\n{"ok": 1}\n```', "insult me": "no"}[question]


@pytest.mark.parametrize("stream", [False, True])
async def test_gateway_url_mode_over_real_http(stream: bool) -> None:
    async with FakeUpstream(reply=_gateway_reply, api_key="sk-test") as upstream:
        async with GatewayTarget(upstream.base_url, api_key="sk-test") as gateway:
            report = await run_eval(CASES, gateway, model="gpt-4o", stream=stream, concurrency=2, target="gateway")
        await upstream.wait_settled()
    assert [c.passed for c in report.cases] == [True, True, True]
    paths = [path for path, _, _ in upstream.requests]
    assert paths == ["/v1/chat/completions"] * 3
    assert [body.get("stream", False) for _, _, body in upstream.requests] == [stream] * 3
    assert all(headers["authorization"] == "Bearer sk-test" for _, headers, _ in upstream.requests)
    assert upstream.stats.open_streams == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_gateway_http_errors_become_failed_samples(stream: bool) -> None:
    async with FakeUpstream() as upstream:
        upstream.push(Fault(status=503))
        async with GatewayTarget(upstream.url) as gateway:
            report = await run_eval(CASES[:1], gateway, model="gpt-4o", stream=stream)
    assert report.cases[0].samples[0].error == "GatewayError: HTTP 503: injected status 503"
    assert upstream.url not in report.cases[0].samples[0].error


async def test_an_unreachable_gateway_fails_samples_without_the_url() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with GatewayTarget(f"http://127.0.0.1:{port}/v1") as gateway:
        report = await run_eval(CASES[:1], gateway, model="gpt-4o")
    assert report.cases[0].samples[0].error == "ConnectError: the gateway could not be reached"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=12), st.integers(1, 5))
async def test_pass_rate_is_the_share_of_passing_answers(outcomes: list[bool], concurrency: int) -> None:
    """Law: a case's pass rate is exactly the share of its samples whose answer passes,
    whatever the concurrency and the order answers arrive in."""
    (case,) = parse_cases(f'{{"id": "p", "input": "q", "expect": ["yes"], "samples": {len(outcomes)}}}')
    provider = ScriptedProvider([Reply("yes" if ok else "no") for ok in outcomes])
    report = await run_eval([case], handler_target(provider), model="m", concurrency=concurrency)
    assert report.cases[0].pass_rate == pytest.approx(sum(outcomes) / len(outcomes))
    assert report.totals.samples == provider.calls == len(outcomes)


async def test_samples_bypass_caches_unless_asked() -> None:
    """Every sample reaches the model by default: an exact cache in the stack would
    otherwise answer samples 2..n with sample 1's answer."""
    from onion import build_layer

    # No temperature: the exact cache would store and replay this (it leaves hot requests alone).
    (case,) = parse_cases('{"id": "s", "input": "q", "expect": ["yes"], "samples": 5}')
    for use_cache, calls, rate in ((False, 5, 0.6), (True, 1, 1.0)):
        provider = ScriptedProvider(lambda request, index: Reply("yes" if index % 5 < 3 else "no"))
        stack = Stack([build_layer({"use": "exact_cache", "scope": "shared"})], handler=provider)
        report = await run_eval([case], handler_target(stack), model="m", use_cache=use_cache, concurrency=1)
        assert provider.calls == calls
        assert report.cases[0].pass_rate == pytest.approx(rate)
