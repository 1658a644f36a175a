"""The HTTP gateway: a raw ASGI app that puts the onion behind an OpenAI-compatible API.

It sits outside the outermost layer: it turns an HTTP request into a ``Request``, calls
the stack, and writes the ``Response`` back as OpenAI's ``chat.completion`` JSON or as
``chat.completion.chunk`` Server-Sent Events ending in ``data: [DONE]``. No framework:
JSON goes through msgspec, headers are prebuilt bytes, a streamed chunk costs one small
encode and one ``send``.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /healthz``, and
``GET /metrics`` when a ``metrics_renderer`` is given. Every answer carries
``x-onion-served-by`` and ``x-request-id``. Errors use OpenAI's error shape with a safe
message: an ``OnionError`` shows its ``public_message``; anything else is a 500 that
names only the request id (the detail goes to the log). A stream that fails after its
first chunk ends with an SSE ``data: {"error": ...}`` event and no ``[DONE]``, so a
client cannot mistake a cut answer for a whole one. A client that disconnects mid-stream
cancels the upstream call.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
import msgspec

from ._response import Response
from ._types import Chunk, Completion, Context, Request, Usage, decode_request
from .errors import BadRequest, OnionError, ProviderError, RequestTooLarge, Unauthorized

__all__ = ["GatewayApp", "create_app"]

logger = logging.getLogger("onion.server")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
MetricsRenderer = Callable[[], tuple[bytes, str]]

_encode = msgspec.json.Encoder().encode
_JSON = (b"content-type", b"application/json")
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_DONE = b"data: [DONE]\n\n"
_CACHE_OFF = frozenset({"no", "false", "0", "off"})
_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


# -- wire shapes ---------------------------------------------------------------------


class _OutUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _OutMessage(msgspec.Struct):
    role: str
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None
    refusal: None = None


class _OutChoice(msgspec.Struct):
    index: int
    message: _OutMessage
    finish_reason: str | None
    logprobs: None = None


class _OutCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[_OutChoice]
    usage: _OutUsage | None
    object: str = "chat.completion"


class _OutDelta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class _OutError(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _OutError


def _usage(usage: Usage | None) -> _OutUsage | None:
    if usage is None:
        return None
    return _OutUsage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


def _error_json(status: int, message: str, code: str | None, param: str | None = None) -> bytes:
    kind = _ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "server_error")
    return _encode(_ErrorBody(_OutError(message, kind, param, code)))


def _explain(error: msgspec.ValidationError) -> tuple[str, str | None]:
    text = str(error)
    marker = text.rfind(" - at `$")
    if marker < 0:
        return text[:300], None
    path = text[marker + 8 : -1].lstrip(".")
    return f"{text[:marker]} at '{path}'"[:300], path.split("[")[0].split(".")[0] or None


def _header_pairs(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    pairs = []
    for name, value in headers.items():
        try:
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                continue
            pairs.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        except (UnicodeEncodeError, TypeError, AttributeError):
            # A layer's header that HTTP cannot carry is dropped rather than failing the answer.
            continue
    return pairs


class GatewayApp:
    """The ASGI app. ``handler`` is the stack (or any handler).

    - ``api_keys``: ``{key: identity}``; when non-empty, requests need
      ``Authorization: Bearer <key>`` and the identity becomes ``context.caller``.
    - ``models``: ``(model, owner)`` pairs for ``GET /v1/models``; ``list_models`` is
      awaited too, for upstreams that serve any model.
    - ``max_body_bytes``: larger bodies get 413.
    - ``metrics_renderer``: returns ``(body, content_type)`` for ``GET /metrics``.
    - ``on_shutdown``: awaited at ASGI lifespan shutdown (close connection pools).
    """

    def __init__(
        self,
        handler: Callable[[Request], Awaitable[Response]],
        *,
        api_keys: Mapping[str, str] | None = None,
        models: list[tuple[str, str]] | None = None,
        list_models: Callable[[], Awaitable[list[tuple[str, str]]]] | None = None,
        max_body_bytes: int = 4 * 1024 * 1024,
        metrics_renderer: MetricsRenderer | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.handler = handler
        self.api_keys = [(key.encode(), identity) for key, identity in (api_keys or {}).items()]
        self.models = list(models or [])
        self.list_models = list_models
        self.max_body_bytes = max_body_bytes
        self.metrics_renderer = metrics_renderer
        self.on_shutdown = on_shutdown

    # -- dispatch ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            method = scope["method"]
            if path == "/v1/chat/completions" or path == "/chat/completions":
                if method == "POST":
                    await self._chat(scope, receive, send)
                else:
                    await self._plain_error(send, 405, f"use POST for {path}", "method_not_allowed")
            elif path == "/v1/models" or path == "/models":
                await self._models(scope, send)
            elif path == "/healthz":
                await self._respond(send, 200, b'{"status":"ok"}', [_JSON])
            elif path == "/metrics" and self.metrics_renderer is not None:
                await self._metrics(send)
            else:
                await self._plain_error(send, 404, "no such endpoint; try POST /v1/chat/completions", "not_found")
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _metrics(self, send: Send) -> None:
        assert self.metrics_renderer is not None
        try:
            body, content_type = self.metrics_renderer()
        except ImportError:
            # Installed without the exporter: say what to install, not a bare 500.
            message = "metrics in Prometheus format need: pip install 'onion-llm[prometheus]'"
            await self._plain_error(send, 501, message, "not_implemented")
            return
        await self._respond(send, 200, body, [(b"content-type", content_type.encode("latin-1"))])

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.on_shutdown is not None:
                    try:
                        await self.on_shutdown()
                    except Exception:
                        logger.exception("closing the providers failed")
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- plumbing ------------------------------------------------------------------

    @staticmethod
    async def _respond(
        send: Send,
        status: int,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        served_by: bytes = b"onion",
        request_id: str | None = None,
    ) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode()), (b"x-onion-served-by", served_by)]
        if request_id is not None:
            headers.append((b"x-request-id", request_id.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _plain_error(
        self,
        send: Send,
        status: int,
        message: str,
        code: str | None,
        param: str | None = None,
        request_id: str | None = None,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        body = _error_json(status, message, code, param)
        await self._respond(send, status, body, [_JSON, *(extra or [])], request_id=request_id)

    def _caller(self, authorization: bytes | None) -> str | None:
        if not self.api_keys:
            return None
        if not authorization or not authorization[:7].lower() == b"bearer ":
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        given = authorization[7:].strip()
        identity = None
        for key, name in self.api_keys:
            # Compare with every key, in constant time, so timing reveals nothing.
            if hmac.compare_digest(given, key):
                identity = name
        if identity is None:
            raise Unauthorized("incorrect API key provided")
        return identity

    async def _read_body(self, receive: Receive, declared: bytes | None) -> bytes:
        limit = self.max_body_bytes
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise RequestTooLarge(limit)
            except ValueError:
                raise BadRequest("invalid Content-Length header") from None
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > limit:
                raise RequestTooLarge(limit)
            return body
        parts = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("the client went away", code="client_closed")
            piece = message.get("body", b"")
            size += len(piece)
            if size > limit:
                raise RequestTooLarge(limit)
            parts.append(piece)
        return b"".join(parts)

    def _decode(self, body: bytes, caller: str | None, options: dict[str, Any] | None) -> Request:
        if not body:
            raise BadRequest("the request body is empty; send a JSON object")
        try:
            raw = msgspec.json.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise BadRequest("the request body is not valid JSON (UTF-8)", code="invalid_json") from None
        if not isinstance(raw, dict):
            raise BadRequest("the request body must be a JSON object")
        context = Context(caller=caller)
        if options:
            context.options.update(options)
        try:
            request = decode_request(raw, context=context)
        except msgspec.ValidationError as error:
            message, param = _explain(error)
            raise BadRequest(f"invalid request: {message}", param=param) from None
        if not request.model:
            raise BadRequest("'model' must name a model", param="model")
        if not request.messages:
            raise BadRequest("'messages' must hold at least one message", param="messages")
        if request.n is not None and request.n != 1:
            raise BadRequest("n > 1 is not supported by this gateway", param="n", code="unsupported_value")
        if caller is None and request.user:
            context.caller = request.user
        return request

    # -- routes --------------------------------------------------------------------

    async def _models(self, scope: Scope, send: Send) -> None:
        try:
            self._caller(_header(scope, b"authorization"))
        except Unauthorized as reject:
            await self._plain_error(send, reject.status, reject.public_message, reject.code)
            return
        pairs = list(self.models)
        if self.list_models is not None:
            with anyio.move_on_after(5):
                try:
                    pairs += await self.list_models()
                except Exception as error:
                    logger.warning("listing upstream models failed: %s", type(error).__name__)
        seen: set[str] = set()
        data = []
        for model, owner in pairs:
            if model not in seen:
                seen.add(model)
                data.append({"id": model, "object": "model", "created": 0, "owned_by": owner})
        await self._respond(send, 200, _encode({"object": "list", "data": data}), [_JSON])

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = declared = onion_cache = cache_control = None
        trace_headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name in _TRACE_HEADERS:
                # Only the W3C trace context reaches the layers (the tracing layer continues
                # it); the rest, credentials included, stays here.
                trace_headers[name.decode("latin-1")] = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value
            elif name == b"content-length":
                declared = value
            elif name == b"x-onion-cache":
                onion_cache = value
            elif name == b"cache-control":
                cache_control = value
        options = None
        if (onion_cache is not None and onion_cache.strip().lower().decode("latin-1") in _CACHE_OFF) or (
            cache_control is not None and (b"no-cache" in cache_control.lower() or b"no-store" in cache_control.lower())
        ):
            options = {"cache": False}
        try:
            caller = self._caller(authorization)
            request = self._decode(await self._read_body(receive, declared), caller, options)
        except OnionError as reject:
            await self._plain_error(send, reject.status, reject.public_message, reject.code, reject.param)
            return
        context = request.context
        if trace_headers:
            context.trace_headers = trace_headers
        try:
            response = await self.handler(request)
            if not request.stream:
                completion = await response.result()
        except Exception as error:
            await self._failure(send, error, context)
            return
        if request.stream:
            await self._stream(receive, send, request, response)
        else:
            await self._complete(send, request, response, completion)

    def _error_parts(self, error: Exception, context: Context) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if isinstance(error, OnionError):
            status = error.status
            message = error.public_message
            code = error.code
            if isinstance(error, ProviderError) and type(error) is ProviderError and error.upstream_status == 429:
                # The upstream is rate limiting: say so with 429 (and its Retry-After) so
                # clients back off as they would against the provider itself, not as if it broke.
                status, code = 429, "rate_limit_exceeded"
                message = "the model provider is rate limiting requests; retry later"
            if status >= 500:
                message = f"{message} (request id {context.request_id})"
            body = _error_json(status, message, code, getattr(error, "param", None))
            extra = [_JSON]
            retry_after = getattr(error, "retry_after", None)
            if isinstance(retry_after, (int, float)) and status in (429, 503):
                extra.append((b"retry-after", str(max(1, int(-(-retry_after // 1)))).encode()))
            if status >= 500 or not isinstance(error, BadRequest):
                logger.warning("request %s: %s: %s", context.request_id, type(error).__name__, error.detail)
            return status, body, extra
        logger.error("request %s failed", context.request_id, exc_info=error)
        message = f"internal error (request id {context.request_id})"
        return 500, _error_json(500, message, "internal_error"), [_JSON]

    async def _failure(self, send: Send, error: Exception, context: Context) -> None:
        status, body, headers = self._error_parts(error, context)
        served_by = (context.trace[-1] if context.trace else "onion").encode("latin-1", "replace")
        await self._respond(send, status, body, headers, served_by, context.request_id)

    def _answer_headers(
        self, response: Response, context: Context, base: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        headers = [
            *base,
            (b"x-onion-served-by", (response.served_by or "onion").encode("latin-1", "replace")),
            (b"x-request-id", context.request_id.encode()),
        ]
        if response.headers:
            headers += _header_pairs(response.headers)
        return headers

    async def _complete(self, send: Send, request: Request, response: Response, completion: Completion) -> None:
        context = request.context
        body = _encode(
            _OutCompletion(
                id=completion.id or f"chatcmpl-{context.request_id}",
                created=completion.created or int(time.time()),
                model=completion.model or response.model or request.model,
                choices=[
                    _OutChoice(
                        0,
                        _OutMessage(completion.role or "assistant", completion.content, completion.tool_calls),
                        completion.finish_reason,
                    )
                ],
                usage=_usage(completion.usage),
            )
        )
        headers = self._answer_headers(response, context, [_JSON, (b"content-length", str(len(body)).encode())])
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, receive: Receive, send: Send, request: Request, response: Response) -> None:
        chunks = response.__aiter__()
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
                await self._pump(send, request, response, chunks)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()

    async def _pump(self, send: Send, request: Request, response: Response, chunks: AsyncIterator[Chunk]) -> None:
        context = request.context
        model = response.model or request.model
        prefix = (
            b'data: {"id":"chatcmpl-'
            + context.request_id.encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(int(time.time())).encode()
            + b',"model":'
            + _encode(model)
            + b',"choices":[{"index":0,"delta":'
        )
        started = False
        usage: Usage | None = None
        try:
            async for chunk in chunks:
                if chunk.usage is not None:
                    usage = chunk.usage
                if not started:
                    headers = self._answer_headers(response, context, _SSE_HEADERS)
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    started = True
                if not (chunk.content or chunk.role or chunk.tool_calls or chunk.finish_reason):
                    continue
                # The first delta carries the role and content "" as OpenAI's does; later
                # ones omit what they do not change.
                content = chunk.content if chunk.content or chunk.role else None
                delta = _encode(_OutDelta(chunk.role, content, chunk.tool_calls))
                finish = b"null" if chunk.finish_reason is None else _encode(chunk.finish_reason)
                await send(
                    {
                        "type": "http.response.body",
                        "body": prefix + delta + b',"finish_reason":' + finish + b"}]}\n\n",
                        "more_body": True,
                    }
                )
        except Exception as error:
            if not started:
                await self._failure(send, error, context)
                return
            _, body, _ = self._error_parts(error, context)
            await send({"type": "http.response.body", "body": b"data: " + body + b"\n\n", "more_body": False})
            return
        if not started:
            headers = self._answer_headers(response, context, _SSE_HEADERS)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        tail = _DONE
        options = request.stream_options
        if usage is not None and options and options.get("include_usage"):
            usage_event = (
                prefix[: prefix.rindex(b'"choices"')] + b'"choices":[],"usage":' + _encode(_usage(usage)) + b"}\n\n"
            )
            tail = usage_event + _DONE
        await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def create_app(
    gateway: Any,
    *,
    metrics_renderer: MetricsRenderer | None = None,
) -> GatewayApp:
    """The ASGI app for a built ``onion.config.Gateway`` (its stack, keys, models, limits)."""
    router = gateway.router
    catch_all = [p for p in router.providers.values() if not p.models and hasattr(p, "list_models")]

    async def list_models() -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        for provider in catch_all:
            pairs += [(model, provider.name) for model in await provider.list_models()]
        return pairs

    return GatewayApp(
        gateway.stack,
        api_keys=gateway.api_keys,
        models=router.models(),
        list_models=list_models if catch_all else None,
        max_body_bytes=gateway.config.server.max_body_bytes,
        metrics_renderer=metrics_renderer,
        on_shutdown=gateway.aclose,
    )
