"""The default stack of two checkouts side by side: before/after figures from one run.

Each ``name=TREE:BACKEND[:WITHOUT]`` starts a child process that imports onion and the
layers from ``TREE`` (``PYTHONPATH=TREE``), builds ``DEFAULT_STACK`` (less the layers
named in ``WITHOUT``, comma-separated) and the floor as ``stack_overhead.py`` does, on the
anyio ``BACKEND``. The parent then asks every child in turn for ``--calls`` calls of each
case, round after round (the order flips every round), so machine noise falls on every
checkout alike; a child's samples are p50/p99 over all rounds. Every child checks who
answered (misses from the handler, hits from the cache) before it reports.

    git archive <before> | tar -x -C /tmp/before
    python benchmarks/ab_trees.py --rounds 6 --calls 300 --out results/x.json \\
        before=/tmp/before:asyncio after=$PWD:asyncio after_trio=$PWD:trio
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

CASES = [
    "floor|complete",
    "onion|complete|miss",
    "onion|complete|hit",
    "floor|stream",
    "onion|stream|miss",
    "onion|stream|hit",
]


def child(backend: str, without: str) -> None:
    """Serve cases on stdin/stdout with the stack of the checkout on ``sys.path``."""
    sys.path.insert(0, str(Path.cwd() / "benchmarks"))
    import anyio
    from _fullstack import CompleteHandler, _logs_to_devnull
    from stack_overhead import floor, onion_cases

    from onion import Stack, build_layer
    from onion.config import DEFAULT_STACK

    _logs_to_devnull()
    left_out = set(filter(None, without.split(",")))
    tables = [t for t in DEFAULT_STACK if t["use"] not in left_out]
    handler = CompleteHandler()
    stack = Stack([build_layer(t, f"stack[{i}]") for i, t in enumerate(tables)], handler, name="default")
    bare = floor(len(tables), handler)
    cases = onion_cases(stack, bare, handler)

    async def serve() -> None:
        for case in cases.values():  # warm-up; the hit case's first call stores its answer
            await case.run(30)
            case.served.clear()
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            if command.get("check"):
                for label, case in cases.items():
                    case.check(label)
                print(json.dumps({"ok": True}), flush=True)
                continue
            gc.collect()
            print(json.dumps(await cases[command["case"]].run(command["calls"])), flush=True)

    anyio.run(serve, backend=backend)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="*", help="name=TREE:BACKEND[:WITHOUT]")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--out", help="results file (under benchmarks/ when relative)")
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "WITHOUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    specs: dict[str, tuple[str, str, str]] = {}
    for spec in args.specs:
        name, rest = spec.split("=", 1)
        tree, backend, *without = rest.split(":")
        specs[name] = (tree, backend, without[0] if without else "")
    kids: dict[str, subprocess.Popen[str]] = {}
    for name, (tree, backend, without) in specs.items():
        kids[name] = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", backend, without],
            cwd=tree, env=dict(os.environ, PYTHONPATH=tree), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def ask(kid: subprocess.Popen[str], command: dict[str, Any]) -> Any:
        assert kid.stdin is not None and kid.stdout is not None
        kid.stdin.write(json.dumps(command) + "\n")
        kid.stdin.flush()
        return json.loads(kid.stdout.readline())

    for kid in kids.values():
        assert kid.stdout is not None and json.loads(kid.stdout.readline())["ready"]
    names = list(specs)
    samples: dict[tuple[str, str], list[float]] = {(n, c): [] for n in names for c in CASES}
    for round_ in range(args.rounds):
        for case in CASES:
            for name in names if round_ % 2 == 0 else names[::-1]:
                samples[(name, case)] += ask(kids[name], {"case": case, "calls": args.calls})
    for kid in kids.values():
        assert ask(kid, {"check": True})["ok"]
        assert kid.stdin is not None
        kid.stdin.close()
        kid.wait()
    results = {
        n: {c: {"p50_us": percentile(samples[(n, c)], 50), "p99_us": percentile(samples[(n, c)], 99)} for c in CASES}
        for n in names
    }
    print(f"{'µs per call, p50':22}" + "".join(f"{n:>16}" for n in names))
    for case in CASES:
        print(f"{case:22}" + "".join(f"{results[n][case]['p50_us']:16.1f}" for n in names))
    if args.out:
        path = Path(args.out) if Path(args.out).is_absolute() else Path(__file__).parent / args.out
        payload = {"benchmark": "ab_trees", "rounds": args.rounds, "calls": args.calls, "specs": specs}
        payload["results"] = results
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
