"""Why the layers cost more over HTTP than in process: the idle gap, not the socket.

Six children of one checkout (``http_app_ab.run_rounds``: the ASGI app as ``onion serve``
builds it, the log line to a file, the core pinned), rounds interleaved: the default stack
and ``stack = []``, each with

- ``http``: the provider over a real socket to the fake upstream (its own process);
- ``recorded``: an in-process handler answering the upstream's own answer (decoded by the
  provider's decoder, named as the provider names it) at once;
- ``recorded-0.0012``: the same after ``asyncio.sleep(0.0012)``, about the time an
  upstream call leaves the gateway's core idle.

The default-minus-empty difference of each pair is what the layers cost there. If it
grows from ``recorded`` to ``recorded-0.0012`` as much as to ``http``, what the layers
pay over HTTP is the idle gap (the core sleeps between requests: on wake the caches and
branch predictors are cold, so the layers' larger code and data cost more), not anything
the socket or the provider does to them.

    python benchmarks/http_idle.py [--rounds 10] [--calls 400] [--tree DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAUSE = "recorded-0.0012"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--tree", default=str(HERE.parent))
    parser.add_argument("--no-taskset", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _fullstack import print_table
    from http_app_ab import run_rounds
    from http_stack import gateway_config, pins, start_upstream

    pinned, gateway_pin, other_pin = pins(args.no_taskset)
    upstream, upstream_url = start_upstream(other_pin)
    handlers = ("http", "recorded", PAUSE)
    cases = [
        (f"{stack} {handler}", args.tree, gateway_config(upstream_url, empty=stack == "empty"), handler)
        for stack in ("default", "empty")
        for handler in handlers
    ]
    try:
        samples = run_rounds(cases, upstream_url, args.rounds, args.calls, gateway_pin, quiet=True)
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
    median = {name: statistics.median(r["cpu_us"] for r in results) for name, results in samples.items()}
    print(f"gateway CPU µs per request, {args.rounds} rounds x {args.calls}, medians; pinned={pinned}")
    rows = []
    for handler in handlers:
        default, empty = median[f"default {handler}"], median[f"empty {handler}"]
        rows.append([handler, f"{default:.0f}", f"{empty:.0f}", f"{default - empty:.0f}"])
    print_table(["handler", "DEFAULT_STACK", "stack = []", "the layers"], rows)


if __name__ == "__main__":
    sys.exit(main())
