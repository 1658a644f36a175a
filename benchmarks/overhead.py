"""Per-layer cost of the onion against the CPython floor.

The floor is N plain ``async def`` closures composed by hand, each awaiting the next: the
least any layered design can cost in CPython. The onion runs N pass-through layers (a
``Layer`` subclass, and plain ``async def`` function layers) through ``Stack``. Both sides
build a fresh request per call and run interleaved in one process, so machine noise hits
them alike. Prints a table and writes ``benchmarks/results/overhead.json``.

    python benchmarks/overhead.py [--calls 100000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from onion import CallNext, Completion, Layer, Message, Request, Response, Stack

RESULTS = Path(__file__).parent / "results" / "overhead.json"
ANSWER = Response.complete(Completion(content="ok", model="m"), served_by="handler")
MESSAGES = [Message("user", "hello")]


async def handler(request: Request) -> Response:
    return ANSWER


class PassThrough(Layer):
    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        return await call_next(request)


async def pass_through(request: Request, call_next: CallNext) -> Response:
    return await call_next(request)


def floor(n: int) -> Callable[[Request], Awaitable[Response]]:
    chain: Callable[[Request], Awaitable[Response]] = handler
    for _ in range(n):

        def make(inner: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
            async def closure(request: Request) -> Response:
                return await inner(request)

            return closure

        chain = make(chain)
    return chain


async def per_call_us(call: Callable[[Request], Awaitable[Response]], calls: int) -> float:
    messages = MESSAGES
    start = time.perf_counter()
    for _ in range(calls):
        await call(Request(model="m", messages=messages))
    return (time.perf_counter() - start) / calls * 1e6


async def measure(sizes: list[int], calls: int, repeats: int) -> list[dict[str, float]]:
    rows = []
    for n in sizes:
        variants = {
            "floor": floor(n),
            "onion_class": Stack([PassThrough() for _ in range(n)], handler=handler),
            "onion_function": Stack([pass_through for _ in range(n)], handler=handler),
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeats):
            for name, call in variants.items():
                samples[name].append(await per_call_us(call, calls))
        rows.append({"layers": n, **{name: min(values) for name, values in samples.items()}})
    return rows


def slope(xs: list[int], ys: list[float]) -> float:
    """Least-squares slope: the per-layer cost from every size at once, steadier than any
    one difference of two small timings."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    sizes = [0, 1, 4, 8, 16]
    rows = anyio.run(measure, sizes, args.calls, args.repeats)
    base = rows[0]
    print(f"µs per call (min of {args.repeats} runs of {args.calls:,} calls); per-layer = (t(N) - t(0)) / N")
    print(
        f"{'layers':>6} {'floor':>8} {'onion':>8} {'onion fn':>9} {'floor/layer':>12} {'onion/layer':>12} {'ratio':>6}"
    )
    for row in rows:
        n = row["layers"]
        if n:
            floor_layer = (row["floor"] - base["floor"]) / n
            onion_layer = (row["onion_class"] - base["onion_class"]) / n
            row["floor_per_layer"] = floor_layer
            row["onion_per_layer"] = onion_layer
            row["onion_fn_per_layer"] = (row["onion_function"] - base["onion_function"]) / n
            row["ratio"] = onion_layer / floor_layer
            tail = f"{floor_layer:>12.3f} {onion_layer:>12.3f} {row['ratio']:>6.2f}"
        else:
            tail = f"{'':>12} {'':>12} {'':>6}"
        print(f"{n:>6} {row['floor']:>8.3f} {row['onion_class']:>8.3f} {row['onion_function']:>9.3f} {tail}")
    sizes_seen = [row["layers"] for row in rows]
    fit = {name: slope(sizes_seen, [row[name] for row in rows]) for name in ("floor", "onion_class", "onion_function")}
    fit["ratio"] = fit["onion_class"] / fit["floor"]
    print(
        f"slope over all sizes: floor {fit['floor']:.3f} µs/layer, onion {fit['onion_class']:.3f}, "
        f"onion fn {fit['onion_function']:.3f}; ratio {fit['ratio']:.2f} (target <= 1.5)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "overhead",
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "processor": platform.processor(),
                "calls": args.calls,
                "repeats": args.repeats,
                "rows": rows,
                "per_layer_slope": fit,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
