"""The default stack over HTTP: added latency at c=1 and requests per gateway CPU-second.

Processes: the fake OpenAI-compatible upstream (``onion.testing.upstream``), ``onion serve``
with ``DEFAULT_STACK`` in front of it (one worker), and two clients: this script's own
(one keep-alive connection, plain sockets, sequential) and ``wrk``, a load generator no
one here wrote. With ``taskset`` the gateway gets core 0 to itself and the upstream and
the client share core 1 (the machine has two; other work on it is not ours to move).

Every prompt is new, so every answer is a cache miss sent upstream; each answer's
``x-onion-served-by`` is counted (by the Python client, and by wrk's Lua script) and the
run fails loudly unless every one came from the upstream provider (``up``).

- added latency, c=1: gateway percentile minus direct-to-upstream percentile (p50, p99),
  from the Python client and from ``wrk -c1 --latency``;
- requests per gateway CPU-second: ``wrk -c16`` through the gateway for ``--seconds``, the
  gateway's own CPU time read from ``/proc`` before and after.

    python benchmarks/http_stack.py [--requests 2000] [--seconds 5] [--no-taskset]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _fullstack import check_served, print_table, write_results
from gateway import _cpu_ticks, percentile, settle, start_gateway

HERE = Path(__file__).resolve().parent
LUA = """
counter = 0
served = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) prefix = args[1] or "p" end
function request()
  counter = counter + 1
  local body = '{"model":"gpt-4o","messages":[{"role":"user","content":"wrk ' .. prefix .. ' ' .. counter .. '"}]}'
  return wrk.format("POST", "/v1/chat/completions", {["Content-Type"] = "application/json"}, body)
end
function response(status, headers, body)
  local who = headers["x-onion-served-by"] or headers["X-Onion-Served-By"] or ("status " .. status)
  served[who] = (served[who] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("served")
    for k, v in pairs(s) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, string.format('"%s": %d', k, v)) end
  io.write("SERVED {" .. table.concat(parts, ", ") .. "}\\n")
  io.write(string.format("LAT %f %f %d\\n", latency:percentile(50), latency:percentile(99), summary.requests))
end
"""


def pins(no_taskset: bool) -> tuple[bool, list[str], list[str]]:
    """Whether to pin, and the ``taskset`` prefixes: the gateway on core 0, the upstream and
    the load on core 1 (this process too, beside the upstream)."""
    pinned = not no_taskset and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if not pinned:
        return False, [], []
    os.sched_setaffinity(0, {1})
    return True, ["taskset", "-c", "0"], ["taskset", "-c", "1"]


def gateway_config(upstream_url: str, *, empty: bool = False) -> str:
    """The gateway's TOML: the fake upstream as provider ``up``, and ``stack = []`` or the
    whole ``DEFAULT_STACK`` (exact cache included: every benchmark prompt here is new)."""
    from onion.config import DEFAULT_STACK

    config = f'[[providers]]\nname = "up"\nkind = "openai"\nbase_url = "{upstream_url}"\nmodels = ["gpt-4o"]\n'
    if empty:
        return "stack = []\n" + config
    return config + "".join(
        "\n[[stack]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items()) for table in DEFAULT_STACK
    )


def start_upstream(pin: list[str]) -> tuple[subprocess.Popen[str], str]:
    code = (
        "import sys\nfrom onion.testing.upstream import FakeUpstream\n"
        "up = FakeUpstream().start()\nprint(up.base_url, flush=True)\nsys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [*pin, sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def connect(base_url: str) -> tuple[socket.socket, str, str]:
    """A TCP_NODELAY connection to ``base_url``'s server (waiting up to 30 s for it to
    accept), with the ``host:port`` and the chat completions path to send to."""
    host, port = re.match(r"http://([^:/]+):(\d+)", base_url).groups()  # type: ignore[union-attr]
    deadline = time.perf_counter() + 30
    while True:  # the banner is printed just before the server accepts
        try:
            sock = socket.create_connection((host, int(port)))
            break
        except ConnectionRefusedError:
            if time.perf_counter() > deadline:
                raise
            time.sleep(0.1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, f"{host}:{port}", base_url.split(f":{port}", 1)[1] + "/chat/completions"


class Client:
    """One keep-alive HTTP/1.1 connection; sends a new prompt per request."""

    def __init__(self, base_url: str, tag: str) -> None:
        self.sock, self.host, self.path = connect(base_url)
        self.tag, self.counter = tag, 0
        self.served: dict[str, int] = {}
        self.buffer = b""

    def one(self) -> float:
        self.counter += 1
        body = json.dumps(
            {"model": "gpt-4o", "messages": [{"role": "user", "content": f"py {self.tag} {self.counter}"}]}
        ).encode()
        head = (
            f"POST {self.path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        began = time.perf_counter()
        self.sock.sendall(head + body)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(65536)
        header, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(fields["content-length"])
        while len(rest) < length:
            rest += self.sock.recv(65536)
        self.buffer = rest[length:]
        elapsed = time.perf_counter() - began
        status = lines[0].split()[1]
        who = fields.get("x-onion-served-by", f"status {status}")
        self.served[who] = self.served.get(who, 0) + 1
        return elapsed * 1000


def python_c1(direct: Client, gateway: Client, requests: int) -> dict[str, Any]:
    for client in (direct, gateway):  # warm-up
        for _ in range(50):
            client.one()
        client.served.clear()
    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    for _ in range(requests // 100):  # interleaved rounds of 100
        for name, client in (("direct", direct), ("gateway", gateway)):
            times[name] += [client.one() for _ in range(100)]
    return {name: {"p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99), "n": len(v)} for name, v in times.items()}


def wrk(
    url: str, connections: int, seconds: float, tag: str, pin: list[str], script: Path
) -> tuple[dict[str, int], float, float, int]:
    out = subprocess.run(
        [
            *pin,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{round(seconds)}s",
            "--latency",
            "-s",
            str(script),
            url,
            "--",
            tag,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    served = json.loads(re.search(r"SERVED (\{.*\})", out).group(1))  # type: ignore[union-attr]
    p50, p99, n = re.search(r"LAT (\S+) (\S+) (\d+)", out).groups()  # type: ignore[union-attr]
    return served, float(p50) / 1000, float(p99) / 1000, int(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-taskset", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    pinned, gateway_pin, other_pin = pins(args.no_taskset)
    upstream, upstream_url = start_upstream(other_pin)
    processes: list[subprocess.Popen[Any]] = [upstream]
    results: dict[str, Any] = {"pinned": pinned, "layers": "DEFAULT_STACK", "upstream": "onion.testing FakeUpstream"}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            # The whole default stack, exact cache included: every prompt is new, so it misses.
            config = gateway_config(upstream_url)
            gateway, gateway_url = start_gateway(config, workdir, "default", command=[*gateway_pin, sys.executable,
                                                 "-m", "onion.cli", "serve"])  # fmt: skip
            processes.append(gateway)
            script = Path(workdir) / "unique.lua"
            script.write_text(LUA)
            print(f"upstream {upstream_url}, gateway {gateway_url} (pid {gateway.pid})", flush=True)
            direct, via = Client(upstream_url, "d"), Client(gateway_url, "g")
            c1 = python_c1(direct, via, args.requests)
            check_served("python client, direct", direct.served, "status 200")  # the upstream sends no served-by
            check_served("python client, gateway", via.served, "up")
            results["python_c1"] = c1
            results["python_c1_served"] = {"direct": direct.served, "gateway": via.served}
            settle([gateway.pid, upstream.pid])
            base = upstream_url.removesuffix("/v1")
            d_served, d50, d99, _ = wrk(base, 1, args.seconds, "d", other_pin, script)
            g_served, g50, g99, _ = wrk(gateway_url.removesuffix("/v1"), 1, args.seconds, "g", other_pin, script)
            check_served("wrk c=1, direct", d_served, "status 200")
            check_served("wrk c=1, gateway", g_served, "up")
            results["wrk_c1"] = {"direct": {"p50_ms": d50, "p99_ms": d99}, "gateway": {"p50_ms": g50, "p99_ms": g99},
                                 "served": {"direct": d_served, "gateway": g_served}}  # fmt: skip
            # The same with every core kept awake by a spinner at the lowest priority: on a
            # virtual machine an idle vCPU takes a millisecond or more to wake, and at c=1
            # the gateway's path wakes an idle core four times per request where the direct
            # one wakes it twice. Both figures are reported; the spinners take ~1.5 % of a core.
            spinners = [
                subprocess.Popen(["nice", "-n", "19", *pin, sys.executable, "-c", "while True: pass"])
                for pin in ((gateway_pin, other_pin) if pinned else ([], []))
            ]
            try:
                time.sleep(0.5)
                d_served, d50, d99, _ = wrk(base, 1, args.seconds, "da", other_pin, script)
                g_served, g50, g99, _ = wrk(gateway_url.removesuffix("/v1"), 1, args.seconds, "ga", other_pin, script)
            finally:
                for spinner in spinners:
                    spinner.kill()
                    spinner.wait()
            check_served("wrk c=1, awake cores, direct", d_served, "status 200")
            check_served("wrk c=1, awake cores, gateway", g_served, "up")
            results["wrk_c1_awake"] = {
                "direct": {"p50_ms": d50, "p99_ms": d99},
                "gateway": {"p50_ms": g50, "p99_ms": g99},
                "served": {"direct": d_served, "gateway": g_served},
            }
            settle([gateway.pid, upstream.pid])
            hertz = os.sysconf("SC_CLK_TCK")
            before = _cpu_ticks([gateway.pid])
            served, _, _, n = wrk(gateway_url.removesuffix("/v1"), 16, args.seconds, "t", other_pin, script)
            cpu = (_cpu_ticks([gateway.pid]) - before) / hertz
            check_served("wrk c=16, gateway", served, "up")
            results["throughput_c16"] = {"requests": n, "gateway_cpu_seconds": cpu, "per_cpu_second": n / cpu,
                                         "per_wall_second": n / args.seconds, "served": served}  # fmt: skip
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
    rows = []
    for label, key in (("python client", "python_c1"), ("wrk", "wrk_c1"), ("wrk, cores awake", "wrk_c1_awake")):
        d, g = results[key]["direct"], results[key]["gateway"]
        added50, added99 = g["p50_ms"] - d["p50_ms"], g["p99_ms"] - d["p99_ms"]
        results[key]["added_p50_ms"], results[key]["added_p99_ms"] = added50, added99
        rows.append([label, d["p50_ms"], g["p50_ms"], added50, d["p99_ms"], g["p99_ms"], added99])
    print(f"default stack over HTTP, c=1, every answer a miss from the upstream; pinned={pinned}; ms")
    print_table(["client", "direct p50", "gw p50", "added p50", "direct p99", "gw p99", "added p99"], rows)
    t = results["throughput_c16"]
    print(
        f"wrk c=16 through the gateway: {t['requests']} requests, {t['gateway_cpu_seconds']:.2f} gateway CPU-s "
        f"-> {t['per_cpu_second']:.0f} requests per gateway CPU-second ({t['per_wall_second']:.0f}/s wall)"
    )
    path = write_results("http_stack", results)
    print(f"wrote {path.name}")


if __name__ == "__main__":
    sys.exit(main())
