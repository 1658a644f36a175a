"""Gateway benchmark: what ``onion serve`` adds on top of calling the upstream directly,
side by side with LiteLLM's proxy in front of the same upstream.

Processes, as in production: the fake OpenAI-compatible upstream, the gateways (``onion
serve`` with an empty stack, and again with the default stack; LiteLLM's proxy server,
``litellm --config``, offline in its own virtualenv, see ``_litellm_proxy.py``), and this
client (httpx). Measured in one run:

- added latency = gateway percentile minus direct percentile (p50, p99), for complete
  answers and for streams (time to the first ``data:`` event), at concurrency 1, 64 and
  256; requests a gateway failed are counted, not timed;
- requests per second of each gateway in front of a zero-latency upstream at concurrency
  64 (onion's simulated provider; LiteLLM's ``mock_response``); the client is one
  process, so on a small machine it is part of the limit;
- the in-process cost of onion's ASGI app per request (no sockets), i.e. the ceiling of one core;
- each gateway process's peak RSS (VmHWM);
- scale-out (``--scale-out`` runs only this, and merges it into the results file):
  requests/s through the default stack (no cache) in front of the HTTP fake upstream
  with ``--workers 1`` and ``--workers 2``, and the server choice: the same app under
  plain uvicorn (httptools) and under onion's ``GuardedProtocol`` (its connection limits);
  each round also measures the machine's own 2-to-1 (two CPU-bound processes against one)
  and a reference server's (a bare ASGI app under uvicorn that burns what one worker of
  the stack spends per request, measured first; 1 and 2 forked workers, under the same
  wrk load): what a second worker of that weight can gain on these cores with the load
  generator beside it;

- slowloris (``--slowloris`` runs only this): 1,100 slow sockets (a third trickling
  headers, a third trickling a body, a third silent) against ``onion serve`` started with
  a soft limit of 1,024 open files; probes of a normal request while they are open.

Run: ``python benchmarks/gateway.py [--litellm-python PATH] [--no-litellm] [--scale 0.2]
[--scale-out] [--slowloris]`` (about 2.5 minutes; a third of that without LiteLLM). Writes
benchmarks/results/gateway.json.
LiteLLM is skipped, with the reason printed and recorded, when no interpreter has it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _litellm_proxy
import anyio
from _fullstack import check_served

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "gateway.json"
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "say something short please"}]}
STREAM_BODY = {**BODY, "stream": True}
# (concurrency, requests direct and through onion, requests through LiteLLM): LiteLLM
# serves tens of answers a second here where onion serves thousands, so it gets fewer
# requests (8 and 3 per connection at 64 and 256) to keep the run within three minutes.
CASES = ((1, 300, 300), (64, 2048, 512), (256, 4096, 768))
ONION, ONION_STACK, LITELLM = "onion", "onion default stack", "litellm proxy"
GATEWAYS = (ONION, ONION_STACK, LITELLM)
# What the case label ends with, as in the results files before LiteLLM joined.
CASE_SUFFIX = {ONION: "", ONION_STACK: ", default stack", LITELLM: ", litellm proxy"}


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


def start_gateway(
    config_text: str, workdir: str, name: str, extra: Sequence[str] = (), command: Sequence[str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    path = Path(workdir) / f"{name}.toml"
    path.write_text(config_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    # Both streams go to files, as to a log collector: an unread pipe would fill and block
    # the gateway's writes (the default stack logs one line per request).
    out_path, log_path = Path(workdir) / f"{name}.out", Path(workdir) / f"{name}.log"
    with out_path.open("wb") as out, log_path.open("wb") as log:
        process = subprocess.Popen(
            [*(command or [sys.executable, "-m", "onion.cli", "serve"]), "--config", str(path), "--port", "0", *extra],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=log,
            env=env,
        )
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline and process.poll() is None:
        for line in out_path.read_text(errors="replace").splitlines():
            if line.startswith("listening on "):
                return process, line.split()[2] + "/v1"
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"gateway {name} did not start: {log_path.read_text(errors='replace')[-500:]}")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_ticks(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        # utime and stime: fields 14 and 15, counted after the ")" that ends the command name.
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:  # gone: it uses no CPU any more
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def settle(pids: Sequence[int], limit: float = 5.0) -> None:
    """Wait until ``pids`` are idle (under ~5% of a core), at most ``limit`` seconds, so the
    next measurement does not share the cores with work left over from the last one
    (LiteLLM may still run logging callbacks after it answered)."""
    hertz = os.sysconf("SC_CLK_TCK")
    deadline = time.perf_counter() + limit
    before = _cpu_ticks(pids)
    while time.perf_counter() < deadline:
        time.sleep(0.2)
        after = _cpu_ticks(pids)
        if (after - before) / hertz < 0.01:
            return
        before = after
    print(f"  (still busy after {limit:.0f} s; measuring anyway)", file=sys.stderr, flush=True)


class BadAnswer(Exception):
    """A status other than 200, or a body this client cannot delimit."""


# What the timed loops catch: the gateway dropped or refused the connection, or answered badly.
FAILURES = (OSError, anyio.EndOfStream, anyio.BrokenResourceError, BadAnswer, ValueError)


class Connection:
    """One keep-alive HTTP/1.1 connection, with just enough parsing for these answers
    (``Content-Length`` or chunked bodies).

    The latency client is this rather than httpx: at concurrency 64 and 256, httpx's pool
    costs more CPU per request than the gateways do, so the client would be what is measured.
    Each concurrent worker owns one connection, so the servers see exactly that concurrency.
    """

    # Reconnect rather than reuse a connection idle this long: uvicorn (onion's and
    # LiteLLM's) closes it after 5 s, and a request sent just then would fail through no
    # fault of the server (httpx's pool has the same rule, keepalive_expiry).
    IDLE_LIMIT = 4.0

    def __init__(self, address: str, port: int) -> None:
        self.address, self.port = address, port
        self.stream: anyio.abc.ByteStream | None = None
        self.buffer = b""
        self.used_at = 0.0
        # Who answered each request (``x-onion-served-by``; "-" where a server sends none,
        # the upstream itself and LiteLLM): a run whose answers came from a cache fails.
        self.served: dict[str, int] = {}

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
        self.stream, self.buffer = None, b""

    async def _receive(self) -> None:
        assert self.stream is not None
        self.buffer += await self.stream.receive(65536)

    async def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            await self._receive()
        line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        return line

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._receive()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    async def exchange(self, request: bytes) -> tuple[float, float]:
        """Send ``request`` and read the whole answer: seconds to the first ``data:`` of the
        body (for a stream's TTFT; the end if none) and to the end of the body."""
        if self.stream is not None and time.perf_counter() - self.used_at > self.IDLE_LIMIT:
            await self.close()
        if self.stream is None:
            self.stream = await anyio.connect_tcp(self.address, self.port)
        began = time.perf_counter()
        await self.stream.send(request)
        status = await self._line()
        headers = {}
        while line := await self._line():
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        body = b""
        first = None
        if b"content-length" in headers:
            body = await self._exactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            while size := int((await self._line()).split(b";")[0], 16):
                body += await self._exactly(size)
                await self._exactly(2)  # the CRLF after each chunk
                if first is None and b"data:" in body:
                    first = time.perf_counter() - began
            while await self._line():  # trailers, then the blank line
                pass
        else:
            raise BadAnswer(f"no length in {status!r}")
        self.used_at = time.perf_counter()
        end = self.used_at - began
        who = headers.get(b"x-onion-served-by", b"-").decode("latin-1")
        self.served[who] = self.served.get(who, 0) + 1
        if headers.get(b"connection") == b"close":
            await self.close()
        if not status.startswith(b"HTTP/1.1 200"):
            raise BadAnswer(f"{status.decode('latin-1')}: {body[:200]!r}")
        return (end if first is None else first), end


def _target(base_url: str, body: dict[str, Any]) -> tuple[str, int, bytes]:
    """Address, port and the raw POST of ``body`` to ``base_url``'s chat completions."""
    host, _, rest = base_url.removeprefix("http://").partition("/")
    address, _, port = host.partition(":")
    payload = json.dumps(body).encode()
    head = (
        f"POST /{rest}/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    )
    return address, int(port), head.encode() + payload


@dataclass
class Run:
    """One timed run: latencies of the requests that succeeded, how many failed, wall time,
    and the CPU seconds the server process (gateway or upstream) spent meanwhile."""

    latencies: list[float]
    errors: int
    seconds: float
    server_cpu_seconds: float
    served: dict[str, int]

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        # Less at the mercy of scheduling than latency is when client, gateway and
        # upstream share two cores (clock ticks: 10 ms, over hundreds of requests).
        return self.server_cpu_seconds / max(1, len(self.latencies) + self.errors) * 1e3


async def measure(base_url: str, stream: bool, concurrency: int, total: int, server_pid: int) -> Run:
    """``total`` requests from ``concurrency`` workers, each on its own keep-alive
    connection. A request fails on a status other than 200 or a connection the gateway
    dropped (an overloaded single process does that at c=256); the worker then reconnects."""
    address, port, request = _target(base_url, STREAM_BODY if stream else BODY)
    connections = [Connection(address, port) for _ in range(concurrency)]
    samples: list[float] = []
    errors = 0

    async def worker(connection: Connection, count: int) -> None:
        nonlocal errors
        for _ in range(count):
            try:
                samples.append((await connection.exchange(request))[0])
            except FAILURES:
                errors += 1
                await connection.close()

    try:
        # Warm-up: sequential requests settle first-request costs on each side; at c>1 a
        # concurrent wave then opens every connection, so the timed requests do not queue
        # behind a storm of connection set-ups (at c=256 that would be most of the p99).
        for _ in range(min(50, total)):
            await worker(connections[0], 1)
        async with anyio.create_task_group() as group:
            for connection in connections[1:]:
                group.start_soon(worker, connection, 1)
        samples.clear()
        errors = 0
        gc.collect()
        gc.disable()  # a collection in this client would land in some gateway's p99 by chance
        try:
            ticks = _cpu_ticks([server_pid])
            began = time.perf_counter()
            async with anyio.create_task_group() as group:
                for index, connection in enumerate(connections):
                    group.start_soon(worker, connection, total // concurrency + (index < total % concurrency))
            seconds = time.perf_counter() - began
            cpu = (_cpu_ticks([server_pid]) - ticks) / os.sysconf("SC_CLK_TCK")
        finally:
            gc.enable()
    finally:
        for connection in connections:
            await connection.close()
    return Run(samples, errors, seconds, cpu, _served(connections))


def _served(connections: list[Connection]) -> dict[str, int]:
    """Who answered, over every connection (warm-up included)."""
    return dict(sum((Counter(connection.served) for connection in connections), Counter()))


async def throughput(
    base_url: str, seconds: float, concurrency: int, model: str = "sim"
) -> tuple[float, int, dict[str, int]]:
    """Requests per second with ``concurrency`` keep-alive connections from the minimal
    client above, how many requests failed (the connection is then opened anew), and who
    answered them (``x-onion-served-by``)."""
    address, port, request = _target(base_url, {**BODY, "model": model})
    done = errors = 0
    stop_at = 0.0

    async def loop(connection: Connection) -> None:
        nonlocal done, errors
        while time.perf_counter() < stop_at:
            try:
                await connection.exchange(request)
                done += 1
            except FAILURES:
                errors += 1
                await connection.close()

    connections = [Connection(address, port) for _ in range(concurrency)]
    try:
        stop_at = time.perf_counter() + 0.5  # warm up
        async with anyio.create_task_group() as group:
            for connection in connections:
                group.start_soon(loop, connection)
        done = errors = 0
        began = time.perf_counter()
        stop_at = began + seconds
        async with anyio.create_task_group() as group:
            for connection in connections:
                group.start_soon(loop, connection)
    finally:
        for connection in connections:
            await connection.close()
    return done / (time.perf_counter() - began), errors, _served(connections)


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


def _ms(values: list[float], q: float) -> float | None:
    return round(percentile(values, q) * 1e3, 3) if values else None


def row(gateway: str, concurrency: int, stream: bool, direct: Run, via: Run) -> dict[str, Any]:
    d50, d99 = _ms(direct.latencies, 50), _ms(direct.latencies, 99)
    g50, g99 = _ms(via.latencies, 50), _ms(via.latencies, 99)
    kind = "stream TTFT" if stream else "complete"
    return {
        "case": f"{kind}, concurrency {concurrency}{CASE_SUFFIX[gateway]}",
        "direct_p50_ms": d50,
        "gateway_p50_ms": g50,
        "added_p50_ms": None if g50 is None or d50 is None else round(g50 - d50, 3),
        "direct_p99_ms": d99,
        "gateway_p99_ms": g99,
        "added_p99_ms": None if g99 is None or d99 is None else round(g99 - d99, 3),
        "samples": len(via.latencies),
        "errors": via.errors,
        "gateway": gateway,
        "concurrency": concurrency,
        "stream": stream,
        # Answers (streams: whole streams) per second over the timed requests, this client
        # included: at c=1 that is 1 / latency, at 64 and 256 it is what the set-up sustains.
        "direct_rps": round(direct.rps, 1),
        "gateway_rps": round(via.rps, 1),
        # The fake upstream's CPU per request is the baseline; the gateway's own is on top.
        "upstream_cpu_ms_per_request": round(direct.cpu_ms_per_request, 3),
        "gateway_cpu_ms_per_request": round(via.cpu_ms_per_request, 3),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--litellm-python",
        help=f"interpreter that has litellm[proxy] (default: ${_litellm_proxy.ENV_VAR}, this one, "
        f"or {_litellm_proxy.VENV_GUESS})",
    )
    parser.add_argument("--no-litellm", action="store_true", help="measure onion only")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply request counts (0.2 for a smoke run)")
    parser.add_argument("--scale-out", action="store_true", help="measure only workers 1 vs 2 and the HTTP server")
    parser.add_argument("--slowloris", action="store_true", help="measure only 1,100 slow sockets against one gateway")
    return parser.parse_args(argv)


# The same app under plain uvicorn (its httptools protocol, no connection limits): what
# onion's GuardedProtocol costs. Takes the arguments ``onion serve`` takes here.
_PLAIN_UVICORN = """
import argparse, socket, sys, uvicorn
from onion.config import build_gateway, configure_telemetry, load_config
from onion.server import create_app
parser = argparse.ArgumentParser(); parser.add_argument("--config"); parser.add_argument("--port", type=int)
args = parser.parse_args()
config = load_config(args.config)
configure_telemetry(config.telemetry)
gateway = build_gateway(config)
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.bind(("127.0.0.1", args.port))
print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
config = uvicorn.Config(create_app(gateway), http="httptools", loop="auto", lifespan="on", access_log=False,
                        log_level="warning", server_header=False)
uvicorn.Server(config).run(sockets=[sock])
"""


# The machine's ceiling for an HTTP server of onion's weight: a bare ASGI app under
# uvicorn (httptools) that reads the body, burns ``--burn-us`` of CPU and answers a fixed
# completion, in ``--workers`` forked processes on one listening socket. Under the same
# wrk load on the same cores, its 2-to-1 is what two workers of that cost can gain here
# with the load generator beside them (two spinning processes alone overstate it). Its
# burn is calibrated in each run (``measure_scale_out``) to the stack's own CPU per request.
_REFERENCE = """
import argparse, os, signal, socket, time, uvicorn
parser = argparse.ArgumentParser()
parser.add_argument("--config"); parser.add_argument("--port", type=int)
parser.add_argument("--workers", type=int, default=1); parser.add_argument("--burn-us", type=float, default=0)
args = parser.parse_args()
burn = args.burn_us / 1e6
import json
answer = {"role": "assistant", "content": "ok"}
body = json.dumps({"id": "r", "object": "chat.completion", "choices": [{"index": 0, "message": answer}]}).encode()
headers = [(b"content-type", b"application/json"), (b"x-onion-served-by", b"up")]
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    end = time.thread_time() + burn
    while time.thread_time() < end:
        pass
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.bind(("127.0.0.1", args.port)); sock.listen(2048)
print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
config = uvicorn.Config(app, http="httptools", lifespan="on", access_log=False, log_level="warning")
children = []
for _ in range(args.workers):
    pid = os.fork()
    if pid == 0:
        uvicorn.Server(config).run(sockets=[sock])
        os._exit(0)
    children.append(pid)
def stop(signum, frame):
    for pid in children:
        os.kill(pid, signal.SIGTERM)
signal.signal(signal.SIGTERM, stop)
for pid in children:
    os.waitpid(pid, 0)
"""


def _http_rps(url: str, seconds: float, concurrency: int) -> tuple[float, int]:
    # One prompt repeated: valid only for a stack without a cache, so who answered is checked.
    rps, errors, served = anyio.run(throughput, url, seconds, concurrency, "gpt-4o")
    check_served(f"scale-out via {url}", served, "up")
    return rps, errors


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its children (the workers of ``onion serve --workers N``)."""
    pids = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        pids += _process_tree(int(child))
    return pids


def _wait_healthy(url: str, limit: float = 60.0) -> None:
    """Until the gateway answers ``/healthz`` (workers import the whole stack first)."""
    import urllib.request

    deadline = time.perf_counter() + limit
    while True:
        try:
            with urllib.request.urlopen(url.removesuffix("/v1") + "/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if time.perf_counter() > deadline:
                raise
        time.sleep(0.2)


def _wrk_run(url: str, seconds: float, concurrency: int, expect: str, workdir: str) -> tuple[float, int]:
    """Requests/s from ``wrk`` (a load generator in C, so it takes little of the cores the
    workers need), every answer checked to come from ``expect``; and the errors."""
    import http_stack

    script = Path(workdir) / "unique.lua"
    script.write_text(http_stack.LUA)
    served, _p50, _p99, total = http_stack.wrk(url.removesuffix("/v1"), concurrency, seconds, "s", [], script)
    check_served(f"scale-out via {url}", served, expect)
    return total / seconds, 0


# One CPU-bound process's work for ``argv[1]`` seconds, printed as iterations done.
_SPIN = (
    "import sys, time\n"
    "end = time.perf_counter() + float(sys.argv[1]); n = 0\n"
    "while time.perf_counter() < end:\n"
    "    for _ in range(1000): n += 1\n"
    "print(n)"
)


def _spin_throughput(processes: int, seconds: float) -> float:
    """Iterations per second of ``processes`` CPU-bound Python processes at once: what
    the machine gives N busy processes against one, whatever its cores are (vCPUs that
    share a physical core, or neighbours' load, give less than N times)."""
    children = [
        subprocess.Popen([sys.executable, "-c", _SPIN, str(seconds)], stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    return sum(int(child.communicate()[0]) for child in children) / seconds


def _gateway_run(
    config_text: str,
    workdir: str,
    name: str,
    extra: Sequence[str],
    command: Sequence[str] | None,
    seconds: float,
    use_wrk: bool,
) -> tuple[float, int, float]:
    """One gateway started, loaded at c=64 for ``seconds``, stopped: its requests/s, its
    errors and the CPU-seconds its processes (every worker) spent meanwhile."""
    process, url = start_gateway(config_text, workdir, name, extra, command)
    try:
        _wait_healthy(url)
        time.sleep(1.5)  # every worker up
        pids = _process_tree(process.pid)
        before = _cpu_ticks(pids)
        if use_wrk:
            rps, errors = _wrk_run(url, seconds, 64, "up", workdir)
        else:
            rps, errors = _http_rps(url, seconds, 64)
        return rps, errors, (_cpu_ticks(pids) - before) / os.sysconf("SC_CLK_TCK")
    finally:
        process.terminate()
        process.wait(timeout=20)


def measure_scale_out(upstream_url: str, workdir: str, seconds: float = 5.0, rounds: int = 2) -> dict[str, Any]:
    """Requests/s at c=64 through the default stack (no cache) over the HTTP upstream,
    with 1 and 2 workers in interleaved rounds, and what each costs in gateway CPU."""
    from onion.config import DEFAULT_STACK

    provider = f'[[providers]]\nname = "up"\nkind = "openai"\nbase_url = "{upstream_url}"\nmodels = ["gpt-4o"]\n'
    stack = "".join(
        "\n[[stack]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
        for table in DEFAULT_STACK
        if table["use"] != "exact_cache"
    )
    quiet = '[telemetry]\nlog_level = "warning"\n\n'
    # The same stack in front of the simulated provider (no upstream process): what the
    # workers gain when the cores are not also running the upstream.
    simulated = '[[providers]]\nname = "up"\nkind = "simulated"\nmodels = ["gpt-4o"]\nttft = 0.0\n'
    simulated += "tokens_per_second = 0.0\nanswer_tokens = 16\n"
    use_wrk = shutil.which("wrk") is not None
    result: dict[str, Any] = {"concurrency": 64, "seconds": seconds, "rounds": rounds}
    result["load_generator"] = "wrk" if use_wrk else "this script's Python client"
    # The reference burns, on top of its bare cost, what one worker of the stack spends
    # per request in front of the simulated provider, measured here first: the same
    # weight, so the load generator takes the same share of the cores from both.
    reference = [sys.executable, "-c", _REFERENCE]

    def us_per_request(config_text: str, name: str, command: list[str] | None) -> float:
        # As a round measures it (the same seconds from a fresh start: a shorter run
        # weighs the first requests' one-off costs more); the lower of two runs.
        runs = [_gateway_run(config_text, workdir, name, [], command, seconds, use_wrk) for _ in range(2)]
        return min(cpu * 1e6 / (rps * seconds) for rps, _errors, cpu in runs)

    onion_us = us_per_request(quiet + simulated + stack, "calibrate_onion", None)
    bare_us = us_per_request("", "calibrate_bare", reference)
    burn = str(max(0.0, round(onion_us - bare_us, 1)))
    result["reference_calibration"] = {
        "onion_us_per_request": round(onion_us, 1),
        "bare_us_per_request": round(bare_us, 1),
    }
    result["reference_burn_us"] = float(burn)
    runs = {
        "workers_1": ([], None, provider),
        "workers_2": (["--workers", "2"], None, provider),
        "plain_uvicorn": ([], [sys.executable, "-c", _PLAIN_UVICORN], provider),
        "workers_1_simulated": ([], None, simulated),
        "workers_2_simulated": (["--workers", "2"], None, simulated),
        "reference_1": (["--burn-us", burn], reference, ""),
        "reference_2": (["--workers", "2", "--burn-us", burn], reference, ""),
    }
    samples: dict[str, list[tuple[float, int, float]]] = {name: [] for name in runs}
    ceiling: list[float] = []  # the machine's own 2-to-1: two CPU-bound processes against one
    for round_index in range(rounds):
        ceiling.append(_spin_throughput(2, 3.0) / _spin_throughput(1, 3.0))
        for name, (extra, command, upstream) in runs.items():
            print(f"measuring scale-out: {name} (round {round_index + 1})...", file=sys.stderr, flush=True)
            samples[name].append(
                _gateway_run(quiet + upstream + stack, workdir, name, extra, command, seconds, use_wrk)
            )
    for name, values in samples.items():
        rps = sorted(v[0] for v in values)[len(values) // 2]  # the median round
        cpu = sum(v[2] for v in values)
        requests = sum(v[0] * seconds for v in values)
        result[name] = {
            "rps": round(rps, 1),
            "rps_rounds": [round(v[0], 1) for v in values],
            "errors": sum(v[1] for v in values),
            "requests_per_gateway_cpu_second": round(requests / cpu, 1) if cpu else None,
        }
    # Each ratio is the median of the rounds' own ratios: within a round the two runs are
    # minutes apart at most, so the host's drift between rounds cancels.
    for key, (two, one) in {
        "ratio_2_to_1": ("workers_2", "workers_1"),
        "ratio_2_to_1_simulated": ("workers_2_simulated", "workers_1_simulated"),
        "ratio_2_to_1_reference": ("reference_2", "reference_1"),
    }.items():
        ratios = [a[0] / b[0] for a, b in zip(samples[two], samples[one], strict=True)]
        result[key] = round(sorted(ratios)[len(ratios) // 2], 2)
        result[key + "_rounds"] = [round(r, 2) for r in ratios]
    result["guarded_vs_plain_uvicorn"] = round(result["workers_1"]["rps"] / result["plain_uvicorn"]["rps"], 3)
    result["machine_ratio_2_to_1"] = round(sorted(ceiling)[len(ceiling) // 2], 2)
    result["machine_ratio_rounds"] = [round(r, 2) for r in ceiling]
    return result


def print_scale_out(scale: dict[str, Any]) -> None:
    print(
        f"\nscale-out, default stack (no cache), HTTP fake upstream, c={scale['concurrency']}, "
        f"load from {scale['load_generator']}, {scale['rounds']} interleaved rounds (requests/s: the median round):"
    )
    names = ("workers_1", "workers_2", "plain_uvicorn", "workers_1_simulated", "workers_2_simulated")
    for name in (*names, "reference_1", "reference_2"):
        if name not in scale:
            continue
        run = scale[name]
        print(
            f"  {name:<20} {run['rps']:>9} req/s  {run['requests_per_gateway_cpu_second'] or '-':>8} per gateway CPU-s"
            f"  rounds {run['rps_rounds']}  ({run['errors']} errors)"
        )
    print(
        f"  2 workers / 1 (median of the rounds' ratios): {scale['ratio_2_to_1']}x {scale.get('ratio_2_to_1_rounds')}"
        f" (simulated provider: {scale['ratio_2_to_1_simulated']}x {scale.get('ratio_2_to_1_simulated_rounds')})"
    )
    if "machine_ratio_2_to_1" in scale:
        print(
            f"  the machine itself, two CPU-bound processes / one: {scale['machine_ratio_2_to_1']}x "
            f"(rounds {scale['machine_ratio_rounds']}): the most two workers could gain here"
        )
    if "ratio_2_to_1_reference" in scale:
        print(
            f"  the reference (bare ASGI app under uvicorn burning {scale['reference_burn_us']} µs a request),"
            f" 2 workers / 1 under the same load: {scale['ratio_2_to_1_reference']}x"
            f" {scale.get('ratio_2_to_1_reference_rounds')}: what the machine allows"
            " a server of this weight with the load generator beside it"
        )
    print(f"  GuardedProtocol / plain uvicorn (1 worker): {scale['guarded_vs_plain_uvicorn']}")


def main_scale_out() -> None:
    upstream, upstream_url = start_upstream()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            scale = measure_scale_out(upstream_url, workdir, rounds=5)
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
    scale["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    scale["note"] = "client, upstream and gateway workers share the machine's cores"
    print_scale_out(scale)
    report = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    report["scale_out"] = scale
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote scale_out into {RESULTS.relative_to(ROOT.parent)}")


def measure_litellm_rest(
    proxy: _litellm_proxy.LiteLLMProxy, rows: list[dict[str, Any]], pids: list[int]
) -> dict[str, Any]:
    """LiteLLM's section of the report: its latency rows, then its throughput and RSS."""
    # Read before the throughput run: the peak of the same work as onion's bare gateway did
    # (onion's throughput runs in a separate process, ``gateway_simulated``).
    rss_latency = peak_rss_mib(proxy.process.pid)
    settle(pids)
    rps, rps_errors, _ = anyio.run(throughput, proxy.base_url, 3.0, 64)  # its mock_response answers
    return {
        "version": proxy.interpreter.version,
        "python": proxy.interpreter.python,
        "setup": f"litellm --config, one uvicorn worker (uvloop, {proxy.interpreter.http_parser}), no database, "
        "no master key, no cache, no retries, telemetry off, LITELLM_LOCAL_MODEL_COST_MAP=True, LITELLM_LOG=ERROR",
        "config": _litellm_proxy.CONFIG.format(api_base="<fake upstream>/v1", mock_text=_litellm_proxy.MOCK_TEXT),
        "ready_seconds": round(proxy.ready_seconds, 1),
        "latency": rows,
        "zero_latency_upstream": "the model_list entry `sim` with litellm_params.mock_response: no call to a "
        "provider; LiteLLM's router, logging and response building still run",
        "rps_zero_latency_upstream_c64": round(rps, 1),
        "rps_errors": rps_errors,
        "peak_rss_mib": {
            "proxy_after_latency_runs": round(rss_latency, 1),
            "proxy_after_throughput_run": round(peak_rss_mib(proxy.process.pid), 1),
        },
    }


def measure_slowloris(sockets: int = 1100, seconds: float = 12.0) -> dict[str, Any]:
    """Probes answered (and their latency) while ``sockets`` slow clients hold connections."""
    import resource
    import socket

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(4096, sockets + 256), hard))  # the attacker's own files
    simulated = '[[providers]]\nname = "sim"\nkind = "simulated"\nmodels = ["sim"]\nttft = 0.0\n'
    simulated += "tokens_per_second = 0.0\nanswer_tokens = 16\n"
    with tempfile.TemporaryDirectory() as workdir:
        # The gateway starts with the usual soft limit of 1,024 open files (and raises it).
        command = ["prlimit", "--nofile=1024:", sys.executable, "-m", "onion.cli", "serve"]
        process, url = start_gateway(
            '[telemetry]\nlog_level = "warning"\n\n' + simulated, workdir, "slowloris", (), command
        )
        address, port, request = _target(url, {**BODY, "model": "sim"})
        head = request[: request.index(b"\r\n\r\n") + 4]
        attackers = []
        try:
            for i in range(sockets):
                conn = socket.create_connection((address, port), timeout=2)
                if i % 3 == 0:
                    conn.sendall(head[: len(head) // 2])  # headers trickled
                elif i % 3 == 1:
                    conn.sendall(head + b"{")  # body trickled
                attackers.append(conn)
            latencies, probes = [], 0
            stop_at = time.perf_counter() + seconds
            while time.perf_counter() < stop_at:
                probes += 1
                began = time.perf_counter()
                try:
                    with socket.create_connection((address, port), timeout=1) as probe:
                        probe.settimeout(1)
                        probe.sendall(request)
                        if probe.recv(65536).startswith(b"HTTP/1.1 200"):
                            latencies.append(time.perf_counter() - began)
                except OSError:
                    pass
                for conn in attackers[:60]:
                    with contextlib.suppress(OSError):
                        conn.send(b"x")
                time.sleep(0.1)
            closed = 0
            for conn in attackers:
                conn.setblocking(False)
                try:
                    closed += conn.recv(65536, socket.MSG_PEEK) is not None
                except BlockingIOError:
                    pass
                except OSError:
                    closed += 1
        finally:
            for conn in attackers:
                conn.close()
            process.terminate()
            process.wait(timeout=20)
        logged = [x for x in (Path(workdir) / "slowloris.log").read_text().splitlines() if "broke a limit" in x]
    return {
        "sockets": sockets,
        "seconds": seconds,
        "probes": probes,
        "probes_answered": len(latencies),
        "probe_p50_ms": round(percentile(latencies, 50) * 1000, 1) if latencies else None,
        "probe_max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "slow_sockets_closed_by_gateway": closed,
        "closure_log_lines": len(logged),
    }


def main_slowloris() -> None:
    result = measure_slowloris()
    print(
        f"slowloris: {result['sockets']} slow sockets, {result['probes_answered']}/{result['probes']} probes answered "
        f"(p50 {result['probe_p50_ms']} ms, max {result['probe_max_ms']} ms), "
        f"{result['slow_sockets_closed_by_gateway']} slow sockets closed by the gateway, "
        f"{result['closure_log_lines']} log lines"
    )
    report = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    report["slowloris"] = result
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.slowloris:
        main_slowloris()
        return
    if args.scale_out:
        main_scale_out()
        return
    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "note": "added = gateway percentile minus direct percentile; client, gateway and upstream share the cores",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    if args.no_litellm:
        interpreter, why_not = None, "--no-litellm given"
    else:
        interpreter, why_not = _litellm_proxy.find_python(args.litellm_python)
    litellm: dict[str, Any] = {}
    upstream, upstream_url = start_upstream()
    processes: list[subprocess.Popen[Any]] = [upstream]
    try:
        with tempfile.TemporaryDirectory() as workdir:
            proxy = None
            if interpreter is not None:
                # Launched first: it boots for several seconds, while the onion gateways start.
                proxy = _litellm_proxy.launch(interpreter, workdir, upstream_url)
                processes.append(proxy.process)
            provider = (
                f'[[providers]]\nname = "up"\nkind = "openai"\nbase_url = "{upstream_url}"\nmodels = ["gpt-4o"]\n'
            )
            # An empty stack, said so: a config without [[stack]] runs the default stack, whose
            # exact cache would answer the repeated benchmark prompt itself.
            bare, bare_url = start_gateway("stack = []\n" + provider, workdir, "bare")
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
                'stack = []\n[[providers]]\nname = "sim"\nkind = "simulated"\nmodels = ["sim"]\n'
                "ttft = 0.0\ntokens_per_second = 0.0\nanswer_tokens = 16\n"
            )
            sim, sim_url = start_gateway(simulated, workdir, "simulated")
            processes.append(sim)
            urls = {ONION: bare_url, ONION_STACK: full_url}
            servers = {ONION: bare.pid, ONION_STACK: full.pid}
            if proxy is not None:
                try:
                    _litellm_proxy.wait_ready(proxy)
                    urls[LITELLM], servers[LITELLM] = proxy.base_url, proxy.process.pid
                except RuntimeError as error:
                    why_not = f"LiteLLM proxy did not start: {error}"
                    proxy.process.kill()
                    proxy.process.wait()
            if why_not:
                print(f"LiteLLM proxy skipped: {why_not}", file=sys.stderr, flush=True)
                litellm["skipped"] = why_not
            pids = [p.pid for p in processes if p.poll() is None]

            rows = []
            for concurrency, many, few in CASES:
                total, litellm_total = (max(concurrency, round(n * args.scale)) for n in (many, few))
                for stream in (False, True):
                    kind = "stream TTFT" if stream else "complete"
                    print(f"measuring {kind} at concurrency {concurrency}...", file=sys.stderr, flush=True)
                    settle(pids)
                    direct = anyio.run(measure, upstream_url, stream, concurrency, total, upstream.pid)
                    if direct.errors:
                        raise RuntimeError(f"{direct.errors} requests to the upstream itself failed")
                    check_served(f"the upstream itself, {kind}, c={concurrency}", direct.served, "-")
                    for gateway, url in list(urls.items()):
                        if gateway == LITELLM and proxy is not None and proxy.process.poll() is not None:
                            litellm["died"] = f"exited with {proxy.process.returncode} before {kind}, c={concurrency}"
                            del urls[LITELLM]
                            continue
                        settle(pids)
                        count = litellm_total if gateway == LITELLM else total
                        via = anyio.run(measure, url, stream, concurrency, count, servers[gateway])
                        expect = "-" if gateway == LITELLM else "up"  # LiteLLM sends no served-by
                        check_served(f"{gateway}, {kind}, c={concurrency}", via.served, expect)
                        rows.append(row(gateway, concurrency, stream, direct, via))
            report["latency"] = [r for r in rows if r["gateway"] != LITELLM]
            settle(pids)
            rps, rps_errors, served = anyio.run(throughput, sim_url, 3.0, 64)
            check_served("throughput, zero-latency upstream", served, "sim")
            report["rps_zero_latency_upstream_c64"] = round(rps, 1)
            report["rps_errors"] = rps_errors
            report["in_process_us_per_request"] = {k: round(v, 1) for k, v in anyio.run(in_process_cost).items()}
            report["peak_rss_mib"] = {
                "gateway_bare": round(peak_rss_mib(bare.pid), 1),
                "gateway_default_stack": round(peak_rss_mib(full.pid), 1),
                "gateway_simulated": round(peak_rss_mib(sim.pid), 1),
            }
            if proxy is not None and LITELLM in urls:
                litellm.update(measure_litellm_rest(proxy, [r for r in rows if r["gateway"] == LITELLM], pids))
            settle(pids)
            report["scale_out"] = measure_scale_out(upstream_url, workdir)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    report["litellm"] = litellm
    report["seconds"] = round(time.perf_counter() - started, 1)
    print_table(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT.parent)}")


def _cell(value: float | None) -> str:
    return f"{value:>9.1f}ms" if value is not None else f"{'-':>11}"


def print_table(report: dict[str, Any]) -> None:
    print(f"gateway benchmark — {report['machine']}, load average at start {report['load_average_at_start'][0]}")
    litellm = report.get("litellm") or {}
    rows = sorted(
        [*report["latency"], *litellm.get("latency", [])],
        key=lambda r: (r["concurrency"], r["stream"], GATEWAYS.index(r["gateway"])),
    )
    header = (
        f"{'case':<18} {'gateway':<20} {'direct/s':>8} {'gw/s':>7} {'direct p50':>11} {'added p50':>11} "
        f"{'direct p99':>11} {'added p99':>11} {'cpu/req':>8} {'n':>5} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    previous = None
    for r in rows:
        case = f"{'stream TTFT' if r['stream'] else 'complete'}, c={r['concurrency']}"
        rates = f"{r['direct_rps']:>8.0f} {r['gateway_rps']:>7.0f}"
        print(
            f"{case if case != previous else '':<18} {r['gateway']:<20} {rates} "
            f"{_cell(r['direct_p50_ms'])} {_cell(r['added_p50_ms'])} {_cell(r['direct_p99_ms'])} "
            f"{_cell(r['added_p99_ms'])} {r['gateway_cpu_ms_per_request']:>6.2f}ms {r['samples']:>5} {r['errors']:>6}"
        )
        previous = case
    print(
        "direct/s, gw/s: answers per second over the timed requests, directly and through the gateway; "
        "cpu/req: the gateway process's CPU time per request"
    )
    print("\nrequests/s, zero-latency upstream, c=64, raw HTTP/1.1 client:")
    print(f"  onion (simulated provider)         {report['rps_zero_latency_upstream_c64']:>9}")
    if "rps_zero_latency_upstream_c64" in litellm:
        print(f"  litellm proxy (mock_response)      {litellm['rps_zero_latency_upstream_c64']:>9}")
    cost = report["in_process_us_per_request"]
    print(f"onion ASGI app alone, per request: complete {cost['complete']} µs, stream {cost['stream']} µs")
    print("peak RSS (MiB): " + ", ".join(f"{k} {v}" for k, v in report["peak_rss_mib"].items()))
    if "peak_rss_mib" in litellm:
        print("  litellm proxy: " + ", ".join(f"{k} {v}" for k, v in litellm["peak_rss_mib"].items()))
        print(f"  litellm {litellm['version']}, ready {litellm['ready_seconds']} s after launch")
    if "skipped" in litellm:
        print(f"LiteLLM proxy skipped: {litellm['skipped']}")
    if "scale_out" in report:
        print_scale_out(report["scale_out"])
    print(f"ran in {report['seconds']} s")


if __name__ == "__main__":
    main()
