"""The gateway's ASGI app: dispatch by route, lifespan, and one call of the stack.

Routes: ``POST /v1/chat/completions`` in the ``openai_chat`` dialect, ``POST
/v1/responses`` in ``responses``, ``POST /v1/embeddings`` in ``embeddings`` (each also
without ``/v1``), ``GET /v1/models`` and ``GET /v1/models/{id}``, ``GET /healthz``,
``GET /readyz`` (``_readiness``), and ``GET /metrics`` when a ``metrics_renderer`` is
given; ``POST /v1/completions`` (legacy) and ``/v1/responses/{id}`` (stored responses)
are 400s that say why. A dialect route reads the request (``_http``), has the dialect
decode it, awaits the stack and writes the dialect's bytes; a new dialect is a module in ``onion.wire`` and one line in
``_DIALECTS``.

Every answer carries ``x-onion-served-by``; one from the stack also ``x-request-id``.
Errors are typed (``onion.errors``) and shaped by the dialect with a safe message; the
detail goes to the log (a request refused before the stack is the caller's own mistake
and is not logged). A stream that fails after its first chunk ends with the dialect's
error event; a client that disconnects mid-stream cancels the upstream call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import msgspec

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ..config import Gateway

from .._aside import run_aside
from .._clock import async_library
from .._context import Context, _new_request_id
from .._keys import KeyResolver, check_model
from .._policy import KeyPolicy
from .._response import Response
from .._stack import Handler
from .._types import Chunk, Completion, Request
from ..errors import BadRequest, ModelNotFound, OnionError, ShuttingDown, Unauthorized
from ..providers.router import is_pattern, serves
from ..wire import Dialect, StreamEncoder, anthropic_messages, embeddings, openai_chat, responses
from ._admin import AdminRoutes
from ._admin_keys import KeyRoutes, key_resolver
from ._admin_ops import add_cache_route
from ._admin_spend import add_spend_routes
from ._cancel import CallCancel
from ._chain import take_chain
from ._http import (
    DISCONNECT,
    JSON,
    SSE_HEADERS,
    ApiKeys,
    DisconnectHook,
    Receive,
    Scope,
    Send,
    answer_headers,
    cancel_on_disconnect,
    check_json,
    header_pairs,
    read_body,
    read_headers,
    respond,
)
from ._readiness import Readiness

__all__ = ["GatewayApp", "create_app", "served_routes"]

logger = logging.getLogger("onion.server")

MetricsRenderer = Callable[[], tuple[bytes, str]]

_encode = msgspec.json.Encoder().encode

# The dialect each route speaks: a new API is a module in onion.wire and a line here.
_DIALECTS: dict[str, Dialect] = {
    "/v1/chat/completions": openai_chat,
    "/chat/completions": openai_chat,
    "/v1/responses": responses,
    "/responses": responses,
    "/v1/embeddings": embeddings,
    "/embeddings": embeddings,
    "/v1/messages": anthropic_messages,
}

# Routes answered with a 400 that says why (the legacy completions API is not translated:
# a prompt string is not a conversation, and proxying it would skip the onion).
_REFUSED_ROUTES = {
    "/v1/completions": "the legacy completions API is not served; use POST /v1/chat/completions or /v1/responses",
    "/completions": "the legacy completions API is not served; use POST /v1/chat/completions or /v1/responses",
}


class GatewayApp:
    """The ASGI app. ``handler`` is the stack (or any handler).

    - ``api_keys``: ``{key: identity}``; when non-empty, requests need
      ``Authorization: Bearer <key>`` and the identity becomes ``context.caller``.
    - ``models``: ``(model, owner)`` pairs for ``GET /v1/models``; ``list_models`` is
      awaited too, for upstreams that serve any model (pairs, or the upstream's own
      model objects, passed on as sent).
    - ``max_body_bytes``: larger bodies get 413; ``max_json_depth``: a body nesting
      deeper is a 400 (``check_json`` also refuses duplicate keys and huge numbers).
    - ``metrics_renderer``: returns ``(body, content_type)`` for ``GET /metrics``, which
      needs an API key when there are keys and ``metrics_auth`` is on.
    - ``on_shutdown``: awaited at ASGI lifespan shutdown (close connection pools).
    - ``background``: jobs run from lifespan start-up to shutdown, cancelled before
      ``on_shutdown`` (the layers' ``run_background``, e.g. the semantic cache's
      verifier); one that fails is logged and does not stop the others or the server.
    - ``admin``: the ``/admin/`` routes (``AdminRoutes``); by default none are served and
      each answers 403 (the admin API is off without ``[server] admin_key``).
    - ``readiness``: what ``GET /readyz`` checks (``Readiness``); by default only that
      the app is not draining.
    - ``keys``: the key check (``KeyResolver``: config and issued virtual keys); by
      default the ``api_keys``. A key's name becomes ``context.caller``, its team
      ``context.team``, its policy ``context.key``; a model it may not use is a 403.

    A client that disconnects cancels its call, streamed or not (every layer's
    end-of-answer code sees it cancelled). ``drain(grace)`` is the shutdown: calls
    arriving afterwards get 503 ``shutting_down``; those still running after ``grace``
    seconds are cancelled and end with 503 or, for a stream already started, the
    ``shutting_down`` error event. Any exception the app did not expect is a JSON 500
    with the request id, and its traceback is logged at error level.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        api_keys: Mapping[str, str] | None = None,
        models: list[tuple[str, str]] | None = None,
        list_models: Callable[[], Awaitable[list[tuple[str, str] | dict[str, Any]]]] | None = None,
        max_body_bytes: int = 32 * 1024 * 1024,
        max_json_depth: int = 128,
        metrics_renderer: MetricsRenderer | None = None,
        metrics_auth: bool = True,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
        admin: AdminRoutes | None = None,
        readiness: Readiness | None = None,
        keys: KeyResolver | None = None,
        background: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.handler = handler
        self.api_keys = ApiKeys(api_keys)
        # Every key check goes through the resolver: config keys and issued ones alike.
        self.keys = keys or KeyResolver([(key, KeyPolicy(name=name)) for key, name in (api_keys or {}).items()])
        self.admin = admin or AdminRoutes(None)
        self.models = list(models or [])
        self.list_models = list_models
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.metrics_renderer = metrics_renderer
        self.metrics_auth = metrics_auth
        self.on_shutdown = on_shutdown
        self.readiness = readiness or Readiness((), None)
        self.background = tuple(background)
        self._calls: set[anyio.CancelScope | CallCancel] = set()
        self._draining = False
        self._expired = False
        self._idle: anyio.Event | None = None  # set when the last call ends during a drain

    # -- dispatch ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            try:
                await self._dispatch(scope, receive, send)
            except Exception as error:
                await _crash(send, error, _new_request_id())
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        dialect = _DIALECTS.get(path)
        if dialect is not None:
            if scope["method"] == "POST":
                await self._call(scope, receive, send, dialect)
            else:
                await _plain_error(send, 405, f"use POST for {path}", "method_not_allowed", [(b"allow", b"POST")])
        elif path == "/v1/messages/count_tokens" and scope["method"] == "POST":
            await self._count_tokens(scope, receive, send)
        elif path == "/v1/models" or path == "/models":
            await self._models(scope, send)
        elif path.startswith(("/v1/models/", "/models/")) and scope["method"] == "GET":
            await self._models(scope, send, path.split("/models/", 1)[1])
        elif path in _REFUSED_ROUTES:
            await _plain_error(send, 400, _REFUSED_ROUTES[path], "unsupported_endpoint")
        elif path.startswith(("/v1/responses/", "/responses/")):
            message = "the gateway is stateless and keeps no responses to retrieve, cancel or delete"
            await _plain_error(send, 400, message, "unsupported_endpoint")
        elif path == "/healthz":
            await respond(send, 200, b'{"status":"ok"}', [JSON])
        elif path == "/readyz":
            status, body = await self.readiness.check(draining=self._draining)
            await respond(send, status, body, [JSON, (b"cache-control", b"no-store")])
        elif path == "/metrics" and self.metrics_renderer is not None:
            await self._metrics(scope, send)
        elif self.admin.serves(path):
            await self.admin.dispatch(scope, receive, send)
        elif path.startswith(("/v1/messages/", "/messages/")) or _speaks_anthropic(scope):
            # An Anthropic client (its SDK sends anthropic-version) reads Anthropic's shape.
            message = f"no such endpoint {path[:200]}; the gateway serves POST /v1/messages"
            await respond(send, 404, anthropic_messages.error_body(404, message), [JSON])
        else:
            await _plain_error(send, 404, f"no such endpoint {path[:200]}; try POST /v1/chat/completions", "not_found")

    def routes(self) -> list[str]:
        """What this app serves, one ``METHOD path`` each (see ``served_routes``)."""
        return served_routes(metrics=self.metrics_renderer is not None)

    async def drain(self, grace: float) -> None:
        """Shut down: refuse new calls, give those in flight ``grace`` seconds, then end
        them with ``ShuttingDown`` (awaited by the server before it stops)."""
        self._draining = True
        self._idle = anyio.Event()
        if not self._calls:
            return
        with anyio.move_on_after(grace):
            await self._idle.wait()
        if not self._calls:
            return
        logger.warning("shutdown: ending %d call(s) still running after %g s", len(self._calls), grace)
        self._expired = True
        for call in list(self._calls):
            call.cancel()
        with anyio.move_on_after(2):
            await self._idle.wait()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as jobs:
            await self._lifespan_messages(receive, send, jobs)

    async def _lifespan_messages(self, receive: Receive, send: Send, jobs: TaskGroup) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                for job in self.background:
                    jobs.start_soon(_run_background, job)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                jobs.cancel_scope.cancel()  # before the providers they call are closed
                if self.on_shutdown is not None:
                    try:
                        await self.on_shutdown()
                    except Exception:
                        logger.exception("closing the providers failed")
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routes --------------------------------------------------------------------

    async def _metrics(self, scope: Scope, send: Send) -> None:
        assert self.metrics_renderer is not None
        if self.metrics_auth:
            try:
                await self.keys.resolve(read_headers(scope["headers"])[0])
            except (Unauthorized, BadRequest) as refusal:
                await _refuse(send, openai_chat, refusal)
                return
        try:
            body, content_type = self.metrics_renderer()
        except ImportError:
            # Installed without the exporter: say what to install, not a bare 500.
            message = "metrics in Prometheus format need: pip install 'onion-llm[prometheus]'"
            await _plain_error(send, 501, message, "not_implemented")
            return
        await respond(send, 200, body, [(b"content-type", content_type.encode("latin-1"))])

    async def _models(self, scope: Scope, send: Send, model_id: str | None = None) -> None:
        """``GET /v1/models``, or with ``model_id`` ``GET /v1/models/{id}``: the model
        object, or a 404 in OpenAI's error shape (``model_not_found``)."""
        try:
            await self.keys.resolve(read_headers(scope["headers"])[0])
        except (Unauthorized, BadRequest) as refusal:
            await _refuse(send, openai_chat, refusal)
            return
        pairs = list(self.models)
        if self.list_models is not None and not (model_id and any(m == model_id for m, _ in pairs)):
            with anyio.move_on_after(5):
                try:
                    pairs += await self.list_models()
                except Exception as error:
                    logger.warning("listing upstream models failed: %s", type(error).__name__)
        seen: set[str] = set()
        data = []
        for item in pairs:
            if isinstance(item, dict):  # an upstream's own model object: passed on as sent
                model, entry = item["id"], item
            else:
                model, owner = item
                entry = {"id": model, "object": "model", "created": 0, "owned_by": owner}
            if model not in seen:
                seen.add(model)
                data.append(entry)
        if model_id is None:
            await respond(send, 200, _encode({"object": "list", "data": data}), [JSON])
            return
        found = next((item for item in data if item["id"] == model_id), None)
        if found is not None:
            await respond(send, 200, _encode(found), [JSON])
            return
        answer = openai_chat.encode_error(ModelNotFound(model_id[:200]))
        await respond(send, answer.status, answer.body, [JSON, *answer.headers])

    async def _count_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/messages/count_tokens``: the request's input tokens, counted here
        (no upstream call), behind the same key check and body limits; its answers carry
        the request id as every call's do."""
        context = None
        try:
            authorization, declared, _, _ = read_headers(scope["headers"])
            policy = await self.keys.resolve(authorization)
            body = await read_body(receive, declared, self.max_body_bytes)
            context = _context(policy)
            count, depth = anthropic_messages.count_tokens, self.max_json_depth
            if len(body) < _ASIDE_BYTES:
                answer = _checked(count, body, context, depth)
            else:
                answer = await run_aside(_checked, count, body, context, depth)
        except OnionError as refusal:
            await _refuse(send, anthropic_messages, refusal, None if context is None else context.request_id)
            return
        await respond(send, 200, answer, [JSON], request_id=context.request_id)

    async def _call(self, scope: Scope, receive: Receive, send: Send, dialect: Dialect) -> None:
        """One call of the stack in the route's dialect, in this (the request's) task."""
        context = None
        try:
            authorization, declared, options, trace_headers = read_headers(scope["headers"])
            policy = await self.keys.resolve(authorization)
            if self._draining:
                raise ShuttingDown("the call arrived while the gateway drains")
            body = await read_body(receive, declared, self.max_body_bytes)
            context = _context(policy, trace_headers)
            if options is not None:
                context.options = options
            json_body, depth = getattr(dialect, "json_body", True), self.max_json_depth
            if len(body) < _ASIDE_BYTES:  # no await on the usual path
                decoded = _checked(dialect.decode, body, context, depth, json_body)
            else:  # seconds of work for a body of many small objects: not in the loop
                decoded = await run_aside(_checked, dialect.decode, body, context, depth, json_body)
            request = take_chain(decoded, scope["headers"])
            if policy is not None and policy.models:
                check_model(policy, request.model)
                # A fallback the caller names is a model it asks for: the key's globs apply.
                chain = request.context.chain
                for model in (chain.fallbacks or ()) if chain is not None else ():
                    check_model(policy, model)
        except OnionError as refusal:
            await _refuse(send, dialect, refusal, None if context is None else context.request_id)
            return
        except (ValueError, RecursionError) as error:  # a decoder's own failure on a body check_json passed
            logger.warning("request body refused by the decoder: %s", type(error).__name__)
            refusal = BadRequest("the request body is not valid JSON (UTF-8)", code="invalid_json")
            await _refuse(send, dialect, refusal, None if context is None else context.request_id)
            return
        try:
            await self._answer(receive, send, dialect, request, scope.get("extensions"))
        except Exception as error:
            await _crash(send, error, request.context.request_id)

    async def _answer(
        self, receive: Receive, send: Send, dialect: Dialect, request: Request, extensions: dict[str, object] | None
    ) -> None:
        # Every call can be cancelled on its own: the client's disconnect and the end of
        # the shutdown grace period cancel it, and every layer's cleanup runs.
        context = request.context
        progress = _Progress()
        hook = extensions.get(DISCONNECT) if extensions else None
        if not isinstance(hook, DisconnectHook):
            hook = None
        # Under asyncio a CallCancel (the task's own cancel, anyio shields honoured) does
        # a cancel scope's work here at a fraction of its cost; elsewhere, an anyio scope.
        loop = None if hook is None else hook.loop or _asyncio_loop()
        native = None if loop is None else CallCancel.for_loop(loop)
        call: anyio.CancelScope | CallCancel = anyio.CancelScope() if native is None else native
        self._calls.add(call)
        ready: tuple[Response, Completion] | None = None
        try:
            if hook is not None and native is not None:
                hook.callback = native.cancel
                if hook.disconnected:
                    native.cancel()
                try:
                    ready = await self._run(send, dialect, request, progress)
                except asyncio.CancelledError:
                    if not native.caught():
                        raise
                else:
                    native.close()
            elif isinstance(call, anyio.CancelScope):
                ready = await self._scoped(call, hook, receive, send, dialect, request, progress)
            if ready is not None:
                # The answer is ready: written whole, outside the call's scope, so neither a
                # disconnect nor the end of the grace period cuts it (a shielded scope in
                # the call did the same at the price of one more scope per request).
                await _complete(send, dialect, request, *ready)
        finally:
            if hook is not None:
                hook.callback = None
            self._calls.discard(call)
            if self._idle is not None and not self._calls:
                self._idle.set()
        if call.cancelled_caught and self._expired and not progress.ended:
            error = ShuttingDown("the shutdown grace period ended before the answer")
            _log_failure(error, context.request_id)
            if progress.encoder is not None:
                await send({"type": "http.response.body", "body": progress.encoder.error(error), "more_body": False})
            else:
                await _failure(send, dialect, error, context)

    async def _scoped(
        self,
        call: anyio.CancelScope,
        hook: DisconnectHook | None,
        receive: Receive,
        send: Send,
        dialect: Dialect,
        request: Request,
        progress: _Progress,
    ) -> tuple[Response, Completion] | None:
        """``_run`` in the call's anyio scope (trio, or a server without onion's protocol,
        where a task waits for ``http.disconnect``)."""
        ready = None
        with call:
            if hook is not None:
                # onion's protocol cancels the call itself when the client leaves.
                hook.callback = call.cancel
                if hook.disconnected:
                    call.cancel()
                ready = await self._run(send, dialect, request, progress)
            else:
                async with anyio.create_task_group() as group:
                    group.start_soon(cancel_on_disconnect, receive, call)
                    ready = await self._run(send, dialect, request, progress)
                    group.cancel_scope.cancel()
        return ready

    async def _run(
        self, send: Send, dialect: Dialect, request: Request, progress: _Progress
    ) -> tuple[Response, Completion] | None:
        """Await the stack; a stream or a failure is written here, a complete answer is
        returned for ``_answer`` to write."""
        try:
            response = await self.handler(request)
            if not request.stream:
                completion = await response.result()
        except Exception as error:
            progress.ended = True
            await _failure(send, dialect, error, request.context)
            return None
        if request.stream:
            await _stream(send, dialect, request, response, progress)
            return None
        progress.ended = True
        return response, completion


async def _run_background(job: Callable[[], Awaitable[None]]) -> None:
    try:
        await job()
    except Exception:
        logger.exception("background job %s failed; the gateway serves on without it", _job_name(job))


def _job_name(job: Callable[[], Awaitable[None]]) -> str:
    owner = getattr(job, "__self__", None)
    return f"{type(owner).__name__}.{job.__name__}" if owner is not None else getattr(job, "__name__", repr(job))


def served_routes(*, metrics: bool) -> list[str]:
    """The routes the gateway serves, one ``METHOD path`` each, ``/v1`` spellings only
    (each API route answers without ``/v1`` too); ``onion serve`` prints them."""
    served = [f"POST {path}" for path in _DIALECTS if path.startswith("/v1/")]
    served.append("POST /v1/messages/count_tokens")
    served += ["GET /v1/models", "GET /v1/models/{id}", "GET /healthz", "GET /readyz"]
    if metrics:
        served.append("GET /metrics")
    return served


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    # A hook made without its loop (a test's, a benchmark's): the running one, if asyncio.
    return asyncio.get_running_loop() if async_library() == "asyncio" else None


T = TypeVar("T")

# Bodies from which the JSON check and the decoding run in a worker thread: a body of
# many small objects (a history of 100,000 messages) costs about 0.3 s per MB, which
# would hold every other call of the event loop; below it, at most tens of ms.
_ASIDE_BYTES = 256 * 1024


def _checked(
    parse: Callable[[bytes, Context], T], body: bytes, context: Context, max_depth: int, json_body: bool = True
) -> T:
    """``parse(body, context)`` after the JSON check (of a JSON body: an empty body is
    the parser's to explain; a dialect that is not JSON says so)."""
    if body and json_body:
        check_json(body, max_depth)
    return parse(body, context)


def _context(policy: KeyPolicy | None, trace_headers: dict[str, str] | None = None) -> Context:
    if policy is None:
        return Context(trace_headers=trace_headers)
    return Context(caller=policy.name, team=policy.team, key=policy, trace_headers=trace_headers)


class _Progress:
    """How far an answer got: the stream's encoder once its first event is out, and
    whether the answer was written to its end (then a shutdown has nothing to add)."""

    __slots__ = ("encoder", "ended")

    def __init__(self) -> None:
        self.encoder: StreamEncoder | None = None
        self.ended = False


# -- answers --------------------------------------------------------------------------


def _speaks_anthropic(scope: Scope) -> bool:
    return any(name == b"anthropic-version" for name, _ in scope["headers"])


async def _plain_error(
    send: Send, status: int, message: str, code: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    # Routes the gateway does not serve answer in the OpenAI shape, its default API.
    await respond(send, status, openai_chat.error_body(status, message, code), [JSON, *(headers or ())])


async def _refuse(send: Send, dialect: Dialect, refusal: OnionError, request_id: str | None = None) -> None:
    # Refused before the stack: the caller's own mistake, so no log line. The request id
    # is the call's once there is one (a body the gateway read and could not decode), else
    # a new one (a key refused before the body is read): every answer names one, so a
    # caller's report of a 401 can be matched with what the gateway saw.
    answer = dialect.encode_error(refusal)
    request_id = request_id or _new_request_id()
    await respond(send, answer.status, answer.body, [JSON, *answer.headers], request_id=request_id)


async def _crash(send: Send, error: Exception, request_id: str) -> None:
    """An exception nothing expected: its traceback to the log at error level, a JSON
    500 naming the request id to the client (if the answer has not started)."""
    logger.error("request %s failed: unexpected %s", request_id, type(error).__name__, exc_info=error)
    with contextlib.suppress(Exception):  # the answer had started: the server closes the connection
        await respond(send, 500, openai_chat.encode_error(error, request_id).body, [JSON], request_id=request_id)


def _log_failure(error: Exception, request_id: str) -> None:
    if not isinstance(error, OnionError):
        logger.error("request %s failed", request_id, exc_info=error)
    elif error.status >= 500 or not isinstance(error, BadRequest):
        logger.warning("request %s: %s: %s", request_id, type(error).__name__, error.detail)


async def _failure(send: Send, dialect: Dialect, error: Exception, context: Context) -> None:
    _log_failure(error, context.request_id)
    answer = dialect.encode_error(error, context.request_id)
    served_by = (context.trace[-1] if context.trace else "onion").encode("latin-1", "replace")
    headers = [JSON, *answer.headers]
    # An upstream's refusal keeps its allowlisted headers (a 429's rate-limit state).
    upstream = getattr(error, "upstream_headers", None)
    if upstream:
        headers += header_pairs(upstream)
    await respond(send, answer.status, answer.body, headers, served_by, context.request_id)


async def _complete(send: Send, dialect: Dialect, request: Request, response: Response, completion: Completion) -> None:
    body = dialect.encode_completion(completion, request, response.model or request.model)
    headers = answer_headers(response, request.context, [JSON, (b"content-length", str(len(body)).encode())])
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _stream(send: Send, dialect: Dialect, request: Request, response: Response, progress: _Progress) -> None:
    chunks = response.__aiter__()
    try:
        await _pump(send, dialect, request, response, chunks, progress)
    finally:
        with anyio.CancelScope(shield=True):
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()


async def _pump(
    send: Send,
    dialect: Dialect,
    request: Request,
    response: Response,
    chunks: AsyncIterator[Chunk],
    progress: _Progress,
) -> None:
    context = request.context
    encoder = dialect.encode_stream(request, response.model or request.model)
    try:
        async for chunk in chunks:
            if progress.encoder is None:
                headers = answer_headers(response, context, SSE_HEADERS)
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                progress.encoder = encoder
            event = encoder.event(chunk)
            if event is not None:
                await send({"type": "http.response.body", "body": event, "more_body": True})
    except Exception as error:
        progress.ended = True
        if progress.encoder is None:
            await _failure(send, dialect, error, context)
            return
        # Committed: the status is out, so the failure is the stream's last event.
        _log_failure(error, context.request_id)
        await send({"type": "http.response.body", "body": encoder.error(error), "more_body": False})
        return
    progress.ended = True
    if progress.encoder is None:
        headers = answer_headers(response, context, SSE_HEADERS)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": encoder.end(), "more_body": False})


def model_lister(router: Any) -> Callable[[], Awaitable[list[tuple[str, str] | dict[str, Any]]]] | None:
    """What ``GET /v1/models`` asks the upstreams for, beside the names ``router`` lists:
    the models of its providers that serve names they do not list (none listed, or
    globs), those a glob matches; ``None`` when no provider does."""
    # Providers that serve names they do not list: their upstreams say which.
    unlisted = [
        p
        for p in router.providers.values()
        if hasattr(p, "list_models") and (not p.models or any(map(is_pattern, p.models)))
    ]
    if not unlisted:
        return None

    async def list_models() -> list[tuple[str, str] | dict[str, Any]]:
        listed: list[tuple[str, str] | dict[str, Any]] = []
        for provider in unlisted:
            entries = getattr(provider, "model_entries", None)
            if entries is not None:  # the upstream's model objects, as it sent them
                found: list[Any] = await entries()
            else:
                found = [(model, provider.name) for model in await provider.list_models()]
            if provider.models:  # globs: only the models they match
                found = [i for i in found if serves(provider.models, i["id"] if isinstance(i, dict) else i[0])]
            listed += found
        return listed

    return list_models


def create_app(
    gateway: Gateway,
    *,
    metrics_renderer: MetricsRenderer | None = None,
) -> GatewayApp:
    """The ASGI app for a built ``onion.config.Gateway`` (its stack, keys, models, limits)."""
    router = gateway.router
    keys = key_resolver(gateway)
    admin = AdminRoutes(gateway.config.server.admin_key, keys.is_client_key)
    if keys.store is not None:
        provides = frozenset().union(*(getattr(layer, "provides", frozenset()) for layer in gateway.stack.layers))
        KeyRoutes(keys, provides).add_to(admin)
    add_spend_routes(admin, gateway)
    app = GatewayApp(
        gateway.stack,
        api_keys=gateway.api_keys,
        models=router.models(),
        list_models=model_lister(router),
        max_body_bytes=gateway.config.server.max_body_bytes,
        max_json_depth=gateway.config.server.max_json_depth,
        metrics_renderer=metrics_renderer,
        metrics_auth=gateway.config.server.metrics_auth,
        on_shutdown=gateway.aclose,
        admin=admin,
        keys=keys,
        readiness=Readiness(gateway.stack.layers, router),
        background=gateway.stack.background_jobs(),
    )
    add_cache_route(app.admin, app)
    return app
