"""The per-chunk tax of the resilience layers on a stream: cancel scopes opened and time
per chunk through ``timeout > retry > circuit_breaker`` around an in-process provider.

Run from a checkout (``PYTHONPATH=$PWD python benchmarks/stream_tax.py``); to compare two
checkouts, run it in each, interleaved (``--rounds``), as the note of issue 17 did::

    for i in 1 2 3; do PYTHONPATH=/path/a python benchmarks/stream_tax.py; \
                       PYTHONPATH=/path/b python benchmarks/stream_tax.py; done
"""

from __future__ import annotations

import argparse
import time

import anyio

from middlewares.resilience import CircuitBreaker, Deadline, Retry
from onion import Message, Request, Stack
from onion.testing._scripted import Reply, ScriptedProvider

CHUNKS = 10


def _count_scopes() -> list[int]:
    """Counts every ``anyio.CancelScope`` made (``move_on_after``/``fail_after`` included)."""
    seen = [0]
    backend_class = type(anyio.CancelScope())  # anyio builds the running backend's scope class
    original = backend_class.__init__

    def counting(self: anyio.CancelScope, *args: object, **kwargs: object) -> None:
        seen[0] += 1
        original(self, *args, **kwargs)

    backend_class.__init__ = counting  # type: ignore[method-assign]
    return seen


async def main(streams: int) -> None:
    text = " ".join(f"w{i}" for i in range(CHUNKS))
    provider = ScriptedProvider(default=Reply(text))
    stack = Stack([Deadline(seconds=30, first_token_seconds=10, idle_seconds=10), Retry(), CircuitBreaker()], provider)

    async def one() -> None:
        response = await stack(Request(model="m", messages=[Message("user", "hi")], stream=True))
        async for _ in response:
            pass

    await one()
    seen = _count_scopes()
    before = seen[0]
    await one()
    scopes = seen[0] - before
    began = time.perf_counter()
    for _ in range(streams):
        await one()
    per_chunk = (time.perf_counter() - began) / (streams * (CHUNKS + 1)) * 1e6
    print(f"cancel scopes per {CHUNKS}-chunk stream: {scopes}; {per_chunk:.1f} us per chunk (incl. provider)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=2000)
    anyio.run(main, parser.parse_args().streams)
