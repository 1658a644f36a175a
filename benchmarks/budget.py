"""What the ``budget`` check costs per request: reserve before the call, settle after.

Each row is a stack ``[Budget(...)]`` around an in-process handler that answers at once
(a complete answer with usage, so the settle runs in the same call), minus the same
stack without the layer, per call, median (and best) of interleaved repeats. Rows: the memory,
SQLite and Redis stores, each with one budget (the key's) and with three (key, team,
global: one atomic reserve over all three). Redis is a local ``redis-server`` started
here on a free port (or ``--redis-url``), so its row is loopback round trips plus the
worker-thread hop, two per call (reserve, settle). Prints a table and writes
``benchmarks/results/budget.json``.

    python benchmarks/budget.py [--calls 3000] [--repeats 5] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio

from middlewares.limit.budget import Budget
from middlewares.observe.prices import PriceTable
from onion import Completion, Context, Message, Request, Response, Stack, Usage

RESULTS = Path(__file__).parent / "results" / "budget.json"
PRICES = PriceTable({"m": (1.0, 2.0)})
MESSAGES = [Message("user", "hello, how much does this cost?")]


async def handler(request: Request) -> Response:
    return Response.complete(Completion(content="ok", model="m", usage=Usage(12, 3, 15)), served_by="handler")


def _request() -> Request:
    return Request(model="m", messages=MESSAGES, max_tokens=16, context=Context(caller="alice", team="red"))


async def per_call_us(stack: Stack, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await stack(_request())
    return (time.perf_counter() - start) / calls * 1e6


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str | None]:
    if url is not None:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.1):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait()


def _layer(backend: str, budgets: int, directory: str, redis_url: str | None) -> Budget:
    huge = 1e6  # dollars: the budget never refuses, every call reserves and settles
    options: dict[str, object] = {"keys": {"alice": huge}, "key_prefix": f"bench:{time.monotonic_ns()}"}
    if budgets == 3:
        options.update(teams={"red": huge}, global_usd=huge)
    if backend == "sqlite":
        options.update(path=f"{directory}/budget-{time.monotonic_ns()}.db")
    if backend == "redis":
        options.update(redis_url=redis_url)
    return Budget(backend=backend, price_table=PRICES, **options)  # type: ignore[arg-type]


async def main(calls: int, repeats: int, redis_url: str | None) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    bare = Stack([], handler)
    with tempfile.TemporaryDirectory() as directory, redis_server(redis_url) as url:
        for backend in ("memory", "sqlite", "redis"):
            if backend == "redis" and url is None:
                print("redis: no redis-server and no --redis-url; row skipped", file=sys.stderr)
                continue
            n = calls if backend == "memory" else max(200, calls // 5)
            for budgets in (1, 3):
                layer = _layer(backend, budgets, directory, url)
                stack = Stack([layer], handler)
                await per_call_us(stack, min(n, 200))  # warm up (connections, scripts, tables)
                costs, totals = [], []
                for _ in range(repeats):
                    base = await per_call_us(bare, n)
                    total = await per_call_us(stack, n)
                    costs.append(total - base)
                    totals.append(total)
                spent, reserved, _ = await layer.status(f"{layer.prefix}:key:alice")
                assert reserved == 0 and spent > 0
                await layer.aclose()
                rows.append(
                    {
                        "store": backend,
                        "budgets": budgets,
                        "calls": n,
                        "budget_us_per_call": round(statistics.median(costs), 2),
                        "budget_us_best": round(min(costs), 2),
                        "stack_us_per_call": round(statistics.median(totals), 2),
                    }
                )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    rows = anyio.run(main, args.calls, args.repeats, args.redis_url)
    print(f"{'store':<8} {'budgets':>7} {'calls':>6} {'budget µs/call':>15} {'best':>8} {'stack µs/call':>14}")
    for row in rows:
        print(
            f"{row['store']:<8} {row['budgets']:>7} {row['calls']:>6} "
            f"{row['budget_us_per_call']:>15.2f} {row['budget_us_best']:>8.2f} {row['stack_us_per_call']:>14.2f}"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps({"python": platform.python_version(), "machine": platform.machine(), "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {RESULTS}")
