"""``circuit_breaker``: stop calling a model that keeps failing, then probe it.

Sits inside ``retry`` (a retry sees ``CircuitOpen`` and stops) and inside ``fallback``
(which moves to the next model at once). One breaker per model name:

::

    closed ──(failure ratio >= threshold over the window, with >= min_calls)──▶ open
    open ──(open_seconds passed)──▶ half_open
    half_open ──(trial call succeeds)──▶ closed       (window cleared)
    half_open ──(trial call fails)──▶ open             (for open_seconds again)

While open, calls fail fast with ``CircuitOpen`` (nothing is sent; ``retry_after`` says
when a trial is allowed). Half-open lets ``half_open_calls`` trial calls through at a
time. What counts as a failure is a set of failure classes (``failure_on``, see
``onion.failure_class``): by default everything that hurts callers — upstream errors,
429s, connection errors, timeouts of any phase (a silent first chunk, a stall, an
attempt or total deadline), cut and malformed streams. The request's own faults (a
content-filter, context-length or other 400, a guard block) count as neither failure
nor success. Optionally, slow calls count too (as Resilience4j): with
``slow_call_seconds`` set, a call that succeeds but took longer (to its first chunk, for
a stream) is slow, and the circuit opens when ``slow_call_ratio`` of the window's calls
were slow. A stream's outcome is known when it ends; a stream the caller closed early,
or a call cancelled because the client left, counts as neither.

The breaker is keyed per model name. Per deployment (several providers serving one
model) the router's outlier ejection does the same job below it.

State is observable: ``breaker.state(model)``, and ``on_transition(model, old, new)``
is called on every change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import msgspec
import structlog

from onion import (
    UPSTREAM_FAILURES,
    AnswerEnd,
    CallNext,
    CircuitOpen,
    Clock,
    Layer,
    Order,
    Request,
    Response,
    SystemClock,
    failure_class,
    failure_classes,
    system_clock,
)

__all__ = ["DEFAULT_FAILURE_ON", "BreakerPolicy", "BreakerState", "CircuitBreaker", "State"]

_log = structlog.get_logger("onion.circuit_breaker")

State = Literal["closed", "open", "half_open"]


class BreakerPolicy(msgspec.Struct, frozen=True):
    """When to open and for how long (defaults follow the issue's TOML names)."""

    failure_ratio: float = 0.5
    window_seconds: float = 30.0
    min_calls: int = 10
    open_seconds: float = 15.0
    half_open_calls: int = 1
    slow_call_seconds: float | None = None
    slow_call_ratio: float = 1.0
    failure_on: frozenset[str] = frozenset()  # empty: DEFAULT_FAILURE_ON


class BreakerState(msgspec.Struct):
    """What one model's breaker knows right now (a copy; changing it changes nothing)."""

    state: State
    calls: int
    failures: int
    opened_at: float | None = None
    slow: int = 0


DEFAULT_FAILURE_ON = UPSTREAM_FAILURES | {"upstream_auth"}
"""Failure classes the breaker counts as failures by default."""


class _Circuit:
    """One model's breaker: bucketed counts over the window and the state machine."""

    __slots__ = ("_calls", "_failures", "_slot", "_slow", "opened_at", "state", "trials")

    def __init__(self, buckets: int) -> None:
        self.state: State = "closed"
        self.opened_at = 0.0
        self.trials = 0
        self._calls = [0] * buckets
        self._failures = [0] * buckets
        self._slow = [0] * buckets
        self._slot = -1

    def totals(self, slot: int) -> tuple[int, int, int]:
        self._slide(slot)
        return sum(self._calls), sum(self._failures), sum(self._slow)

    def record(self, slot: int, failed: bool, slow: bool = False) -> None:
        index = self._slide(slot)
        self._calls[index] += 1
        if failed:
            self._failures[index] += 1
        if slow:
            self._slow[index] += 1

    def clear(self) -> None:
        for i in range(len(self._calls)):
            self._calls[i] = self._failures[i] = self._slow[i] = 0

    def _slide(self, slot: int) -> int:
        size = len(self._calls)
        if slot == self._slot:  # still in the current bucket: nothing slid out
            return slot % size
        if self._slot < 0:
            self._slot = slot
        for stale in range(self._slot + 1, min(slot, self._slot + size) + 1):
            self._calls[stale % size] = self._failures[stale % size] = self._slow[stale % size] = 0
        self._slot = max(self._slot, slot)
        return self._slot % size


class CircuitBreaker(Layer):
    """Fail fast with ``CircuitOpen`` for a model whose recent calls mostly failed.

    TOML: ``failure_ratio``, ``window_seconds``, ``min_calls``, ``open_seconds``,
    ``half_open_calls``, ``slow_call_seconds``, ``slow_call_ratio``, ``failure_on``
    (failure classes counted as failures). In code: ``policy=BreakerPolicy(...)``, ``clock``, and
    ``on_transition(model, old_state, new_state)``.
    """

    name = "circuit_breaker"
    provides = frozenset({"circuit_breaker"})
    short_circuit = "the model's circuit is open (CircuitOpen, nothing sent upstream)"
    ordering = (Order("fallback", "inside", "an open circuit must let the fallback chain move to the next model"),)

    _BUCKETS = 10

    def __init__(
        self,
        failure_ratio: float = 0.5,
        window_seconds: float = 30.0,
        min_calls: int = 10,
        open_seconds: float = 15.0,
        half_open_calls: int = 1,
        slow_call_seconds: float | None = None,
        slow_call_ratio: float = 1.0,
        failure_on: list[str] | None = None,
        *,
        policy: BreakerPolicy | None = None,
        clock: Clock | None = None,
        on_transition: Callable[[str, State, State], object] | None = None,
    ) -> None:
        policy = policy or BreakerPolicy(
            failure_ratio,
            window_seconds,
            min_calls,
            open_seconds,
            half_open_calls,
            slow_call_seconds,
            slow_call_ratio,
            failure_classes(failure_on or (), "failure_on"),
        )
        if policy.slow_call_seconds is not None and policy.slow_call_seconds <= 0:
            raise ValueError("slow_call_seconds must be positive")
        if not 0 < policy.slow_call_ratio <= 1:
            raise ValueError("slow_call_ratio must be in (0, 1]")
        self.failure_on = failure_classes(policy.failure_on, "failure_on") or DEFAULT_FAILURE_ON
        if not 0 < policy.failure_ratio <= 1:
            raise ValueError("failure_ratio must be in (0, 1]")
        if policy.window_seconds <= 0 or policy.open_seconds < 0 or policy.min_calls < 1 or policy.half_open_calls < 1:
            raise ValueError("window_seconds, min_calls and half_open_calls must be positive")
        self.policy = policy
        self.clock = clock or system_clock
        # The same reading as system_clock.now without its Python frame: a stream's watch
        # reads the clock twice per chunk.
        self._now = time.monotonic if type(self.clock) is SystemClock else self.clock.now
        self.on_transition = on_transition
        self._slot_seconds = policy.window_seconds / self._BUCKETS
        self._circuits: dict[str, _Circuit] = {}

    def state(self, model: str) -> BreakerState:
        """The breaker of ``model`` as it is now (``open`` turns ``half_open`` on read)."""
        circuit = self._circuits.get(model)
        if circuit is None:
            return BreakerState("closed", 0, 0)
        now = self.clock.now()
        self._maybe_half_open(model, circuit, now)
        calls, failures, slow = circuit.totals(int(now // self._slot_seconds))
        opened = circuit.opened_at if circuit.state != "closed" else None
        return BreakerState(circuit.state, calls, failures, opened, slow)

    def acts_on(self) -> str:
        """The failure classes this breaker counts, for ``onion check``."""
        text = "counts as failures: " + ", ".join(sorted(self.failure_on))
        if self.policy.slow_call_seconds is not None:
            text += f"; slow calls over {self.policy.slow_call_seconds:g} s"
        return text + " (per model; per deployment: the router's ejection)"

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        model = request.model
        circuit = self._circuits.get(model)
        if circuit is None:
            circuit = self._circuits[model] = _Circuit(self._BUCKETS)
        # A closed circuit admits every call and reads no clock to do so.
        trial = circuit.state != "closed" and self._admit(model, circuit)
        now = self._now
        slow_limit = self.policy.slow_call_seconds
        # Only a slow-call verdict needs when the call began.
        start = now() if slow_limit is not None else 0.0
        try:
            response = await call_next(request)
        except BaseException as error:
            # A cancellation (the client left, a shutdown) is no verdict on the model: it
            # frees a trial slot without closing the circuit and counts in no window.
            failure = error if isinstance(error, Exception) else None
            self._finish(model, circuit, trial, failure, ended=failure is not None)
            raise
        if response.completion is not None and slow_limit is None:
            # A complete answer has ended, cleanly: the verdict ``_ended`` would give,
            # without a callback and its end record per call.
            if trial or circuit.state != "closed":
                self._finish(model, circuit, trial, None, ended=True)
            else:
                # ``_finish``'s verdict on a success in a closed circuit: one call counted.
                circuit.record(int(now() // self._slot_seconds), False)
            return response
        # The verdict needs how and when the answer ended, never its text.
        return await response.on_end(
            lambda end: self._ended(model, circuit, trial, end, start), now=now, content=False, held=False
        )

    def _ended(self, model: str, circuit: _Circuit, trial: bool, end: AnswerEnd, start: float) -> None:
        # A consumer that stopped early gives no verdict; a failure that is not an
        # Exception (a KeyboardInterrupt) neither.
        error = end.error if isinstance(end.error, Exception) else None
        limit = self.policy.slow_call_seconds
        slow = False
        if limit is not None and error is None:
            answered = end.first_chunk_at if end.first_chunk_at is not None else end.ended_at
            slow = answered - start > limit
        ended = not end.cancelled and (end.error is None or error is not None)
        self._finish(model, circuit, trial, error, ended=ended, slow=slow)

    def _admit(self, model: str, circuit: _Circuit) -> bool:
        """Let the call through (returns whether it is a half-open trial) or raise."""
        now = self.clock.now()
        self._maybe_half_open(model, circuit, now)
        if circuit.state == "closed":
            return False
        if circuit.state == "half_open" and circuit.trials < self.policy.half_open_calls:
            circuit.trials += 1
            return True
        wait = circuit.opened_at + self.policy.open_seconds - now
        raise CircuitOpen(f"circuit for {model!r} is {circuit.state}", model=model, retry_after=max(wait, 0.0))

    def _maybe_half_open(self, model: str, circuit: _Circuit, now: float) -> None:
        if circuit.state == "open" and now >= circuit.opened_at + self.policy.open_seconds:
            circuit.trials = 0
            self._move(model, circuit, "half_open")

    def _finish(
        self, model: str, circuit: _Circuit, trial: bool, error: Exception | None, *, ended: bool, slow: bool = False
    ) -> None:
        """Record an outcome. ``ended=False``: the caller stopped early (no verdict)."""
        failed = error is not None and failure_class(error) in self.failure_on
        neutral = not ended or (error is not None and not failed)
        if trial:
            circuit.trials = max(0, circuit.trials - 1)
            if circuit.state == "half_open" and not neutral:
                if failed or slow:
                    self._open(model, circuit)
                else:
                    circuit.clear()
                    self._move(model, circuit, "closed")
            return
        if neutral or circuit.state != "closed":
            return
        slot = int(self._now() // self._slot_seconds)
        circuit.record(slot, failed, slow)
        if failed or slow:
            calls, failures, slowed = circuit.totals(slot)
            policy = self.policy
            if calls >= policy.min_calls and (
                failures >= policy.failure_ratio * calls or (slow and slowed >= policy.slow_call_ratio * calls)
            ):
                self._open(model, circuit)

    def _open(self, model: str, circuit: _Circuit) -> None:
        circuit.opened_at = self.clock.now()
        circuit.clear()
        self._move(model, circuit, "open")

    def _move(self, model: str, circuit: _Circuit, new: State) -> None:
        old, circuit.state = circuit.state, new
        if old == new:
            return
        # Transitions are rare and operators want them: opening is a warning.
        (_log.warning if new == "open" else _log.info)("circuit state changed", model=model, old=old, new=new)
        if self.on_transition is not None:
            self.on_transition(model, old, new)
