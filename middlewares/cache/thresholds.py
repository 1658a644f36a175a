"""Per-entry adaptive thresholds with a bound on the semantic cache's wrong-hit rate.

In the spirit of vCache (per-entry learned thresholds under a user-defined error
bound): instead of one global similarity threshold, the cache learns from **verified
outcomes** which similarities it may serve. An outcome is ``(entry, similarity,
correct)``: a request whose nearest entry was at ``similarity`` did (or did not) get
the answer that entry holds. Outcomes come from two places (``verification``):

- **exploration**: a candidate the bound does not yet allow is treated as a miss; the
  upstream answers anyway, and that fresh answer is compared with the entry's — a label
  at no extra upstream cost;
- **shadow checks** of a small sample of served hits, when a verifier task runs.

The decision for a candidate at similarity ``s`` to entry ``e``:

1. the **pooled** outcomes of all entries at similarity ``>= s`` must bound the
   wrong-hit rate: the upper confidence bound (Wilson, ``z``) of ``wrong / n`` is at
   most ``max_wrong_hit_rate``; the lowest such ``s`` is the global threshold, kept
   up to date as outcomes arrive (a scan of 100 bins);
2. the entry's **own** outcomes raise its threshold above the highest similarity at
   which it was wrong (plus ``margin``). They never lower it below the pooled one: an
   entry sees too few outcomes of its own to bound a rate of 1 % (that takes hundreds),
   and lowering per entry on a handful of right answers was measured to let wrong hits
   through (23 % in Japanese on the adversarial set).

Pooled outcomes are kept per **stratum**, a coarse class of the question the caller
names (the semantic cache uses the script: CJK or not), because an embedder's scale
differs between languages: MiniLM ranks Japanese hard negatives as high as English
paraphrases, and one threshold would let Japanese wrong outcomes close English hits.
So each stratum has its own threshold. What the bound holds for (``holds_for``):

- ``"cache"`` (the default): the wrong-hit rate of the cache's hits as a whole, as
  vCache's bound does. The thresholds of two strata are chosen together: the outcomes
  at or above each stratum's threshold, pooled, must hold the bound (Wilson), and the
  most outcomes are served. A stratum is only opened where its **own** outcomes there
  are at least ``min_stratum_outcomes`` and their measured rate is within the bound:
  it borrows the other stratum's confidence, never its error rate. (More than two
  strata with outcomes: each holds the bound alone, as below.)
- ``"stratum"``: each stratum alone holds the bound with confidence.

Why that matters: with no wrong outcome, the Wilson bound at ``z = 1.64`` falls to
``max_wrong_hit_rate = 0.01`` only at ``n >= z**2 (1 - 0.01) / 0.01``, about 266
outcomes (the exact one-sided binomial bound needs ``ln(1 / 0.05) / 0.01``, about 300).
A stratum seeing a tenth of the traffic gathers that ten times later, and on the
adversarial benchmark Japanese never does. Pooled, a Japanese stratum with 30 clean
outcomes at its threshold opens once the cache's outcomes hold the bound. The price,
said plainly: per stratum the rate is then a measurement, not a bound (a stratum
whose true rate were 5 % would show 30 clean outcomes with probability 0.95**30,
about 21 %); the bound with its confidence is on the cache's hits. Its own wrong
outcomes close a stratum at once (its measured rate must stay within the bound).

``decide`` answers ``SERVE``, ``EXPLORE`` (go upstream, then record the outcome) or
``MISS`` (below ``floor``: not worth a label). With no outcomes yet, nothing is served:
a bound that has not been measured does not hold. Outcomes are kept per process.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Literal

import msgspec
import numpy as np

__all__ = ["EXPLORE", "MISS", "SERVE", "AdaptiveThresholds", "EntryOutcomes", "WrongHitBound", "wilson_upper"]

SERVE, EXPLORE, MISS = "serve", "explore", "miss"
_BINS = 100  # similarity bins of width 0.01 over [0, 1]


class WrongHitBound(msgspec.Struct, frozen=True):
    """The bound and how it is learned (a policy object, as Tower's retry policy).

    ``max_wrong_hit_rate``: the most wrong hits per hit the cache may serve.
    ``z``: the one-sided confidence of the bound (1.64: about 95 %).
    ``floor``: the lowest similarity worth exploring (``None``: the embedder's default
    threshold minus 0.15). ``margin``: how far above its highest wrong outcome an
    entry's threshold sits. ``verify_rate``: the share of served hits shadow-checked
    (when a verifier runs). ``max_pending``: the bound of the shadow-check queue.
    ``answer_similarity``: how close two answers' embeddings must be to count as the
    same answer when the texts differ. ``holds_for``: ``"cache"`` (the hits as a whole;
    strata pool their confidence) or ``"stratum"`` (each stratum alone), and
    ``min_stratum_outcomes``: how many outcomes of its own a stratum needs at its
    threshold to be opened on pooled confidence (module doc).
    """

    max_wrong_hit_rate: float = 0.01
    z: float = 1.64
    floor: float | None = None
    margin: float = 0.01
    verify_rate: float = 0.05
    max_pending: int = 64
    answer_similarity: float = 0.95
    holds_for: Literal["cache", "stratum"] = "cache"
    min_stratum_outcomes: int = 30

    def __post_init__(self) -> None:
        if not 0.0 < self.max_wrong_hit_rate < 1.0:
            raise ValueError("max_wrong_hit_rate must be between 0 and 1")
        if self.holds_for not in ("cache", "stratum"):
            raise ValueError(f"holds_for must be 'cache' or 'stratum', got {self.holds_for!r}")
        if self.min_stratum_outcomes < 1:
            raise ValueError("min_stratum_outcomes must be at least 1")
        if not 0.0 <= self.verify_rate <= 1.0 or self.max_pending < 1:
            raise ValueError("verify_rate must be in [0, 1] and max_pending at least 1")


class EntryOutcomes(msgspec.Struct):
    """One entry's verified outcomes: how many were right, the highest wrong similarity."""

    right: int = 0
    highest_wrong: float = -1.0


def wilson_upper(wrong: int, n: int, z: float) -> float:
    """The upper Wilson bound of a rate seen as ``wrong`` out of ``n`` (1.0 if ``n == 0``)."""
    if n == 0:
        return 1.0
    p = wrong / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre + spread) / (1 + z2 / n)


class AdaptiveThresholds:
    """Pooled and per-entry outcomes, and the serve/explore/miss decision (module doc)."""

    def __init__(self, bound: WrongHitBound, floor: float, *, max_entries: int = 10_000) -> None:
        self.bound = bound
        self.floor = floor
        self.max_entries = max_entries
        self._right: dict[str, np.ndarray] = {}
        self._wrong: dict[str, np.ndarray] = {}
        self._entries: OrderedDict[str, EntryOutcomes] = OrderedDict()
        self.thresholds: dict[str, float] = {}  # per stratum; absent: nothing measured
        self.outcomes = 0

    @property
    def global_threshold(self) -> float:
        """The pooled threshold of the default stratum (``""``)."""
        return self.thresholds.get("", math.inf)

    @staticmethod
    def _bin(similarity: float) -> int:
        return min(_BINS, max(0, int(similarity * _BINS)))

    def entry_threshold(self, key: str, stratum: str = "") -> float:
        """The similarity ``key``'s entry may be served at (``inf``: none yet)."""
        pooled = self.thresholds.get(stratum, math.inf)
        own = self._entries.get(key)
        if own is None:
            return pooled
        return max(pooled, own.highest_wrong + self.bound.margin)

    def decide(self, key: str, similarity: float, stratum: str = "") -> str:
        """``SERVE``, ``EXPLORE`` or ``MISS`` for a candidate at ``similarity``."""
        if similarity < self.floor:
            return MISS
        return SERVE if similarity >= self.entry_threshold(key, stratum) else EXPLORE

    def record(self, key: str, similarity: float, correct: bool, stratum: str = "") -> None:
        """Learn one verified outcome and refresh its stratum's pooled threshold."""
        self.outcomes += 1
        if stratum not in self._right:
            self._right[stratum] = np.zeros(_BINS + 1, dtype=np.int64)
            self._wrong[stratum] = np.zeros(_BINS + 1, dtype=np.int64)
        (self._right if correct else self._wrong)[stratum][self._bin(similarity)] += 1
        own = self._entries.get(key)
        if own is None:
            own = self._entries[key] = EntryOutcomes()
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        if correct:
            own.right += 1
        else:
            own.highest_wrong = max(own.highest_wrong, similarity)
        self._refresh(stratum)

    def forget(self, key: str) -> None:
        """Drop an entry's own outcomes (it was evicted or expired)."""
        self._entries.pop(key, None)

    def _tails(self, stratum: str) -> tuple[np.ndarray, np.ndarray]:
        """Outcomes (all, wrong) at or above each bin of ``stratum``."""
        right = np.cumsum(self._right[stratum][::-1])[::-1]
        wrong = np.cumsum(self._wrong[stratum][::-1])[::-1]
        return right + wrong, wrong

    def _refresh(self, stratum: str) -> None:
        """Recompute the thresholds the new outcome of ``stratum`` may move."""
        strata = sorted(self._right)
        if self.bound.holds_for == "cache" and len(strata) == 2:
            self._refresh_pooled(*strata)
            return
        for name in strata if self.bound.holds_for == "cache" else [stratum]:
            self.thresholds[name] = self._own_threshold(name)

    def _own_threshold(self, stratum: str) -> float:
        """The lowest bin whose outcomes of ``stratum`` at and above it hold the bound."""
        n, wrong = self._tails(stratum)
        held = (n > 0) & (wilson_upper_array(wrong, n, self.bound.z) <= self.bound.max_wrong_hit_rate)
        threshold = int(np.flatnonzero(held)[0]) / _BINS if held.any() else math.inf
        return max(threshold, self.floor)

    def _refresh_pooled(self, a: str, b: str) -> None:
        """The pair of thresholds that serves the most outcomes while the pooled outcomes
        at or above them hold the bound, each open stratum's own rate is within it and
        it has ``min_stratum_outcomes`` outcomes there (index ``_BINS + 1``: closed)."""
        eps, least = self.bound.max_wrong_hit_rate, self.bound.min_stratum_outcomes
        columns = []
        for name in (a, b):
            n, wrong = self._tails(name)
            n, wrong = np.append(n, 0), np.append(wrong, 0)
            alone = wilson_upper_array(wrong, n, self.bound.z) <= eps
            usable = ((n >= least) & (wrong <= eps * n)) | alone
            usable[-1] = True  # closed is always allowed
            columns.append((n, wrong, usable))
        (n_a, w_a, ok_a), (n_b, w_b, ok_b) = columns
        n = n_a[:, None] + n_b[None, :]
        wrong = w_a[:, None] + w_b[None, :]
        feasible = ok_a[:, None] & ok_b[None, :] & (n > 0)
        feasible &= wilson_upper_array(wrong, n, self.bound.z) <= eps
        if not feasible.any():
            self.thresholds[a] = self.thresholds[b] = math.inf
            return
        served = np.where(feasible, n, -1)
        i, j = np.unravel_index(int(np.argmax(served)), served.shape)
        for name, index in ((a, int(i)), (b, int(j))):
            self.thresholds[name] = max(math.inf if index > _BINS else index / _BINS, self.floor)


def wilson_upper_array(wrong: np.ndarray, n: np.ndarray, z: float) -> np.ndarray:
    """``wilson_upper`` element-wise (1.0 where ``n == 0``)."""
    wrong = wrong.astype(np.float64)
    n = n.astype(np.float64)
    safe = np.maximum(n, 1.0)
    p = wrong / safe
    z2 = z * z
    centre = p + z2 / (2 * safe)
    spread = z * np.sqrt(np.maximum(p * (1 - p) / safe + z2 / (4 * safe * safe), 0.0))
    return np.where(n > 0, (centre + spread) / (1 + z2 / safe), 1.0)
