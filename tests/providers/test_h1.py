"""The providers' HTTP/1.1 transport against a scripted upstream on a real socket: what
it reads, when it reuses a connection, how it fails, and that a caller who leaves closes
the connection."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import httpx
import pytest
from anyio.abc import SocketStream, TaskGroup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onion.providers._h1 import H1Transport

pytestmark = pytest.mark.anyio

TIMEOUTS = {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}


@dataclass
class Reply:
    """One scripted answer: sent in ``pieces`` (a pause between them, so they arrive as
    separate segments), then the connection is closed when ``close`` is set."""

    pieces: list[bytes]
    close: bool = False
    stall: float = 0.0


def ok(body: bytes = b"hello", *, headers: str = "") -> Reply:
    return Reply([b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), headers.encode(), body)])


@dataclass
class Upstream:
    replies: list[Reply]
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed_by_peer: int = 0
    closed: anyio.Event = field(default_factory=anyio.Event)

    async def handle(self, stream: SocketStream) -> None:
        self.connections += 1
        buffer = b""
        try:
            while self.replies:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive()
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if b"transfer-encoding: chunked" in head.lower():
                    while b"0\r\n\r\n" not in buffer:
                        buffer += await stream.receive()
                    body, _, buffer = buffer.partition(b"0\r\n\r\n")
                    body += b"0\r\n\r\n"
                else:
                    while len(buffer) < length:
                        buffer += await stream.receive()
                    body, buffer = buffer[:length], buffer[length:]
                self.requests.append(head + b"\r\n\r\n" + body)
                reply = self.replies.pop(0)
                for index, piece in enumerate(reply.pieces):
                    if index:
                        await anyio.sleep(0.01)
                    await stream.send(piece)
                if reply.stall:
                    # Stalled, but reading: a client that leaves is seen at once.
                    with anyio.move_on_after(reply.stall):
                        buffer += await stream.receive()
                if reply.close:
                    return
            # Script done: wait for the client to close (or leave).
            await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            self.closed_by_peer += 1
            self.closed.set()
        finally:
            await stream.aclose()


@pytest.fixture
async def serve() -> AsyncIterator[tuple[TaskGroup, list[Upstream]]]:
    started: list[Upstream] = []
    async with anyio.create_task_group() as group:
        yield group, started
        group.cancel_scope.cancel()


async def start(group: TaskGroup, replies: list[Reply]) -> Upstream:
    upstream = Upstream(list(replies))
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    upstream.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    group.start_soon(listener.serve, upstream.handle)
    return upstream


def transport(**limits: object) -> H1Transport:
    return H1Transport(httpx.Limits(**{"max_connections": 4, "max_keepalive_connections": 4, **limits}))  # type: ignore[arg-type]


async def get(t: H1Transport, upstream: Upstream, *, path: str = "/v1/x", **kwargs: object) -> tuple[int, bytes]:
    request = httpx.Request(
        "POST",
        f"http://127.0.0.1:{upstream.port}{path}",
        content=kwargs.pop("content", b'{"a":1}'),  # type: ignore[arg-type]
        headers=kwargs.pop("headers", {"content-type": "application/json"}),  # type: ignore[arg-type]
        extensions={"timeout": kwargs.pop("timeouts", TIMEOUTS)},
    )
    response = await t.handle_async_request(request)
    try:
        body = b"".join([piece async for piece in response.aiter_raw()])
    finally:
        await response.aclose()
    return response.status_code, body


async def test_a_kept_alive_connection_is_reused_and_the_request_goes_out_whole(serve) -> None:
    group, _ = serve
    upstream = await start(group, [ok(b"one"), ok(b"two"), ok(b"three")])
    t = transport()
    try:
        assert [await get(t, upstream) for _ in range(3)] == [(200, b"one"), (200, b"two"), (200, b"three")]
    finally:
        await t.aclose()
    assert upstream.connections == 1
    first = upstream.requests[0]
    assert first.startswith(b"POST /v1/x HTTP/1.1\r\n")
    assert b"\r\ncontent-type: application/json\r\n" in first and first.endswith(b'\r\n\r\n{"a":1}')
    assert f"Host: 127.0.0.1:{upstream.port}".encode() in first


async def test_connection_close_and_a_body_to_the_end_are_read_and_not_reused(serve) -> None:
    group, _ = serve
    replies = [
        Reply([b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nhi"], close=True),
        # No length, not chunked: the body is everything until the upstream closes.
        Reply([b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil ", b"the end"], close=True),
        ok(b"fresh"),
    ]
    upstream = await start(group, replies)
    t = transport()
    try:
        assert await get(t, upstream) == (200, b"hi")
        assert await get(t, upstream) == (200, b"until the end")
        assert await get(t, upstream) == (200, b"fresh")
        assert t.in_use == 0
    finally:
        await t.aclose()
    assert upstream.connections == 3


async def test_a_chunked_answer_in_many_segments(serve) -> None:
    group, _ = serve
    pieces = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        b"5\r\nhel",
        b"lo\r\n",
        b"6\r\n world\r\n0\r\n\r\n",
    ]
    upstream = await start(group, [Reply(pieces), ok(b"again")])
    t = transport()
    try:
        assert await get(t, upstream) == (200, b"hello world")
        assert await get(t, upstream) == (200, b"again")
    finally:
        await t.aclose()
    assert upstream.connections == 1


async def test_an_idle_connection_the_upstream_closed_is_not_reused(serve) -> None:
    group, _ = serve
    # The first reply promises keep-alive, then the upstream closes anyway (as servers do
    # when their idle timeout passes).
    upstream = await start(group, [Reply(ok(b"a").pieces, close=True), ok(b"b")])
    t = transport()
    try:
        assert await get(t, upstream) == (200, b"a")
        await anyio.sleep(0.05)
        assert await get(t, upstream) == (200, b"b")
    finally:
        await t.aclose()
    assert upstream.connections == 2


async def test_an_expired_idle_connection_is_dropped(serve) -> None:
    group, _ = serve
    upstream = await start(group, [ok(b"a"), ok(b"b")])
    t = transport(keepalive_expiry=0.05)
    try:
        await get(t, upstream)
        await anyio.sleep(0.1)
        assert await get(t, upstream) == (200, b"b")
    finally:
        await t.aclose()
    assert upstream.connections == 2


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(serve) -> None:
    group, _ = serve
    upstream = await start(group, [ok()])
    t = transport()
    try:
        with pytest.raises(httpx.LocalProtocolError):
            await get(t, upstream, headers={"x-key": "a\r\nx-injected: 1"})
        with pytest.raises(httpx.LocalProtocolError):
            await get(t, upstream, headers={"x-key": "a\nb"})
    finally:
        await t.aclose()
    assert upstream.connections == 0


async def test_a_streamed_request_body_goes_out_chunked(serve) -> None:
    group, _ = serve
    upstream = await start(group, [ok()])

    async def parts() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b""
        yield b"defgh"

    t = transport()
    try:
        assert await get(t, upstream, content=parts()) == (200, b"hello")
    finally:
        await t.aclose()
    assert upstream.requests[0].endswith(b"\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n")


async def test_failures_are_httpx_errors(serve) -> None:
    group, _ = serve
    upstream = await start(
        group,
        [
            Reply([b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"], close=True),
            Reply([b"NOT HTTP AT ALL\r\n\r\n"], close=True),
            Reply([], close=True),
            Reply([b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"], stall=1.0),
        ],
    )
    t = transport()
    try:
        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            await get(t, upstream)
        with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
            await get(t, upstream)
        with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
            await get(t, upstream)
        with pytest.raises(httpx.ReadTimeout):
            await get(t, upstream, timeouts={**TIMEOUTS, "read": 0.1})
        assert t.in_use == 0
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        await listener.aclose()  # nothing listens there now
        with pytest.raises(httpx.ConnectError):
            await t.handle_async_request(
                httpx.Request("GET", f"http://127.0.0.1:{port}/", extensions={"timeout": TIMEOUTS})
            )
        with pytest.raises(httpx.UnsupportedProtocol):
            await t.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/"))
    finally:
        await t.aclose()


async def test_requests_wait_for_a_free_connection_then_time_out(serve) -> None:
    group, _ = serve
    upstream = await start(group, [Reply(ok(b"slow").pieces, stall=0.0), ok(b"next")])
    t = transport(max_connections=1)
    try:
        held = await t.handle_async_request(
            httpx.Request("POST", f"http://127.0.0.1:{upstream.port}/", content=b"x", extensions={"timeout": TIMEOUTS})
        )
        with pytest.raises(httpx.PoolTimeout):
            await get(t, upstream, timeouts={**TIMEOUTS, "pool": 0.1})
        async with anyio.create_task_group() as waiting:
            results: list[tuple[int, bytes]] = []

            async def wait_then_get() -> None:
                results.append(await get(t, upstream))

            waiting.start_soon(wait_then_get)
            await anyio.sleep(0.05)
            assert not results  # still waiting for the held connection
            assert b"".join([piece async for piece in held.aiter_raw()]) == b"slow"
            await held.aclose()
        assert results == [(200, b"next")]
        assert t.in_use == 0
    finally:
        await t.aclose()
    assert upstream.connections == 1


@pytest.mark.parametrize("during", ["headers", "body"])
async def test_a_caller_who_leaves_closes_the_connection(serve, during: str) -> None:
    group, _ = serve
    pieces = [b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart"] if during == "body" else []
    upstream = await start(group, [Reply(pieces, stall=10.0)])
    t = transport()
    try:
        with anyio.move_on_after(0.2):
            await get(t, upstream)
        with anyio.fail_after(1):
            await upstream.closed.wait()  # the upstream sees the connection go
        assert t.in_use == 0
    finally:
        await t.aclose()


async def test_tls(serve) -> None:
    trustme = pytest.importorskip("trustme")
    group, _ = serve
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    upstream = Upstream([ok(b"secret"), ok(b"again")])
    listener = anyio.streams.tls.TLSListener(
        await anyio.create_tcp_listener(local_host="127.0.0.1"), server_context, standard_compatible=False
    )
    upstream.port = listener.listener.extra(anyio.abc.SocketAttribute.local_port)
    group.start_soon(listener.serve, upstream.handle)
    t = H1Transport(httpx.Limits(max_connections=2), ssl_context=client_context)
    url = f"https://localhost:{upstream.port}/v1"
    try:
        for expected in (b"secret", b"again"):
            response = await t.handle_async_request(httpx.Request("GET", url, extensions={"timeout": TIMEOUTS}))
            assert b"".join([p async for p in response.aiter_raw()]) == expected
            await response.aclose()
        with pytest.raises(httpx.ConnectError):  # the default context does not trust this CA
            await H1Transport(httpx.Limits()).handle_async_request(
                httpx.Request("GET", url, extensions={"timeout": TIMEOUTS})
            )
    finally:
        await t.aclose()
    assert upstream.connections == 1  # kept alive (the refused handshake never reached the handler)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(min_size=0, max_size=300),
    chunked=st.booleans(),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=6),
    close=st.booleans(),
)
async def test_any_segmentation_reads_the_same_body(
    serve, body: bytes, chunked: bool, cuts: list[int], close: bool
) -> None:
    # The law: however the answer's bytes are cut into segments, the body read is the body
    # sent, and the connection is reused exactly when the upstream keeps it alive.
    group, _ = serve
    if chunked:
        encoded = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7))
        wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n%s\r\n%s0\r\n\r\n" % (
            b"connection: close\r\n" if close else b"",
            encoded,
        )
    else:
        wire = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (
            len(body),
            b"connection: close\r\n" if close else b"",
            body,
        )
    points = sorted({c for c in cuts if c < len(wire)})
    pieces = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    upstream = await start(group, [Reply(pieces, close=close), ok(b"next")])
    t = transport()
    try:
        assert await get(t, upstream) == (200, body)
        assert await get(t, upstream) == (200, b"next")
    finally:
        await t.aclose()
    assert upstream.connections == (2 if close else 1)


async def read_within(t: H1Transport, upstream: Upstream, limit: int) -> bytes | None:
    """One request through ``exchange`` (the providers' path), its body read whole with
    ``Reply.read_within``."""
    target = t.target(httpx.URL(f"http://127.0.0.1:{upstream.port}/v1/x"), {"content-type": "application/json"})
    reply = await t.exchange(target, target.head + b"content-length: 7\r\n\r\n", b'{"a":1}', TIMEOUTS)
    try:
        return await reply.read_within(limit)
    finally:
        await reply.aclose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(min_size=0, max_size=300),
    framing=st.sampled_from(["length", "chunked", "until close"]),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=6),
    short=st.booleans(),
)
async def test_read_within_reads_what_iterating_reads_and_stops_past_its_limit(
    serve, body: bytes, framing: str, cuts: list[int], short: bool
) -> None:
    # The law: however the answer is framed and cut into segments, read_within returns the
    # body sent, or None when the body is longer than the limit; a body read whole leaves
    # the connection reused exactly when the upstream keeps it alive.
    group, _ = serve
    if framing == "chunked":
        encoded = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7))
        wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n%s0\r\n\r\n" % encoded
    elif framing == "length":
        wire = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    else:
        wire = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n%s" % body
    points = sorted({c for c in cuts if c < len(wire)})
    pieces = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    close = framing == "until close"
    limit = len(body) - 1 if short and body else len(body)
    upstream = await start(group, [Reply(pieces, close=close), ok(b"next")])
    t = transport()
    try:
        assert await read_within(t, upstream, limit) == (None if limit < len(body) else body)
        assert await read_within(t, upstream, 100) == b"next"
        assert t.in_use == 0
    finally:
        await t.aclose()
    if limit < len(body):
        # Cut short: reused only if the whole answer had already arrived; never leaked.
        assert upstream.connections in ((2,) if close else (1, 2))
    else:
        assert upstream.connections == (2 if close else 1)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_key_or_header_with_a_line_break_is_refused_at_build_without_echoing_it(kind: str) -> None:
    from onion.providers import build_provider

    secret = "sk-live-abc\r\nx-injected: 1"
    with pytest.raises(ValueError, match="line break") as caught:
        build_provider(kind, name="p", base_url="http://127.0.0.1:9/v1", api_key=secret, models=["m"])
    assert "sk-live" not in str(caught.value)
    with pytest.raises(ValueError, match="'x-trace'"):
        build_provider(kind, name="p", base_url="http://127.0.0.1:9/v1", headers={"x-trace": "a\nb"}, models=["m"])


async def test_a_provider_that_trusts_the_environment_goes_through_its_proxy(serve, monkeypatch) -> None:
    # trust_env sends through httpx's client, which mounts HTTP_PROXY: the proxy gets the
    # request with the upstream's absolute URL (the upstream's name never resolves here).
    from onion import Request
    from onion.providers import build_provider

    group, _ = serve
    answer = (
        b'{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,'
        b'"message":{"role":"assistant","content":"via proxy"},"finish_reason":"stop"}]}'
    )
    proxy = await start(group, [ok(answer, headers="content-type: application/json\r\n")])
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    provider = build_provider(
        "openai", name="p", base_url="http://upstream.invalid/v1", api_key="sk-x", models=["gpt-4o"], trust_env=True
    )
    try:
        response = await provider(Request(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]))
        assert (await response.result()).content == "via proxy"
    finally:
        await provider.aclose()
    assert proxy.requests[0].startswith(b"POST http://upstream.invalid/v1/chat/completions HTTP/1.1\r\n")


def _framed(body: bytes, chunked: bool) -> bytes:
    if chunked:
        encoded = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 5]), body[i : i + 5]) for i in range(0, len(body), 5))
        return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n%s0\r\n\r\n" % encoded
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    answers=st.lists(
        st.tuples(st.binary(max_size=120), st.booleans(), st.integers(min_value=1, max_value=200)),
        min_size=2,
        max_size=5,
    )
)
async def test_a_kept_alive_connection_reads_answer_after_answer_with_one_parser(
    serve, answers: list[tuple[bytes, bool, int]]
) -> None:
    # The law: the parser a connection keeps starts each answer afresh, whatever framing and
    # segments the one before had: every body is the one sent, on one connection.
    group, _ = serve
    replies = []
    for body, chunked, cut in answers:
        wire = _framed(body, chunked)
        replies.append(Reply([wire[:cut], wire[cut:]] if cut < len(wire) else [wire]))
    upstream = await start(group, replies)
    t = transport()
    try:
        for body, _, _ in answers:
            assert await get(t, upstream) == (200, body)
    finally:
        await t.aclose()
    assert upstream.connections == 1
