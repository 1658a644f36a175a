"""A base for stateful property tests of one stack across many requests.

``StackMachine`` is a hypothesis ``RuleBasedStateMachine``: hypothesis sends a drawn
sequence of requests (complete, streamed, streams closed early), lets fake time pass,
and after every step checks the laws on what happened; a failure shrinks to the
shortest sequence and reports the trace. State that builds up across requests (a cache
filling, a breaker opening, a rate window running out) is what it is for.

The stack runs on one event loop for the whole run (a blocking portal in a thread),
so layers may keep loop-bound state between requests. Subclass it::

    class CachedStack(StackMachine):
        laws = DEFAULT_LAWS

        def make_probe(self) -> Probe:
            return Probe([InputGuard(...), ExactCache(clock=self.clock)], planned_provider(clock=self.clock))

    TestCachedStack = CachedStack.TestCase
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec
from anyio.from_thread import start_blocking_portal
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from .._types import Request
from ._clock import FakeClock
from .laws import Law, StreamMatchesComplete, check_laws, check_pair
from .probe import Observation, Probe
from .strategies import chat_requests

__all__ = ["StackMachine"]


class StackMachine(RuleBasedStateMachine):
    """Sends requests through ``make_probe()``'s stack and checks ``laws`` after each.

    Override ``make_probe`` (required) and, as needed, ``requests`` (the strategy of
    requests; its small default makes repeats, and so cache hits, likely), ``laws``,
    ``backend`` (``"asyncio"`` or ``"trio"``). ``self.clock`` is a ``FakeClock`` to give
    the layers; the ``wait`` rule moves it forward. Add your own ``@rule``\\ s and
    ``@invariant``\\ s; ``self.send(request)`` runs one request.
    """

    laws: ClassVar[Sequence[Law]] = ()
    backend: ClassVar[str] = "asyncio"
    max_wait: ClassVar[float] = 120.0

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = start_blocking_portal(self.backend)
        self.portal = self._portal_cm.__enter__()
        self.clock = FakeClock()
        self.probe = self.make_probe()

    def make_probe(self) -> Probe:
        """The stack under test, built fresh for each run."""
        raise NotImplementedError

    def requests(self) -> st.SearchStrategy[Request]:
        """Requests to send: few distinct ones, so state (caches, limits) is exercised."""
        return chat_requests(max_messages=1, user_texts=st.sampled_from(["hi", "what is an onion?", "tell me more"]))

    def send(self, request: Request, *, read: int | None = None) -> Observation:
        """Run one request on the machine's event loop and check the laws on it."""
        observation = self.portal.call(lambda: self.probe.send(request, read=read))
        check_laws(self.laws, observation, self.probe.observations)
        _note(observation)
        return observation

    @rule(data=st.data())
    def send_request(self, data: Any) -> None:
        """Send a drawn request and read the whole answer."""
        self.send(data.draw(self.requests(), label="request"))

    @rule(data=st.data(), read=st.integers(0, 3))
    def close_stream_early(self, data: Any, read: int) -> None:
        """Stream a drawn request and close it after ``read`` chunks."""
        request = data.draw(self.requests(), label="request")
        self.send(msgspec.structs.replace(request, stream=True), read=read)

    @rule(data=st.data())
    def same_request_both_ways(self, data: Any) -> None:
        """Send a drawn request complete and streamed; both must end with the same text."""
        request = data.draw(self.requests(), label="request")
        complete, streamed = self.portal.call(lambda: self.probe.send_both(request))
        for observation in (complete, streamed):
            check_laws(self.laws, observation, self.probe.observations)
            _note(observation)
        if any(isinstance(law, StreamMatchesComplete) for law in self.laws):
            check_pair(complete, streamed)

    @rule(seconds=st.floats(0.0, 1.0) | st.floats(1.0, 600.0))
    def wait(self, seconds: float) -> None:
        """Let fake time pass (TTLs expire, windows refill, breakers half-open)."""
        self.clock.advance(min(seconds, self.max_wait))

    def teardown(self) -> None:
        """Stop the event loop thread."""
        self._portal_cm.__exit__(None, None, None)


def _note(observation: Observation) -> None:
    # Shown by ``--hypothesis-show-statistics``: how often each kind of ending happened.
    outcome = observation.outcome
    detail = type(outcome.error).__name__ if outcome.error is not None else observation.served_by
    event(f"{outcome.kind}: {detail}")
