"""``onion serve`` of two checkouts up at once over HTTP: requests per gateway CPU-second and
the c=1 p50, before/after from one run.

Each ``name=TREE`` starts ``onion serve`` with ``PYTHONPATH=TREE`` and the default stack
(or ``--empty``: ``stack = []``) in front of one shared fake upstream
(``onion.testing.upstream``). With ``taskset`` every gateway is pinned to core 0 and the
upstream and ``wrk`` to core 1. Round after round (the order flips every round), each
gateway in turn gets ``wrk -c16`` for ``--seconds`` (its CPU time read from ``/proc``
before and after) and then ``wrk -c1``; the gateways are up together, so the machine's
slow drifts fall on both alike, where sequential runs of ``http_stack.py`` (minutes apart)
swing by a quarter on a shared machine. Every answer's ``x-onion-served-by`` is counted
and the run fails loudly unless each came from the upstream provider (a miss).

    git archive <before> | tar -x -C /tmp/before
    python benchmarks/http_ab.py before=/tmp/before after=$PWD [--rounds 6] [--seconds 3] [--empty]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _fullstack import check_served
from gateway import _cpu_ticks, start_gateway
from http_stack import LUA, gateway_config, pins, start_upstream, wrk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", help="name=TREE")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--empty", action="store_true", help="stack = [] instead of the default stack")
    parser.add_argument("--no-taskset", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    pinned, gateway_pin, other_pin = pins(args.no_taskset)
    upstream, upstream_url = start_upstream(other_pin)
    gateways: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    results: dict[str, dict[str, list[float]]] = {}
    hertz = os.sysconf("SC_CLK_TCK")
    try:
        with tempfile.TemporaryDirectory() as workdir:
            config = gateway_config(upstream_url, empty=args.empty)
            script = Path(workdir) / "unique.lua"
            script.write_text(LUA)
            saved = os.environ.get("PYTHONPATH")
            try:
                for spec in args.trees:
                    name, _, tree = spec.partition("=")
                    os.environ["PYTHONPATH"] = tree  # start_gateway passes the environment on
                    command = [*gateway_pin, sys.executable, "-m", "onion.cli", "serve"]
                    process, url = start_gateway(config, workdir, name, command=command)
                    gateways[name] = (process, url.removesuffix("/v1"))
                    results[name] = {"per_cpu_second": [], "c1_p50_ms": [], "c1_p99_ms": []}
            finally:
                if saved is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = saved
            for name, (_, base) in gateways.items():  # warm-up
                wrk(base, 16, 2, f"w{name}", other_pin, script)
            names = list(gateways)
            for round_ in range(args.rounds):
                for name in names if round_ % 2 == 0 else names[::-1]:
                    process, base = gateways[name]
                    before = _cpu_ticks([process.pid])
                    served, _, _, n = wrk(base, 16, args.seconds, f"t{round_}{name}", other_pin, script)
                    cpu = (_cpu_ticks([process.pid]) - before) / hertz
                    check_served(f"{name} c=16", served, "up")
                    served, p50, p99, _ = wrk(base, 1, args.seconds, f"s{round_}{name}", other_pin, script)
                    check_served(f"{name} c=1", served, "up")
                    row = results[name]
                    row["per_cpu_second"].append(n / cpu)
                    row["c1_p50_ms"].append(p50)
                    row["c1_p99_ms"].append(p99)
                    print(f"round {round_} {name}: {n / cpu:.0f} requests per CPU-s at c=16, c=1 p50 {p50:.2f} ms")
    finally:
        for process, _ in gateways.values():
            process.terminate()
            process.wait(timeout=10)
        upstream.terminate()
        upstream.wait(timeout=10)
    stack = "stack = []" if args.empty else "DEFAULT_STACK"
    print(f"onion serve, {stack}, HTTP upstream, {args.rounds} rounds x {args.seconds:g} s; pinned={pinned}")
    summary: dict[str, Any] = {}
    for name, row in results.items():
        summary[name] = {key: _spread(values) for key, values in row.items()}
        c16, p50 = summary[name]["per_cpu_second"], summary[name]["c1_p50_ms"]
        print(
            f"  {name}: requests per gateway CPU-second (c=16) median {c16['median']:.0f}"
            f" ({c16['min']:.0f}-{c16['max']:.0f}); gateway p50 at c=1 {p50['median']:.2f} ms"
            f" ({p50['min']:.2f}-{p50['max']:.2f})"
        )


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


if __name__ == "__main__":
    sys.exit(main())
