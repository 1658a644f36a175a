"""A client that stops reading does not make the gateway buffer: a real ``onion serve``,
a fake upstream answering tens of MB, raw sockets that read nothing, and the gateway's
memory and reads measured in ``/proc``.

Back-pressure runs from the client's socket to the upstream's: uvicorn pauses the ASGI
``send`` while its write buffer is full, the server's pump then stops pulling chunks, the
provider stops reading the upstream's socket, and the upstream's own send blocks.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from onion.config import DEFAULT_STACK
from onion.testing.upstream import FakeUpstream, Fault

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

MB = 1024 * 1024
# What the gateway may add while its clients read nothing: its buffers and the few chunks
# in flight, not the answers (two of 60 MB, four of 50 MB below).
GROWTH_BOUND = 40 * MB


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def stack_toml(skip: str) -> str:
    # The default stack without the exact cache: a cache keeps a missed stream whole to
    # store it (bounded by max_answer_bytes, not by back-pressure).
    tables = []
    for table in DEFAULT_STACK:
        if table["use"] != skip:
            tables.append("[[stack]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items()))
    return "\n\n".join(tables)


def write_config(tmp_path: Path, upstream: FakeUpstream, max_answer_bytes: int) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"[server]\nmax_answer_bytes = {max_answer_bytes}\n\n"
        f'[[providers]]\nname = "p"\nkind = "openai"\nbase_url = "{upstream.base_url}"\nmodels = ["gpt-4o"]\n\n'
        f"{stack_toml('exact_cache')}\n"
    )
    return path


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def bytes_read(pid: int) -> int:
    """What the process read from every file and socket so far (``rchar``)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


def wait_until_reads_stop(pid: int, quiet: float = 0.5, within: float = 15.0) -> int:
    """Wait until the process has read nothing for ``quiet`` seconds; its ``rchar`` then."""
    last, since = bytes_read(pid), time.monotonic()
    deadline = since + within
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = bytes_read(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def ask(port: int, *, stream: bool) -> socket.socket:
    """A client that sends a chat request and then reads nothing (a small receive buffer)."""
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": stream}).encode()
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    conn.connect(("127.0.0.1", port))
    conn.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    return conn


def read_to_the_end(conn: socket.socket) -> bytes:
    """The rest of a chunked answer, up to its last (empty) chunk."""
    conn.settimeout(10)
    data = bytearray()
    while not data.endswith(b"\r\n0\r\n\r\n"):
        piece = conn.recv(1 << 20)
        if not piece:
            break
        data += piece
    return bytes(data)


def big_text(megabytes: int) -> str:
    return " ".join(["x" * 4000] * (megabytes * MB // 4001))  # chunks of 4 KB


def test_streams_to_clients_that_stop_reading_are_not_buffered(
    tmp_path: Path, upstream: FakeUpstream, gateway: Callable[..., Any]
) -> None:
    # The cap is far above the answers: only back-pressure can bound the gateway here.
    served = gateway(write_config(tmp_path, upstream, max_answer_bytes=500 * MB))
    pid = served.process.pid
    text = big_text(60)
    upstream.fault_for = lambda body: Fault(text=text)
    before_rss, before_read = rss(pid), bytes_read(pid)
    clients = [ask(served.port, stream=True) for _ in range(2)]
    try:
        for _ in range(500):
            if upstream.stats.streams_started == 2:
                break
            time.sleep(0.01)
        read = wait_until_reads_stop(pid) - before_read
        grown = rss(pid) - before_rss
        # Two 60 MB answers were on offer; the gateway stopped reading the upstream when
        # its clients stopped reading it, and holds a few MB, not the answers.
        assert read < 2 * 60 * MB / 3, f"read {read / MB:.1f} MB of 120 MB"
        assert grown < GROWTH_BOUND, f"RSS grew {grown / MB:.1f} MB"
        assert upstream.stats.streams_completed == 0 and upstream.stats.open_streams == 2, upstream.stats
        # Once the client reads again, the whole answer arrives, in order, to [DONE].
        answer = read_to_the_end(clients[0])
        assert answer.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in answer[-64:]
        # (the output guard re-cuts the text into its own pieces, so compare sizes)
        assert len(answer) > len(text) and b'"error"' not in answer[-4096:]
    finally:
        for conn in clients:
            conn.close()
    # The one that never read: leaving cancels its upstream stream.
    for _ in range(500):
        if upstream.stats.open_streams == 0:
            break
        time.sleep(0.01)
    assert upstream.stats.streams_disconnected == 1 and upstream.stats.open_streams == 0, upstream.stats


def test_complete_answers_over_the_cap_are_refused_without_being_held(
    tmp_path: Path, upstream: FakeUpstream, gateway: Callable[..., Any]
) -> None:
    # The attack: four 50 MB answers took the gateway to 353 MB. Under the default
    # cap (32 MiB) each is a 502 answer_too_large and the gateway holds none of them.
    served = gateway(write_config(tmp_path, upstream, max_answer_bytes=32 * MB))
    pid = served.process.pid
    text = big_text(50)
    upstream.fault_for = lambda body: Fault(text=text)
    before = rss(pid)
    clients = [ask(served.port, stream=False) for _ in range(4)]
    try:
        replies = [read_reply(conn) for conn in clients]
    finally:
        for conn in clients:
            conn.close()
    assert all(reply.startswith(b"HTTP/1.1 502") for reply in replies), [r[:100] for r in replies]
    assert all(b'"code":"answer_too_large"' in reply for reply in replies)
    grown = rss(pid) - before
    assert grown < GROWTH_BOUND, f"RSS grew {grown / MB:.1f} MB"


def read_reply(conn: socket.socket) -> bytes:
    conn.settimeout(20)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            return data
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:"))
    while len(rest) < length:
        piece = conn.recv(65536)
        if not piece:
            break
        rest += piece
    return head + b"\r\n\r\n" + rest
