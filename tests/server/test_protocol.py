"""Connection limits over real sockets: slow and idle clients, header caps, the
connection cap (``onion/server/_protocol.py``), through a real ``onion serve``."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

BODY = json.dumps({"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}).encode()
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


def config(tmp_path: Path, **server: Any) -> Path:
    path = tmp_path / "gateway.toml"
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in server.items())
    path.write_text(f'[server]\n{lines}\n\n[[providers]]\nname = "sim"\nkind = "simulated"\nmodels = ["sim-small"]\n')
    return path


def answer(port: int, raw: bytes, timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(raw)
        return receive_all(conn)


def receive_all(conn: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            piece = conn.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not piece:
            return data
        data += piece
        if b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            lengths = [int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:")]
            length = lengths[0] if lengths else None
            if length is not None and len(rest) >= length:
                return data


def closed_by_server(conn: socket.socket) -> bool:
    conn.setblocking(False)
    try:
        data = conn.recv(65536)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 408")


def test_slowloris_sockets_do_not_lock_out_a_normal_request(tmp_path: Path, gateway: Callable[..., Any]) -> None:
    # A soft limit of 256 open files: 300 slow sockets would exhaust it if onion did not raise it.
    served = gateway(config(tmp_path, header_timeout_seconds=1.5, body_timeout_seconds=1.5), open_files=256)
    assert any(line.startswith("open files: soft limit raised from 256") for line in served.output), served.output
    attackers = []
    for i in range(300):
        conn = socket.create_connection(("127.0.0.1", served.port), timeout=2)
        if i % 3 == 0:  # headers trickled
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        elif i % 3 == 1:  # body trickled
            conn.sendall(REQUEST[: REQUEST.index(b"\r\n\r\n") + 4] + b"{")
        attackers.append(conn)  # and a third say nothing at all
    for _ in range(5):
        started = time.monotonic()
        reply = answer(served.port, REQUEST, timeout=1)
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert time.monotonic() - started < 1.0
        for conn in attackers[:60]:
            with contextlib.suppress(OSError):
                conn.send(b"x" if attackers.index(conn) % 3 == 0 else b" ")
        time.sleep(0.1)
    deadline = time.monotonic() + 5
    open_ones = attackers
    while open_ones and time.monotonic() < deadline:
        time.sleep(0.2)
        open_ones = [c for c in open_ones if not closed_by_server(c)]
    assert not open_ones, f"{len(open_ones)} slow sockets still open"
    for conn in attackers:
        conn.close()
    assert answer(served.port, REQUEST).startswith(b"HTTP/1.1 200")
    time.sleep(1.2)  # the closures are logged once a second
    log = served.text()
    assert "connection(s) that broke a limit" in log and "headers:" in log and "body:" in log, log[-2000:]


def test_too_many_or_too_large_headers_are_431(tmp_path: Path, gateway: Callable[..., Any]) -> None:
    served = gateway(config(tmp_path, max_headers=50, max_header_bytes=8192))
    head, _, body = REQUEST.partition(b"\r\n\r\n")
    many = head + b"".join(b"\r\nx-h%d: v" % i for i in range(60)) + b"\r\n\r\n" + body
    reply = answer(served.port, many)
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    assert b'"code":"request_header_fields_too_large"' in reply
    huge = head + b"\r\nx-big: " + b"a" * 100_000 + b"\r\n\r\n" + body
    assert answer(served.port, huge).startswith(b"HTTP/1.1 431")
    five_thousand = head + b"".join(b"\r\nx%d: v" % i for i in range(5000)) + b"\r\n\r\n" + body
    assert answer(served.port, five_thousand).startswith(b"HTTP/1.1 431")
    assert answer(served.port, REQUEST).startswith(b"HTTP/1.1 200")  # within the caps


def test_connections_above_the_cap_get_503_and_are_closed(tmp_path: Path, gateway: Callable[..., Any]) -> None:
    served = gateway(config(tmp_path, max_connections=10))
    held = [socket.create_connection(("127.0.0.1", served.port), timeout=2) for _ in range(10)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", served.port), timeout=2) as extra:
            reply = receive_all(extra)
        assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
        assert b'"code":"over_capacity"' in reply
    finally:
        for conn in held:
            conn.close()
    time.sleep(0.2)
    assert answer(served.port, REQUEST).startswith(b"HTTP/1.1 200")


def test_an_idle_kept_alive_connection_is_closed(tmp_path: Path, gateway: Callable[..., Any]) -> None:
    served = gateway(config(tmp_path, keepalive_idle_seconds=0.5, header_timeout_seconds=30))
    with socket.create_connection(("127.0.0.1", served.port), timeout=3) as conn:
        conn.sendall(REQUEST)
        assert receive_all(conn).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert conn.recv(1) == b""  # closed by the server, not by the 3 s socket timeout
        assert time.monotonic() - started < 1.5


def test_each_kept_alive_request_gets_its_own_deadlines(tmp_path: Path, gateway: Callable[..., Any]) -> None:
    # One timer per connection serves every phase: a deadline armed later than the timer
    # (the next request's headers) and one sooner than it (a body deadline shorter than the
    # header deadline) must both hold.
    served = gateway(config(tmp_path, header_timeout_seconds=1.0, body_timeout_seconds=0.6))
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as conn:
        conn.sendall(REQUEST)
        assert receive_all(conn).startswith(b"HTTP/1.1 200")
        time.sleep(0.7)  # past the first request's header deadline, had it stayed armed
        conn.sendall(REQUEST)
        assert receive_all(conn).startswith(b"HTTP/1.1 200")  # the kept-alive connection still serves
        time.sleep(0.5)
        started = time.monotonic()
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")  # headers trickled
        reply = receive_all(conn)
        waited = time.monotonic() - started
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b"request headers did not arrive" in reply
        assert waited >= 0.8, waited  # from this request's first byte, not the previous request's
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as conn:
        started = time.monotonic()
        conn.sendall(REQUEST[: REQUEST.index(b"\r\n\r\n") + 4])  # headers, then no body
        reply = receive_all(conn)
        waited = time.monotonic() - started
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b"request body did not arrive" in reply
        assert waited < 0.95, waited  # the body deadline, sooner than the header timer's


# -- the answer's head, held for its body (``_HeldHead``) --------------------------------------


class _Wire:
    """What the socket was asked to write, one entry per write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("method", ["POST", "HEAD"])
@pytest.mark.parametrize("streamed", [False, True])
async def test_a_head_goes_out_with_its_body_and_a_stream_or_head_answer_does_not_wait(
    streamed: bool, method: str
) -> None:
    import asyncio

    from onion.server._protocol import _HeldHead

    wire = _Wire()
    held = _HeldHead(wire, asyncio.get_running_loop(), method != "HEAD")  # type: ignore[arg-type]
    framing = b"transfer-encoding: chunked" if streamed else b"content-length: 2"
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n%s\r\n\r\n" % framing
    held.write(head)
    await asyncio.sleep(0)  # the end of the loop's pass
    await asyncio.sleep(0)
    if streamed or method == "HEAD":
        # Nothing may follow soon (a stream's first event, a HEAD answer's absent body).
        assert wire.writes == [head]
        return
    assert wire.writes == []  # held, with no callback, for the body that follows
    held.write(b"{}")
    assert wire.writes == [head + b"{}"]  # one write, one segment, one wake of the client
    held.write(b"more")
    assert wire.writes[-1] == b"more"


async def test_a_head_request_and_a_late_first_event_are_answered_at_once_over_a_socket() -> None:
    import anyio

    from onion.server._protocol import GuardedProtocol
    from onion.testing.upstream import ThreadedServer

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/late":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await anyio.sleep(1.0)
            await send({"type": "http.response.body", "body": b"late", "more_body": False})
            return
        body = b'{"status":"ok"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async with ThreadedServer(app, protocol=GuardedProtocol) as server:
        for request, expect in (
            (b"HEAD /healthz HTTP/1.1\r\nhost: x\r\n\r\n", b"content-length: 15"),
            (b"GET /late HTTP/1.1\r\nhost: x\r\n\r\n", b"transfer-encoding: chunked"),
            (b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n", b'{"status":"ok"}'),
        ):
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.5) as conn:
                began = time.monotonic()
                conn.sendall(request)
                got = b""
                while expect not in got:
                    got += conn.recv(65536)  # a head held for a body that never comes: timeout
                assert time.monotonic() - began < 0.5, request


def test_a_large_body_on_a_slow_link_gets_the_time_it_needs(tmp_path: Path, gateway: Callable[..., Any]) -> None:
    # 3 MiB sent at ~1.7 MiB/s takes about 1.8 s, past the 1 s body deadline; each MiB
    # received earns a second more, so it is answered, not cut with a 408.
    served = gateway(config(tmp_path, body_timeout_seconds=1.0))
    photo = "data:image/png;base64," + "A" * (3 * 1024 * 1024)
    content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": photo}}]
    body = json.dumps({"model": "sim-small", "messages": [{"role": "user", "content": content}]}).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    piece = 256 * 1024
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as conn:
        started = time.monotonic()
        conn.sendall(head)
        for at in range(0, len(body), piece):
            conn.sendall(body[at : at + piece])
            time.sleep(0.15)
        reply = receive_all(conn)
        took = time.monotonic() - started
    assert took > 1.0, took  # it did take longer than the body deadline alone
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
