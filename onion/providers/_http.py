"""What every HTTP provider shares: one pooled client, timeouts, error classification,
and the loop that turns an upstream SSE body into ``Chunk``\\ s.

A provider is the innermost handler of the onion. Subclasses (OpenAI, Anthropic) only
say how a request is encoded and how the upstream's bodies and events are decoded.
Every failure leaves here as a ``ProviderError`` (or ``Timeout`` when the request's own
deadline passed) with the upstream status and a retryable flag, so retry, fallback and
the circuit breaker can decide without knowing HTTP.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import anyio
import httpx
import msgspec

from .._clock import loop_clock
from .._context import Context
from .._response import Response
from .._types import Chunk, Completion, Message, Request
from .._upstream_headers import DEFAULT_UPSTREAM_HEADERS, HeaderAllowlist
from ..errors import AnswerTooLarge, BadRequest, ProviderError, Timeout, scrub
from ._h1 import H1Transport, Reply
from ._sse import SSEDecoder, SSEOverflow

__all__ = [
    "HTTPProvider",
    "StreamDecoder",
    "UpstreamError",
    "classify_status",
    "parse_retry_after",
    "parse_upstream_error",
    "with_prefix",
]

_RETRYABLE_STATUS = frozenset({408, 409, 429})
_ERROR_BODY_LIMIT = 64 * 1024
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.\[\]\-]{1,64}")
_perf = time.perf_counter


def _now() -> float:
    """``anyio.current_time()`` without its backend look-up: the running loop's clock
    (``loop_clock`` asks sniffio, so trio code hosted in an asyncio loop, trio's guest
    mode, reads trio's clock, not the host loop's)."""
    return loop_clock()()


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify_status(status: int) -> bool:
    """Whether an upstream HTTP status is worth retrying (429, 408, 409 and 5xx)."""
    return status in _RETRYABLE_STATUS or status >= 500


class _ErrorBody(msgspec.Struct):
    error: Any = None
    message: Any = None


class UpstreamError(msgspec.Struct):
    """What an upstream's error body says: its message (raw, for logs) and the OpenAI or
    Anthropic ``type``, ``code`` and ``param``, each a short identifier or ``None``."""

    message: str = ""
    type: str | None = None
    code: str | None = None
    param: str | None = None


def _identifier(value: Any) -> str | None:
    # An upstream's code, type or param is echoed to the caller: only a short plain name.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and _IDENTIFIER.fullmatch(value):
        return value
    return None


def parse_upstream_error(data: bytes) -> UpstreamError:
    """The fields of an OpenAI- or Anthropic-shaped error body (anything else: its text)."""
    try:
        body = msgspec.json.decode(data, type=_ErrorBody)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return UpstreamError(data[:200].decode("utf-8", "replace"))
    error = body.error
    if isinstance(error, dict):
        message = error.get("message") or error.get("type") or ""
        return UpstreamError(
            str(message)[:500],
            _identifier(error.get("type")),
            _identifier(error.get("code")),
            _identifier(error.get("param")),
        )
    return UpstreamError(str(error or body.message or "")[:500])


class StreamDecoder:
    """Turns one upstream stream's SSE events into chunks; a subclass per wire format.

    ``decode`` returns a chunk, a list of chunks (an event with several choices), or
    ``None`` for an event that carries nothing; it sets ``done`` when the upstream
    signalled a clean end, and ``finished`` when the answer is whole even if the body
    ends before the end marker (a finish reason arrived).
    """

    __slots__ = ("done", "finished")

    def __init__(self) -> None:
        self.done = False
        self.finished = False

    def decode(self, event: str | None, data: bytes) -> Chunk | list[Chunk] | None:
        raise NotImplementedError


def with_prefix(request: Request, prefix: str) -> Request | None:
    """``request`` with ``prefix`` as the start of the assistant's answer: a new final
    assistant message, or appended to one the request already ends with (``None`` when
    that message is not plain text)."""
    messages = request.messages
    last = messages[-1] if messages else None
    if last is not None and last.role == "assistant":
        if last.tool_calls or not (last.content is None or isinstance(last.content, str)):
            return None
        messages = [*messages[:-1], msgspec.structs.replace(last, content=(last.text + prefix).rstrip())]
    else:
        messages = [*messages, Message("assistant", prefix)]
    return msgspec.structs.replace(request, messages=messages)


class _Replay:
    """Puts the already-sent text in front of a prefilled stream's continuation.

    The prefix went upstream without its trailing whitespace (Anthropic rejects it), so up
    to that much leading whitespace of the continuation is dropped again.
    """

    __slots__ = ("pending", "spaces")

    def __init__(self, text: str) -> None:
        self.pending = text
        self.spaces = len(text) - len(text.rstrip())

    def __call__(self, chunk: Chunk) -> Chunk:
        if not (self.pending or self.spaces):
            return chunk
        content = chunk.content
        if self.spaces and content:
            drop = min(self.spaces, len(content) - len(content.lstrip()))
            content = content[drop:]
            self.spaces = self.spaces - drop if not content else 0
        if self.pending:
            content, self.pending = self.pending + content, ""
        return msgspec.structs.replace(chunk, content=content)


class HTTPProvider:
    """Base of the HTTP providers: one shared ``httpx.AsyncClient`` per provider.

    ``models`` lists the model names it serves (empty: any model). Timeouts: ``connect``
    and ``read`` (each wait for bytes) go to httpx; ``total`` bounds a whole call, and the
    request's own ``context.deadline`` is honoured too. ``upstream_seconds`` on the
    request's context grows by the time spent waiting for the upstream. An answer, or a
    stream's bytes in all, larger than ``max_answer_bytes`` is cut with ``AnswerTooLarge``
    (read piece by piece, never buffered past the cap). ``upstream_headers`` lists the
    upstream answer headers the client gets (``onion._upstream_headers``; ``()``: none).
    """

    kind = "http"
    path = "/chat/completions"
    embeddings_path: str | None = None
    """Where the upstream embeds (``/embeddings``), or ``None``: an embeddings request is a 400."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        api_key: str | None = None,
        models: Sequence[str] = (),
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        total_timeout: float | None = 600.0,
        max_connections: int = 256,
        max_keepalive_connections: int = 64,
        headers: Mapping[str, str] | None = None,
        trust_env: bool = False,
        client: httpx.AsyncClient | None = None,
        max_answer_bytes: int = 32 * 1024 * 1024,
        upstream_headers: Sequence[str] = DEFAULT_UPSTREAM_HEADERS,
    ) -> None:
        self.name = name
        # Compiled once (a set of names and a tuple of prefixes); None when empty, so an
        # empty list costs nothing per call.
        self._forward = HeaderAllowlist(upstream_headers) or None
        self.max_answer_bytes = max_answer_bytes
        self.base_url = base_url.rstrip("/")
        self.models = tuple(models)
        self.total_timeout = total_timeout
        self._api_key = api_key
        self._url = self.base_url + self.path
        self._headers = {"content-type": "application/json", **self.auth_headers(api_key), **(headers or {})}
        for header, value in self._headers.items():
            # A line break would split the request (header injection); never the value in
            # the message, which may be a key.
            if any(bad in header or bad in value for bad in "\r\n\0"):
                raise ValueError(f"the header {header[:60]!r} holds a line break or a NUL byte (api_key or headers)")
        self._owns_client = client is None
        # With its own client, the provider sends through its HTTP/1.1 transport directly:
        # the Client layer around it would keep upstream cookies (shared between callers),
        # follow redirects, and log every request URL at INFO, none of which a gateway wants.
        self._transport: H1Transport | None = None
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._guarded_timeout = httpx.Timeout(None, connect=connect_timeout, pool=connect_timeout)
        self._guarded_timeouts = self._guarded_timeout.as_dict()
        self._embeddings_url = None if self.embeddings_path is None else httpx.URL(self.base_url + self.embeddings_path)
        if client is None:
            limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive_connections)
            timeout = httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout)
            if trust_env:
                # httpx mounts the environment's proxies only on its own transports (a custom
                # transport turns them off), so a provider that trusts the environment sends
                # every call through httpx's client and pool.
                client = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=True)
            else:
                transport = self._transport = H1Transport(limits, ssl_context=httpx.create_ssl_context())
                client = httpx.AsyncClient(timeout=timeout, transport=transport, trust_env=False)
                self._timeouts = timeout.as_dict()
                # The request line and headers of every call, built (and checked) once.
                self._chat_target = transport.target(httpx.URL(self._url), self._headers)
                if self._embeddings_url is not None:
                    self._embeddings_target = transport.target(self._embeddings_url, self._headers)
        self.client = client

    def __repr__(self) -> str:
        # Never the key; the URL is configuration, not a secret, but stays out of user output.
        return f"<{type(self).__name__} {self.name!r} models={list(self.models)}>"

    async def aclose(self) -> None:
        """Close the pooled connections (only when this provider created the client)."""
        if self._owns_client:
            await self.client.aclose()

    # -- what a wire format supplies ------------------------------------------------

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        """Headers that authenticate with the upstream."""
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    def encode(self, request: Request) -> bytes:
        """The upstream request body."""
        raise NotImplementedError

    def decode_completion(self, data: bytes, request: Request) -> Completion:
        """The upstream's complete answer (raise ``ValueError``-like errors when malformed)."""
        raise NotImplementedError

    def stream_decoder(self, request: Request) -> StreamDecoder:
        """A decoder for one streamed answer."""
        raise NotImplementedError

    def encode_embeddings(self, request: Request) -> bytes:
        """The upstream body of an embeddings request (``request.embedding`` is set)."""
        raise NotImplementedError

    def decode_embeddings(self, data: bytes, request: Request) -> Completion:
        """The upstream's embeddings answer, its vectors in ``Completion.embeddings``."""
        raise NotImplementedError

    def prefill(self, request: Request, prefix: str) -> Request | None:
        """``request`` asking the upstream to continue an answer that starts with ``prefix``
        (no trailing whitespace), or ``None``: this upstream cannot (the default)."""
        return None

    def _resumed(self, request: Request) -> tuple[Request, str]:
        """The request to send and the text to replay, for a stream being resumed in
        ``auto`` mode (see ``onion.ResumePrefix``); ``(request, "")`` otherwise."""
        marker = request.context.resume
        if marker is None:
            return request, ""
        text, messages = marker.text, marker.messages
        # Only for the request the marker was set for (not a side call sharing its context).
        if not isinstance(text, str) or not text.strip():
            return request, ""
        if messages is not request.messages and messages != request.messages:
            return request, ""
        prefilled = self.prefill(request, text.rstrip())
        return (request, "") if prefilled is None else (prefilled, text)

    # -- the call ---------------------------------------------------------------------

    def _error(self, detail: str, request: Request, **kwargs: Any) -> ProviderError:
        return ProviderError(
            f"{self.name}: {detail}", provider=self.name, provider_kind=self.kind, model=request.model, **kwargs
        )

    def _deadline(self, context: Context, start: float) -> tuple[float | None, bool]:
        """The absolute deadline of this call and whether it is the request's own (to be
        enforced here with cancel scopes).

        When the stack's handler boundary guards a deadline (``context.deadline_guarded``)
        the layers bound this call: the provider adds no ``total_timeout`` of its own, which
        could only fire first and turn a layer's typed timeout into an opaque error.
        """
        if context.deadline_guarded is not None:
            return None, False
        own = context.deadline
        mine = start + self.total_timeout if self.total_timeout is not None else None
        if own is not None and (mine is None or own <= mine):
            return own, True
        return mine, False

    def _timed_out(self, request: Request, own: bool) -> Exception:
        if own:
            return Timeout(f"{self.name}: the request's deadline passed waiting for the upstream", phase="total")
        return self._error(f"no complete answer within total_timeout={self.total_timeout}s", request, retryable=True)

    @staticmethod
    def _past(error: httpx.HTTPError, deadline: float | None) -> bool:
        """A socket timeout that fired because the call's deadline ran out."""
        # A timer may fire a hair early against the event loop clock.
        if deadline is None or not isinstance(error, httpx.TimeoutException):
            return False
        return _now() >= deadline - 0.01

    def _transport_error(
        self, error: httpx.HTTPError, request: Request, during: str, failure: str = "connection"
    ) -> ProviderError:
        if isinstance(error, httpx.TimeoutException):
            what = type(error).__name__
            return self._error(f"{what} {during}", request, retryable=True, failure=failure)
        if isinstance(error, httpx.DecodingError):
            return self._error(f"undecodable body {during}: {error}", request, retryable=False, failure="malformed")
        return self._error(f"{type(error).__name__} {during}: {error}", request, retryable=True, failure=failure)

    async def _status_error(self, response: httpx.Response | Reply, request: Request) -> ProviderError:
        try:
            data = b""
            async for piece in response.aiter_bytes():
                data += piece
                if len(data) > _ERROR_BODY_LIMIT:
                    break
        except httpx.HTTPError:
            data = b""
        status = response.status_code
        said = parse_upstream_error(data)
        public = scrub(said.message) if said.message and 400 <= status < 500 else None
        error = self._error(
            f"upstream answered {status}: {said.message[:200]}",
            request,
            upstream_status=status,
            # An exhausted quota is a 429 no retry fixes.
            retryable=classify_status(status) and said.code != "insufficient_quota",
            retry_after=parse_retry_after(response.headers),
            upstream_type=said.type,
            upstream_code=said.code,
            param=said.param,
            public_message=public or None,
        )
        if self._forward is not None:
            # The server adds them to the error answer (a 429's rate-limit state matters most).
            raw = response.headers if isinstance(response, Reply) else response.headers.raw
            picked = self._forward.pick(raw)
            if picked:
                error.upstream_headers = picked  # type: ignore[attr-defined]
        return error

    def _timeouts_within(self, remaining: float) -> httpx.Timeout | None:
        """Timeouts that keep every single wait within ``remaining`` seconds (``None``: the
        configured ones already do), so ``total_timeout`` holds without a cancel scope."""
        if remaining >= self._read_timeout and remaining >= self._connect_timeout:
            return None
        wait = max(0.001, remaining)
        return httpx.Timeout(min(self._read_timeout, wait), connect=min(self._connect_timeout, wait))

    async def _send(
        self, body: bytes, remaining: float | None, url: httpx.URL | None = None, *, guarded: bool = False
    ) -> httpx.Response | Reply:
        if guarded:
            timeouts: httpx.Timeout | None = self._guarded_timeout
        else:
            timeouts = self._timeouts_within(remaining) if remaining is not None else None
        if self._transport is None:
            built = self.client.build_request(
                "POST",
                url or self._url,
                content=body,
                headers=self._headers,
                timeout=timeouts or httpx.USE_CLIENT_DEFAULT,
            )
            return await self.client.send(built, stream=True)
        if timeouts is None:
            timeout_dict = self._timeouts
        elif guarded:
            timeout_dict = self._guarded_timeouts
        else:
            timeout_dict = timeouts.as_dict()
        target = self._chat_target if url is None else self._embeddings_target
        head = target.head + b"content-length: %d\r\n\r\n" % len(body)
        return await self._transport.exchange(target, head, body, timeout_dict)

    def _embeddings_call(self, request: Request) -> tuple[bytes, httpx.URL]:
        if self.embeddings_path is None or self._embeddings_url is None:
            raise BadRequest(
                f"the provider for model {request.model[:100]!r} ({self.kind}) has no embeddings API",
                param="model",
                code="embeddings_not_supported",
            )
        if request.stream:
            raise BadRequest("an embeddings request cannot be streamed", param="stream")
        return self.encode_embeddings(request), self._embeddings_url

    async def __call__(self, request: Request) -> Response:
        context = request.context
        # Under a guarded deadline (any stack with a timeout layer) no clock is read here:
        # on asyncio 3.11 each read of the loop's clock asks the OS for the process id.
        start = 0.0 if context.deadline_guarded is not None else _now()
        deadline, own = self._deadline(context, start)
        replay = ""
        url = None
        if request.embedding is not None:
            body, url = self._embeddings_call(request)
        else:
            if request.stream and context.resume is not None:
                request, replay = self._resumed(request)
            body = self.encode(request)
        began = _perf()
        try:
            # Only the request's own deadline gets a cancel scope (it costs on every call);
            # the provider's total_timeout shortens the socket timeouts of this call instead,
            # and is checked again between reads.
            if own and deadline is not None:
                with anyio.fail_after(max(0.0, deadline - start)):
                    response = await self._send(body, None, url)
            elif context.deadline_guarded is not None:
                # No read timeout that could fight the layers' limits (they bound each wait).
                response = await self._send(body, None, url, guarded=True)
            else:
                response = await self._send(body, None if deadline is None else deadline - start, url)
        except TimeoutError:
            raise self._timed_out(request, own) from None
        except httpx.HTTPError as error:
            if self._past(error, deadline):
                raise self._timed_out(request, own) from None
            raise self._transport_error(error, request, "before the answer started") from None
        finally:
            context.upstream_seconds += _perf() - began
        try:
            if response.status_code >= 300:
                error = await self._status_error(response, request)
                error.prefilled = bool(replay)
                raise error
            forward = self._forward
            if request.stream:
                chunks = self._stream(response, request, deadline, own, _Replay(replay) if replay else None)
                # on_close: a stream closed before its first read never runs the generator,
                # whose finally would have released the connection.
                answer = Response.stream(chunks, served_by=self.name, model=request.model, on_close=response.aclose)
            else:
                completion = await self._read_complete(response, request, deadline, own)
                answer = Response.complete(completion, served_by=self.name)
            if forward is not None:
                raw = response.headers if isinstance(response, Reply) else response.headers.raw
                picked = forward.pick(raw)
                if picked:
                    answer.headers.update(picked)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await response.aclose()
            raise
        # gen_ai.provider.name for the metrics and tracing layers (the API spoken, not our name).
        answer.provider = self.kind
        if replay:
            answer.resumed = "continue"
        return answer

    async def _read_complete(
        self, response: httpx.Response | Reply, request: Request, deadline: float | None, own: bool
    ) -> Completion:
        """The complete answer: a chat completion, or the vectors of an embeddings request."""
        began = _perf()
        try:
            if own and deadline is not None:
                with anyio.fail_after(max(0.0, deadline - _now())):
                    data = await self._read_bounded(response, request)
            else:
                data = await self._read_bounded(response, request)
        except TimeoutError:
            raise self._timed_out(request, own) from None
        except httpx.HTTPError as error:
            if self._past(error, deadline):
                raise self._timed_out(request, own) from None
            raise self._transport_error(error, request, "reading the answer", failure="cut") from None
        finally:
            request.context.upstream_seconds += _perf() - began
            await response.aclose()
        if deadline is not None and not own and _now() > deadline:
            raise self._timed_out(request, own)
        try:
            if request.embedding is not None:
                return self.decode_embeddings(data, request)
            return self.decode_completion(data, request)
        except (
            msgspec.DecodeError,
            msgspec.ValidationError,
            ValueError,
            KeyError,
            IndexError,
            TypeError,
            AttributeError,
        ) as error:
            raise self._error(f"malformed answer body: {error}", request, retryable=True, failure="malformed") from None

    async def _read_bounded(self, response: httpx.Response | Reply, request: Request) -> bytes:
        limit = self.max_answer_bytes
        # An answer read whole with its headers (the usual one) is measured as it is; one
        # still arriving is refused at once when its declared length is past the limit.
        if not (isinstance(response, Reply) and response.complete):
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise self._too_large(request)
        if isinstance(response, Reply):
            data = await response.read_within(limit)
            if data is None:
                raise self._too_large(request)
            return data
        parts, size = [], 0
        async for piece in response.aiter_bytes():
            size += len(piece)
            if size > limit:
                raise self._too_large(request)
            parts.append(piece)
        return b"".join(parts)

    def _too_large(self, request: Request) -> AnswerTooLarge:
        return AnswerTooLarge(self.max_answer_bytes, provider=self.name, model=request.model)

    async def _stream(
        self,
        response: httpx.Response | Reply,
        request: Request,
        deadline: float | None,
        own: bool,
        replay: _Replay | None,
    ) -> AsyncGenerator[Chunk, None]:
        context = request.context
        decoder = self.stream_decoder(request)
        sse = SSEDecoder()
        pieces = response.aiter_bytes()
        received, limit = 0, self.max_answer_bytes
        # Only the request's own deadline is enforced precisely (a cancel scope per read,
        # never held across a yield); the provider's total_timeout is checked between reads.
        precise = deadline if own else None
        try:
            while not decoder.done:
                began = _perf()
                try:
                    if precise is None:
                        piece = await pieces.__anext__()
                    else:
                        with anyio.fail_after(max(0.0, precise - _now())):
                            piece = await pieces.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise self._timed_out(request, own) from None
                except httpx.HTTPError as error:
                    if self._past(error, deadline):
                        raise self._timed_out(request, own) from None
                    raise self._transport_error(error, request, "mid-stream", failure="cut") from None
                finally:
                    context.upstream_seconds += _perf() - began
                received += len(piece)
                if received > limit:
                    raise self._too_large(request)
                try:
                    events = sse.feed(piece)
                    for event, data in events:
                        decoded = decoder.decode(event, data)
                        if isinstance(decoded, list):
                            for chunk in decoded:
                                yield chunk if replay is None else replay(chunk)
                        elif decoded is not None:
                            yield decoded if replay is None else replay(decoded)
                        if decoder.done:
                            break
                except (
                    msgspec.DecodeError,
                    msgspec.ValidationError,
                    SSEOverflow,
                    ValueError,
                    TypeError,
                    AttributeError,
                ) as error:
                    # A documented choice: an invalid event ends the attempt as a cut stream
                    # (class "malformed"), which retry/fallback resume; skipping it could
                    # silently drop text from the answer.
                    raise self._error(
                        f"malformed stream event: {error}", request, retryable=True, failure="malformed"
                    ) from None
                if deadline is not None and not own and _now() > deadline:
                    raise self._timed_out(request, own)
            if not (decoder.done or decoder.finished):
                raise self._error(
                    "the stream ended before its end marker (cut mid-way)", request, retryable=True, failure="cut"
                )
            if not decoder.done:
                return
            # Read the body's own end (the terminating chunk usually follows the end marker),
            # so the connection goes back to the pool instead of being dropped.
            for _ in range(4):
                try:
                    await pieces.__anext__()
                except (StopAsyncIteration, httpx.HTTPError):
                    break
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
