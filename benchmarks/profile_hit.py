"""Where the default stack's time goes on a complete exact-cache hit: cProfile of one
repeated prompt.

Builds ``DEFAULT_STACK`` as ``stack_overhead.py`` does, stores one answer, then sends
the same prompt ``--calls`` times under ``cProfile`` (complete; ``--stream`` too if
asked), checks that every answer came from the exact cache, and prints the top
functions by own time and by cumulative time, and the share of own time by family
(as ``profile_stack.py``). Writes ``benchmarks/results/profile_hit.json``.

    python benchmarks/profile_hit.py [--calls 10000] [--top 15] [--stream]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from typing import Any

import anyio
from _fullstack import CompleteHandler, print_table, write_results
from profile_stack import ROOT, show, summarise
from profile_stack import run as run_prompts
from stack_overhead import onion_stack


async def run(stack: Any, calls: int, stream: bool, served: dict[str, int]) -> None:
    await run_prompts(stack, calls, stream, served, "hit", repeat=True)  # "profile hit stream" …


def profile(stack: Any, calls: int, stream: bool) -> pstats.Stats:
    served: dict[str, int] = {}
    anyio.run(run, stack, 200, stream, {})  # stores the answer; first-call paths out of the profile
    profiler = cProfile.Profile()
    profiler.enable()
    anyio.run(run, stack, calls, stream, served)
    profiler.disable()
    if served != {"exact_cache": calls}:
        raise RuntimeError(f"expected {calls} answers from the exact cache (hits), got {served}")
    return pstats.Stats(profiler)


def cumulative(stats: pstats.Stats, calls: int, top: int) -> list[list[Any]]:
    rows = []
    for (filename, line, name), (_, _, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = filename.split("site-packages/")[-1].removeprefix(ROOT) if filename != "~" else ""
        rows.append((ct, f"{where}:{line}({name})" if where else name))
    rows.sort(reverse=True)
    return [[f[-80:], ct / calls * 1e6] for ct, f in rows[:top]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--stream", action="store_true", help="profile the streamed hit too")
    args = parser.parse_args()
    handler = CompleteHandler()
    stack, names = onion_stack(handler)
    results: dict[str, Any] = {"layers": names}
    for stream in (False, True) if args.stream else (False,):
        label = "stream, cache hit" if stream else "complete, cache hit"
        stats = profile(stack, args.calls, stream)
        summary = summarise(stats, args.calls, args.top)
        show(label, summary)
        print(f"\n{label}: top by cumulative µs per call")
        print_table(["function", "cum µs/call"], cumulative(stats, args.calls, args.top * 2))
        results["stream" if stream else "complete"] = summary
    path = write_results("profile_hit", results)
    print(f"\nwrote {path.name}")


if __name__ == "__main__":
    sys.exit(main())
