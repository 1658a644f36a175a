"""Issue 17's policies: timeouts by position, failure classes for retry, fallback and the
breaker (stalls, timeouts, cuts and slow calls count; a caller's 400 does not), and what
``onion check`` prints about them. In-process with the scripted provider (the HTTP
behaviour of each fault is in tests/chaos/test_catalogue.py)."""

from __future__ import annotations

import anyio
import pytest

from middlewares.resilience import CircuitBreaker, Deadline, Fallback, Retry
from onion import (
    AllProvidersFailed,
    CircuitOpen,
    ConfigError,
    Message,
    ProviderError,
    Request,
    Stack,
    Timeout,
    failure_class,
)
from onion.testing import FakeClock
from onion.testing._scripted import Fail, Reply, ScriptedProvider


def _request(model: str = "a", stream: bool = False) -> Request:
    return Request(model=model, messages=[Message("user", "hi there")], stream=stream)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ProviderError("x", upstream_status=429, retryable=True), "rate_limited"),
        (ProviderError("x", upstream_status=503, retryable=True), "server_error"),
        (ProviderError("x", retryable=True), "connection"),
        (ProviderError("x", retryable=True, failure="cut"), "cut"),
        (ProviderError("x", upstream_status=400, upstream_code="context_length_exceeded"), "context_length"),
        (ProviderError("x", upstream_status=400, upstream_code="content_filter"), "content_filter"),
        (ProviderError("x", upstream_status=400), "invalid_request"),
        (ProviderError("x", upstream_status=401), "upstream_auth"),
        (CircuitOpen("x"), "circuit_open"),
        (Timeout(phase="first_chunk"), "first_chunk"),
        (Timeout(phase="idle"), "idle"),
        (Timeout(phase="answer"), "timeout"),
        (Timeout(phase="total"), "timeout"),
        (ValueError("bug"), "internal"),
    ],
)
def test_failure_classes(error: BaseException, kind: str) -> None:
    assert failure_class(error) == kind


def test_an_unknown_class_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="retry_on") as caught:
        Stack.from_config([{"use": "retry", "retry_on": ["5xx"]}], ScriptedProvider())
    assert "'5xx'" in str(caught.value)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_timeout_inside_retry_bounds_each_attempt(stream: bool) -> None:
    # The first attempt hangs; the attempt timeout ends it and the retry answers, all
    # within the outer deadline (before issue 17 this stack was refused).
    provider = ScriptedProvider([Reply("late", first_delay=30), Reply("on time")])
    stack = Stack(
        [Deadline(seconds=2), Retry(base_delay=0), Deadline(seconds=0.1, first_token_seconds=None, idle_seconds=None)],
        provider,
    )
    with anyio.fail_after(1.5):
        answer = await (await stack(_request(stream=stream))).result()
    assert answer.content == "on time" and provider.calls == 2


async def test_a_hung_complete_attempt_falls_back_at_once() -> None:
    # The first finding: 12 of 12 complete calls to a hanging primary got a 504.
    provider = ScriptedProvider(
        lambda request, index: Reply("late", first_delay=30) if request.model == "a" else Reply("b")
    )
    stack = Stack(
        [Deadline(seconds=2, answer_seconds=0.1), Fallback(["a", "b"]), Retry(base_delay=0), CircuitBreaker()],
        provider,
    )
    with anyio.fail_after(1.5):
        response = await stack(_request())
        answer = await response.result()
    assert answer.content == "b" and response.model == "b"
    # The retry moved on at once: one try of "a" (a fallback was left), one of "b".
    assert [r.model for r in provider.requests] == ["a", "b"]


async def test_without_a_fallback_a_silent_attempt_is_retried() -> None:
    provider = ScriptedProvider([Reply("late", first_delay=30), Reply("ok")])
    stack = Stack([Deadline(seconds=2, first_token_seconds=0.1), Retry(base_delay=0)], provider)
    with anyio.fail_after(1.5):
        answer = await (await stack(_request(stream=True))).result()
    assert answer.content == "ok" and provider.calls == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_a_content_filter_400_is_answered_not_routed_around(stream: bool) -> None:
    refused = ProviderError("no", upstream_status=400, upstream_code="content_filter")
    provider = ScriptedProvider(lambda request, index: Fail(refused) if request.model == "a" else Reply("b"))
    stack = Stack([Fallback(["a", "b"]), Retry(base_delay=0)], provider)
    with pytest.raises(ProviderError) as caught:
        await (await stack(_request(stream=stream))).result()
    assert caught.value is refused and caught.value.status == 400
    assert provider.calls == 1


async def test_context_length_goes_only_to_a_listed_larger_window() -> None:
    too_long = ProviderError("long", upstream_status=400, upstream_code="context_length_exceeded")
    provider = ScriptedProvider(lambda request, index: Fail(too_long) if request.model == "a" else Reply("big"))
    plain = Stack([Fallback(["a", "b"])], provider)
    with pytest.raises(ProviderError):
        await (await plain(_request())).result()
    routed = Stack([Fallback(["a", "b"], context_fallbacks={"a": ["c"]})], provider)
    response = await routed(_request())
    assert (await response.result()).content == "big" and response.model == "c"
    assert [r.model for r in provider.requests] == ["a", "a", "c"]  # never "b"


async def test_fallback_on_narrows_the_classes() -> None:
    down = ProviderError("down", upstream_status=503, retryable=True)
    provider = ScriptedProvider(lambda request, index: Fail(down) if request.model == "a" else Reply("b"))
    stack = Stack([Fallback(["a", "b"], fallback_on=["rate_limited"])], provider)
    with pytest.raises(ProviderError):
        await (await stack(_request())).result()
    assert provider.calls == 1


async def test_the_breaker_opens_on_stalled_streams() -> None:
    # Stalls are ended at the handler boundary, inside the breaker: they count.
    provider = ScriptedProvider(default=Reply("a b c", first_delay=30))
    breaker = CircuitBreaker(min_calls=3, failure_ratio=0.5)
    stack = Stack([Deadline(seconds=5, first_token_seconds=0.02), breaker], provider)
    for _ in range(3):
        with pytest.raises(Timeout):
            await (await stack(_request(stream=True))).result()
    assert breaker.state("a").state == "open"
    with pytest.raises(CircuitOpen):
        await stack(_request(stream=True))
    assert provider.calls == 3


async def test_the_breaker_ignores_the_callers_own_400s() -> None:
    refused = ProviderError("no", upstream_status=400, upstream_code="content_filter")
    provider = ScriptedProvider(default=Fail(refused))
    breaker = CircuitBreaker(min_calls=2)
    stack = Stack([breaker], provider)
    for _ in range(4):
        with pytest.raises(ProviderError):
            await stack(_request())
    assert breaker.state("a").state == "closed" and breaker.state("a").calls == 0


async def test_slow_calls_open_the_breaker_when_asked() -> None:
    clock = FakeClock()
    provider = ScriptedProvider(default=Reply("slow", first_delay=0.5), clock=clock)
    breaker = CircuitBreaker(min_calls=3, slow_call_seconds=0.2, slow_call_ratio=0.6, clock=clock)
    stack = Stack([breaker], provider)
    for _ in range(3):
        assert (await (await stack(_request())).result()).content == "slow"  # answered, but slow
    state = breaker.state("a")
    assert state.state == "open" and state.failures == 0
    fast = CircuitBreaker(min_calls=3, clock=clock)  # slow calls are off by default
    for _ in range(3):
        await (await Stack([fast], provider)(_request())).result()
    assert fast.state("a").state == "closed"


async def test_a_cancelled_call_is_no_verdict() -> None:
    provider = ScriptedProvider(default=Reply("x", first_delay=30))
    breaker = CircuitBreaker(min_calls=1)
    stack = Stack([breaker], provider)
    with anyio.move_on_after(0.05):
        await stack(_request())
    assert breaker.state("a").calls == 0 and breaker.state("a").state == "closed"


def test_describe_prints_timeout_positions_and_failure_classes() -> None:
    stack = Stack(
        [Deadline(), Fallback(["a", "b"]), Retry(), CircuitBreaker(), Deadline(seconds=5, answer_seconds=4)],
        ScriptedProvider(),
    )
    text = stack.describe()
    assert text.count("timeout position: total") == 1 and text.count("timeout position: attempt") == 1
    assert "falls back: circuit_open, connection, cut" in text
    assert "moves on at once with a fallback left: first_chunk, idle, timeout" in text
    assert "counts as failures:" in text and "answer 4 s" in text


async def test_all_failed_keeps_every_cause() -> None:
    down = ProviderError("down", upstream_status=503, retryable=True)
    provider = ScriptedProvider(default=Fail(down))
    with pytest.raises(AllProvidersFailed) as caught:
        await (await Stack([Fallback(["a", "b"]), Retry(attempts=1)], provider)(_request())).result()
    assert caught.value.models == ["a", "b"]
