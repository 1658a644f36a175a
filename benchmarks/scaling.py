"""Scaling: how the onion's cost grows with the number of layers and the history length.

1. Layers: 1..32 pass-through layers, and 1..32 layers that each observe every chunk of
   a stream (as a metrics or guard layer would), complete and streamed calls, against
   zero layers. The per-layer slope is fitted over all depths; growth should be linear
   (R² near 1), never worse.
2. History: requests with 1..2000 messages through each history-sensitive layer that
   exists (trim_context with a 2,000-token budget and gpt-4o's tokenizer, exact_cache
   keying, input_guard scanning), alone, against the bare handler; µs added per call.

Every variant runs interleaved in one process (min of ``--repeats`` runs, CPU time of
the process), so machine noise hits them alike. Prints tables and writes ``benchmarks/results/scaling.json``.

    python benchmarks/scaling.py [--calls 3000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import anyio
import numpy as np
from _fullstack import CompleteHandler, StreamHandler, build_full_stack, print_table, write_results

from onion import CallNext, Chunk, Layer, Message, Request, Response, Stack
from onion.testing import each_chunk

DEPTHS = [0, 1, 2, 4, 8, 16, 32]
HISTORY = [1, 10, 100, 500, 2000]
HISTORY_LAYERS = ["trim_context", "exact_cache", "input_guard"]
# A real OpenAI model name, so token counts use its exact tokenizer; a 2,000-token budget
# makes trim_context drop turns from about 60 messages on.
HISTORY_MODEL = "gpt-4o"
HISTORY_PARAMS = {"trim_context": {"max_tokens": 2000}}


class PassThrough(Layer):
    """Calls the next layer and returns its answer untouched."""

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        return await call_next(request)


def _count(chunk: Chunk) -> None:
    pass


_EACH = each_chunk(_count)


class Observer(Layer):
    """Sees every chunk go by, as an output guard does."""

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        return response if response.completion is not None else response.wrap(_EACH)


async def _per_call_us(stack: Stack, make: Callable[[int], Request], calls: int) -> float:
    # CPU time of this process, not wall time: the machine is shared, and time spent
    # descheduled is not the onion's cost. Everything here is single-threaded CPU work.
    start = time.process_time()
    for i in range(calls):
        request = make(i)
        response = await stack(request)
        if request.stream:
            async for _ in response:
                pass
        else:
            await response.result()
    return (time.process_time() - start) / calls * 1e6


async def depth_rows(calls: int, repeats: int) -> list[dict]:
    complete, streamed = CompleteHandler(), StreamHandler(10)
    messages = [Message("user", "hello")]
    rows = []
    for depth in DEPTHS:
        variants = {
            "pass_complete": (Stack([PassThrough() for _ in range(depth)], complete), False),
            "pass_stream": (Stack([PassThrough() for _ in range(depth)], streamed), True),
            "observe_stream": (Stack([Observer() for _ in range(depth)], streamed), True),
        }
        best = {name: float("inf") for name in variants}
        for _ in range(repeats):
            for name, (stack, stream) in variants.items():
                us = await _per_call_us(stack, lambda i, s=stream: Request("m", messages, stream=s), calls)
                best[name] = min(best[name], us)
        rows.append({"layers": depth, **best})
    return rows


def fit(rows: list[dict], key: str) -> dict:
    """Least-squares slope (µs per layer), intercept and R² of ``key`` against depth."""
    x = np.array([r["layers"] for r in rows], dtype=float)
    y = np.array([r[key] for r in rows], dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    predicted = slope * x + intercept
    total = float(((y - y.mean()) ** 2).sum()) or 1.0
    return {
        "us_per_layer": float(slope),
        "intercept_us": float(intercept),
        "r2": 1 - float(((y - predicted) ** 2).sum()) / total,
    }


async def history_rows(calls: int, repeats: int) -> tuple[list[dict], dict[str, str]]:
    handler = CompleteHandler()
    stacks = {"bare": Stack([], handler)}
    skipped: dict[str, str] = {}
    for name in HISTORY_LAYERS:
        others = tuple(n for n in _all_names() if n != name)
        stack, built, missing = build_full_stack(handler, without=others, overrides=HISTORY_PARAMS)
        if built == [name]:
            stacks[name] = stack
        else:
            skipped[name] = missing.get(name, "could not be built")
    rows = []
    for length in HISTORY:
        history = [
            Message("user" if i % 2 == 0 else "assistant", f"turn {i}: " + "lorem ipsum " * 8) for i in range(length)
        ]
        n = max(50, calls // max(1, length // 20))
        best = {name: float("inf") for name in stacks}
        for _ in range(repeats):
            for name, stack in stacks.items():
                # A distinct last message per call keeps the exact cache on its miss path.
                us = await _per_call_us(
                    stack, lambda i, h=history: Request(HISTORY_MODEL, [*h, Message("user", f"q{i}")]), n
                )
                best[name] = min(best[name], us)
        rows.append(
            {
                "messages": length,
                "calls": n,
                **best,
                **{f"{k}_added": best[k] - best["bare"] for k in stacks if k != "bare"},
            }
        )
    return rows, skipped


def _all_names() -> list[str]:
    from _fullstack import FULL_STACK

    return [t["use"] for t in FULL_STACK]


async def run(calls: int, repeats: int) -> dict:
    depth = await depth_rows(calls, repeats)
    fits = {key: fit(depth, key) for key in ("pass_complete", "pass_stream", "observe_stream")}
    history, skipped = await history_rows(calls, repeats)
    return {"depth": depth, "fits": fits, "history": history, "skipped": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    result = anyio.run(run, args.calls, args.repeats)
    print(f"µs per call by depth (min of {args.repeats} runs of {args.calls:,} calls; streams carry 11 chunks)")
    print_table(
        ["layers", "pass complete", "pass stream", "observe stream"],
        [[r["layers"], r["pass_complete"], r["pass_stream"], r["observe_stream"]] for r in result["depth"]],
    )
    for key, f in result["fits"].items():
        print(f"  {key}: {f['us_per_layer']:.3f} µs per layer (R² {f['r2']:.4f})")
    names = [k for k in result["history"][0] if k not in ("messages", "calls") and not k.endswith("_added")]
    print("\nµs per call by history length (each layer alone; 'added' = minus bare)")
    print_table(
        ["messages", *names, *[f"{n} added" for n in names if n != "bare"]],
        [
            [r["messages"], *[r[n] for n in names], *[r[f"{n}_added"] for n in names if n != "bare"]]
            for r in result["history"]
        ],
    )
    for name, why in result["skipped"].items():
        print(f"skipped {name}: {why}")
    path = write_results("scaling", {"calls": args.calls, "repeats": args.repeats, **result})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
