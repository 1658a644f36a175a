"""The per-chunk tax of the resilience layers on a stream: cancel scopes opened, async
generators started and time per chunk through ``timeout > retry > circuit_breaker`` around an in-process provider.

Run from a checkout (``PYTHONPATH=$PWD python benchmarks/stream_tax.py [--backend trio]``); to compare two
checkouts, run it in each, interleaved (``--rounds``), as the note of issue 17 did::

    for i in 1 2 3; do PYTHONPATH=/path/a python benchmarks/stream_tax.py; \
                       PYTHONPATH=/path/b python benchmarks/stream_tax.py; done
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import anyio
import sniffio

from middlewares.resilience import CircuitBreaker, Deadline, Retry
from onion import Message, Request, Stack
from onion.testing._scripted import Reply, ScriptedProvider

CHUNKS = 10


def _count_scopes() -> list[int]:
    """Counts every cancel scope made: anyio's (``move_on_after``/``fail_after`` included)
    and, under trio, trio's own (what onion opens there, and what anyio's wraps)."""
    seen = [0]
    classes: list[Any] = [type(anyio.CancelScope())]  # anyio builds the running backend's scope class
    if sniffio.current_async_library() == "trio":
        import trio

        classes = [trio.CancelScope]  # anyio's trio scope opens one of these: counted once
    for cls in classes:
        original = cls.__init__

        def counting(self: object, *args: object, _original: Any = original, **kwargs: object) -> None:
            seen[0] += 1
            _original(self, *args, **kwargs)

        cls.__init__ = counting
    return seen


def _count_generators() -> tuple[list[int], Any]:
    """Counts the async generators started (the loop's first-iteration hook, which both
    backends install): each is one more frame every chunk passes through, and one more
    entry in the loop's set of live generators. Returns the count and the old hooks."""
    hooks = sys.get_asyncgen_hooks()
    seen = [0]

    def firstiter(generator: object) -> None:
        seen[0] += 1
        if hooks.firstiter is not None:
            hooks.firstiter(generator)

    sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=hooks.finalizer)
    return seen, hooks


async def main(streams: int) -> None:
    text = " ".join(f"w{i}" for i in range(CHUNKS))
    provider = ScriptedProvider(default=Reply(text))
    stack = Stack([Deadline(seconds=30, first_token_seconds=10, idle_seconds=10), Retry(), CircuitBreaker()], provider)

    async def one() -> None:
        response = await stack(Request(model="m", messages=[Message("user", "hi")], stream=True))
        async for _ in response:
            pass

    await one()
    generators, hooks = _count_generators()
    await one()
    sys.set_asyncgen_hooks(*hooks)
    seen = _count_scopes()
    before = seen[0]
    await one()
    scopes = seen[0] - before
    began = time.perf_counter()
    for _ in range(streams):
        await one()
    per_chunk = (time.perf_counter() - began) / (streams * (CHUNKS + 1)) * 1e6
    library = sniffio.current_async_library()
    print(
        f"{library}: cancel scopes per {CHUNKS}-chunk stream: {scopes}; async generators: {generators[0]}; "
        f"{per_chunk:.1f} us per chunk (with provider)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args()
    anyio.run(main, args.streams, backend=args.backend)
