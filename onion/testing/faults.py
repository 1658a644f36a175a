"""Fault plans: which upstream attempt fails, and how, for the scripted provider.

A ``FaultPlan`` says, per model, what happens on its 1st, 2nd, ... attempt: an HTTP
error status, a timeout, a stream cut after some chunks, or extra latency; attempts past
the plan answer normally. ``planned_provider(plan)`` is a ``ScriptedProvider`` (the
innermost handler of a stack under test) that follows it, answering each request with a
text that depends only on the request's model and messages, so a retried, cached,
streamed or complete call of the same request can be compared.

::

    plan = FaultPlan({"gpt-4o": (Status(503), Cut(after_chunks=2))})
    provider = planned_provider(plan, clock=FakeClock())
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Literal

import msgspec

from .._clock import Clock
from .._types import Request
from ..errors import ProviderError
from ._scripted import Fail, Reply, ScriptedProvider, Step

__all__ = [
    "Cut",
    "Fault",
    "FaultPlan",
    "Slow",
    "Status",
    "TimedOut",
    "answer_for",
    "planned_provider",
    "split_at",
]

# The statuses an OpenAI-compatible upstream answers with when trying again may help.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})

_WORDS = tuple(
    [
        "the",
        "onion",
        "keeps",
        "every",
        "layer",
        "small",
        "and",
        "every",
        "order",
        "explicit",
        "so",
        "a",
        "stack",
        "can",
        "be",
        "read",
        "tested",
        "and",
        "changed",
        "without",
        "surprises",
        "when",
        "the",
        "upstream",
        "fails",
        "or",
        "answers",
        "slowly",
    ]
)


class Status(msgspec.Struct, frozen=True, tag=True):
    """The attempt fails at once with this HTTP status (and ``Retry-After``, if given)."""

    status: int = 503
    retry_after: float | None = None


class TimedOut(msgspec.Struct, frozen=True, tag=True):
    """The upstream stays silent for ``after`` seconds, then the connection times out."""

    after: float = 30.0


class Cut(msgspec.Struct, frozen=True, tag=True):
    """A stream is cut after ``after_chunks`` chunks went out; a complete call fails at once
    (its body never fully arrives)."""

    after_chunks: int = 1


class Slow(msgspec.Struct, frozen=True, tag=True):
    """The attempt answers normally, ``seconds`` late (before its first chunk)."""

    seconds: float = 1.0


Fault = Status | TimedOut | Cut | Slow
"""One attempt's misfortune."""


class FaultPlan(msgspec.Struct, frozen=True):
    """Per model, the fault of each attempt in order (``None``: that attempt answers).

    ``per="request"`` counts attempts separately for each request (a retry of request A
    sees A's 2nd attempt); ``per="run"`` counts every call to the model since the
    provider was made (what a circuit breaker or rate window sees).
    """

    faults: dict[str, tuple[Fault | None, ...]] = {}
    per: Literal["request", "run"] = "request"

    def fault_for(self, model: str, attempt: int) -> Fault | None:
        """The fault of ``model``'s attempt number ``attempt`` (0-based), if any."""
        plan = self.faults.get(model, ())
        return plan[attempt] if attempt < len(plan) else None

    def failing_attempts(self, model: str) -> int:
        """How many planned attempts of ``model`` fail (latency alone is not a failure)."""
        return sum(1 for f in self.faults.get(model, ()) if f is not None and not isinstance(f, Slow))


def split_at(text: str, cuts: Sequence[int]) -> tuple[str, ...]:
    """``text`` split at the given character offsets (clamped, sorted): stream chunks."""
    points = sorted({max(0, min(len(text), c)) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(text[start:point])
        start = point
    pieces.append(text[start:])
    return tuple(pieces)


def answer_for(request: Request) -> Reply:
    """The default answer: words chosen by a hash of the model and the messages.

    It never depends on ``stream``, the request id or the attempt, so every call of the
    same request gets the same text.
    """
    digest = hashlib.blake2b(request.model.encode(), digest_size=8)
    for message in request.messages:
        digest.update(message.role.encode())
        digest.update(message.text.encode("utf-8", "surrogatepass"))
    seed = int.from_bytes(digest.digest(), "big")
    count = 3 + seed % 9
    words = [_WORDS[(seed >> (i * 5)) % len(_WORDS)] for i in range(count)]
    return Reply(f"{seed % 997}: " + " ".join(words) + ".")


def _timeout_error() -> ProviderError:
    return ProviderError("upstream read timed out (planned fault)", upstream_status=None, retryable=True)


def _cut_error() -> ProviderError:
    return ProviderError("upstream stream cut (planned fault)", upstream_status=None, retryable=True)


def fault_step(fault: Fault | None, reply: Reply) -> Step:
    """The scripted-provider step that plays ``fault`` on an attempt whose answer is ``reply``."""
    if fault is None:
        return reply
    if isinstance(fault, Slow):
        return msgspec.structs.replace(reply, first_delay=reply.first_delay + fault.seconds)
    if isinstance(fault, Status):
        error = ProviderError(
            f"upstream answered HTTP {fault.status} (planned fault)",
            upstream_status=fault.status,
            retryable=fault.status in RETRYABLE_STATUSES,
            retry_after=fault.retry_after,
        )
        return Fail(error)
    if isinstance(fault, TimedOut):
        return Fail(_timeout_error(), delay=fault.after)
    return Fail(_cut_error(), after_chunks=fault.after_chunks, reply=reply)


def plan_script(plan: FaultPlan, answer: Callable[[Request], Reply] = answer_for) -> Callable[[Request, int], Step]:
    """A ``ScriptedProvider`` script function that follows ``plan``."""
    attempts: dict[tuple[str, str], int] = {}

    def script(request: Request, index: int) -> Step:
        scope = request.context.request_id if plan.per == "request" else ""
        key = (scope, request.model)
        attempt = attempts.get(key, 0)
        attempts[key] = attempt + 1
        return fault_step(plan.fault_for(request.model, attempt), answer(request))

    return script


def planned_provider(
    plan: FaultPlan | None = None,
    *,
    answer: Callable[[Request], Reply] = answer_for,
    clock: Clock | None = None,
    name: str = "scripted",
    chunk_cuts: Sequence[int] | None = None,
) -> ScriptedProvider:
    """A ``ScriptedProvider`` that follows ``plan`` and answers with ``answer(request)``.

    ``chunk_cuts`` (character offsets) makes every streamed answer break at those
    positions instead of after each word, so chunk boundaries can fall anywhere.
    Delays sleep on ``clock`` when given (a ``FakeClock`` makes them instant).
    """
    if chunk_cuts is not None:
        cuts = tuple(chunk_cuts)
        base = answer

        def answer(request: Request) -> Reply:
            reply = base(request)
            return msgspec.structs.replace(reply, chunks=split_at(reply.text, cuts))

    return ScriptedProvider(plan_script(plan or FaultPlan(), answer), name=name, clock=clock)
