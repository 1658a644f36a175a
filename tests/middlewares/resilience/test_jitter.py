"""retry backoff: exponential with full jitter, ``uniform(0, min(max_delay, base * 2 ** (n - 1)))``."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from middlewares.resilience.retry import RetryPolicy
from onion import ProviderError

ERROR = ProviderError("500", upstream_status=500, retryable=True)  # no Retry-After
SEEDS = range(300)


def _ceiling(policy: RetryPolicy, retry: int) -> float:
    return min(policy.max_delay, policy.base_delay * 2 ** (retry - 1))


@settings(max_examples=200, deadline=None)
@given(
    base=st.floats(min_value=0.001, max_value=5.0),
    max_delay=st.floats(min_value=0.001, max_value=60.0),
    retry=st.integers(min_value=1, max_value=12),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_every_delay_lies_between_zero_and_the_capped_exponential_ceiling(
    base: float, max_delay: float, retry: int, seed: int
) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=max_delay)
    wait = policy.delay(retry, ERROR, random.Random(seed))
    assert wait is not None
    assert 0.0 <= wait <= _ceiling(policy, retry)


def test_delays_are_jittered_over_the_whole_range_and_the_ceiling_doubles_per_retry() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=3.0)
    highest: list[float] = []
    for retry in range(1, 8):
        ceiling = _ceiling(policy, retry)
        waits = [policy.delay(retry, ERROR, random.Random(seed)) for seed in SEEDS]
        assert all(w is not None and 0.0 <= w <= ceiling for w in waits)
        assert len(set(waits)) > len(SEEDS) // 2  # jittered, not a fixed delay
        assert min(waits) < ceiling / 4 and max(waits) > ceiling * 3 / 4  # full jitter: from ~0 to ~the ceiling
        assert sum(waits) / len(waits) < ceiling * 0.6  # not mostly the ceiling
        highest.append(max(waits))
    # 0.1, 0.2, 0.4, 0.8, 1.6 then capped at 3.0: each retry's delays reach past the
    # previous ceiling until max_delay caps them.
    for retry in range(2, 7):
        assert highest[retry - 1] > _ceiling(policy, retry - 1)
    assert highest[-1] <= 3.0 and highest[-2] <= 3.0
