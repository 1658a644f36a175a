"""The providers' clock: ``_now`` is anyio's clock on every backend (deadlines in
``Context.deadline`` are read on it), without anyio's backend lookup on asyncio."""

from __future__ import annotations

import anyio
import pytest

from onion.providers._http import _now

pytestmark = pytest.mark.anyio


async def test_now_reads_anyio_clock() -> None:
    # trio's clock starts at a random offset, so a wrong clock (time.monotonic) is far off.
    for _ in range(100):
        before = anyio.current_time()
        now = _now()
        after = anyio.current_time()
        assert before <= now <= after


async def test_now_follows_a_sleep() -> None:
    began = _now()
    await anyio.sleep(0.02)
    assert _now() - began >= 0.015
