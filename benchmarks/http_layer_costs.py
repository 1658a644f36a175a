"""What each default layer costs over a real HTTP upstream: the gateway's CPU per request
with the whole ``DEFAULT_STACK``, with ``stack = []``, and with each layer left out.

One child per case (``http_app_ab.run_rounds``: the ASGI app as ``onion serve`` builds it,
the log line to a file, the fake upstream in its own process, every prompt new, every
answer checked to come from the upstream), rounds interleaved. A layer's cost is the
whole stack's CPU per request minus that of the stack without it (medians over rounds);
the sum of the layers' costs beside the whole-minus-empty difference says how much is
shared (the stack's dispatch, what a layer makes the others do).

    python benchmarks/http_layer_costs.py [--rounds 4] [--calls 800] [--tree DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=800)
    parser.add_argument("--tree", default=str(HERE.parent))
    parser.add_argument("--no-taskset", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _fullstack import print_table
    from http_app_ab import run_rounds
    from http_stack import gateway_config, pins, start_upstream

    from onion.config import DEFAULT_STACK

    pinned, gateway_pin, other_pin = pins(args.no_taskset)
    upstream, upstream_url = start_upstream(other_pin)
    providers = gateway_config(upstream_url, empty=True).removeprefix("stack = []\n")

    def toml(tables: list[dict[str, object]]) -> str:
        if not tables:
            return "stack = []\n" + providers
        return providers + "".join(
            "\n[[stack]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items()) for table in tables
        )

    layers = [str(table["use"]) for table in DEFAULT_STACK]
    cases = [("whole", args.tree, toml(DEFAULT_STACK)), ("empty", args.tree, toml([]))]
    cases += [(f"-{name}", args.tree, toml([t for t in DEFAULT_STACK if t["use"] != name])) for name in layers]
    try:
        samples = run_rounds(cases, upstream_url, args.rounds, args.calls, gateway_pin, quiet=True)
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
    median = {name: statistics.median(r["cpu_us"] for r in results) for name, results in samples.items()}
    spread = {name: (min(r["cpu_us"] for r in rs), max(r["cpu_us"] for r in rs)) for name, rs in samples.items()}
    whole, empty = median["whole"], median["empty"]
    print(f"gateway CPU per request over HTTP, {args.rounds} rounds x {args.calls}; pinned={pinned}")
    rows = [["whole DEFAULT_STACK", f"{whole:.0f}", f"{spread['whole'][0]:.0f}-{spread['whole'][1]:.0f}", ""]]
    rows.append(["stack = []", f"{empty:.0f}", f"{spread['empty'][0]:.0f}-{spread['empty'][1]:.0f}", ""])
    costs = 0.0
    for name in layers:
        lo, hi = spread[f"-{name}"]
        cost = whole - median[f"-{name}"]
        costs += cost
        rows.append([f"without {name}", f"{median[f'-{name}']:.0f}", f"{lo:.0f}-{hi:.0f}", f"{cost:+.0f}"])
    rows.append(["sum of the layers' costs", "", "", f"{costs:+.0f}"])
    rows.append(["whole minus empty", "", "", f"{whole - empty:+.0f}"])
    print_table(["case", "CPU µs/req (median)", "range", "layer's cost µs"], rows)


if __name__ == "__main__":
    sys.exit(main())
