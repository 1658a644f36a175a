"""What each layer of the default stack costs in process: the stack with and without it.

Builds ``DEFAULT_STACK`` as ``stack_overhead.py`` does, and the same stack with one
layer left out, for each layer; sends new prompts (a complete cache miss) and one
repeated prompt (a complete exact-cache hit) through each, rounds interleaved, and
prints the CPU µs per call of the whole stack (this process's CPU time over a batch of
calls, the least of the rounds: on a shared machine, time other processes took is not
counted) and what leaving each layer out saves. Who answered is checked as in
``stack_overhead.py`` (a stack without the cache has no hit case).

    python benchmarks/layer_costs.py [--calls 2000] [--rounds 3] [--without metrics,logging] [--backend trio]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import anyio
from _fullstack import CompleteHandler, _logs_to_devnull, print_table

from onion import Message, Request, Stack, build_layer
from onion.config import DEFAULT_STACK


def stack_without(handler: CompleteHandler, skip: str | None, left_out: frozenset[str] = frozenset()) -> Stack:
    tables = [t for t in DEFAULT_STACK if t["use"] != skip and t["use"] not in left_out]
    return Stack([build_layer(t, f"stack[{i}]") for i, t in enumerate(tables)], handler, name="default")


_sent = 0  # miss prompts are numbered across stacks and rounds: each one is new


async def run(stack: Stack, calls: int, hit: bool, tag: str, expect: str) -> float:
    """CPU µs per call over ``calls`` calls."""
    global _sent
    # The prompts of ``stack_overhead.py`` ("hello complete 17"): a long digit run (a
    # clock reading) would show the input guard a base64 and hex sign, and price decoding.
    contents = [f"hello hit {tag}" if hit else f"hello complete {_sent + i}" for i in range(calls)]
    _sent += calls
    served: dict[str, int] = {}
    began = time.process_time()
    for content in contents:
        response = await stack(Request(model="gpt-4o", messages=[Message("user", content)]))
        await response.result()
        served[response.served_by] = served.get(response.served_by, 0) + 1
    spent = time.process_time() - began
    if served != {expect: calls}:
        raise RuntimeError(f"{tag}: expected every answer from {expect!r}, got {served}")
    return spent / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--without", default="", help="layers left out of every stack, comma-separated (metrics,logging: your part)"
    )
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args()
    _logs_to_devnull()
    handler = CompleteHandler()
    left_out = frozenset(filter(None, args.without.split(",")))
    names: list[str | None] = [None, *(t["use"] for t in DEFAULT_STACK if t["use"] not in left_out)]
    stacks = {name: stack_without(handler, name, left_out) for name in names}
    samples: dict[tuple[str | None, str], float] = {}
    for stack_name, stack in stacks.items():  # warm-up, and the hit stored
        anyio.run(run, stack, 200, False, f"w{stack_name}", handler.name, backend=args.backend)
        anyio.run(run, stack, 1, True, f"{stack_name}", handler.name, backend=args.backend)  # stores the hit
    for _ in range(args.rounds):
        for stack_name, stack in stacks.items():
            for path in ("miss", "hit"):
                if path == "hit" and stack_name == "exact_cache":
                    continue
                expect = "exact_cache" if path == "hit" else handler.name
                got = anyio.run(run, stack, args.calls, path == "hit", f"{stack_name}", expect, backend=args.backend)
                samples[(stack_name, path)] = min(got, samples.get((stack_name, path), got))
    best = samples
    rows: list[list[Any]] = []
    for name in names:
        miss, hit = best[(name, "miss")], best.get((name, "hit"))
        rows.append(
            [
                "(whole stack)" if name is None else f"without {name}",
                miss,
                best[(None, "miss")] - miss if name else "",
                "-" if hit is None else hit,
                "" if name is None or hit is None else best[(None, "hit")] - hit,
            ]
        )
    print_table(["stack", "miss CPU µs", "layer's miss µs", "hit CPU µs", "layer's hit µs"], rows)


if __name__ == "__main__":
    sys.exit(main())
