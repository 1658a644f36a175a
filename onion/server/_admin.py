"""The admin API: routes under ``/admin/`` that operators call with the admin key.

``[server] admin_key = "env:NAME"`` turns it on; each request then needs
``Authorization: Bearer <admin key>``. The admin key is not a virtual key and no virtual
key opens the admin API: one that tries gets 403, so a leaked client key cannot issue
keys, read spend or purge caches. Without an admin key every admin route is a 403 that
says how to turn the API on (a 404 would hide a config mistake).

A feature adds its routes with ``AdminRoutes.add(method, path, handler)``; a path ending
in ``/`` matches that prefix and hands the rest to the handler as ``tail`` (``DELETE
/admin/keys/{id}``). Handlers take an ``AdminRequest`` and return an ``AdminAnswer``;
they raise ``BadRequest`` for bad input, which becomes a 400 in OpenAI's error shape.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from ..errors import BadRequest, OnionError, Unauthorized
from ..wire import openai_chat
from ._http import JSON, Receive, Scope, Send, read_body, read_headers, respond

__all__ = ["AdminAnswer", "AdminRequest", "AdminRoutes"]

_MAX_ADMIN_BODY = 64 * 1024
_encode = msgspec.json.Encoder().encode


class AdminRequest(msgspec.Struct, frozen=True):
    """One admin call: ``tail`` is what follows a prefix route's path (``""`` for an
    exact route); ``query`` holds each query parameter's last value."""

    method: str
    path: str
    tail: str
    query: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (``None`` when empty); a ``BadRequest`` when it is not JSON."""
        if not self.body:
            return None
        try:
            return msgspec.json.decode(self.body)
        except msgspec.DecodeError:
            raise BadRequest("the request body is not valid JSON", code="invalid_json") from None


class AdminAnswer(msgspec.Struct, frozen=True):
    """What an admin handler returns: an HTTP status and a JSON-encodable body."""

    status: int
    body: Any


AdminHandler = Callable[[AdminRequest], Awaitable[AdminAnswer]]


class Forbidden(Unauthorized):
    """A known caller that may not use the admin API (a virtual key), or an admin API
    that is off."""

    status = 403
    code = "forbidden"


class AdminRoutes:
    """The ``/admin/`` routes and their key check. ``is_client_key(token)`` tells a
    virtual key (403) from a wrong one (401); it may return an awaitable."""

    def __init__(
        self, admin_key: str | None, is_client_key: Callable[[bytes], bool | Awaitable[bool]] | None = None
    ) -> None:
        self._key = admin_key.encode() if admin_key else None
        self._is_client_key = is_client_key
        self._exact: dict[tuple[str, str], AdminHandler] = {}
        self._prefixes: list[tuple[str, str, AdminHandler]] = []

    def rekey(
        self, admin_key: str | None, is_client_key: Callable[[bytes], bool | Awaitable[bool]] | None = None
    ) -> None:
        """Use a new admin key and client-key check (a config reload); routes stay."""
        self._key = admin_key.encode() if admin_key else None
        self._is_client_key = is_client_key

    def add(self, method: str, path: str, handler: AdminHandler) -> None:
        """Serve ``method path`` with ``handler``; a ``path`` ending in ``/`` is a prefix."""
        if not path.startswith("/admin/"):
            raise ValueError(f"admin routes live under /admin/, not {path!r}")
        if path.endswith("/"):
            self._prefixes.append((method, path, handler))
        else:
            self._exact[(method, path)] = handler

    def serves(self, path: str) -> bool:
        """Whether ``path`` belongs to the admin API (whatever the method)."""
        return path.startswith("/admin/")

    def routes(self) -> list[str]:
        """``"METHOD path"`` for each route, for ``onion serve`` to print."""
        return [f"{m} {p}" for m, p in self._exact] + [f"{m} {p}{{id}}" for m, p, _ in self._prefixes]

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the admin key, find the route, run it and write its JSON answer."""
        try:
            await self._check(read_headers(scope["headers"])[0])
            method, path = scope["method"], scope["path"]
            handler, tail = self._find(method, path)
            body = await read_body(receive, None, _MAX_ADMIN_BODY)
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
            answer = await handler(AdminRequest(method, path, tail, query, body))
        except OnionError as refusal:
            error = openai_chat.encode_error(refusal)
            allow = [(b"allow", refusal.allow.encode())] if isinstance(refusal, _MethodNotAllowed) else []
            await respond(send, error.status, error.body, [JSON, *error.headers, *allow])
            return
        # 204 and 304 carry no body (HTTP forbids one).
        body = b"" if answer.status in (204, 304) else _encode(answer.body)
        await respond(send, answer.status, body, [JSON] if body else [])

    async def _check(self, authorization: bytes | None) -> None:
        if self._key is None:
            raise Forbidden('the admin API is off: set [server] admin_key = "env:NAME"')
        if not authorization or authorization[:7].lower() != b"bearer ":
            raise Unauthorized("missing admin key: send 'Authorization: Bearer <admin key>'")
        given = authorization[7:].strip()
        if hmac.compare_digest(given, self._key):
            return
        if self._is_client_key is not None:
            known = self._is_client_key(given)
            if inspect.isawaitable(known):  # a key store lookup (issued keys)
                known = await known
            if known:
                raise Forbidden("a client API key cannot call the admin API; use the admin key")
        raise Unauthorized("incorrect admin key")

    def _find(self, method: str, path: str) -> tuple[AdminHandler, str]:
        handler = self._exact.get((method, path))
        if handler is not None:
            return handler, ""
        for route_method, prefix, prefix_handler in self._prefixes:
            if route_method == method and path.startswith(prefix) and len(path) > len(prefix):
                return prefix_handler, path[len(prefix) :]
        allowed = {m for m, p in self._exact if p == path}
        allowed.update(m for m, p, _ in self._prefixes if path.startswith(p))
        if allowed:
            refusal = _MethodNotAllowed(f"{method} is not served on {path}")
            refusal.allow = ", ".join(sorted(allowed))
            raise refusal
        raise _NotFound(f"no admin route {path}")


class _NotFound(BadRequest):
    status = 404
    code = "not_found"


class _MethodNotAllowed(BadRequest):
    status = 405
    code = "method_not_allowed"
    allow = ""  # the route's methods, for the Allow header HTTP requires on a 405
