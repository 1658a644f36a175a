"""Gateway benchmark: what ``onion serve`` adds on top of calling the upstream directly.

Three processes, as in production: the fake OpenAI-compatible upstream, the gateway
(``onion serve`` with an empty stack, and again with the default stack), and this client
(httpx). Measured:

- added latency = gateway percentile minus direct percentile, for complete answers and
  for streams (time to the first ``data:`` event), at concurrency 1 and 64;
- requests per second of the gateway in front of a zero-latency simulated upstream
  (the client is one httpx process, so on a small machine it is part of the limit);
- the in-process cost of the ASGI app per request (no sockets), i.e. the ceiling of one core;
- the gateway process's peak RSS.

Run: ``python benchmarks/gateway.py`` (about a minute). Writes benchmarks/results/gateway.json.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "gateway.json"
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "say something short please"}]}
STREAM_BODY = {**BODY, "stream": True}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def start_upstream() -> tuple[subprocess.Popen[str], str]:
    code = (
        "import sys\nfrom onion.testing.upstream import FakeUpstream\n"
        "up = FakeUpstream().start()\nprint(up.base_url, flush=True)\nsys.stdin.read()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def start_gateway(config_text: str, workdir: str, name: str) -> tuple[subprocess.Popen[str], str]:
    path = Path(workdir) / f"{name}.toml"
    path.write_text(config_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    # Log lines go to a file, as to a log collector: an unread pipe would fill and block
    # the gateway's writes (the default stack logs one line per request).
    with (Path(workdir) / f"{name}.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "onion.cli", "serve", "--config", str(path), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("listening on "):
            return process, line.split()[2] + "/v1"
    raise RuntimeError(f"gateway {name} did not start")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def one(client: httpx.AsyncClient, url: str, stream: bool) -> float:
    began = time.perf_counter()
    if not stream:
        response = await client.post(url, json=BODY)
        response.raise_for_status()
        return time.perf_counter() - began
    async with client.stream("POST", url, json=STREAM_BODY) as response:
        response.raise_for_status()
        first = None
        async for line in response.aiter_lines():
            if first is None and line.startswith("data:"):
                first = time.perf_counter() - began
        assert first is not None
        return first


async def measure(base_url: str, stream: bool, concurrency: int, total: int) -> list[float]:
    url = base_url + "/chat/completions"
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for _ in range(min(50, total)):
            await one(client, url, stream)
        samples: list[float] = []

        async def worker(count: int) -> None:
            for _ in range(count):
                samples.append(await one(client, url, stream))

        async with anyio.create_task_group() as group:
            for index in range(concurrency):
                group.start_soon(worker, total // concurrency + (index < total % concurrency))
    return samples


async def throughput(base_url: str, seconds: float, concurrency: int) -> float:
    """Requests per second with ``concurrency`` keep-alive connections from a minimal raw
    HTTP/1.1 client (httpx would cost more CPU than the gateway and measure itself)."""
    host, _, rest = base_url.removeprefix("http://").partition("/")
    address, _, port = host.partition(":")
    payload = json.dumps({**BODY, "model": "sim"}).encode()
    request = (
        f"POST /{rest}/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    done = 0
    stop_at = 0.0

    async def connection() -> None:
        nonlocal done
        stream = await anyio.connect_tcp(address, int(port))
        buffer = b""
        async with stream:
            while time.perf_counter() < stop_at:
                await stream.send(request)
                while b"\r\n\r\n" not in buffer:
                    buffer += await stream.receive()
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.decode("latin-1"))
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(buffer) < length:
                    buffer += await stream.receive()
                buffer = buffer[length:]
                done += 1

    stop_at = time.perf_counter() + 0.5  # warm up
    async with anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(connection)
    done = 0
    began = time.perf_counter()
    stop_at = began + seconds
    async with anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(connection)
    return done / (time.perf_counter() - began)


async def in_process_cost(requests: int = 3000) -> dict[str, float]:
    """Microseconds per request through the ASGI app alone, zero-latency upstream, no sockets."""
    from onion import Stack
    from onion.providers import Router, SimulatedProvider
    from onion.server import GatewayApp

    router = Router([SimulatedProvider(name="sim", models=["sim"], ttft=0, tokens_per_second=0, answer_tokens=16)])
    app = GatewayApp(Stack([], router), models=router.models())
    results = {}
    for label, stream in (("complete", False), ("stream", True)):
        payload = json.dumps({**BODY, "model": "sim", "stream": stream}).encode()
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/chat/completions",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
        sent = 0

        class Receive:
            """The body once, then wait like a server does until the client goes away."""

            def __init__(self, payload: bytes = payload) -> None:
                self.message: dict[str, Any] | None = {"type": "http.request", "body": payload, "more_body": False}

            async def __call__(self) -> dict[str, Any]:
                if self.message is not None:
                    message, self.message = self.message, None
                    return message
                await anyio.sleep_forever()
                raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            nonlocal sent
            sent += 1

        for _ in range(200):
            await app(scope, Receive(), send)
        began = time.perf_counter()
        for _ in range(requests):
            await app(scope, Receive(), send)
        results[label] = (time.perf_counter() - began) / requests * 1e6
    return results


def row(label: str, direct: list[float], via: list[float]) -> dict[str, float]:
    d50, d99 = percentile(direct, 50) * 1e3, percentile(direct, 99) * 1e3
    g50, g99 = percentile(via, 50) * 1e3, percentile(via, 99) * 1e3
    return {
        "case": label,
        "direct_p50_ms": round(d50, 3),
        "gateway_p50_ms": round(g50, 3),
        "added_p50_ms": round(g50 - d50, 3),
        "direct_p99_ms": round(d99, 3),
        "gateway_p99_ms": round(g99, 3),
        "added_p99_ms": round(g99 - d99, 3),
        "samples": len(via),
    }


def main() -> None:
    started = time.perf_counter()
    upstream, upstream_url = start_upstream()
    processes: list[subprocess.Popen[str]] = [upstream]
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "note": "added = gateway percentile minus direct percentile; client, gateway and upstream share the cores",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        with tempfile.TemporaryDirectory() as workdir:
            provider = (
                f'[[providers]]\nname = "up"\nkind = "openai"\nbase_url = "{upstream_url}"\nmodels = ["gpt-4o"]\n'
            )
            bare, bare_url = start_gateway(provider, workdir, "bare")
            processes.append(bare)
            from onion.config import DEFAULT_STACK

            stack = "".join(
                "\n[[stack]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
                for table in DEFAULT_STACK
                if table["use"] != "exact_cache"  # a cache would answer the repeated benchmark prompt itself
            )
            full, full_url = start_gateway(provider + stack, workdir, "default-stack")
            processes.append(full)
            simulated = (
                '[[providers]]\nname = "sim"\nkind = "simulated"\nmodels = ["sim"]\n'
                "ttft = 0.0\ntokens_per_second = 0.0\nanswer_tokens = 16\n"
            )
            sim, sim_url = start_gateway(simulated, workdir, "simulated")
            processes.append(sim)

            rows = []
            for concurrency, total in ((1, 300), (64, 640)):
                for stream in (False, True):
                    kind = "stream TTFT" if stream else "complete"
                    print(f"measuring {kind} at concurrency {concurrency}...", file=sys.stderr, flush=True)
                    direct = anyio.run(measure, upstream_url, stream, concurrency, total)
                    via = anyio.run(measure, bare_url, stream, concurrency, total)
                    rows.append(row(f"{kind}, concurrency {concurrency}", direct, via))
                    if concurrency == 1:
                        via_stack = anyio.run(measure, full_url, stream, concurrency, total)
                        rows.append(row(f"{kind}, concurrency 1, default stack", direct, via_stack))
            report["latency"] = rows
            report["rps_zero_latency_upstream_c64"] = round(anyio.run(throughput, sim_url, 3.0, 64), 1)
            report["in_process_us_per_request"] = {k: round(v, 1) for k, v in anyio.run(in_process_cost).items()}
            report["peak_rss_mib"] = {
                "gateway_bare": round(peak_rss_mib(bare.pid), 1),
                "gateway_default_stack": round(peak_rss_mib(full.pid), 1),
                "gateway_simulated": round(peak_rss_mib(sim.pid), 1),
            }
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    report["seconds"] = round(time.perf_counter() - started, 1)
    print_table(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT.parent)}")


def print_table(report: dict[str, Any]) -> None:
    print(f"gateway benchmark — {report['machine']}")
    header = f"{'case':<40} {'direct p50':>10} {'added p50':>10} {'direct p99':>10} {'added p99':>10}"
    print(header)
    print("-" * len(header))
    for r in report["latency"]:
        print(
            f"{r['case']:<40} {r['direct_p50_ms']:>8.3f}ms {r['added_p50_ms']:>8.3f}ms "
            f"{r['direct_p99_ms']:>8.3f}ms {r['added_p99_ms']:>8.3f}ms"
        )
    print(f"\nrequests/s, zero-latency simulated upstream, c=64: {report['rps_zero_latency_upstream_c64']}")
    cost = report["in_process_us_per_request"]
    print(f"ASGI app alone, per request: complete {cost['complete']} µs, stream {cost['stream']} µs")
    print("peak RSS (MiB): " + ", ".join(f"{k} {v}" for k, v in report["peak_rss_mib"].items()))
    print(f"ran in {report['seconds']} s")


if __name__ == "__main__":
    main()
