"""Where the default stack's time goes: cProfile of complete and streamed cache misses.

Builds ``DEFAULT_STACK`` as ``stack_overhead.py`` does (metrics to the default meter
provider, the log line as JSON to /dev/null), sends ``--calls`` new prompts complete and
``--calls`` streamed (10 chunks each, every chunk read) under ``cProfile``, checks that
every answer came from the handler (a miss, not the cache), and prints for each case the
top functions by own time and the share of own time by family (the OpenTelemetry SDK,
structlog, each layer family, anyio, onion's core, C built-ins). Writes
``benchmarks/results/profile_stack.json``.

    python benchmarks/profile_stack.py [--calls 10000] [--top 15] [--backend trio]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path
from typing import Any

import anyio
from _fullstack import CompleteHandler, print_table, write_results
from stack_overhead import onion_stack

from onion import Message, Request

# The checkout this file is in: its functions are shown relative to it, wherever it lives.
ROOT = str(Path(__file__).resolve().parent.parent) + "/"

# First match wins: the path fragment of a function's file, and the family it counts to.
FAMILIES = (
    ("opentelemetry/", "OpenTelemetry SDK"),
    ("structlog/", "structlog"),
    ("middlewares/observe/", "observe layers (metrics, logging)"),
    ("middlewares/guard/", "guards"),
    ("middlewares/cache/", "exact cache"),
    ("middlewares/resilience/", "resilience layers"),
    ("anyio/", "anyio"),
    ("trio/", "trio"),
    ("onion/telemetry/", "onion.telemetry"),
    ("onion/", "onion core"),
    ("msgspec", "msgspec"),
    ("benchmarks/", "benchmark driver"),
    ("~", "C built-ins"),
)


def family(filename: str, families: tuple[tuple[str, str], ...] = FAMILIES) -> str:
    for fragment, name in families:
        if fragment in filename:
            return name
    return "other Python"


async def run(stack: Any, calls: int, stream: bool, served: dict[str, int], tag: str, *, repeat: bool = False) -> None:
    """``calls`` requests, each a new prompt (``repeat``: one prompt again and again)."""
    kind = f"{tag} stream" if stream else f"{tag} complete"
    for i in range(calls):
        content = f"profile {kind}" if repeat else f"profile {kind} {i}"
        request = Request(model="gpt-4o", messages=[Message("user", content)], stream=stream)
        response = await stack(request)
        if stream:
            async with response:
                async for _ in response:
                    pass
        else:
            await response.result()
        served[response.served_by] = served.get(response.served_by, 0) + 1


def profile(stack: Any, calls: int, stream: bool, expect: str, backend: str = "asyncio") -> pstats.Stats:
    served: dict[str, int] = {}
    # warm-up: first-call paths out of the profile
    anyio.run(run, stack, 200, stream, {}, "warm-up", backend=backend)
    profiler = cProfile.Profile()
    profiler.enable()
    anyio.run(run, stack, calls, stream, served, "profiled", backend=backend)
    profiler.disable()
    if served != {expect: calls}:
        raise RuntimeError(f"expected {calls} answers from {expect!r} (misses), got {served}")
    return pstats.Stats(profiler)


def summarise(stats: pstats.Stats, calls: int, top: int) -> dict[str, Any]:
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in entries.values())
    rows = []
    by_family: dict[str, float] = {}
    for (filename, line, name), (_, ncalls, tt, ct, _) in entries.items():
        by_family[family(filename)] = by_family.get(family(filename), 0.0) + tt
        where = filename.split("site-packages/")[-1].removeprefix(ROOT) if filename != "~" else ""
        rows.append((tt, ct, ncalls, f"{where}:{line}({name})" if where else name))
    rows.sort(reverse=True)
    return {
        "calls": calls,
        "profiled_us_per_call": total / calls * 1e6,
        "top": [
            {"function": f, "own_share": tt / total, "own_us_per_call": tt / calls * 1e6, "calls_per_call": n / calls}
            for tt, _, n, f in rows[:top]
        ],
        "families": {k: v / total for k, v in sorted(by_family.items(), key=lambda kv: -kv[1])},
    }


def show(label: str, summary: dict[str, Any]) -> None:
    print(f"\n{label}: {summary['profiled_us_per_call']:.1f} µs of own time per call under cProfile")
    print_table(
        ["function", "own %", "µs/call", "calls/call"],
        [
            [t["function"][-80:], f"{t['own_share'] * 100:.1f}", t["own_us_per_call"], f"{t['calls_per_call']:.1f}"]
            for t in summary["top"]
        ],
    )
    print_table(["family", "own %"], [[k, f"{v * 100:.1f}"] for k, v in summary["families"].items()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio", help="anyio backend")
    args = parser.parse_args()
    handler = CompleteHandler()
    stack, names = onion_stack(handler)
    results: dict[str, Any] = {"layers": names, "backend": args.backend}
    for stream in (False, True):
        label = "stream, cache miss (10 chunks)" if stream else "complete, cache miss"
        summary = summarise(profile(stack, args.calls, stream, handler.name, args.backend), args.calls, args.top)
        show(label, summary)
        results["stream" if stream else "complete"] = summary
    path = write_results("profile_stack" if args.backend == "asyncio" else f"profile_stack_{args.backend}", results)
    print(f"\nwrote {path.name}")


if __name__ == "__main__":
    sys.exit(main())
