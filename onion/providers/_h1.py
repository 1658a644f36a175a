"""The providers' HTTP/1.1 transport: an httpx transport on anyio byte streams, with
llhttp (through ``httptools``, the parser uvicorn uses) reading the answers.

Why not httpx's own transport: measured on this machine, sequential POSTs to a local
upstream cost 650-760 µs of gateway CPU each through httpx's client on httpcore2's pool
(h11's pure-Python state machine, a dozen anyio cancel scopes, httpx's request and
response models twice over), against 120-145 µs for the same bytes sent on an anyio
stream and parsed by llhttp; with an empty stack that was half of the gateway's CPU per
request. The parsing, TLS and sockets stay in the libraries (llhttp, ``ssl``, anyio);
what is ours is the pool.

What it does, and no more (a gateway's upstream calls need no more): HTTP/1.1 over TCP
or TLS, keep-alive connections reused most-recent first, idle ones dropped after
``keepalive_expiry`` or when the peer has closed them, ``max_connections`` in all (a
request waits up to the pool timeout for one), ``max_keepalive_connections`` kept idle,
the four httpx timeouts (connect, read, write, pool), errors in httpx's classes. Proxies
are not its business: a provider that trusts the environment sends through httpx's client.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple

import anyio
import httptools
import httpx
from anyio.abc import ByteStream, SocketAttribute

__all__ = ["H1Transport", "RawHeaders", "Reply", "Target"]

_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_READ_SIZE = 65536
# Within asyncio's default write buffer high-water mark (64 KiB) and trio's socket buffer.
_SMALL_WRITE = 16384


class _Answer:
    """What llhttp has read of one answer (its parser's callbacks)."""

    __slots__ = ("body", "complete", "headers", "headers_done", "keep_alive", "messages", "parser")

    def __init__(self) -> None:
        self.parser: Any = None
        self._clear()

    def _clear(self) -> None:
        """Nothing read yet (a new answer, or the next one on a kept-alive connection)."""
        self.keep_alive = self.headers_done = self.complete = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.messages = 0

    @classmethod
    def on(cls, connection: _Connection | _LoopConnection) -> _Answer:
        """A fresh answer on ``connection``, with its parser. A kept-alive connection keeps
        its parser: llhttp is at the start of the next message once one is complete (a
        connection is reused only then), and a new parser per request cost its creation
        and the lookup of every callback."""
        answer = connection.answer
        if answer is None:
            answer = connection.answer = cls()
            answer.parser = httptools.HttpResponseParser(answer)
            return answer
        answer._clear()
        return answer

    def on_message_begin(self) -> None:
        self.messages += 1

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        # llhttp forgets the connection's verdict once the message is done (it resets for
        # the next one), so it is read here.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True


class _Connection:
    """A connection on an anyio byte stream (any backend; trio's path)."""

    __slots__ = ("answer", "idle_since", "key", "socket", "stream")

    def __init__(self, stream: ByteStream, key: tuple[bytes, bytes, int]) -> None:
        self.stream = stream
        self.key = key
        self.idle_since = 0.0
        self.answer: _Answer | None = None  # the answer being read, with its parser
        self.socket: socket.socket | None = stream.extra(SocketAttribute.raw_socket, None)

    def gone(self) -> bool:
        """Whether the peer has closed it while idle (a read would return at once)."""
        if self.socket is None:
            return False
        fd = self.socket.fileno()
        if fd < 0:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))

    async def receive(self, timeout: float | None) -> bytes:  # noqa: ASYNC109 (httpx's read timeout)
        """The next bytes, or ``b""`` at the end of the connection."""
        try:
            if timeout is None:
                return await self.stream.receive(_READ_SIZE)
            with anyio.fail_after(timeout):
                return await self.stream.receive(_READ_SIZE)
        except anyio.EndOfStream:
            return b""
        except TimeoutError:
            raise httpx.ReadTimeout("timed out reading the answer") from None
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, ssl.SSLError) as error:
            raise httpx.ReadError(str(error) or type(error).__name__) from None

    async def send(self, data: bytes, timeout: float | None) -> None:  # noqa: ASYNC109
        try:
            # Below the transport's high-water mark a send never waits (the bytes go to the
            # kernel or the write buffer at once), so the write timeout needs no cancel scope.
            if timeout is None or len(data) < _SMALL_WRITE:
                await self.stream.send(data)
            else:
                with anyio.fail_after(timeout):
                    await self.stream.send(data)
        except TimeoutError:
            raise httpx.WriteTimeout("timed out sending the request") from None
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, ssl.SSLError) as error:
            raise httpx.WriteError(str(error) or type(error).__name__) from None

    async def close(self) -> None:
        await anyio.aclose_forcefully(self.stream)


_TIMED_OUT = object()
# Pause reading from the upstream past this many unread bytes (back-pressure: a client
# that stops reading a stream stops the gateway reading the upstream), resume below it.
_HIGH_WATER = 256 * 1024


class _Protocol(asyncio.Protocol):
    """The asyncio side of a ``_LoopConnection``: bytes queued as they arrive, one waiter."""

    __slots__ = ("buffered", "chunks", "drained", "eof", "error", "paused", "transport", "waiter")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.waiter: asyncio.Future[Any] | None = None
        self.drained: asyncio.Future[None] | None = None
        self.eof = False
        self.paused = False
        self.error: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def pause_writing(self) -> None:
        if self.drained is None and self.transport is not None:
            self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _on_asyncio() -> bool:
    # What anyio's own backend detection checks for asyncio, without sniffio (which anyio
    # no longer requires): a running asyncio loop in this thread.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


class _LoopConnection:
    """A connection on asyncio's own transport and protocol (the fast path under asyncio).

    anyio's socket stream pauses and resumes reading around every receive (two
    ``epoll_ctl`` calls), yields to the loop once more on every send and receive, and a
    read timeout needs a cancel scope; here the protocol queues what arrives, a read waits
    on one future, and its timeout is a timer that resolves that future."""

    __slots__ = ("_loop", "_protocol", "answer", "idle_since", "key")

    def __init__(self, protocol: _Protocol, key: tuple[bytes, bytes, int]) -> None:
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self.key = key
        self.idle_since = 0.0
        self.answer: _Answer | None = None  # the answer being read, with its parser

    def gone(self) -> bool:
        """Whether the peer closed it (or sent something) while it sat idle."""
        protocol = self._protocol
        return protocol.eof or bool(protocol.chunks) or protocol.transport is None or protocol.transport.is_closing()

    async def receive(self, timeout: float | None) -> bytes:  # noqa: ASYNC109 (httpx's read timeout)
        """The next bytes, or ``b""`` at the end of the connection."""
        protocol = self._protocol
        if not protocol.chunks:
            if protocol.eof:
                return self._ended()
            waiter = protocol.waiter = self._loop.create_future()
            timer = None if timeout is None else self._loop.call_later(timeout, _expire, waiter)
            try:
                woken = await waiter
            finally:
                protocol.waiter = None
                if timer is not None:
                    timer.cancel()
            if woken is _TIMED_OUT:
                raise httpx.ReadTimeout("timed out reading the answer")
            if not protocol.chunks:
                return self._ended()
        chunks = protocol.chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join([chunks.popleft() for _ in range(len(chunks))])
        protocol.buffered -= len(data)
        if protocol.paused and protocol.transport is not None:
            protocol.paused = False
            protocol.transport.resume_reading()
        return data

    def _ended(self) -> bytes:
        error = self._protocol.error
        if error is not None:
            raise httpx.ReadError(str(error) or type(error).__name__)
        return b""

    async def send(self, data: bytes, timeout: float | None) -> None:  # noqa: ASYNC109
        protocol = self._protocol
        transport = protocol.transport
        if transport is None or transport.is_closing():
            raise httpx.WriteError("the connection to the upstream is closed")
        transport.write(data)
        drained = protocol.drained
        if drained is not None:  # past the write buffer's high-water mark
            try:
                with anyio.fail_after(timeout):
                    await asyncio.shield(drained)
            except TimeoutError:
                raise httpx.WriteTimeout("timed out sending the request") from None
            if protocol.error is not None:
                raise httpx.WriteError(str(protocol.error))

    async def close(self) -> None:
        transport = self._protocol.transport
        if transport is not None:
            transport.abort()


_AnyConnection = _Connection | _LoopConnection


class RawHeaders(list[tuple[bytes, bytes]]):
    """An answer's headers as received; ``get`` by name, case-insensitively."""

    __slots__ = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return default


class Reply(httpx.AsyncByteStream):
    """One answer: ``status_code``, ``headers``, and its body as it arrives
    (``aiter_bytes``, or iterate the reply); closing it hands the connection back,
    reusable only when the answer was read to its end and the peer keeps it open.

    The providers read a reply as they would an ``httpx.Response`` (the same names), so
    the hot path builds no httpx request or response objects."""

    __slots__ = ("_answer", "_connection", "_parser", "_read", "_transport", "_until_close", "headers", "status_code")

    def __init__(
        self,
        transport: H1Transport,
        connection: _AnyConnection,
        parser: Any,
        answer: _Answer,
        read: float | None,
        until_close: bool,
    ) -> None:
        self.status_code: int = parser.get_status_code()
        self.headers = RawHeaders(answer.headers)
        self._transport = transport
        self._connection: _AnyConnection | None = connection
        self._parser = parser
        self._answer = answer
        self._read = read
        self._until_close = until_close

    @property
    def complete(self) -> bool:
        """Whether the whole answer has been read off the connection (its body may still
        be unread here)."""
        return self._answer.complete

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (no content decoding: none is asked for)."""
        return self.__aiter__()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        answer, connection = self._answer, self._connection
        if connection is None:
            raise httpx.StreamClosed()
        while True:
            if answer.body:
                pieces, answer.body = answer.body, []
                for piece in pieces:
                    yield piece
            if answer.complete:
                return
            self._take(await connection.receive(self._read))

    async def read_within(self, limit: int) -> bytes | None:
        """The whole body, or ``None`` as soon as it passes ``limit`` bytes (the rest is
        not read). No async generator: most complete answers came with their headers,
        and a generator costs its creation, the loop's first-iteration hook and a close."""
        answer, connection = self._answer, self._connection
        if connection is None:
            raise httpx.StreamClosed()
        parts: list[bytes] = []
        size = 0
        while True:
            if answer.body:
                pieces, answer.body = answer.body, []
                for piece in pieces:
                    size += len(piece)
                if size > limit:
                    return None
                parts += pieces
            if answer.complete:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            self._take(await connection.receive(self._read))

    def _take(self, data: bytes) -> None:
        """Feed what a read returned to the parser; ``b""``: the connection ended, which
        ends an answer that runs until the close and is an error for any other."""
        if not data:
            if self._until_close:
                self._answer.complete = True
                self._until_close = False  # ended by the close: not reusable
                self._parser = None
                return
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
        _feed(self._parser, data)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        answer, parser = self._answer, self._parser
        reusable = (
            answer.complete and answer.messages == 1 and not answer.body and parser is not None and answer.keep_alive
        )
        await self._transport._release(connection, reusable)


def _feed(parser: Any, data: bytes) -> None:
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        raise httpx.RemoteProtocolError("the upstream switched protocols") from None
    except httptools.HttpParserError as error:
        raise httpx.RemoteProtocolError(f"malformed answer: {error}") from None


class Target(NamedTuple):
    """Where a provider's requests go: the pool's key, the host to connect to, and the
    request line and headers every request there starts with."""

    key: tuple[bytes, bytes, int]
    host: str
    head: bytes


class H1Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to the upstreams, pooled; see the module's docstring."""

    def __init__(self, limits: httpx.Limits, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._max = limits.max_connections
        self._max_idle = limits.max_keepalive_connections
        self._expiry = limits.keepalive_expiry
        self._ssl_context = ssl_context
        self._idle: dict[tuple[bytes, bytes, int], list[_AnyConnection]] = {}
        self._idle_count = 0
        self._open = 0
        self._waiters: deque[anyio.Event] = deque()
        self._closed = False

    @property
    def in_use(self) -> int:
        """Connections lent to requests and not yet handed back."""
        return self._open - self._idle_count

    # -- the pool -------------------------------------------------------------------

    async def _acquire(self, key: tuple[bytes, bytes, int], host: str, timeouts: dict[str, Any]) -> _AnyConnection:
        while True:
            if self._closed:
                raise httpx.PoolTimeout("the transport is closed")
            idle = self._idle.get(key)
            if idle:
                now = time.monotonic()
                while idle:
                    connection = idle.pop()
                    self._idle_count -= 1
                    expired = self._expiry is not None and now - connection.idle_since > self._expiry
                    if expired or connection.gone():
                        self._open -= 1
                        await connection.close()
                        continue
                    return connection
            if self._max is None or self._open < self._max:
                return await self._connect(key, host, timeouts.get("connect"))
            if self._idle_count:
                # Every slot is taken but some hold idle connections to other hosts: drop
                # the oldest of them to make room.
                await self._drop_one_idle()
                continue
            await self._wait(timeouts.get("pool"))

    async def _wait(self, timeout: float | None) -> None:  # noqa: ASYNC109
        event = anyio.Event()
        self._waiters.append(event)
        try:
            if timeout is None:
                await event.wait()
            else:
                with anyio.fail_after(timeout):
                    await event.wait()
        except TimeoutError:
            raise httpx.PoolTimeout("no connection to the upstream became free in time") from None
        finally:
            if event in self._waiters:
                self._waiters.remove(event)
            elif event.is_set():
                pass  # woken: the caller loops and takes the slot

    def _wake(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()

    async def _drop_one_idle(self) -> None:
        oldest: _AnyConnection | None = None
        for connections in self._idle.values():
            if connections and (oldest is None or connections[0].idle_since < oldest.idle_since):
                oldest = connections[0]
        if oldest is None:
            return
        self._idle[oldest.key].remove(oldest)
        self._idle_count -= 1
        self._open -= 1
        await oldest.close()

    async def _connect(self, key: tuple[bytes, bytes, int], host: str, timeout: float | None) -> _AnyConnection:  # noqa: ASYNC109
        self._open += 1
        tls = key[0] == b"https"
        try:
            with anyio.fail_after(timeout):
                context = (self._ssl_context or ssl.create_default_context()) if tls else None
                if _on_asyncio():
                    loop = asyncio.get_running_loop()
                    _, protocol = await loop.create_connection(
                        _Protocol, host, key[2], ssl=context, server_hostname=host if tls else None
                    )
                    return _LoopConnection(protocol, key)
                if context is not None:
                    stream: ByteStream = await anyio.connect_tcp(
                        host, key[2], ssl_context=context, tls_hostname=host, tls_standard_compatible=False
                    )
                else:
                    stream = await anyio.connect_tcp(host, key[2])
        except TimeoutError:
            self._open -= 1
            self._wake()
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{key[2]}") from None
        except (OSError, ssl.SSLError, anyio.BrokenResourceError) as error:
            self._open -= 1
            self._wake()
            raise httpx.ConnectError(str(error) or type(error).__name__) from None
        except BaseException:
            self._open -= 1
            self._wake()
            raise
        return _Connection(stream, key)

    async def _release(self, connection: _AnyConnection, reusable: bool) -> None:
        if reusable and not self._closed and (self._max_idle is None or self._idle_count < self._max_idle):
            connection.idle_since = time.monotonic()
            self._idle.setdefault(connection.key, []).append(connection)
            self._idle_count += 1
        else:
            self._open -= 1
            await connection.close()
        self._wake()

    # -- one request ------------------------------------------------------------------

    def target(self, url: httpx.URL, headers: Mapping[str, str], method: str = "POST") -> Target:
        """What ``exchange`` needs to send ``method`` requests with ``headers`` to ``url``
        (built once per provider and URL)."""
        scheme = url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"the upstream URL must be http or https, not {url.scheme!r}")
        port = url.port or _DEFAULT_PORTS[scheme]
        lines = [b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), url.raw_path), b"Host: %s\r\n" % url.netloc]
        lines += [b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        head = b"".join(lines)
        _check_head(head, len(lines))
        # The length and the blank line come with each request's body.
        return Target((scheme, url.raw_host, port), url.host, head)

    async def exchange(self, target: Target, head: bytes, body: bytes, timeouts: Mapping[str, Any]) -> Reply:
        """Send one request (``head`` ends with its blank line) and read the answer's
        status and headers; the body is the reply's to read, and closing it is a must."""
        connection = await self._acquire(target.key, target.host, timeouts)
        try:
            if len(body) < _SMALL_WRITE:
                await connection.send(head + body, None)
            else:
                await connection.send(head, timeouts.get("write"))
                await connection.send(body, timeouts.get("write"))
            answer = _Answer.on(connection)
            parser = answer.parser
            read = timeouts.get("read")
            while not answer.headers_done:
                data = await connection.receive(read)
                if not data:
                    raise httpx.RemoteProtocolError("the upstream closed the connection without answering")
                _feed(parser, data)
        except BaseException:
            # Cancelled or failed mid-request: the connection's state is unknown, so it is
            # closed, which is also what tells the upstream the caller has gone.
            with anyio.CancelScope(shield=True):
                await self._release(connection, False)
            raise
        status = parser.get_status_code()
        until_close = not answer.complete and _until_close(answer.headers, status)
        return Reply(self, connection, parser, answer, read, until_close)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.raw_scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"the upstream URL must be http or https, not {url.scheme!r}")
        key = (url.raw_scheme, url.raw_host, url.port or _DEFAULT_PORTS[url.raw_scheme])
        target = Target(key, url.host, b"")
        head = _head(request)
        body = await _body(request)
        reply = await self.exchange(target, head, body, request.extensions.get("timeout") or {})
        return httpx.Response(
            status_code=reply.status_code,
            headers=list(reply.headers),
            stream=reply,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        self._closed = True
        idle = [connection for connections in self._idle.values() for connection in connections]
        self._idle.clear()
        self._idle_count = 0
        for connection in idle:
            self._open -= 1
            await connection.close()
        while self._waiters:
            self._wake()


def _head(request: httpx.Request) -> bytes:
    """The request line and headers, refusing a header that would split the request."""
    raw = request.headers.raw
    head = b"".join(
        [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
        + [b"%s: %s\r\n" % pair for pair in raw]
        + [b"\r\n"]
    )
    _check_head(head, len(raw) + 2)
    return head


def _check_head(head: bytes, lines: int) -> None:
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head:
        raise httpx.LocalProtocolError("a request header holds a line break or a NUL byte")


async def _body(request: httpx.Request) -> bytes:
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        return b"".join(stream)
    parts = [part async for part in stream]  # type: ignore[union-attr]
    if request.headers.get("transfer-encoding", "").lower() == "chunked":
        return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts if part) + b"0\r\n\r\n"
    return b"".join(parts)


def _until_close(headers: list[tuple[bytes, bytes]], status: int) -> bool:
    """Whether the body runs to the end of the connection (no length, not chunked)."""
    if status < 200 or status in (204, 304):
        return False
    for name, _value in headers:
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            return False
    return True
