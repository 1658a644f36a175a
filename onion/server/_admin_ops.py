"""The operator's admin routes: ``POST /admin/reload`` and ``DELETE /admin/cache``.

- ``POST /admin/reload``: re-read the config file (``_reload``); 200 with what was kept
  and built, or 422 listing every problem of a refused file (the old config keeps
  serving). Under ``--workers`` the worker that answers has the supervisor pass
  ``SIGHUP`` to every worker, so all of them reload.
- ``DELETE /admin/cache``: purge the answers of every cache layer of the running stack
  (``onion.Purgeable``: the exact and the semantic cache, memory or Redis); the query
  parameters ``model``, ``scope`` (the caller: an API key's name) and ``key`` (an
  answer's ``x-onion-cache-key``) narrow it. A Redis-backed cache is purged for every
  process that shares it. 200 with the count removed per layer.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from .._operable import CacheSelector, Purgeable
from ..errors import BadRequest, ConfigError
from ._admin import AdminAnswer, AdminRequest, AdminRoutes

__all__ = ["add_cache_route", "add_reload_route"]

_SELECTOR_FIELDS = frozenset(CacheSelector.__struct_fields__)


def add_cache_route(admin: AdminRoutes, app: Any) -> None:
    """Serve ``DELETE /admin/cache`` for the cache layers of ``app``'s current stack."""

    async def purge(request: AdminRequest) -> AdminAnswer:
        unknown = sorted(set(request.query) - _SELECTOR_FIELDS)
        if unknown:
            raise BadRequest(f"unknown query parameter(s) {unknown}; use model, scope or key", param=unknown[0])
        selector = CacheSelector(**{name: value for name, value in request.query.items()})
        layers = [layer for layer in getattr(app.handler, "layers", ()) if isinstance(layer, Purgeable)]
        purged: dict[str, int] = {}
        for layer in layers:
            name = str(getattr(layer, "name", type(layer).__name__))
            purged[name] = purged.get(name, 0) + await layer.purge(selector)
        body: dict[str, Any] = {"purged": purged, "total": sum(purged.values())}
        if not layers:
            body["note"] = "the stack has no cache layer"
        return AdminAnswer(200, body)

    admin.add("DELETE", "/admin/cache", purge)


def add_reload_route(admin: AdminRoutes, reload_config: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    """Serve ``POST /admin/reload`` with ``reload_config`` (``Reloader.reload``)."""

    async def reload(request: AdminRequest) -> AdminAnswer:
        try:
            done = await reload_config()
        except ConfigError as error:
            problems = [{"table": p.table, "field": p.field, "message": str(p)} for p in error.problems]
            message = "the config was refused; the old one keeps serving"
            return AdminAnswer(422, {"error": {"message": message, "code": "config_refused", "problems": problems}})
        signal_supervisor()
        return AdminAnswer(200, done)

    admin.add("POST", "/admin/reload", reload)


def signal_supervisor() -> None:
    """In a worker of ``--workers``: have the supervisor pass ``SIGHUP`` to every worker,
    so that a ``POST /admin/reload`` on one reloads them all (this one again too, which
    keeps everything: the file has not changed since)."""
    if os.environ.get("ONION_WORKER_INDEX") is not None and hasattr(signal, "SIGHUP"):
        os.kill(os.getppid(), signal.SIGHUP)
