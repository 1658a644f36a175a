"""Laws: properties every well-ordered stack keeps, as reusable checks.

A law reads ``Observation``\\ s made by a ``Probe`` (what the caller got, the trace, what
each layer received and answered) and names layers only by the capabilities they
declare (``guard.input``, ``cache``, ``metrics``...), never by class, so the same laws
check a user's own stack of built-in and third-party layers. A broken law raises
``LawViolation`` (an ``AssertionError``) whose message holds the law, why it broke and
the observation's report with ``request.context.trace``; under hypothesis, the
falsifying example printed above it is the shrunk input.

::

    @given(request=chat_requests(), plan=fault_plans(["m"]))
    async def test_my_stack(request, plan):
        probe = Probe(my_layers(), handler=planned_provider(plan))
        observation = await probe.send(request)
        check_laws(DEFAULT_LAWS, observation, probe.observations)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from ..errors import GuardrailViolation
from .probe import Observation, Visit, provides

__all__ = [
    "BoundedUpstreamCalls",
    "CacheServesOnlyCleanAnswers",
    "CountedOncePerMetricsLayer",
    "DEFAULT_LAWS",
    "InputGuardBlocksBeforeCacheAndUpstream",
    "Law",
    "LawViolation",
    "NoProviderPII",
    "StreamMatchesComplete",
    "UpstreamStreamsClosed",
    "check_laws",
    "check_pair",
]


class LawViolation(AssertionError):
    """A law broke on an observation. ``str()`` is the full report."""

    def __init__(self, law: Law, why: str, observations: Sequence[Observation]) -> None:
        self.law = law
        self.why = why
        self.observations = list(observations)
        parts = [f"law broken: {law.name}: {law.statement}", f"why: {why}"]
        for observation in observations:
            parts.append(observation.report())
        super().__init__("\n".join(parts))


class Law:
    """One property. ``check`` returns ``None`` when it holds, else why it broke.

    ``history`` holds earlier observations of the same probe (oldest first), for laws
    about state carried between requests.
    """

    name: ClassVar[str] = "law"
    statement: ClassVar[str] = ""

    def check(self, observation: Observation, history: Sequence[Observation]) -> str | None:
        """Why ``observation`` breaks the law, or ``None``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoProviderPII(Law):
    """Personal data that the provider put in its answer never reaches the caller:
    neither in the text (streamed chunks included, even of an answer that later failed)
    nor in an error message. Values the caller sent in its own messages are exempt."""

    name = "no-provider-pii"
    statement = "no PII produced by the provider reaches the caller"

    def __init__(self, values: Iterable[str]) -> None:
        self.values = tuple(v for v in values if v)

    def check(self, observation: Observation, history: Sequence[Observation]) -> str | None:
        sent = " ".join(m.text for m in observation.request.messages)
        received = observation.outcome.text
        error = observation.outcome.error
        message = getattr(error, "public_message", "") if error is not None else ""
        for value in self.values:
            if value in sent:
                continue
            if value in received:
                return f"the caller received {value!r} in the answer text"
            if value in message:
                return f"the caller received {value!r} in an error message"
        return None

    def __repr__(self) -> str:
        return f"NoProviderPII({list(self.values)!r})"


class InputGuardBlocksBeforeCacheAndUpstream(Law):
    """A request that an input guard blocks is never sent upstream, never looked up in
    or stored by a cache, and never answered. "Blocks" is asked of the guard layers
    themselves (``Observation.input_blocked``), so a cache that answered before the guard
    was reached is caught too."""

    name = "input-guard-first"
    statement = "a request blocked by the input guard is never sent upstream nor cached"

    def check(self, observation: Observation, history: Sequence[Observation]) -> str | None:
        if not observation.input_blocked:
            return None
        if observation.upstream:
            return f"the blocked request reached the provider {len(observation.upstream)} time(s)"
        caches = observation.visits_to("cache")
        if caches:
            return f"the blocked request was seen by the cache layer {caches[0].name!r}"
        if observation.outcome.kind == "answer":
            return f"the blocked request was answered (served_by={observation.served_by!r})"
        return None


class CacheServesOnlyCleanAnswers(Law):
    """A cache answers only with a text that once came back to it whole: never one an
    output guard blocked, never the part of a stream that failed or was closed early."""

    name = "cache-clean"
    statement = "a cached answer is never one a guard blocked or that failed mid-stream"

    def check(self, observation: Observation, history: Sequence[Observation]) -> str | None:
        for visit in observation.visits_to("cache"):
            if not visit.answered_early or visit.outcome.kind != "answer":
                continue
            text = visit.outcome.text
            if text in _blocked_texts(history):
                return f"the cache layer {visit.name!r} served {text[:60]!r}, which an output guard blocked before"
            if text not in _clean_texts(history, visit.index):
                return (
                    f"the cache layer {visit.name!r} served {text[:60]!r}, which never came back to it whole "
                    "(a cut or unfinished stream)"
                )
        return None


def _clean_texts(history: Sequence[Observation], index: int) -> set[str]:
    return {
        outcome.text
        for observation in history
        for visit in observation.visits
        if visit.index == index
        for outcome in visit.inner
        if outcome.kind == "answer"
    }


def _blocked_texts(history: Sequence[Observation]) -> set[str]:
    texts: set[str] = set()
    for observation in history:
        for visit in observation.visits_to("guard.output"):
            error = visit.outcome.error
            if isinstance(error, GuardrailViolation) and error.stage == "output":
                texts.update(outcome.text for outcome in visit.inner if outcome.kind == "answer")
    return texts


class CountedOncePerMetricsLayer(Law):
    """Each metrics layer sees every request exactly once, to its end: not once per
    retry attempt, and not zero times because an inner layer answered early."""

    name = "metrics-once"
    statement = "each request is counted exactly once per metrics layer"

    def __init__(self, capability: str = "metrics") -> None:
        self.capability = capability

    def check(self, observation: Observation, history: Sequence[Observation]) -> str | None:
        names = _layers_providing(observation, self.capability)
        if not names:
            return None
        seen: dict[int, list[Visit]] = {}
        for visit in observation.visits_to(self.capability):
            seen.setdefault(visit.index, []).append(visit)
        for index, name in names.items():
            visits = seen.get(index, [])
            if len(visits) != 1:
                return f"the metrics layer {name!r} saw the request {len(visits)} time(s)"
            if visits[0].outcome.kind == "pending":
                return f"the metrics layer {name!r} never saw the request end"
        return None


def _layers_providing(observation: Observation, capability: str) -> dict[int, str]:
    pairs = zip(observation.layer_names, observation.layer_provides, strict=True)
    return {index: name for index, (name, caps) in enumerate(pairs) if provides(caps, capability)}


class BoundedUpstreamCalls(Law):
    """The provider is called at most ``attempts x models`` times for one request."""

    name = "bounded-calls"
    statement = "the provider is called at most attempts x models times"

    def __init__(self, attempts: int, models: int = 1) -> None:
        self.attempts = attempts
        self.models = models

    def check(self, observation: Observation, history: Sequence[Observation]) -> str | None:
        bound = self.attempts * self.models
        if len(observation.upstream) > bound:
            return f"{len(observation.upstream)} upstream calls, more than {self.attempts} x {self.models} = {bound}"
        return None

    def __repr__(self) -> str:
        return f"BoundedUpstreamCalls(attempts={self.attempts}, models={self.models})"


class UpstreamStreamsClosed(Law):
    """Every stream the provider opened ended or was closed by the time the caller was
    done: no upstream connection is left open."""

    name = "streams-closed"
    statement = "every upstream stream is closed when the caller is done"

    def check(self, observation: Observation, history: Sequence[Observation]) -> str | None:
        for visit in observation.visits:
            if visit.index == len(observation.layer_names) and visit.outcome.kind == "pending":
                return "an upstream stream was left open (never read to its end, never closed)"
        return None


class StreamMatchesComplete(Law):
    """The same request, complete and streamed, ends with the same text when both
    succeed from the same model (checked on a pair with ``check_pair``). Different
    models may answer the two: a breaker that opened for the first call and closed
    again before the second sends one to the fallback and lets the other through."""

    name = "stream-equals-complete"
    statement = "a stream and a complete call of the same request give the same final text"

    def check(self, observation: Observation, history: Sequence[Observation]) -> str | None:
        return None

    def check_pair(self, complete: Observation, streamed: Observation) -> str | None:
        """Why the pair breaks the law, or ``None``."""
        if complete.outcome.kind != "answer" or streamed.outcome.kind != "answer":
            return None
        if complete.model and streamed.model and complete.model != streamed.model:
            return None  # different models answered: their texts need not agree
        if complete.outcome.text != streamed.outcome.text:
            return f"complete gave {complete.outcome.text[:80]!r}, the stream gave {streamed.outcome.text[:80]!r}"
        return None


DEFAULT_LAWS: tuple[Law, ...] = (
    InputGuardBlocksBeforeCacheAndUpstream(),
    CacheServesOnlyCleanAnswers(),
    CountedOncePerMetricsLayer(),
    UpstreamStreamsClosed(),
)
"""The laws that need no parameters (add ``NoProviderPII`` and ``BoundedUpstreamCalls``
with your values)."""


def check_laws(laws: Iterable[Law], observation: Observation, history: Sequence[Observation] = ()) -> None:
    """Raise ``LawViolation`` for the first law ``observation`` breaks.

    ``history`` may include ``observation`` itself (a probe's ``observations`` list); only
    the observations before it count as history.
    """
    earlier = [o for o in history if o is not observation]
    for law in laws:
        why = law.check(observation, earlier)
        if why is not None:
            raise LawViolation(law, why, [observation])


def check_pair(complete: Observation, streamed: Observation, law: StreamMatchesComplete | None = None) -> None:
    """Raise ``LawViolation`` if the complete and streamed calls of one request disagree."""
    law = law or StreamMatchesComplete()
    why = law.check_pair(complete, streamed)
    if why is not None:
        raise LawViolation(law, why, [complete, streamed])
