"""circuit_breaker: the state machine (stateful property test), fail-fast, streams, TOML."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from middlewares.resilience.circuit_breaker import CircuitBreaker
from middlewares.resilience.retry import Retry
from onion import BadRequest, CircuitOpen, ConfigError, Message, ProviderError, Request, Response, Stack
from onion.testing import Fail, FakeClock, Reply, ScriptedProvider

RATIO, WINDOW, MIN_CALLS, OPEN = 0.5, 10.0, 4, 5.0


def _request(stream: bool = False, model: str = "m") -> Request:
    return Request(model=model, messages=[Message("user", "hi")], stream=stream)


class BreakerMachine(RuleBasedStateMachine):
    """Drives a breaker with successes, failures, caller errors and time; a reference
    model of the documented state machine must agree after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(0.0)
        self.transitions: list[tuple[str, str]] = []
        self.breaker = CircuitBreaker(
            RATIO,
            WINDOW,
            MIN_CALLS,
            OPEN,
            clock=self.clock,
            on_transition=lambda m, a, b: self.transitions.append((a, b)),
        )
        self.outcome: Reply | Fail = Reply()
        self.provider = ScriptedProvider(lambda request, index: self.outcome)
        self.stack = Stack([self.breaker], self.provider)
        self.state = "closed"
        self.opened_at = 0.0
        self.records: list[tuple[int, bool]] = []

    def _slot(self) -> int:
        return int(self.clock.now() // (WINDOW / 10))

    async def _read(self, stream: bool) -> None:
        # A complete answer takes the breaker's fast path, a stream read to its end the
        # end callback: the reference must agree with both, in any mix.
        response = await self.stack(_request(stream))
        await response.result()

    def _call(self, outcome: Reply | Fail, verdict: str, stream: bool = False) -> None:
        self.outcome = outcome
        calls_before = self.provider.calls
        try:
            anyio.run(self._read, stream)
            raised: BaseException | None = None
        except Exception as error:
            raised = error
        now = self.clock.now()
        if self.state == "open" and now >= self.opened_at + OPEN:
            self.state = "half_open"
        if self.state == "open":
            assert isinstance(raised, CircuitOpen) and self.provider.calls == calls_before
            return
        assert self.provider.calls == calls_before + 1
        if verdict == "neutral":
            return
        if self.state == "half_open":
            if verdict == "fail":
                self.state, self.opened_at = "open", now
            else:
                self.state = "closed"
            self.records = []
            return
        self.records.append((self._slot(), verdict == "fail"))
        window = [failed for slot, failed in self.records if slot > self._slot() - 10]
        if verdict == "fail" and len(window) >= MIN_CALLS and sum(window) >= RATIO * len(window):
            self.state, self.opened_at, self.records = "open", now, []

    @rule(stream=st.booleans())
    def success(self, stream: bool) -> None:
        self._call(Reply("ok"), "ok", stream)

    @rule(stream=st.booleans())
    def upstream_failure(self, stream: bool) -> None:
        self._call(Fail(ProviderError("500", upstream_status=500)), "fail", stream)

    @rule()
    def callers_error(self) -> None:
        self._call(Fail(BadRequest("bad")), "neutral")

    @rule(seconds=st.sampled_from([0.3, 1.0, 2.5, 5.0, 11.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def agrees_with_the_reference(self) -> None:
        observed = self.breaker.state("m").state
        expected = self.state
        if expected == "open" and self.clock.now() >= self.opened_at + OPEN:
            expected = "half_open"
        assert observed == expected

    @invariant()
    def transitions_are_edges_of_the_state_machine(self) -> None:
        allowed = {("closed", "open"), ("open", "half_open"), ("half_open", "closed"), ("half_open", "open")}
        assert set(self.transitions) <= allowed


TestBreakerStateMachine = BreakerMachine.TestCase
TestBreakerStateMachine.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)


async def test_open_circuit_fails_fast_with_retry_after_and_retry_does_not_hammer() -> None:
    clock = FakeClock(0.0)
    breaker = CircuitBreaker(min_calls=2, open_seconds=15, clock=clock)
    provider = ScriptedProvider(default=Fail(ProviderError("down", retryable=True)))
    stack = Stack([Retry(attempts=5, clock=clock), breaker], provider)
    with pytest.raises(CircuitOpen) as info:
        await stack(_request())
    assert provider.calls == 2  # the second failure opened it; the third attempt failed fast
    assert 0 < info.value.retry_after <= 15
    assert breaker.state("m").state == "open"
    assert breaker.state("m").state == "open"


async def test_a_failed_stream_counts_and_a_closed_early_stream_does_not() -> None:
    clock = FakeClock(0.0)
    breaker = CircuitBreaker(min_calls=2, clock=clock)
    provider = ScriptedProvider(
        [
            Reply("a b c"),
            Reply("a b c"),
            Fail(ProviderError("cut"), after_chunks=1),
            Fail(ProviderError("cut"), after_chunks=1),
        ]
    )
    stack = Stack([breaker], provider)
    for _ in range(2):  # closed early: no verdict
        response = await stack(_request(stream=True))
        async for _chunk in response:
            break
        await response.aclose()
    assert breaker.state("m").calls == 0
    for _ in range(2):
        with pytest.raises(ProviderError):
            await (await stack(_request(stream=True))).result()
    assert breaker.state("m").state == "open"
    assert all(s.closed for s in provider.streams)


async def test_models_have_separate_circuits() -> None:
    breaker = CircuitBreaker(min_calls=1, clock=FakeClock())
    provider = ScriptedProvider([Fail(ProviderError("down")), Reply("b ok")])
    stack = Stack([breaker], provider)
    with pytest.raises(ProviderError):
        await stack(_request(model="a"))
    assert (await (await stack(_request(model="b"))).result()).content == "b ok"


def test_toml_parameters() -> None:
    stack = Stack.from_config(
        [{"use": "circuit_breaker", "failure_ratio": 0.3, "window_seconds": 60, "min_calls": 5, "open_seconds": 10}],
        ScriptedProvider(),
    )
    assert stack.layers[0].policy.failure_ratio == 0.3
    with pytest.raises(ConfigError):
        Stack.from_config([{"use": "circuit_breaker", "failure_ratio": 2}], ScriptedProvider())


async def test_half_open_lets_only_half_open_calls_trials_through_at_once() -> None:
    clock = FakeClock(0.0)
    breaker = CircuitBreaker(min_calls=2, open_seconds=15, half_open_calls=1, clock=clock)
    provider = ScriptedProvider([Fail(ProviderError("down")), Fail(ProviderError("down"))], default=Reply("trial ok"))
    release, decided = anyio.Event(), anyio.Event()
    rejected: list[CircuitOpen] = []

    def note_decision() -> None:
        if provider.calls + len(rejected) == 4:  # two failures, then both concurrent calls
            decided.set()

    async def slow(request: Request) -> Response:
        response = await provider(request)  # the call is recorded at once; the answer waits
        note_decision()
        await release.wait()
        return response

    stack = Stack([breaker], slow)
    for _ in range(2):  # the failures raise before the wait
        with pytest.raises(ProviderError):
            await stack(_request())
    assert breaker.state("m").state == "open"
    clock.advance(16)  # past open_seconds: half-open
    answers: list[str] = []

    async def call() -> None:
        try:
            answers.append((await (await stack(_request())).result()).content)
        except CircuitOpen as error:
            rejected.append(error)
            note_decision()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(call)
            group.start_soon(call)
            # Both calls have been decided (let through to the slow provider, or refused)
            # while the first trial is still in flight.
            await decided.wait()
            release.set()
    assert provider.calls == 3  # two failures that opened it, then exactly one trial
    assert len(rejected) == 1 and answers == ["trial ok"]
    assert breaker.state("m").state == "closed"


async def test_a_trial_stream_closed_before_reading_frees_its_trial() -> None:
    # Before closing an unread stream ran its wrappers' cleanup, such a trial stayed
    # taken for good and every later call failed fast with CircuitOpen.
    clock = FakeClock(0.0)
    breaker = CircuitBreaker(min_calls=2, open_seconds=15, half_open_calls=1, clock=clock)
    provider = ScriptedProvider([Fail(ProviderError("down")), Fail(ProviderError("down"))], default=Reply("ok"))
    stack = Stack([breaker], provider)
    for _ in range(2):
        with pytest.raises(ProviderError):
            await stack(_request(stream=True))
    clock.advance(16)  # half-open: one trial at a time
    async with await stack(_request(stream=True)):
        pass  # the caller went away before the first chunk
    assert breaker.state("m").state == "half_open"
    answer = await (await stack(_request(stream=True))).result()  # a new trial is let through
    assert answer.content == "ok" and breaker.state("m").state == "closed"
