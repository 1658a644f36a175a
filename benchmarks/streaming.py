"""Streaming: time to first token added by the full stack, and chunks per second through it.

The terminal handler streams at once (no upstream delay), so every microsecond measured
is the onion's own. Three paths, interleaved call by call in one process:

- ``bare``: the handler alone (a Stack with no layers);
- ``full miss``: every built-in layer that exists (see ``_fullstack.py``), a new prompt
  per call, so the exact cache misses and then stores the stream;
- ``full hit``: the same prompt every call, answered by the cache's replay.

On the miss path the semantic cache's index grows to one entry per call (about 3,000);
its lookup is a matrix-vector product, so OpenBLAS's thread pool decides much of the
TTFT on a small machine (compare ``OPENBLAS_NUM_THREADS=1``; results record the setting).

TTFT is from calling the stack to receiving the first content chunk (p50/p99 µs over
``--calls`` calls of a ``--ttft-chunks`` stream). Throughput reads a ``--chunks`` long
stream to the end (best of ``--repeats``). Prints tables, writes
``benchmarks/results/streaming.json``.

    python benchmarks/streaming.py [--calls 3000] [--chunks 5000]
"""

from __future__ import annotations

import argparse
import time

import anyio
import anyio.lowlevel
import numpy as np
from _fullstack import StreamHandler, build_full_stack, print_table, write_results

from onion import Message, Request, Stack


async def _ttft_us(stack: Stack, request: Request) -> float:
    start = time.perf_counter()
    response = await stack(request)
    first = 0.0
    async with response:
        async for chunk in response:
            if not first and chunk.content:
                first = time.perf_counter()
    return (first - start) * 1e6


async def ttft(calls: int, chunks: int) -> tuple[dict, list[str], dict[str, str]]:
    handler = StreamHandler(chunks)
    full, built, skipped = build_full_stack(handler)
    stacks = {"bare": Stack([], handler), "full_miss": full, "full_hit": full}
    samples: dict[str, list[float]] = {name: [] for name in stacks}
    hit_request = [Message("user", "the same question every time")]
    for i in range(calls + 50):
        for name, stack in stacks.items():
            messages = hit_request if name == "full_hit" else [Message("user", f"question {i}")]
            us = await _ttft_us(stack, Request("bench", messages, stream=True))
            if i >= 50:  # the first calls warm caches and code paths
                samples[name].append(us)
        await anyio.lowlevel.checkpoint()
    table = {
        name: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)), "mean": float(np.mean(v))}
        for name, v in samples.items()
    }
    return table, built, skipped


async def _chunks_per_second(stack: Stack, request: Request) -> tuple[float, int]:
    count = 0
    start = time.perf_counter()
    async with await stack(request) as response:
        async for _ in response:
            count += 1
    return count / (time.perf_counter() - start), count


async def throughput(chunks: int, repeats: int) -> dict:
    handler = StreamHandler(chunks)
    full, _, _ = build_full_stack(handler)
    stacks = {"bare": Stack([], handler), "full_miss": full}
    best = dict.fromkeys(stacks, 0.0)
    counted = {}
    for r in range(repeats):
        for name, stack in stacks.items():
            rate, counted[name] = await _chunks_per_second(
                stack, Request("bench", [Message("user", f"long {r}")], stream=True)
            )
            best[name] = max(best[name], rate)
    return {name: {"chunks_per_s": best[name], "chunks": counted[name]} for name in stacks}


async def per_layer(names: list[str], calls: int, chunks: int) -> list[dict]:
    """Each layer alone: TTFT added (p50) and µs added per chunk, to find the costly ones."""
    from _fullstack import FULL_STACK

    everything = [t["use"] for t in FULL_STACK]
    bare_short, bare_long = Stack([], StreamHandler(20)), Stack([], StreamHandler(chunks))
    rows = []
    for name in names:
        without = tuple(n for n in everything if n != name)
        short, _, _ = build_full_stack(StreamHandler(20), without=without)
        long, _, _ = build_full_stack(StreamHandler(chunks), without=without)
        firsts: dict[str, list[float]] = {"bare": [], "layer": []}
        for i in range(calls):
            for key, stack in (("bare", bare_short), ("layer", short)):
                firsts[key].append(await _ttft_us(stack, Request("bench", [Message("user", f"q{i}")], stream=True)))
            await anyio.lowlevel.checkpoint()
        rates = {"bare": 0.0, "layer": 0.0}
        for r in range(3):
            for key, stack in (("bare", bare_long), ("layer", long)):
                rate, _ = await _chunks_per_second(stack, Request("bench", [Message("user", f"l{r}")], stream=True))
                rates[key] = max(rates[key], rate)
        rows.append(
            {
                "layer": name,
                "ttft_added_p50_us": float(np.percentile(firsts["layer"], 50) - np.percentile(firsts["bare"], 50)),
                "us_added_per_chunk": 1e6 / rates["layer"] - 1e6 / rates["bare"],
            }
        )
    return rows


async def run(calls: int, ttft_chunks: int, chunks: int, repeats: int) -> dict:
    first, built, skipped = await ttft(calls, ttft_chunks)
    rate = await throughput(chunks, repeats)
    layers = await per_layer(built, max(100, calls // 10), min(chunks, 2000))
    return {"ttft_us": first, "throughput": rate, "per_layer": layers, "layers": built, "skipped": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--ttft-chunks", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = anyio.run(run, args.calls, args.ttft_chunks, args.chunks, args.repeats)
    print(f"full stack: [{', '.join(result['layers'])}]")
    if result["skipped"]:
        print("skipped: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items()))
    t = result["ttft_us"]
    base = t["bare"]
    print(f"\ntime to first chunk, µs over {args.calls:,} calls (added = minus bare)")
    print_table(
        ["path", "p50", "p99", "added p50", "added p99"],
        [[name, v["p50"], v["p99"], v["p50"] - base["p50"], v["p99"] - base["p99"]] for name, v in t.items()],
    )
    for v in t.values():
        v["added_p50"], v["added_p99"] = v["p50"] - base["p50"], v["p99"] - base["p99"]
    rates = result["throughput"]
    bare_rate = rates["bare"]["chunks_per_s"]
    print(f"\nchunks per second through a {args.chunks:,}-chunk stream (best of {args.repeats})")
    rows = []
    for name, v in rates.items():
        per_chunk = 1e6 / v["chunks_per_s"] - 1e6 / bare_rate
        v["added_us_per_chunk"] = per_chunk
        v["share_of_bare"] = v["chunks_per_s"] / bare_rate
        rows.append([name, v["chunks_per_s"], v["share_of_bare"], per_chunk])
    print_table(["path", "chunks/s", "share of bare", "µs added per chunk"], rows)
    print("\neach layer alone (where the time goes)")
    print_table(
        ["layer", "TTFT added p50 µs", "µs added per chunk"],
        [[r["layer"], r["ttft_added_p50_us"], r["us_added_per_chunk"]] for r in result["per_layer"]],
    )
    path = write_results("streaming", {**vars(args), **result})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
