"""A fake LLM upstream served over real HTTP, for tests and benchmarks.

``FakeUpstream`` speaks two wire formats on one loopback port:

- OpenAI-compatible: ``POST /v1/chat/completions`` (JSON, or SSE with ``data: [DONE]``
  and a usage chunk when ``stream_options.include_usage`` is set), ``GET /v1/models``,
  ``POST /v1/embeddings`` (deterministic unit vectors derived from the text; ``input``
  as a string, strings or token ids, ``dimensions`` up to 4096 (past it a 400, as
  OpenAI's), ``encoding_format`` float or base64);
- Anthropic Messages: ``POST /v1/messages`` (JSON, or its typed SSE events).

It runs under uvicorn in a background thread, so it serves tests on either anyio
backend: use ``with FakeUpstream() as up:`` or ``async with FakeUpstream() as up:``.
Faults are scripted per request with ``Fault`` (error statuses with ``Retry-After``,
delays, read stalls, streams cut mid-way, malformed bodies), and ``stats`` counts
connections and streams opened and closed, so a test can prove nothing leaked.

It sits outside the onion: it is what a provider (the innermost handler) talks to.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import math
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal

import anyio
import msgspec

from ..providers.simulated import MAX_DIMENSIONS

__all__ = ["FakeUpstream", "Fault", "ThreadedServer", "UpstreamStats", "upstream_answer_headers"]


def upstream_answer_headers(number: int, anthropic: bool) -> list[tuple[bytes, bytes]]:
    """The headers a real upstream puts on its ``number``-th answer (each counts down, so
    two answers' headers differ): OpenAI's ``x-ratelimit-*``, ``openai-processing-ms``,
    its identity and ``x-request-id``, or Anthropic's ``anthropic-ratelimit-*`` and
    ``request-id``; both set a cookie, as the CDN in front of them does."""
    if anthropic:
        pairs = {
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": str(4000 - number),
            "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:01Z",
            "anthropic-ratelimit-tokens-limit": "400000",
            "anthropic-ratelimit-tokens-remaining": str(400000 - 25 * number),
            "anthropic-ratelimit-tokens-reset": "2026-01-01T00:00:02Z",
            "anthropic-organization-id": "fake-org",
            "request-id": f"req_011fake{number}",
        }
    else:
        pairs = {
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-limit-tokens": "2000000",
            "x-ratelimit-remaining-requests": str(10000 - number),
            "x-ratelimit-remaining-tokens": str(2000000 - 25 * number),
            "x-ratelimit-reset-requests": f"{6 * number}ms",
            "x-ratelimit-reset-tokens": "1s",
            "openai-processing-ms": str(100 + number),
            "openai-organization": "org-fake",
            "openai-project": "proj_fake",
            "openai-version": "2020-10-01",
            "x-request-id": f"req_fake{number}",
        }
    pairs["set-cookie"] = f"__cf_bm=fake{number}; path=/; HttpOnly"
    return [(name.encode(), value.encode()) for name, value in pairs.items()]


class Fault(msgspec.Struct, frozen=True):
    """How the fake upstream answers one request (the default ``Fault()`` answers normally).

    - ``status``: answer with this HTTP error status and an error body in the API's shape.
    - ``retry_after``: value of the ``Retry-After`` header sent with ``status``.
    - ``delay``: seconds before the response headers (time to first byte).
    - ``chunk_delay``: seconds before each streamed chunk after the first.
    - ``stall_after``: a stream stops sending after this many content chunks (a complete
      answer stalls after its headers) for ``stall`` seconds, then ends normally.
    - ``cut_after``: a stream ends after this many content chunks without ``[DONE]``
      (a complete answer sends half its body); ``cut_mode="close"`` drops the connection
      abruptly, ``"end"`` ends the HTTP body cleanly.
    - ``malformed``: the body (or, in a stream, the first event) is not valid JSON;
      ``malformed_at``: in a stream, the event at that index instead of the first.
    - ``reset``: the TCP connection is reset (RST) before any response byte.
    - ``reject_prefill``: a request whose last message is the assistant's (a resumed
      stream's prefill) is refused with a 400, as many OpenAI-compatible servers do.
    - ``text``: the answer's text (default: ``upstream.reply`` for the request).
    - ``done=False``: a stream ends after its finish reason and usage without
      ``data: [DONE]`` (as several real servers do).
    - ``error_message``, ``error_type``, ``error_code``, ``error_param``: the fields of
      the error body sent with ``status`` (default: "injected status N" and a type
      that follows from the status).
    """

    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    stall_after: int | None = None
    stall: float = 3600.0
    cut_after: int | None = None
    cut_mode: Literal["close", "end"] = "close"
    malformed: bool = False
    malformed_at: int | None = None
    reset: bool = False
    reject_prefill: bool = False
    text: str | None = None
    done: bool = True
    error_message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    error_param: str | None = None


_NORMAL = Fault()


class UpstreamStats:
    """Counters of what the fake upstream saw; read them after the traffic settles.

    ``open_streams`` and ``open_connections`` must drop back to zero once every client
    closed what it opened; ``streams_disconnected`` counts streams the client abandoned.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.streams_started = 0
        self.streams_completed = 0
        self.streams_closed = 0
        self.streams_disconnected = 0
        self.connections_opened = 0
        self.connections_closed = 0
        # time.monotonic() of each connection's close, as the fake saw it (the clock is
        # system-wide, so a test compares it with the moment its client went away).
        self.closed_at: list[float] = []

    @property
    def open_streams(self) -> int:
        """Streams started and not yet finished (completed, cut or abandoned)."""
        return self.streams_started - self.streams_closed

    @property
    def open_connections(self) -> int:
        """TCP connections currently open to the fake."""
        return self.connections_opened - self.connections_closed

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"UpstreamStats({fields}, open_streams={self.open_streams}, open_connections={self.open_connections})"


class _Cut(Exception):
    """Raised inside the app to make uvicorn drop the connection mid-response."""


_ENCODER = msgspec.json.Encoder()


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p + " " for p in parts[:-1]] + [parts[-1]] if text else []


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _chat_problem(body: dict[str, Any]) -> tuple[str, str] | None:
    """What OpenAI would refuse in a chat body's messages, as (message, param)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array", "messages"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"'messages[{i}]' must be an object with a string 'role'", f"messages[{i}]"
        content = message.get("content")
        for j, part in enumerate(content if isinstance(content, list) else ()):
            where = f"messages[{i}].content[{j}]"
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                return f"Invalid value for '{where}': expected an object with a string 'type'", where
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                return f"Invalid type for '{where}.text': expected a string", f"{where}.text"
    return None


def _count_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(len(_text_of(m.get("content")).split()) + 3 for m in messages if isinstance(m, dict))


def default_reply(body: dict[str, Any]) -> str:
    """The fake's answer: it echoes the last user message, so tests can tell requests apart."""
    messages = body.get("messages") or []
    last = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    said = _text_of(last.get("content")) if last else ""
    return f"You said: {said}" if said else "Hello from the fake upstream."


def embedding_of(text: str, dimensions: int = 64) -> list[float]:
    """A deterministic unit vector for ``text`` (same text, same vector; different text, far apart)."""
    raw = b""
    counter = 0
    while len(raw) < dimensions * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [(v / 2**31) - 1.0 for v in struct.unpack(f"<{dimensions}I", raw[: dimensions * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


class ThreadedServer:
    """Serve any ASGI app with uvicorn on a free ``127.0.0.1`` port, in a background thread.

    Usable from sync code and from async tests on either anyio backend (uvicorn runs its
    own asyncio loop in the thread). ``url`` is ``http://127.0.0.1:PORT``. ``lifespan``
    is passed to uvicorn (``"on"`` runs the app's startup and shutdown).
    """

    def __init__(
        self, app: Any, *, protocol: type[asyncio.Protocol] | None = None, lifespan: str = "off", grace: int = 1
    ) -> None:
        self.app = app
        self.protocol = protocol
        self.lifespan = lifespan
        self.grace = grace
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        """Start serving; returns once the port accepts connections."""
        import uvicorn

        # IPPROTO_TCP explicitly: asyncio turns on TCP_NODELAY only for sockets that say
        # so, and without it small writes wait on delayed ACKs (~40 ms per answer).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            http=self.protocol or "h11",
            interface="asgi3",
            proxy_headers=False,
            lifespan=self.lifespan,
            log_level="critical",
            access_log=False,
            timeout_graceful_shutdown=self.grace,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[sock])), name="onion-test-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Ask uvicorn to shut down gracefully and wait for the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._server = self._thread = None

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> ThreadedServer:
        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(self, *exc_info: object) -> None:
        await anyio.to_thread.run_sync(self.stop)


class FakeUpstream:
    """An OpenAI-compatible and Anthropic-compatible fake served on ``127.0.0.1``.

    ``base_url`` is ``http://127.0.0.1:PORT/v1`` (what an OpenAI client takes);
    ``url`` is the root. Queue faults with ``push(Fault(...), ...)`` (one per request, in
    arrival order) or set ``fault_for = lambda body: Fault(...)``; ``reply`` maps a request
    body to the answer text. ``requests`` keeps ``(path, headers, body)`` of each call.

    ``completion_for = lambda body: {...}`` answers an OpenAI request with that whole
    ``chat.completion`` object (every choice and field: logprobs, refusals, annotations,
    audio, tool calls, usage details, unknown fields); a stream sends it as OpenAI does
    (see ``openai_chunks``). A request with ``n > 1`` gets that many choices by default.

    Every chat, messages or embeddings answer (and injected error status) carries realistic upstream
    headers (``upstream_answer_headers``); ``sent_headers`` keeps them, one dict per answer.
    """

    def __init__(
        self,
        *,
        models: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini"),
        reply: Callable[[dict[str, Any]], str] = default_reply,
        api_key: str | None = None,
    ) -> None:
        self.models = models
        self.reply = reply
        self.api_key = api_key
        self.fault_for: Callable[[dict[str, Any]], Fault | None] | None = None
        self.completion_for: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
        self.faults: deque[Fault] = deque()
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.sent_headers: list[dict[str, str]] = []
        self.stats = UpstreamStats()
        self.port = 0
        self._server: Any = None
        self._ids = itertools.count(1)
        self._transports: dict[tuple[str, int], Any] = {}

    # -- scripting ---------------------------------------------------------------

    def push(self, *faults: Fault) -> None:
        """Queue ``faults``: the next requests take them one each, in order."""
        self.faults.extend(faults)

    def _fault(self, body: Any) -> Fault:
        if self.faults:
            try:
                return self.faults.popleft()
            except IndexError:
                pass
        if self.fault_for is not None and isinstance(body, dict):
            return self.fault_for(body) or _NORMAL
        return _NORMAL

    # -- addresses ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the base URL an OpenAI client takes."""
        return f"{self.url}/v1"

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> FakeUpstream:
        """Serve in a background thread; returns once the port accepts connections."""
        from uvicorn.protocols.http.h11_impl import H11Protocol

        stats = self.stats
        transports = self._transports

        class CountingProtocol(H11Protocol):
            def connection_made(self, transport: Any) -> None:  # type: ignore[override]
                stats.connections_opened += 1
                peer = transport.get_extra_info("peername")
                if peer:
                    transports[(peer[0], peer[1])] = transport  # for Fault(reset=True)
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                peer = self.transport.get_extra_info("peername") if self.transport else None
                if peer:
                    transports.pop((peer[0], peer[1]), None)
                stats.connections_closed += 1
                stats.closed_at.append(time.monotonic())
                super().connection_lost(exc)

        self._server = ThreadedServer(self._app, protocol=CountingProtocol).start()
        self.port = self._server.port
        return self

    def stop(self) -> None:
        """Stop serving (open streams are dropped after a short grace period)."""
        if self._server is not None:
            self._server.stop()
        self._server = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeUpstream:
        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(self, *exc_info: object) -> None:
        await anyio.to_thread.run_sync(self.stop)

    async def wait_settled(self, within: float = 5.0, *, connections: bool = False) -> UpstreamStats:
        """Wait up to ``within`` seconds (from any event loop) until no stream is open on
        the fake, and with ``connections=True`` no connection either (the server thread
        sees a client's close a moment after it happens); returns ``stats``."""
        for _ in range(max(1, int(within / 0.01))):
            if not self.stats.open_streams and not (connections and self.stats.open_connections):
                break
            await anyio.sleep(0.01)
        return self.stats

    # -- the ASGI app --------------------------------------------------------------

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body_bytes = b""
        more = True
        while more:
            message = await receive()
            body_bytes += message.get("body", b"")
            more = message.get("more_body", False)
        self.stats.requests += 1
        body: Any = None
        if body_bytes:
            try:
                body = msgspec.json.decode(body_bytes)
            except msgspec.DecodeError:
                body = None
        self.requests.append((path, headers, body))
        anthropic = path.endswith("/messages")
        if self.api_key is not None and not self._authorized(headers, anthropic):
            await _json(send, 401, _error_body("invalid api key", "authentication_error", anthropic))
            return
        if method == "GET" and path in ("/v1/models", "/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
            await _json(send, 200, {"object": "list", "data": data})
            return
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/embeddings", "/v1/messages"):
            await _json(send, 404, _error_body(f"no route {method} {path}", "not_found_error", anthropic))
            return
        if not isinstance(body, dict):
            await _json(send, 400, _error_body("body is not a JSON object", "invalid_request_error", anthropic))
            return
        wrong = _chat_problem(body) if path == "/v1/chat/completions" else None
        if wrong is not None:
            # As OpenAI's: a shape it cannot read is a 400 naming the place, not a crash.
            await _json(send, 400, _error_body(wrong[0], "invalid_request_error", False, None, wrong[1]))
            return
        fault = self._fault(body)
        if fault.reject_prefill and _ends_with_assistant(body):
            message = "the final message must be from the user (assistant prefill is not supported)"
            await _json(send, 400, _error_body(message, "invalid_request_error", anthropic))
            return
        if fault.delay:
            await anyio.sleep(fault.delay)
        if fault.reset:
            self._reset(scope)
            return
        answer_headers = self._answer_headers(anthropic)
        if fault.status is not None:
            extra = [(b"retry-after", fault.retry_after.encode())] if fault.retry_after is not None else []
            extra += answer_headers
            kind = fault.error_type or ("rate_limit_error" if fault.status == 429 else "server_error")
            message = fault.error_message if fault.error_message is not None else f"injected status {fault.status}"
            error = _error_body(message, kind, anthropic, fault.error_code, fault.error_param)
            await _json(send, fault.status, error, extra)
            return
        if path == "/v1/embeddings":
            await self._embeddings(send, body, fault, answer_headers)
        elif body.get("stream"):
            await self._stream(receive, send, body, fault, anthropic, answer_headers)
        else:
            await self._complete(send, body, fault, anthropic, answer_headers)

    def _answer_headers(self, anthropic: bool) -> list[tuple[bytes, bytes]]:
        pairs = upstream_answer_headers(len(self.sent_headers) + 1, anthropic)
        self.sent_headers.append({name.decode(): value.decode() for name, value in pairs})
        return pairs

    def _reset(self, scope: dict[str, Any]) -> None:
        """Abort the request's TCP connection with an RST (SO_LINGER 0), no byte sent."""
        client = scope.get("client")
        transport = self._transports.get((client[0], client[1])) if client else None
        if transport is None:
            raise _Cut("no transport to reset")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def _authorized(self, headers: dict[str, str], anthropic: bool) -> bool:
        if anthropic:
            return headers.get("x-api-key") == self.api_key
        return headers.get("authorization") == f"Bearer {self.api_key}"

    async def _embeddings(
        self, send: Any, body: dict[str, Any], fault: Fault, extra: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        # As OpenAI's: a string, strings, token ids or lists of token ids; base64 vectors
        # are little-endian float32.
        inputs = body.get("input")
        single = isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int))
        items = [inputs] if single else list(inputs or [])
        texts = [t if isinstance(t, str) else " ".join(map(str, t)) for t in items]
        dimensions = 64 if body.get("dimensions") is None else body["dimensions"]
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= MAX_DIMENSIONS:
            # As OpenAI's: a model has a fixed largest size; a huge value is a 400, not
            # a vector built until memory runs out.
            message = f"'dimensions' must be an integer from 1 to {MAX_DIMENSIONS} for this model"
            await _json(send, 400, _error_body(message, "invalid_request_error", False, None, "dimensions"))
            return
        vectors: list[Any] = [embedding_of(t, dimensions) for t in texts]
        if body.get("encoding_format") == "base64":
            vectors = [base64.b64encode(struct.pack(f"<{dimensions}f", *v)).decode() for v in vectors]
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        tokens = sum(len(t.split(" ")) if isinstance(t, str) else len(t) for t in items)
        payload = {
            "object": "list",
            "data": data,
            "model": body.get("model", ""),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        await self._send_complete(send, _ENCODER.encode(payload), fault, extra)

    async def _complete(
        self, send: Any, body: dict[str, Any], fault: Fault, anthropic: bool, extra: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        text = fault.text if fault.text is not None else self.reply(body)
        model = str(body.get("model", ""))
        prompt = _count_tokens(body.get("messages")) + len(_text_of(body.get("system")).split())
        completion_tokens = len(_words(text))
        number = next(self._ids)
        if anthropic:
            payload: dict[str, Any] = {
                "id": f"msg_fake{number}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": completion_tokens},
            }
        else:
            payload = self._openai_completion(body, fault)
        await self._send_complete(send, _ENCODER.encode(payload), fault, extra)

    async def _send_complete(
        self, send: Any, data: bytes, fault: Fault, extra: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        if fault.malformed:
            data = data[: len(data) // 2] + b"<<not json"
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *extra]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if fault.stall_after is not None:
            await anyio.sleep(fault.stall)
        if fault.cut_after is not None:
            await send({"type": "http.response.body", "body": data[: len(data) // 2], "more_body": True})
            raise _Cut("cut a complete body in half")
        await send({"type": "http.response.body", "body": data})

    async def _stream(
        self,
        receive: Any,
        send: Any,
        body: dict[str, Any],
        fault: Fault,
        anthropic: bool,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        stats = self.stats
        stats.streams_started += 1
        completed = False
        ending: list[bool] = []  # non-empty once the body is finished (a later disconnect is normal)
        try:
            async with anyio.create_task_group() as group:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    if not ending:
                        stats.streams_disconnected += 1
                        group.cancel_scope.cancel()

                group.start_soon(watch_disconnect)
                events = self._anthropic_events(body, fault) if anthropic else self._openai_events(body, fault)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), *extra],
                    }
                )
                completed = await self._pump(send, events, fault, ending)
                group.cancel_scope.cancel()
        finally:
            stats.streams_closed += 1
            if completed:
                stats.streams_completed += 1

    async def _pump(self, send: Any, events: list[tuple[bool, bytes]], fault: Fault, ending: list[bool]) -> bool:
        content_sent = 0
        completed = True
        for index, (is_content, event) in enumerate(events):
            if is_content:
                if fault.cut_after is not None and content_sent >= fault.cut_after:
                    if fault.cut_mode == "close":
                        raise _Cut("stream cut mid-way")
                    completed = False
                    break
                if fault.stall_after is not None and content_sent >= fault.stall_after:
                    await anyio.sleep(fault.stall)
                    fault = msgspec.structs.replace(fault, stall_after=None)
                if content_sent and fault.chunk_delay:
                    await anyio.sleep(fault.chunk_delay)
                content_sent += 1
            if (index == 0 and fault.malformed) or index == fault.malformed_at:
                event = b"data: {not json at all\n\n"
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if index % 16 == 15:
                # uvicorn's send returns at once, without yielding, once the client has gone:
                # without a checkpoint the rest of a long stream would be "sent" before the
                # disconnect watcher ever ran, and an abandoned stream counted as completed.
                await anyio.lowlevel.checkpoint()
        ending.append(True)
        await send({"type": "http.response.body", "body": b""})
        return completed

    def _openai_completion(self, body: dict[str, Any], fault: Fault) -> dict[str, Any]:
        given = self.completion_for(body) if self.completion_for is not None else None
        if given is not None:
            return given
        text = fault.text if fault.text is not None else self.reply(body)
        prefix = _prefill(body)
        if prefix and text.startswith(prefix):
            text = text[len(prefix) :]  # continue the assistant's prefix, as vLLM does
        prompt = _count_tokens(body.get("messages"))
        n = body.get("n") if isinstance(body.get("n"), int) and body["n"] > 1 else 1
        completion_tokens = len(_words(text)) * n
        return {
            "id": f"chatcmpl-fake{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model", "")),
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
                for i in range(n)
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt + completion_tokens,
            },
        }

    def _openai_events(self, body: dict[str, Any], fault: Fault) -> list[tuple[bool, bytes]]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = openai_chunks(self._openai_completion(body, fault), include_usage=include_usage)
        if fault.done:
            events.append((False, b"data: [DONE]\n\n"))
        return events

    def _anthropic_events(self, body: dict[str, Any], fault: Fault) -> list[tuple[bool, bytes]]:
        text = fault.text if fault.text is not None else self.reply(body)
        model = str(body.get("model", ""))
        prompt = _count_tokens(body.get("messages")) + len(_text_of(body.get("system")).split())
        words = _words(text)

        def event(name: str, payload: dict[str, Any]) -> bytes:
            return b"event: " + name.encode() + b"\ndata: " + _ENCODER.encode({"type": name, **payload}) + b"\n\n"

        message = {
            "id": f"msg_fake{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": 1},
        }
        events = [
            (False, event("message_start", {"message": message})),
            (False, event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})),
            (False, event("ping", {})),
        ]
        events += [
            (True, event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}}))
            for w in words
        ]
        events += [
            (False, event("content_block_stop", {"index": 0})),
            (
                False,
                event(
                    "message_delta",
                    {
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": len(words)},
                    },
                ),
            ),
            (False, event("message_stop", {})),
        ]
        return events


def _prefill(body: dict[str, Any]) -> str:
    """The assistant prefix a ``continue_final_message`` request asks to continue."""
    if not body.get("continue_final_message") or not _ends_with_assistant(body):
        return ""
    return _text_of(body["messages"][-1].get("content"))


def _ends_with_assistant(body: dict[str, Any]) -> bool:
    messages = body.get("messages")
    return isinstance(messages, list) and bool(messages) and (messages[-1] or {}).get("role") == "assistant"


_TOP = ("id", "object", "created", "model", "choices", "usage")


def openai_chunks(completion: dict[str, Any], *, include_usage: bool) -> list[tuple[bool, bytes]]:
    """A ``chat.completion`` as the events OpenAI streams it (without ``[DONE]``), each
    ``(is_content, event)``: per choice, a first delta with the role (and the message's
    unknown fields), the text word by word, the refusal, annotations and audio, each tool
    call as a first delta with ``index``, ``id``, ``type`` and name and its arguments in
    pieces of 8 characters; the choice's logprobs ride on its first text delta (or its
    last delta); then its finish reason, with the choice's own unknown fields (as vLLM
    sends ``stop_reason``); then the usage event when asked for."""
    top = {k: v for k, v in completion.items() if k not in _TOP}
    base = {
        "id": completion.get("id", "chatcmpl-fake"),
        "object": "chat.completion.chunk",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
    }

    def event(
        index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None, **extra: Any
    ) -> bytes:
        choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        choice.update(extra)
        payload = {**base, **top, "choices": [choice]}
        if include_usage:
            payload["usage"] = None
        return b"data: " + _ENCODER.encode(payload) + b"\n\n"

    events: list[tuple[bool, bytes]] = []
    for choice in completion.get("choices", []):
        index, message = choice.get("index", 0), dict(choice.get("message") or {})
        logprobs = choice.get("logprobs")
        known = ("role", "content", "refusal", "tool_calls", "annotations", "audio")
        first = {"role": message.get("role", "assistant"), "content": ""}
        first.update((k, v) for k, v in message.items() if k not in known)
        if message.get("content") is None and (message.get("tool_calls") or message.get("refusal") is not None):
            first["content"] = None
        events.append((False, event(index, first)))
        for word in _words(message.get("content") or ""):
            events.append((True, event(index, {"content": word}, logprobs=logprobs)))
            logprobs = None
        for word in _words(message.get("refusal") or ""):
            events.append((True, event(index, {"refusal": word})))
        for key in ("annotations", "audio"):
            if message.get(key) is not None:
                events.append((False, event(index, {key: message[key]})))
        for position, call in enumerate(message.get("tool_calls") or []):
            function = call.get("function") or {}
            arguments = function.get("arguments") or ""
            head = {"index": position, "id": call.get("id"), "type": call.get("type", "function")}
            head["function"] = {"name": function.get("name", ""), "arguments": ""}
            events.append((True, event(index, {"tool_calls": [head]})))
            for start in range(0, len(arguments), 8):
                piece = {"index": position, "function": {"arguments": arguments[start : start + 8]}}
                events.append((True, event(index, {"tool_calls": [piece]})))
        own = {k: v for k, v in choice.items() if k not in ("index", "message", "logprobs", "finish_reason", "delta")}
        events.append((False, event(index, {}, choice.get("finish_reason"), logprobs, **own)))
    if include_usage:
        payload = {**base, **top, "choices": [], "usage": completion.get("usage")}
        events.append((False, b"data: " + _ENCODER.encode(payload) + b"\n\n"))
    return events


def _error_body(
    message: str, kind: str, anthropic: bool, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    if anthropic:
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


async def _json(send: Any, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    data = _ENCODER.encode(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
