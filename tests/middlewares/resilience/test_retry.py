"""retry: which errors are retried, backoff and Retry-After, attempts, budget, deadline."""

from __future__ import annotations

import contextlib

import anyio
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from middlewares.resilience.retry import Retry, RetryBudget, RetryPolicy
from onion import BadRequest, Message, ProviderError, Request, Stack
from onion.testing import Fail, FakeClock, Reply, ScriptedProvider


def _request(stream: bool = False) -> Request:
    return Request(model="m", messages=[Message("user", "hi")], stream=stream)


def _retryable(status: int = 500, retry_after: float | None = None) -> ProviderError:
    return ProviderError(f"upstream {status}", upstream_status=status, retryable=True, retry_after=retry_after)


async def test_retries_a_retryable_error_then_answers() -> None:
    clock = FakeClock()
    provider = ScriptedProvider([Fail(_retryable()), Fail(_retryable()), Reply("fine")])
    stack = Stack([Retry(attempts=3, clock=clock, seed=1)], provider)
    result = await (await stack(_request())).result()
    assert result.content == "fine"
    assert provider.calls == 3
    assert len(clock.slept) == 2


async def test_does_not_retry_a_non_retryable_error() -> None:
    provider = ScriptedProvider([Fail(BadRequest("bad")), Reply("never")])
    stack = Stack([Retry(clock=FakeClock())], provider)
    with pytest.raises(BadRequest):
        await stack(_request())
    assert provider.calls == 1


async def test_gives_up_after_attempts_with_the_last_error() -> None:
    provider = ScriptedProvider(default=Fail(_retryable(503)))
    stack = Stack([Retry(attempts=4, clock=FakeClock())], provider)
    with pytest.raises(ProviderError) as info:
        await stack(_request())
    assert info.value.upstream_status == 503
    assert provider.calls == 4


async def test_honours_retry_after_and_refuses_one_above_max_delay() -> None:
    clock = FakeClock()
    provider = ScriptedProvider([Fail(_retryable(429, retry_after=3.0)), Reply("ok")])
    stack = Stack([Retry(max_delay=5, clock=clock)], provider)
    await (await stack(_request())).result()
    assert clock.slept == [3.0]
    provider = ScriptedProvider([Fail(_retryable(429, retry_after=60.0)), Reply("ok")])
    stack = Stack([Retry(max_delay=5, clock=clock)], provider)
    with pytest.raises(ProviderError):
        await stack(_request())
    assert provider.calls == 1


async def test_never_sleeps_past_the_deadline() -> None:
    clock = FakeClock()
    provider = ScriptedProvider([Fail(_retryable(429, retry_after=2.0)), Reply("ok")])
    request = _request()
    request.context.deadline = anyio.current_time() + 1.0
    with pytest.raises(ProviderError):
        await Stack([Retry(clock=clock)], provider)(request)
    assert clock.slept == []
    assert provider.calls == 1


async def test_retries_a_stream_that_fails_before_its_first_chunk() -> None:
    provider = ScriptedProvider([Fail(_retryable(), after_chunks=0), Reply("a b c")])
    stack = Stack([Retry(clock=FakeClock())], provider)
    result = await (await stack(_request(stream=True))).result()
    assert result.content == "a b c"
    assert all(s.closed for s in provider.streams)


async def test_resumes_a_stream_cut_after_its_first_chunk_without_repeating_text() -> None:
    reply = Reply("one two three four")
    provider = ScriptedProvider([Fail(_retryable(), after_chunks=2, reply=reply), reply])
    stack = Stack([Retry(clock=FakeClock())], provider)
    pieces = [chunk.content async for chunk in await stack(_request(stream=True))]
    assert "".join(pieces) == "one two three four"
    assert pieces[:2] == ["one ", "two "]
    assert all(s.closed for s in provider.streams)


async def test_a_cut_stream_that_cannot_be_retried_fails_explicitly() -> None:
    reply = Reply("one two three four")
    provider = ScriptedProvider([Fail(_retryable(), after_chunks=2, reply=reply)], default=Fail(BadRequest("no")))
    stack = Stack([Retry(clock=FakeClock())], provider)
    received: list[str] = []
    with pytest.raises(BadRequest):
        async for chunk in await stack(_request(stream=True)):
            received.append(chunk.content)
    assert "".join(received) == "one two "


async def test_budget_stops_retries_once_spent() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.0, reserve=2, clock=clock)
    provider = ScriptedProvider(default=Fail(_retryable()))
    stack = Stack([Retry(attempts=10, retry_budget=budget, clock=clock)], provider)
    with pytest.raises(ProviderError):
        await stack(_request())
    assert provider.calls == 3  # one call plus the two retries of the reserve
    with pytest.raises(ProviderError):
        await stack(_request())
    assert provider.calls == 4


@settings(max_examples=40, deadline=None)
@given(
    attempts=st.integers(1, 6),
    ratio=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    reserve=st.integers(0, 5),
    outcomes=st.lists(st.booleans(), min_size=1, max_size=60),
    gaps=st.lists(st.floats(0, 3), min_size=1, max_size=60),
)
@example(attempts=2, ratio=0.0, reserve=2, outcomes=[False], gaps=[1.296875, 2.6875])  # a backoff crossing a slot
async def test_law_retry_never_exceeds_attempts_or_budget(
    attempts: int, ratio: float, reserve: int, outcomes: list[bool], gaps: list[float]
) -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio, window=10.0, reserve=reserve, clock=clock, slots=10)
    layer = Retry(policy=RetryPolicy(attempts, 0.01, 0.05), retry_budget=budget, clock=clock, seed=0)
    events: list[tuple[str, float]] = []  # ("request" | "retry", time), in order

    def script(request: Request, index: int) -> Reply | Fail:
        # A retry is taken from the budget when the previous attempt failed, before the
        # backoff sleep: that is the moment the budget's window is checked.
        if fresh[0]:
            fresh[0] = False
        else:
            events.append(("retry", last[0]))
        last[0] = clock.now()
        return Reply("ok") if outcomes[index % len(outcomes)] else Fail(_retryable())

    fresh = [True]
    last = [0.0]
    provider = ScriptedProvider(script)
    stack = Stack([layer], provider)
    for i in range(20):
        clock.advance(gaps[i % len(gaps)])
        events.append(("request", clock.now()))
        fresh[0] = True
        before = provider.calls
        with contextlib.suppress(ProviderError):
            await (await stack(_request())).result()
        assert 1 <= provider.calls - before <= attempts
    # At every retry, the retries in the budget's window (10 one-second slots ending
    # now) are within ratio * requests in that window + reserve.
    for k, (kind, at) in enumerate(events):
        if kind != "retry":
            continue
        window = [e for e in events[: k + 1] if int(e[1]) > int(at) - 10]
        retries = sum(1 for e in window if e[0] == "retry")
        assert retries <= ratio * sum(1 for e in window if e[0] == "request") + reserve


def test_toml_parameters_build_the_layer() -> None:
    stack = Stack.from_config(
        [{"use": "retry", "attempts": 5, "base_delay": 0.1, "max_delay": 2, "budget": 0.3}], ScriptedProvider()
    )
    layer = stack.layers[0]
    assert isinstance(layer, Retry)
    assert (layer.policy.attempts, layer.policy.max_delay, layer.budget.ratio) == (5, 2, 0.3)


@pytest.mark.parametrize("stream", [False, True])
async def test_each_retry_logs_one_warning_without_the_upstream_message(stream: bool) -> None:
    from structlog.testing import capture_logs

    failure = ProviderError("secret upstream detail sk-live-123", upstream_status=503, retryable=True)
    provider = ScriptedProvider([Fail(failure), Reply("fine")])
    stack = Stack([Retry(base_delay=0, clock=FakeClock())], provider)
    with capture_logs() as logs:
        response = await stack(_request(stream))
        assert (await response.result()).content == "fine"
    [line] = [entry for entry in logs if entry["event"] == "retrying"]
    assert line["log_level"] == "warning"
    assert (line["attempt"], line["attempts"], line["upstream_status"]) == (2, 3, 503)
    assert line["error"] == "ProviderError" and line["model"] == "m"
    assert "secret" not in str(line) and "sk-live" not in str(line)


class _SettableClock:
    """A clock set to any time, backwards too (``FakeClock`` only moves forward)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at

    async def sleep(self, seconds: float) -> None:
        self.at += seconds


class _ReferenceBudget:
    """The retry budget's buckets as first written: the slot recomputed on every call."""

    def __init__(self, ratio: float, window: float, reserve: int, clock: _SettableClock, slots: int) -> None:
        self.ratio, self.reserve, self.clock = ratio, reserve, clock
        self.seconds = window / slots
        self.requests, self.retries = [0] * slots, [0] * slots
        self.slot = int(clock.now() // self.seconds)

    def _advance(self) -> int:
        slot = int(self.clock.now() // self.seconds)
        size = len(self.requests)
        for stale in range(self.slot + 1, min(slot, self.slot + size) + 1):
            self.requests[stale % size] = self.retries[stale % size] = 0
        self.slot = max(slot, self.slot)
        return self.slot % size

    def record_request(self) -> None:
        self.requests[self._advance()] += 1

    def try_withdraw(self) -> bool:
        index = self._advance()
        if sum(self.retries) + 1 > self.ratio * sum(self.requests) + self.reserve:
            return False
        self.retries[index] += 1
        return True


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(0, 1e6, allow_nan=False),
    steps=st.lists(
        st.tuples(st.sampled_from(["request", "withdraw"]), st.floats(-2.0, 25.0, allow_nan=False)), max_size=60
    ),
    slots=st.integers(1, 12),
)
def test_law_the_budget_keeps_the_reference_buckets(start: float, steps: list[tuple[str, float]], slots: int) -> None:
    # The budget skips the slot arithmetic while the clock is inside the current bucket;
    # every answer must be the one recomputing it each time gives, the clock going back too.
    clock = _SettableClock(start)
    budget = RetryBudget(0.2, window=10.0, reserve=2, clock=clock, slots=slots)
    reference = _ReferenceBudget(0.2, 10.0, 2, clock, slots)
    for action, step in steps:
        clock.at = max(0.0, clock.at + step)
        if action == "request":
            budget.record_request()
            reference.record_request()
        else:
            assert budget.try_withdraw() == reference.try_withdraw()
        assert budget._requests == reference.requests and budget._retries == reference.retries


async def test_a_stream_on_its_last_attempt_passes_unwrapped_and_fails_as_it_failed() -> None:
    # With no attempt left nothing can recover the stream: its chunks reach the caller
    # through no generator of retry's (the provider's alone), and a cut is the same error.
    import sys

    error = _retryable()
    reply = Reply("one two three four")
    provider = ScriptedProvider([Fail(error, after_chunks=2, reply=reply)])
    stack = Stack([Retry(attempts=1, clock=FakeClock())], provider)
    hooks = sys.get_asyncgen_hooks()
    started: list[str] = []

    def firstiter(generator: object) -> None:
        started.append(generator.ag_code.co_name)  # type: ignore[attr-defined]
        if hooks.firstiter is not None:
            hooks.firstiter(generator)

    sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=hooks.finalizer)
    received: list[str] = []
    try:
        with pytest.raises(ProviderError) as caught:
            async for chunk in await stack(_request(stream=True)):
                received.append(chunk.content)
    finally:
        sys.set_asyncgen_hooks(*hooks)
    assert caught.value is error
    assert "".join(received) == "one two "
    assert "recover_stream" not in started
    assert all(s.closed for s in provider.streams)
