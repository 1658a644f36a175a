"""The observe layers of two checkouts, side by side: µs per request each adds, interleaved.

Starts one process per checkout (each imports its own onion and layers), then asks them in
turn for a batch of ``--calls`` requests of each variant, alternating which goes first, for
``--rounds`` rounds, and prints each variant's minimum and 25th percentile over the rounds
with the bare stack's subtracted, in the thread's CPU time (what the request cost, without
the time the process waited for a core on a shared machine) and in wall time. Variants are
stacks of ``L`` (logging, JSON to /dev/null), ``T`` (tracing on an SDK provider exporting
through a batch processor to a dropping exporter) and ``M`` (metrics on an SDK provider),
outermost first, as ``benchmarks/observability.py`` builds them, and ``F``, the floor of
``L+M``: the core's ``on_end`` calls those two make, with callbacks that do nothing
(``end_floor_metrics_logging``). Every answer must come from the handler.

    python benchmarks/observability_ab.py --base /path/to/other/checkout [--rounds 30] [--calls 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VARIANTS = "L,T,M,L+M,L+T+M"


def child(tree: str, names: list[str]) -> None:
    """Serve ``kind name calls`` lines from the parent with ``[cpu_us, wall_us]`` lines."""
    import anyio

    sys.path.insert(0, str(Path(tree) / "benchmarks"))
    import observability as ob

    from onion import Request, Stack
    from onion.telemetry import configure_logging

    configure_logging(json=True, level="info", stream=open(os.devnull, "w"))  # noqa: SIM115 - for the run
    stacks: dict[tuple[str, str], Any] = {}
    for kind, handler in (("complete", ob.complete_handler), ("stream", ob.stream_handler)):
        built = ob.variants(handler)
        pick = {"L": built["logging"].layers[0], "T": built["tracing"].layers[0], "M": built["metrics"].layers[0]}
        # F: the core's share of L+M (two on_end calls, callbacks that do nothing), the floor.
        pick["F"] = built["end_floor_metrics_logging"].layers[0]
        for name in names:
            layers = [] if name == "bare" else [pick[part] for part in name.split("+")]
            stacks[(kind, name)] = Stack(layers, handler)

    async def timed(stack: Any, stream: bool, calls: int) -> tuple[float, float]:
        cpu, wall = time.thread_time(), time.perf_counter()
        for _ in range(calls):
            response = await stack(Request(model="gpt-4o", messages=ob.MESSAGES, stream=stream))
            if stream:
                async for _chunk in response:
                    pass
            if response.served_by != "upstream":
                raise RuntimeError(f"answered by {response.served_by!r}, not the handler")
        return (time.thread_time() - cpu) / calls * 1e6, (time.perf_counter() - wall) / calls * 1e6

    async def serve() -> None:
        for (kind, _), stack in stacks.items():
            await timed(stack, kind == "stream", 300)  # warm-up
        for line in sys.stdin:
            kind, name, calls = line.split()
            print(json.dumps(await timed(stacks[(kind, name)], kind == "stream", int(calls))), flush=True)

    anyio.run(serve)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the other checkout (e.g. an unpacked `git archive` of main)")
    parser.add_argument("--this", default=str(HERE.parent), help="this checkout (default: %(default)s)")
    parser.add_argument("--variants", default=VARIANTS)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = ["bare", *args.variants.split(",")]
    if args.child:
        child(args.child, names)
        return
    trees = {"base": args.base, "this": args.this}
    procs = {
        label: subprocess.Popen(
            [sys.executable, __file__, "--base", args.base, "--variants", args.variants, "--child", tree],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": tree},
        )
        for label, tree in trees.items()
    }
    samples: dict[tuple[str, str, str, int], list[float]] = {}
    for round_ in range(args.rounds):
        order = ("base", "this") if round_ % 2 == 0 else ("this", "base")
        for kind in ("complete", "stream"):
            for name in names:
                for label in order:
                    proc = procs[label]
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write(f"{kind} {name} {args.calls}\n")
                    proc.stdin.flush()
                    for clock, value in enumerate(json.loads(proc.stdout.readline())):
                        samples.setdefault((label, kind, name, clock), []).append(value)
    for proc in procs.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    for clock, clock_name in enumerate(("CPU", "wall")):
        print(f"\nµs {clock_name} per request added to the bare stack: min / p25 of {args.rounds} rounds")
        print(f"{'variant':<8} {'kind':<9} {'base':>14} {'this':>14}  this/base (p25)")
        for kind in ("complete", "stream"):
            for name in names[1:]:
                cells = []
                for label in ("base", "this"):
                    bare, found = samples[(label, kind, "bare", clock)], samples[(label, kind, name, clock)]
                    cells.append((min(found) - min(bare), quantile(found, 0.25) - quantile(bare, 0.25)))
                ratio = cells[1][1] / cells[0][1] if cells[0][1] else float("nan")
                print(
                    f"{name:<8} {kind:<9} {cells[0][0]:6.1f}/{cells[0][1]:6.1f} {cells[1][0]:6.1f}/{cells[1][1]:6.1f}"
                    f"  {ratio:.2f}"
                )


if __name__ == "__main__":
    main()
