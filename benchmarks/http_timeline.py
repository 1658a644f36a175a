"""Where the gateway's added latency goes at c=1: a timeline of one request, leg by leg.

Processes: an upstream written here (a blocking socket server, one thread per connection,
that notes when it has read each request and when it starts writing its answer, on the
machine's monotonic clock, and answers a canned ``chat.completion`` in one write at once),
``onion serve`` with ``DEFAULT_STACK`` in front of it, and this script's client (one
keep-alive connection, sequential, a new prompt per request so every call is a miss; each
answer's ``x-onion-served-by`` must be ``up``). With ``taskset`` the gateway has core 0 and
the upstream and the client core 1, as in ``http_stack.py``.

For each request, through the gateway and (interleaved, rounds of 100) straight to the
upstream:

- **in**: client send -> the upstream has the request (the gateway's read, its way in
  through the layers, the provider's write; straight: the loopback alone);
- **out**: the upstream starts writing its answer -> the client has the whole answer (the
  provider's read, the way out, the encoding and the write);
- **added** = gateway minus straight, per leg, at p50 and p99.

``--awake`` keeps both cores busy with spinners at the lowest priority (an idle vCPU takes
a while to wake; the gateway's path wakes cores twice as often as the straight one).

    python benchmarks/http_timeline.py [--requests 2000] [--awake] [--no-taskset]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _fullstack import check_served, print_table, write_results
from gateway import percentile, settle, start_gateway
from http_stack import connect, gateway_config, pins

HERE = Path(__file__).resolve().parent

# The upstream: reads a request (headers, then content-length bytes), notes the time, and
# answers in one write; its notes go to stdout as JSON when its stdin closes.
UPSTREAM = r"""
import json, re, socket, sys, threading, time
notes = {}
TAG = re.compile(rb'"content":"(tl [^"]+)"')
def answer(text):
    body = json.dumps({"id": "chatcmpl-tl", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "You said: " + text},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}).encode()
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"x-request-id: req-tl\r\nx-ratelimit-remaining-requests: 999\r\n\r\n%s" % (len(body), body))
def serve(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            data = conn.recv(65536)
            if not data:
                return
            buffer += data
        head, _, rest = buffer.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(rest) < length:
            rest += conn.recv(65536)
        body, buffer = rest[:length], rest[length:]
        got = time.monotonic_ns()
        tag = TAG.search(body)
        text = tag.group(1).decode() if tag else "?"
        reply = answer(text)
        notes[text] = (got, time.monotonic_ns())
        conn.sendall(reply)
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print("http://127.0.0.1:%d/v1" % listener.getsockname()[1], flush=True)
def accept():
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
sys.stdin.read()
print(json.dumps(notes), flush=True)
"""


class Client:
    """One keep-alive connection; ``one(tag)`` returns (sent, received) in ns and who served."""

    def __init__(self, base_url: str) -> None:
        self.sock, self.host, self.path = connect(base_url)
        self.buffer = b""

    def one(self, tag: str) -> tuple[int, int, str]:
        body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": tag}]}, separators=(",", ":"))
        data = body.encode()
        head = (
            f"POST {self.path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n"
        ).encode()
        sent = time.monotonic_ns()
        self.sock.sendall(head + data)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(65536)
        header, _, rest = self.buffer.partition(b"\r\n\r\n")
        fields = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in header.decode("latin-1").split("\r\n")[1:])
        }
        length = int(fields["content-length"])
        while len(rest) < length:
            rest += self.sock.recv(65536)
        received = time.monotonic_ns()
        self.buffer = rest[length:]
        status = header.split(b" ", 2)[1].decode()
        return sent, received, fields.get("x-onion-served-by", f"status {status}")


def legs(times: dict[str, tuple[int, int]], notes: dict[str, list[int]]) -> dict[str, list[float]]:
    """Per request, in µs: in (send -> upstream has it), out (upstream writes -> client has it), total."""
    out: dict[str, list[float]] = {"in": [], "out": [], "total": []}
    for tag, (sent, received) in times.items():
        got, answered = notes[tag]
        out["in"].append((got - sent) / 1000)
        out["out"].append((received - answered) / 1000)
        out["total"].append((received - sent) / 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--awake", action="store_true", help="keep both cores busy with lowest-priority spinners")
    parser.add_argument("--no-taskset", action="store_true")
    args = parser.parse_args()
    pinned, gateway_pin, other_pin = pins(args.no_taskset)
    upstream = subprocess.Popen(
        [*other_pin, sys.executable, "-c", UPSTREAM], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert upstream.stdout is not None and upstream.stdin is not None
    upstream_url = upstream.stdout.readline().strip()
    spinners: list[subprocess.Popen[bytes]] = []
    times: dict[str, dict[str, tuple[int, int]]] = {"direct": {}, "gateway": {}}
    served: dict[str, dict[str, int]] = {"direct": {}, "gateway": {}}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            command = [*gateway_pin, sys.executable, "-m", "onion.cli", "serve"]
            gateway, gateway_url = start_gateway(gateway_config(upstream_url), workdir, "timeline", command=command)
            try:
                clients = {"direct": Client(upstream_url), "gateway": Client(gateway_url)}
                for name, client in clients.items():  # warm-up
                    for n in range(100):
                        client.one(f"tl w{name} {n}")
                settle([gateway.pid, upstream.pid])
                if args.awake:
                    spinners = [
                        subprocess.Popen(["nice", "-n", "19", *pin, sys.executable, "-c", "while True: pass"])
                        for pin in ((gateway_pin, other_pin) if pinned else ([], []))
                    ]
                    time.sleep(0.5)
                counter = 0
                for _ in range(max(1, args.requests // 100)):
                    for name, client in clients.items():
                        for _ in range(100):
                            counter += 1
                            tag = f"tl {name[0]} {counter}"
                            sent, received, who = client.one(tag)
                            times[name][tag] = (sent, received)
                            served[name][who] = served[name].get(who, 0) + 1
            finally:
                gateway.terminate()
                gateway.wait(timeout=10)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
        upstream.stdin.close()
        notes = json.loads(upstream.stdout.readline() or "{}")
        upstream.wait(timeout=10)
    check_served("direct", served["direct"], "status 200")
    check_served("gateway", served["gateway"], "up")
    measured = {name: legs(times[name], notes) for name in times}
    rows = []
    results: dict[str, Any] = {"pinned": pinned, "awake": args.awake, "layers": "DEFAULT_STACK", "legs_us": {}}
    for leg in ("in", "out", "total"):
        d, g = measured["direct"][leg], measured["gateway"][leg]
        row = {
            "direct_p50": percentile(d, 50),
            "gateway_p50": percentile(g, 50),
            "direct_p99": percentile(d, 99),
            "gateway_p99": percentile(g, 99),
        }
        row["added_p50"] = row["gateway_p50"] - row["direct_p50"]
        row["added_p99"] = row["gateway_p99"] - row["direct_p99"]
        results["legs_us"][leg] = row
        rows.append([leg, *(round(row[k]) for k in row)])
    print(f"one request's legs at c=1, DEFAULT_STACK, µs; pinned={pinned}, awake={args.awake}, n={len(notes)}")
    print_table(["leg", "direct p50", "gw p50", "direct p99", "gw p99", "added p50", "added p99"], rows)
    path = write_results("http_timeline_awake" if args.awake else "http_timeline", results)
    print(f"wrote {path.name}")


if __name__ == "__main__":
    sys.exit(main())
