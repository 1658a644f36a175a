"""What balancing a model across deployments costs the router per call.

In one run, rounds interleaved so machine noise hits every case alike, around an
in-process answer (no upstream, so only the router's own work is measured):

- **one**: a model one provider lists (the router's plain path, as before issue 17);
- **two**: a model two providers list: a weighted least-request pick, the health
  book's start and verdict, the ``x-onion-deployment`` header, a stream's ``on_end``;
- **two + redis**: the same with a real ``redis-server`` shared (one sorted-set add
  and one Lua settle per call, a snapshot at most every 0.5 s), skipped without one.

Complete and streamed (every chunk read). µs per call p50/p99. Writes
``benchmarks/results/router_balance.json``.

    python benchmarks/router_balance.py [--calls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
from _fullstack import CompleteHandler, _logs_to_devnull, print_table, write_results

from onion import Context, Message, Request
from onion.providers import Router


class Deployment(CompleteHandler):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.models = ("m",)


@contextmanager
def redis_server() -> Iterator[str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.3)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)


async def measure(router: Router, calls: int, stream: bool) -> list[float]:
    times = []
    for _ in range(calls):
        request = Request(model="m", messages=[Message("user", "hi")], stream=stream, context=Context())
        started = time.perf_counter()
        response = await router(request)
        async for _ in response:
            pass
        times.append((time.perf_counter() - started) * 1e6)
    return times


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def main(calls: int, rounds: int, redis_url: str | None) -> None:
    _logs_to_devnull()
    routers = {
        "one": Router([Deployment("a")]),
        "two": Router([Deployment("a"), Deployment("b")]),
    }
    if redis_url is not None:
        routers["two + redis"] = Router([Deployment("a"), Deployment("b")], redis=redis_url)
    samples: dict[tuple[str, bool], list[float]] = {(name, s): [] for name in routers for s in (False, True)}
    for _ in range(rounds):
        for stream in (False, True):
            for name, router in routers.items():
                samples[(name, stream)] += await measure(router, calls, stream)
    rows, results = [], []
    for (name, stream), values in samples.items():
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        rows.append([name, "stream" if stream else "complete", p50, p99])
        results.append({"case": name, "stream": stream, "p50_us": p50, "p99_us": p99, "calls": len(values)})
    print_table(["router", "answer", "p50 µs", "p99 µs"], rows)
    for router in routers.values():
        await router.aclose()
    path = write_results("router_balance", {"calls": calls, "rounds": rounds, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with redis_server() as url:
        anyio.run(main, args.calls, args.rounds, url)
