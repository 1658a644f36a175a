"""What onion's default stack costs per call, against the CPython floor and LiteLLM.

In one run, rounds interleaved so machine noise hits every case alike:

- **onion**: ``DEFAULT_STACK`` (what ``onion serve`` runs with no config: metrics,
  logging, timeout, input guard, exact cache, output guard, retry, circuit breaker),
  built from its tables as the server builds it, around an in-process answer. Metrics go
  to the default meter provider (Prometheus reader), the log line is formatted as JSON
  and written to /dev/null. The **miss** path sends a new prompt each call (guards run,
  the answer is stored, the bounded cache evicts); the **hit** path repeats one prompt.
- **floor**: as many bare ``async def`` closures as the stack has layers, each awaiting
  the next, around the same answer: the least any layered design costs in CPython.
- **LiteLLM** (``_litellm_stack.py``, in a child process with LiteLLM's interpreter):
  ``Router.acompletion`` with retries, timeout, cooldowns and its in-memory cache, in
  front of ``mock_response``. It does less than onion's stack (no guards, no metrics).

Complete and streamed (every chunk read). µs per call p50/p99 and ratios. Writes
``benchmarks/results/stack_overhead.json``.

    python benchmarks/stack_overhead.py [--calls 2000] [--rounds 5] [--litellm-python PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _litellm_proxy
import anyio
from _fullstack import CompleteHandler, _logs_to_devnull, print_table, write_results

from onion import Message, Request, Response, Stack, build_layer
from onion.config import DEFAULT_STACK

HERE = Path(__file__).resolve().parent
Call = Callable[[Request], Awaitable[Response]]


def onion_stack(handler: CompleteHandler) -> tuple[Stack, list[str]]:
    _logs_to_devnull()
    layers = [build_layer(table, f"stack[{i}]") for i, table in enumerate(DEFAULT_STACK)]
    return Stack(layers, handler, name="default"), [t["use"] for t in DEFAULT_STACK]


def floor(n: int, handler: CompleteHandler) -> Call:
    chain: Call = handler
    for _ in range(n):

        def wrap(inner: Call) -> Call:
            async def closure(request: Request) -> Response:
                return await inner(request)

            return closure

        chain = wrap(chain)
    return chain


class OnionCase:
    """One onion or floor case: calls ``call`` with a new or a repeated prompt, and checks
    who answered every call (``expect``: the ``served_by`` every answer must carry).

    A miss prompt names its case (``complete 17``, ``stream 17``): the cache key ignores
    ``stream``, so a shared counter would let the stream case be served the answers the
    complete case just stored, and measure hits as misses.
    """

    def __init__(self, call: Call, path: str, stream: bool, expect: str) -> None:
        self.call, self.path, self.stream, self.expect = call, path, stream, expect
        self.counter = 0
        self.served: dict[str, int] = {}

    async def run(self, calls: int) -> list[float]:
        samples = []
        stream = self.stream
        kind = "stream" if stream else "complete"
        for _ in range(calls):
            self.counter += 1
            content = f"hello hit {kind}" if self.path == "hit" else f"hello {kind} {self.counter}"
            began = time.perf_counter_ns()
            response = await self.call(Request(model="gpt-4o", messages=[Message("user", content)], stream=stream))
            if stream:
                async with response:
                    async for _ in response:
                        pass
            else:
                await response.result()
            samples.append((time.perf_counter_ns() - began) / 1e3)
            self.served[response.served_by] = self.served.get(response.served_by, 0) + 1
        return samples

    def check(self, label: str) -> None:
        """Fail loudly unless every answer (after the warm-up stored the hit) came from ``expect``."""
        wrong = {who: n for who, n in self.served.items() if who != self.expect}
        if wrong:
            raise RuntimeError(f"{label}: expected every answer from {self.expect!r}, got {self.served}")


def onion_cases(stack: Stack, bare: Call, handler: CompleteHandler) -> dict[str, OnionCase]:
    """The floor and the stack's miss and hit, complete and streamed, each case checking
    who answered (the exact cache on a hit, the handler otherwise)."""
    cases: dict[str, OnionCase] = {}
    for stream in (False, True):
        kind = "stream" if stream else "complete"
        cases[f"floor|{kind}"] = OnionCase(bare, "miss", stream, handler.name)
        for path in ("miss", "hit"):
            served_by = "exact_cache" if path == "hit" else handler.name
            cases[f"onion|{kind}|{path}"] = OnionCase(stack, path, stream, served_by)
    return cases


class LiteLLMCase:
    """One LiteLLM case, run by the child process."""

    def __init__(self, child: subprocess.Popen[str], path: str, stream: bool) -> None:
        self.child, self.path, self.stream = child, path, stream

    async def run(self, calls: int) -> list[float]:
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write(json.dumps({"path": self.path, "stream": self.stream, "calls": calls}) + "\n")
        self.child.stdin.flush()
        line = self.child.stdout.readline()
        if not line:
            raise RuntimeError(f"LiteLLM's process ended (exit {self.child.wait()})")
        return json.loads(line)["us"]


def start_litellm(explicit: str | None) -> tuple[subprocess.Popen[str] | None, str, str]:
    """The child process serving LiteLLM's cases, its version, and why not if it cannot."""
    interpreter, why_not = _litellm_proxy.find_python(explicit)
    if interpreter is None:
        return None, "", why_not
    child = subprocess.Popen(
        [interpreter.python, str(HERE / "_litellm_stack.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=HERE,
    )
    assert child.stdout is not None
    ready = child.stdout.readline()
    if not ready:
        return None, "", f"LiteLLM's process ended at start (exit {child.wait()}) with {interpreter.python}"
    return child, json.loads(ready)["version"], ""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def measure(cases: dict[str, Any], calls: dict[str, int], rounds: int) -> dict[str, list[float]]:
    for label, case in cases.items():  # warm-up: first-call paths, the hit prompt stored
        await case.run(max(3, calls[label] // 20))
        if isinstance(case, OnionCase):
            case.served.clear()  # the hit case's first call was a miss that stored it
    samples: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(rounds):
        for label, case in cases.items():
            gc.collect()
            samples[label] += await case.run(calls[label])
    for label, case in cases.items():
        if isinstance(case, OnionCase):
            case.check(label)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="onion and floor calls per case and round")
    parser.add_argument("--litellm-calls", type=int, default=200, help="LiteLLM calls per case and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--litellm-python", help="interpreter with litellm[proxy] (see _litellm_proxy.py)")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio", help="anyio backend for onion")
    args = parser.parse_args()

    handler = CompleteHandler()
    stack, names = onion_stack(handler)
    bare = floor(len(names), handler)
    cases: dict[str, Any] = onion_cases(stack, bare, handler)
    calls: dict[str, int] = {}
    calls.update(dict.fromkeys(cases, args.calls))
    if args.no_litellm:
        child, version, skipped = None, "", "--no-litellm given"
    else:
        child, version, skipped = start_litellm(args.litellm_python)
    if child is not None:
        for stream in (False, True):
            kind = "stream" if stream else "complete"
            for path in ("miss", "hit"):
                cases[f"litellm|{kind}|{path}"] = LiteLLMCase(child, path, stream)
                calls[f"litellm|{kind}|{path}"] = args.litellm_calls
    try:
        samples = anyio.run(measure, cases, calls, args.rounds, backend=args.backend)
    finally:
        if child is not None:
            child.kill()
            child.wait()

    stats = {
        label: {"p50_us": percentile(s, 50), "p99_us": percentile(s, 99), "samples": len(s)}
        for label, s in samples.items()
    }
    rows, table = [], []
    for kind in ("complete", "stream"):
        floor_p50 = stats[f"floor|{kind}"]["p50_us"]
        for path in ("miss", "hit"):
            mine = stats[f"onion|{kind}|{path}"]
            theirs = stats.get(f"litellm|{kind}|{path}")
            row = {
                "case": f"{kind}, cache {path}",
                "floor_p50_us": floor_p50,
                "floor_p99_us": stats[f"floor|{kind}"]["p99_us"],
                "onion_p50_us": mine["p50_us"],
                "onion_p99_us": mine["p99_us"],
                "onion_over_floor_p50": mine["p50_us"] / floor_p50,
                "litellm_p50_us": theirs["p50_us"] if theirs else None,
                "litellm_p99_us": theirs["p99_us"] if theirs else None,
                "litellm_over_onion_p50": theirs["p50_us"] / mine["p50_us"] if theirs else None,
            }
            rows.append(row)
            table.append(
                [
                    row["case"],
                    row["floor_p50_us"],
                    row["onion_p50_us"],
                    row["onion_p99_us"],
                    row["onion_over_floor_p50"],
                    row["litellm_p50_us"] if theirs else "-",
                    row["litellm_p99_us"] if theirs else "-",
                    f"x{row['litellm_over_onion_p50']:.0f}" if theirs else "-",
                ]
            )
    print(f"default stack: [{', '.join(names)}]; floor: {len(names)} bare closures; µs per call")
    print_table(
        ["case", "floor p50", "onion p50", "onion p99", "onion/floor", "LiteLLM p50", "LiteLLM p99", "LiteLLM/onion"],
        table,
    )
    if skipped:
        print(f"LiteLLM skipped: {skipped}")
    else:
        print(f"LiteLLM {version}: Router with retries, timeout, cooldowns and its local cache; no guards, no metrics")
    path = write_results(
        "stack_overhead" if args.backend == "asyncio" else f"stack_overhead_{args.backend}",
        {
            "backend": args.backend,
            "layers": names,
            "calls_per_round": args.calls,
            "litellm_calls_per_round": args.litellm_calls,
            "rounds": args.rounds,
            "litellm_version": version or None,
            "litellm_skipped": skipped or None,
            "litellm_setup": "Router.acompletion(caching=True): num_retries=2, timeout=120, allowed_fails=5, "
            "cooldown_time=15, Cache(type='local'), mock_response; no guards, no metrics",
            "rows": rows,
            "cases": stats,
            "note": "per-call µs over all rounds' samples; the floor's p50 includes the in-process answer",
        },
    )
    print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    sys.exit(main())
