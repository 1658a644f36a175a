"""How the semantic cache learns whether its hits are right, off the request's path.

Two sources of verified outcomes feed ``thresholds.AdaptiveThresholds``:

- **Exploration** (always on with a bound): a candidate the bound does not yet allow
  is answered by the upstream like a miss; when that answer ends cleanly, it is judged
  against the candidate's stored answer (``Judge``) and the outcome recorded. The
  request waits for nothing extra: the upstream call was needed anyway, and the
  judgement runs in the answer's end hook.
- **Shadow checks** of sampled hits: a served hit is, with probability
  ``verify_rate``, put on a bounded queue (``ShadowChecks``; when full, the check is
  dropped and counted, never waited for). ``run_verifier`` drains it: it re-asks the
  upstream and judges. It must run in a task group that outlives requests, which only
  the host has: ``onion serve``'s lifespan or, in-process,
  ``async with anyio.create_task_group() as tg: tg.start_soon(cache.run_verifier)``.
  Without one, checks stay queued (at most ``max_pending``) and exploration alone
  teaches the cache. The verifier works alike on asyncio and trio (anyio only).

``Judge``: two answers are the same if their texts are equal after folding case and
whitespace, or if their embeddings (the cache's own embedder) are at least
``answer_similarity`` apart in cosine.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Awaitable, Callable

import anyio
import msgspec
import numpy as np

from onion import CallNext, Completion, Request

from .embedders import Embedder

__all__ = ["Judge", "ShadowCheck", "ShadowChecks"]


class ShadowCheck(msgspec.Struct, frozen=True):
    """A served hit to check: the request and the handler inside the cache (to re-ask),
    the entry it was served from, at what similarity, and the answer it got."""

    request: Request
    call_next: CallNext
    key: str
    similarity: float
    served: Completion
    stratum: str = ""


def _folded(completion: Completion) -> str:
    return " ".join((completion.content or "").casefold().split())


class Judge:
    """Were two answers the same? Exact (folded) text, else embedding similarity."""

    def __init__(self, embedder: Embedder, answer_similarity: float) -> None:
        self.embedder = embedder
        self.answer_similarity = answer_similarity

    async def same(self, stored: Completion, fresh: Completion) -> bool:
        """True if ``fresh`` says what ``stored`` said."""
        a, b = _folded(stored), _folded(fresh)
        if a == b:
            return True
        if not a or not b:
            return False
        try:
            vectors = np.asarray(await self.embedder.embed([a, b]), dtype=np.float32)
        except Exception:
            return False  # cannot tell: count it as wrong, which only raises thresholds
        norms = np.linalg.norm(vectors, axis=1)
        if not norms.all():
            return False
        return float(vectors[0] @ vectors[1] / (norms[0] * norms[1])) >= self.answer_similarity


class ShadowChecks:
    """A bounded queue of sampled hits to re-ask upstream, and its verifier loop."""

    def __init__(self, verify_rate: float, max_pending: int, *, rng: random.Random | None = None) -> None:
        self.verify_rate = verify_rate
        self.pending: deque[ShadowCheck] = deque()
        self.max_pending = max_pending
        self.dropped = 0
        self.done = 0
        self.running = False
        self._rng = rng or random.Random()
        self._wake: anyio.Event | None = None  # made by run(): an event needs a running loop

    def offer(self, check: ShadowCheck) -> None:
        """Queue ``check`` with probability ``verify_rate`` (dropped if the queue is full)."""
        if self.verify_rate <= 0 or self._rng.random() >= self.verify_rate:
            return
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return
        self.pending.append(check)
        if self._wake is not None:
            self._wake.set()

    async def run(
        self,
        ask: Callable[[ShadowCheck], Awaitable[Completion | None]],
        learn: Callable[[ShadowCheck, Completion], Awaitable[None]],
    ) -> None:
        """Forever: take a queued check, ``ask`` upstream, ``learn`` from the answer.
        A failed or empty upstream answer teaches nothing."""
        self.running = True
        try:
            while True:
                if not self.pending:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                    continue
                check = self.pending.popleft()
                fresh = await ask(check)
                if fresh is not None:
                    await learn(check, fresh)
                    self.done += 1
        finally:
            self.running = False
