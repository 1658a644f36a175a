"""onion.testing: prove properties of a stack's ordering with property tests.

- ``ScriptedProvider`` (``Reply``/``Fail`` script) and ``planned_provider`` (follows a
  ``FaultPlan``: which attempt fails how) as the innermost handler; ``FakeClock`` for
  every layer that waits or counts time; ``each_chunk`` for a test layer that checks
  every chunk as it passes.
- ``onion.testing.strategies``: hypothesis strategies for requests, stream chunkings,
  fault plans, PII values and constraint-respecting orderings of layers (import it
  only where hypothesis is installed).
- ``Probe``: builds your layers into a watched stack; each ``send`` returns an
  ``Observation`` (what the caller got, the trace, what each layer saw and answered).
- Laws (``NoProviderPII``, ``InputGuardBlocksBeforeCacheAndUpstream``,
  ``CacheServesOnlyCleanAnswers``, ``CountedOncePerMetricsLayer``,
  ``BoundedUpstreamCalls``, ``UpstreamStreamsClosed``, ``StreamMatchesComplete``)
  checked with ``check_laws`` / ``check_pair``; a broken law raises ``LawViolation``
  with the trace.
- ``law_status(stack)``: which laws hold by construction and which need a test.
- ``onion.testing.machine.StackMachine``: a stateful test base (needs hypothesis).
- ``FakeUpstream``: an OpenAI- and Anthropic-compatible upstream over real HTTP on a
  loopback port, with scripted faults (its own ``Fault`` lives in
  ``onion.testing.upstream``); loaded on first use.
- ``AnthropicUpstream``: a fake Anthropic Messages API over real HTTP that checks each
  request against the Messages schema (tool_use/tool_result pairing, roles, blocks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr
from ._clock import FakeClock
from ._scripted import Fail, Reply, ScriptedProvider, StreamRecord, each_chunk
from .construction import LawStatus, describe_law_status, law_status
from .faults import Cut, Fault, FaultPlan, Slow, Status, TimedOut, answer_for, planned_provider, split_at
from .laws import (
    DEFAULT_LAWS,
    BoundedUpstreamCalls,
    CacheServesOnlyCleanAnswers,
    CountedOncePerMetricsLayer,
    InputGuardBlocksBeforeCacheAndUpstream,
    Law,
    LawViolation,
    NoProviderPII,
    StreamMatchesComplete,
    UpstreamStreamsClosed,
    check_laws,
    check_pair,
)
from .probe import Observation, Outcome, Probe, Visit

if TYPE_CHECKING:
    # Static twins of the lazy names below (``X as X`` marks a re-export).
    from .anthropic_upstream import AnthropicUpstream as AnthropicUpstream
    from .upstream import FakeUpstream as FakeUpstream
    from .upstream import ThreadedServer as ThreadedServer
    from .upstream import UpstreamStats as UpstreamStats

_LAZY = {
    "AnthropicUpstream": "anthropic_upstream",
    "FakeUpstream": "upstream",
    "ThreadedServer": "upstream",
    "UpstreamStats": "upstream",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


__all__ = [
    "DEFAULT_LAWS",
    "BoundedUpstreamCalls",
    "CacheServesOnlyCleanAnswers",
    "CountedOncePerMetricsLayer",
    "Cut",
    "Fail",
    "FakeClock",
    "Fault",
    "FaultPlan",
    "InputGuardBlocksBeforeCacheAndUpstream",
    "Law",
    "LawStatus",
    "LawViolation",
    "NoProviderPII",
    "Observation",
    "Outcome",
    "Probe",
    "Reply",
    "ScriptedProvider",
    "Slow",
    "Status",
    "StreamMatchesComplete",
    "StreamRecord",
    "TimedOut",
    "UpstreamStreamsClosed",
    "Visit",
    "answer_for",
    "check_laws",
    "check_pair",
    "each_chunk",
    "describe_law_status",
    "law_status",
    "planned_provider",
    "split_at",
    *_LAZY,
]
