"""Where the gateway's CPU goes over a real HTTP upstream: cProfile of the ASGI app.

The gateway of one checkout (``--tree``, default this one) is built as ``onion serve``
builds it (``http_app_ab.app_caller``: the log line to a file) with the default stack, or
``--empty`` (``stack = []``), in front of the fake upstream in its own process; the child
sends ``--calls`` new prompts, one at a time, under ``cProfile`` on uvloop, checks every
answer is a 200 from the upstream provider, and prints the top functions by own time and
the share of own time per family (the same families as ``profile_stack.py``, plus the
server, the provider and the wire). With ``--compare`` it profiles the empty stack too and
prints, per family, the µs per request the default stack adds over it.

    python benchmarks/http_app_profile.py [--calls 3000] [--top 25] [--compare] [--tree DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# First match wins: the path fragment of a function's file, and the family it counts to.
FAMILIES = (
    ("opentelemetry/", "OpenTelemetry SDK"),
    ("structlog/", "structlog"),
    ("middlewares/observe/metrics", "metrics layer"),
    ("middlewares/observe/request_log", "logging layer"),
    ("middlewares/observe/", "observe (other)"),
    ("middlewares/guard/input", "input guard"),
    ("middlewares/guard/output", "output guard"),
    ("middlewares/guard/", "guards (shared)"),
    ("middlewares/cache/", "exact cache"),
    ("middlewares/resilience/timeout", "timeout layer"),
    ("middlewares/resilience/retry", "retry layer"),
    ("middlewares/resilience/circuit", "circuit breaker"),
    ("middlewares/resilience/", "resilience (other)"),
    ("anyio/", "anyio"),
    ("onion/telemetry/", "onion.telemetry"),
    ("onion/server/", "onion.server"),
    ("onion/providers/", "onion.providers"),
    ("onion/wire/", "onion.wire"),
    ("onion/", "onion core"),
    ("msgspec", "msgspec"),
    ("uvloop", "uvloop"),
    ("asyncio/", "asyncio"),
    ("benchmarks/", "benchmark driver"),
    ("~", "C built-ins"),
)


def family(filename: str) -> str:
    from profile_stack import family as profile_family  # here: it imports onion, of the child's tree

    return profile_family(filename, FAMILIES)


def child(config_path: str, log_path: str, calls: str, out_path: str) -> None:
    """Profile ``calls`` requests through the gateway of the checkout on ``sys.path``."""
    from http_app_ab import app_caller, run_served

    gateway, one = app_caller(config_path, log_path)

    async def serve() -> None:
        for _ in range(300):  # warm-up: connections, caches, first-call paths
            await one("warm")
        served: dict[str, int] = {}
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(int(calls)):
            status, who = await one("profiled")
            key = who if status == 200 else f"status {status}"
            served[key] = served.get(key, 0) + 1
        profiler.disable()
        await gateway.aclose()
        if served != {"up": int(calls)}:
            raise RuntimeError(f"every answer should be a 200 from 'up', got {served}")
        profiler.dump_stats(out_path)

    run_served(serve)


def summarise(stats: pstats.Stats, calls: int, root: str) -> tuple[list[tuple[float, int, str]], dict[str, float]]:
    rows = []
    by_family: dict[str, float] = {}
    for (filename, line, name), (_, ncalls, tt, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        by_family[family(filename)] = by_family.get(family(filename), 0.0) + tt / calls * 1e6
        where = filename.split("site-packages/")[-1].removeprefix(root) if filename != "~" else ""
        rows.append((tt / calls * 1e6, ncalls, f"{where}:{line}({name})" if where else name))
    rows.sort(reverse=True)
    return rows, by_family


def profile(tree: str, upstream_url: str, calls: int, empty: bool, pin: list[str]) -> pstats.Stats:
    from http_stack import gateway_config

    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "gateway.toml"
        path.write_text(gateway_config(upstream_url, empty=empty))
        out = Path(workdir) / "profile.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env["PYTHONPATH"] = tree
        code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import http_app_profile as m; m.child(*sys.argv[1:])"
        args = [str(path), str(Path(workdir) / "gateway.log"), str(calls), str(out)]
        subprocess.run([*pin, sys.executable, "-c", code, *args], check=True, env=env, cwd=tree)
        return pstats.Stats(str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--empty", action="store_true", help="profile stack = [] instead of the default stack")
    parser.add_argument("--compare", action="store_true", help="profile both and print the difference per family")
    parser.add_argument("--tree", default=str(HERE.parent))
    parser.add_argument("--no-taskset", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _fullstack import print_table
    from http_stack import pins, start_upstream

    root = str(Path(args.tree).resolve()) + "/"
    _, gateway_pin, other_pin = pins(args.no_taskset)
    upstream, upstream_url = start_upstream(other_pin)
    try:
        cases = [False, True] if args.compare else [args.empty]
        families: dict[bool, dict[str, float]] = {}
        for empty in cases:
            rows, families[empty] = summarise(
                profile(args.tree, upstream_url, args.calls, empty, gateway_pin), args.calls, root
            )
            total = sum(families[empty].values())
            label = "stack = []" if empty else "DEFAULT_STACK"
            print(f"\n{label}: {total:.0f} µs of own time per request under cProfile")
            print_table(
                ["function", "µs/req", "calls/req"],
                [[f[-90:], f"{us:.1f}", f"{n / args.calls:.1f}"] for us, n, f in rows[: args.top]],
            )
        if args.compare:
            names = sorted(set(families[False]) | set(families[True]), key=lambda k: -families[False].get(k, 0.0))
            print("\nown µs per request by family: default stack, empty stack, difference")
            print_table(
                ["family", "default", "empty", "added"],
                [
                    [
                        k,
                        f"{families[False].get(k, 0):.1f}",
                        f"{families[True].get(k, 0):.1f}",
                        f"{families[False].get(k, 0) - families[True].get(k, 0):+.1f}",
                    ]
                    for k in names
                ],
            )
            print(json.dumps({"default": families[False], "empty": families[True]}))
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
