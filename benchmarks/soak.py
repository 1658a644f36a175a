"""Soak: RSS while 100,000 requests pass through the full stack with a bounded cache.

The target is a flat line after warm-up: once the exact cache has filled to its byte
bound and every per-request structure has been reused, RSS must stop growing (a peer's
proxy is known to grow until it is killed for memory). Requests cycle over a set of
prompts larger than the cache holds, so the cache keeps evicting; a share are streamed.
RSS is sampled every ``--every`` requests; growth is measured from the first sample
after warm-up to the last. Prints a table and writes ``benchmarks/results/soak.json``.

    python benchmarks/soak.py            # 20,000 requests (quick)
    python benchmarks/soak.py --full     # 100,000 requests, the recorded run
"""

from __future__ import annotations

import argparse
import gc
import time

import anyio
import anyio.lowlevel
from _fullstack import CompleteHandler, build_full_stack, peak_rss_mb, print_table, rss_mb, write_results

from onion import Message, Request

PROMPTS = 50_000  # distinct prompts, far more than the bounded cache holds
CACHE_BYTES = 2 * 1024 * 1024


async def soak(total: int, every: int, stream_share: int) -> dict:
    stack, built, skipped = build_full_stack(
        CompleteHandler(), overrides={"exact_cache": {"max_bytes": CACHE_BYTES, "scope": "shared"}}
    )
    samples = [{"requests": 0, "rss_mb": rss_mb(), "seconds": 0.0}]
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
            samples.append({"requests": i, "rss_mb": rss_mb(), "seconds": time.perf_counter() - started})
    return {"layers": built, "skipped": skipped, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--full", action="store_true", help="run 100,000 requests")
    parser.add_argument("--every", type=int, default=None, help="sample RSS every N requests (default total/10)")
    parser.add_argument("--warmup", type=float, default=0.3, help="share of requests counted as warm-up (0.3)")
    parser.add_argument("--stream-share", type=int, default=4, help="every Nth request is streamed")
    args = parser.parse_args()
    total = 100_000 if args.full else args.requests
    every = args.every or max(1, total // 10)
    result = anyio.run(soak, total, every, args.stream_share)
    samples = result["samples"]
    # Warm-up: the cache fills to its bound and allocator pools settle; after it, RSS
    # must stay flat.
    warm = next((s for s in samples if s["requests"] >= total * args.warmup), samples[-1])
    last = samples[-1]
    growth = last["rss_mb"] - warm["rss_mb"]
    per_10k = growth / max(1, last["requests"] - warm["requests"]) * 10_000
    print(f"soak: {total:,} requests through [{', '.join(result['layers'])}]")
    if result["skipped"]:
        print("skipped layers: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items()))
    print_table(
        ["requests", "RSS MiB", "Δ since warm-up", "seconds"],
        [[s["requests"], s["rss_mb"], s["rss_mb"] - warm["rss_mb"], s["seconds"]] for s in samples],
    )
    flat = abs(per_10k) < 0.5
    print(
        f"growth after warm-up ({warm['requests']:,} → {last['requests']:,}): {growth:+.2f} MiB "
        f"({per_10k:+.3f} MiB per 10k requests) → {'flat' if flat else 'GROWING'}; peak RSS {peak_rss_mb():.1f} MiB"
    )
    path = write_results(
        "soak",
        {
            "requests": total,
            "every": every,
            "cache_max_bytes": CACHE_BYTES,
            "stream_share": args.stream_share,
            **result,
            "warmup_requests": warm["requests"],
            "growth_mb": growth,
            "growth_mb_per_10k": per_10k,
            "flat": flat,
            "peak_rss_mb": peak_rss_mb(),
            "rps": total / last["seconds"] if last["seconds"] else 0.0,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
