"""Soak: RSS while 100,000 requests pass through the full stack with a bounded cache.

The target is a flat line after warm-up: once the exact cache has filled to its byte
bound and every per-request structure has been reused, RSS must stop growing (a peer's
proxy is known to grow until it is killed for memory). Requests cycle over a set of
prompts larger than the cache holds, so the cache keeps evicting; a share are streamed.
RSS and live Python objects are sampled every ``--every`` requests. Bounded structures
fill first (cache bytes, the guard's verdict memo, the rate limiter's sliding log with a
5 s window here, semantic index entries); the verdict looks at the last ``--tail`` of
the run: RSS under 0.25 MiB per 10k requests and live objects within 5%.
Prints a table and writes ``benchmarks/results/soak.json``.

    python benchmarks/soak.py            # 20,000 requests (quick)
    python benchmarks/soak.py --full     # 100,000 requests, the recorded run
    python benchmarks/soak.py --trace    # also name the lines whose memory grew
"""

from __future__ import annotations

import os

# The soak measures memory, not speed. On a small machine OpenBLAS's threads make each
# semantic-cache lookup ~10x slower (see streaming.py), which would stretch the run
# past ten minutes; one BLAS thread keeps it short. Set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

import anyio
import anyio.lowlevel
from _fullstack import CompleteHandler, build_full_stack, peak_rss_mb, print_table, rss_mb, write_results

from onion import Message, Request

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = 50_000  # distinct prompts, far more than the bounded cache holds
CACHE_BYTES = 2 * 1024 * 1024
SEMANTIC_ENTRIES = 2000
FLAT_MB_PER_10K = 0.25
# Live objects swing a few percent with the rate limiter's time window; one object
# leaked per request would add over 10% across the last half of a 100k run.
FLAT_BLOCKS_SHARE = 0.05


async def soak(total: int, every: int, stream_share: int, warmup: float, trace: bool) -> dict:
    stack, built, skipped = build_full_stack(
        CompleteHandler(),
        overrides={
            "exact_cache": {"max_bytes": CACHE_BYTES, "scope": "shared"},
            "semantic_cache": {"max_entries": SEMANTIC_ENTRIES, "scope": "shared"},
            # A sliding log holds one entry per request in its window (rate x window):
            # a 5 s window reaches its steady size early in the run, not after a minute.
            "rate_limit": {"requests_per_minute": 10_000_000, "window_seconds": 5.0},
        },
    )
    samples = [{"requests": 0, "rss_mb": rss_mb(), "blocks": sys.getallocatedblocks(), "seconds": 0.0}]
    snapshot = None
    growth_sites: list[str] = []
    started = time.perf_counter()
    for i in range(1, total + 1):
        prompt = f"question number {i % PROMPTS}: what is the answer?"
        request = Request(
            model="bench", messages=[Message("user", prompt)], stream=i % stream_share == 0, user=f"u{i % 100}"
        )
        async with await stack(request) as response:
            if request.stream:
                async for _ in response:
                    pass
            else:
                await response.result()
        # A server yields to its event loop on every request (socket I/O); without this the
        # loop never runs and cancelled deadline timers pile up in its heap until it does.
        await anyio.lowlevel.checkpoint()
        if i % every == 0:
            gc.collect()
            samples.append(
                {
                    "requests": i,
                    "rss_mb": rss_mb(),
                    # Live Python objects: unlike RSS, not blurred by allocator fragmentation.
                    "blocks": sys.getallocatedblocks(),
                    "seconds": time.perf_counter() - started,
                }
            )
            if trace and snapshot is None and i >= total * warmup:
                tracemalloc.start()
                snapshot = tracemalloc.take_snapshot()
    if snapshot is not None:
        # Where the memory allocated after warm-up and still alive at the end was made.
        growth = tracemalloc.take_snapshot().compare_to(snapshot, "lineno")
        tracemalloc.stop()
        growth_sites = [str(stat) for stat in growth[:8]]
    return {"layers": built, "skipped": skipped, "samples": samples, "growth_sites": growth_sites}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--full", action="store_true", help="run 100,000 requests")
    parser.add_argument("--every", type=int, default=None, help="sample RSS every N requests (default total/10)")
    parser.add_argument("--warmup", type=float, default=0.3, help="share of requests counted as warm-up (0.3)")
    parser.add_argument("--tail", type=float, default=0.5, help="share of the run the flatness verdict uses (0.5)")
    parser.add_argument("--trace", action="store_true", help="name the lines that allocated after warm-up (slower)")
    parser.add_argument("--stream-share", type=int, default=4, help="every Nth request is streamed")
    args = parser.parse_args()
    total = 100_000 if args.full else args.requests
    every = args.every or max(1, total // 10)
    result = anyio.run(soak, total, every, args.stream_share, args.warmup, args.trace)
    samples = result["samples"]
    # Warm-up: the cache fills to its bound and allocator pools settle; after it, RSS
    # must stay flat.
    warm = next((s for s in samples if s["requests"] >= total * args.warmup), samples[-1])
    last = samples[-1]
    growth = last["rss_mb"] - warm["rss_mb"]
    per_10k = growth / max(1, last["requests"] - warm["requests"]) * 10_000
    # The verdict is the slope over the last --tail share of the run: every structure
    # that is bounded by size or by a time window has filled by then, so what still
    # grows there is growth without bound.
    tail_start = next((s for s in samples if s["requests"] >= total * (1 - args.tail)), samples[-2])
    tail_per_10k = (last["rss_mb"] - tail_start["rss_mb"]) / max(1, last["requests"] - tail_start["requests"]) * 10_000
    print(f"soak: {total:,} requests through [{', '.join(result['layers'])}]")
    if result["skipped"]:
        print("skipped layers: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items()))
    print_table(
        ["requests", "RSS MiB", "Δ since warm-up", "live objects", "seconds"],
        [[s["requests"], s["rss_mb"], s["rss_mb"] - warm["rss_mb"], s["blocks"], s["seconds"]] for s in samples],
    )
    tail_blocks = (last["blocks"] - tail_start["blocks"]) / max(1, tail_start["blocks"])
    heap_flat = tail_blocks < FLAT_BLOCKS_SHARE
    flat = abs(tail_per_10k) < FLAT_MB_PER_10K and heap_flat
    print(
        f"growth after warm-up ({warm['requests']:,} → {last['requests']:,}): {growth:+.2f} MiB "
        f"({per_10k:+.3f} MiB per 10k requests); peak RSS {peak_rss_mb():.1f} MiB"
    )
    print(
        f"last {args.tail:.0%} of the run ({tail_start['requests']:,} → {last['requests']:,}): "
        f"RSS {tail_per_10k:+.3f} MiB per 10k requests, live objects {tail_blocks:+.2%} → "
        + ("flat" if flat else "heap flat, RSS drifting (allocator)" if heap_flat else "GROWING")
    )
    for site in result["growth_sites"]:
        print("  grew after warm-up: " + site.replace(str(ROOT) + "/", ""))
    path = write_results(
        "soak",
        {
            "requests": total,
            "every": every,
            "cache_max_bytes": CACHE_BYTES,
            "semantic_max_entries": SEMANTIC_ENTRIES,
            "stream_share": args.stream_share,
            **result,
            "warmup_requests": warm["requests"],
            "growth_mb": growth,
            "growth_mb_per_10k": per_10k,
            "tail_start_requests": tail_start["requests"],
            "tail_growth_mb_per_10k": tail_per_10k,
            "tail_live_blocks_growth": tail_blocks,
            "heap_flat": heap_flat,
            "flat": flat,
            "peak_rss_mb": peak_rss_mb(),
            "rps": total / last["seconds"] if last["seconds"] else 0.0,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
