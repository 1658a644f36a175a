"""Hot reload: re-read the config file and swap the gateway for new requests.

``SIGHUP`` (to the process, or to the supervisor of ``--workers``, which passes it to
every worker) and ``POST /admin/reload`` both call ``Reloader.reload``:

1. the file is read and validated fully, and the new providers and layers are built
   (everything ``onion check`` checks); any problem refuses the reload (logged, and
   the admin answer is a 422 listing each problem) and the old gateway keeps serving;
2. what did not change is kept, with its state: a layer whose ``[[stack]]`` table is
   equal to one of the old stack's (same ``use``, same parameters) is the same object
   in the new stack (its cache entries, rate windows, breaker state, budgets), and when
   every ``[[providers]]`` table and ``max_answer_bytes`` are equal the router is kept
   (its connection pools and deployment health). Anything changed is built anew and
   starts empty;
3. the app's handler, keys, model list, limits, readiness and admin key are replaced
   in one step with no await in between, so each request sees the old gateway or the
   new one, never a mix of the two stacks; a call already running holds its stack
   and finishes on it;
4. what the new gateway does not use (replaced layers, the old router) is closed once
   the calls that were in flight at the swap have ended.

Not reloaded (a restart applies them, and the answer lists them under
``restart_needed``): ``host``, ``port``, ``workers``, the connection and header limits
of the protocol, ``[telemetry]`` and ``[state]`` (the key store is kept as opened).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from .._registry import build_layer
from .._stack import Stack
from ..errors import ConfigError
from ._readiness import Readiness

if TYPE_CHECKING:
    from ..config import Gateway, GatewayConfig

__all__ = ["Reloader", "rebuild", "restart_needed"]

logger = logging.getLogger("onion.server")

# [server] fields the running protocol and socket were built with.
_RESTART_FIELDS = (
    "host",
    "port",
    "workers",
    "shutdown_grace_seconds",
    "header_timeout_seconds",
    "body_timeout_seconds",
    "keepalive_idle_seconds",
    "max_connections",
    "max_headers",
    "max_header_bytes",
)


class Rebuilt(msgspec.Struct):
    """A new gateway, which layers it kept, and what the old one leaves to close."""

    gateway: Any
    kept: list[str]
    built: list[str]
    router_kept: bool
    retired: list[Any]


def rebuild(config: GatewayConfig, old: Gateway) -> Rebuilt:
    """The gateway of ``config``, reusing the layers and the router of ``old`` whose
    configuration is equal. Raises one ``ConfigError`` with every problem (and then
    closes nothing of ``old`` and keeps nothing new)."""
    from ..config import Gateway, build_gateway

    router_kept = (
        config.providers == old.config.providers
        and config.server.max_answer_bytes == old.config.server.max_answer_bytes
    )
    if router_kept:
        router, providers = old.router, old.providers
    else:
        fresh = build_gateway(msgspec.structs.replace(config, stack=[]))
        router, providers = fresh.router, fresh.providers
    pool = list(zip(old.config.stack, old.stack.layers, strict=False))
    layers: list[Any] = []
    kept: list[str] = []
    built: list[str] = []
    problems: list[ConfigError] = []
    for index, table in enumerate(config.stack):
        match = next((k for k, (old_table, _) in enumerate(pool) if old_table == table), None)
        if match is not None:
            layers.append(pool.pop(match)[1])
            kept.append(str(table.get("use")))
            continue
        try:
            layers.append(build_layer(table, f"stack[{index}]"))
            built.append(str(table.get("use")))
        except ConfigError as error:
            problems.extend(ConfigError(f"{config.source}: {p}", table=p.table, field=p.field) for p in error.problems)
    try:
        if problems:
            raise ConfigError(problems=problems)
        stack = Stack(layers, router, name="stack")
    except ConfigError:
        _discard([layer for layer in layers if not any(layer is o for o in old.stack.layers)])
        if not router_kept:
            _discard([router])
        raise
    retired = [layer for _, layer in pool]
    if not router_kept:
        retired.append(old.router)
    return Rebuilt(Gateway(config, providers, router, stack), kept, built, router_kept, retired)


def _discard(things: list[Any]) -> None:
    # Built for a reload that was refused: nothing has used them, and most hold no
    # connection until first used; those that do are closed when the event loop allows.
    for thing in things:
        if getattr(thing, "aclose", None) is not None:
            _spawn(thing.aclose())


def restart_needed(new: GatewayConfig, old: GatewayConfig) -> list[str]:
    """The settings that changed but apply only after a restart."""
    changed = [f"server.{name}" for name in _RESTART_FIELDS if getattr(new.server, name) != getattr(old.server, name)]
    if new.telemetry != old.telemetry:
        changed.append("telemetry")
    if new.state != old.state:
        changed.append("state")  # the key and spend store keeps running as it was opened
    return changed


class Reloader:
    """Reloads ``app`` from the config file at ``path`` (``None``: the embedded default).

    ``load`` reads and validates a config (``onion.config.load_config`` by default).
    """

    def __init__(
        self,
        app: Any,
        gateway: Gateway,
        path: str | None,
        *,
        load: Callable[[str | None], GatewayConfig] | None = None,
        after: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.gateway = gateway
        self.path = path
        self.load = load or _load
        self.after = after
        self.reloads = 0

    async def reload(self) -> dict[str, Any]:
        """Swap in the gateway of the current file; what was kept and built, as JSON.
        Raises ``ConfigError`` (with every problem) when the file is refused."""
        try:
            loaded = self.load(self.path)
            # [telemetry] is set up once per process: the running one stays.
            config = msgspec.structs.replace(loaded, telemetry=self.gateway.config.telemetry)
            rebuilt = rebuild(config, self.gateway)
        except ConfigError as error:
            for problem in error.problems:
                logger.error("reload refused, the old config keeps serving: %s", problem)
            raise
        old = self.gateway
        in_flight = set(self.app._calls)
        self._swap(rebuilt.gateway)
        self.gateway = rebuilt.gateway
        self.reloads += 1
        later = restart_needed(loaded, old.config)
        logger.warning(
            "config reloaded from %s: layers kept %s, built %s; router %s%s",
            self.path or "the embedded default",
            rebuilt.kept,
            rebuilt.built,
            "kept" if rebuilt.router_kept else "rebuilt",
            f"; a restart is needed for {later}" if later else "",
        )
        if rebuilt.retired:
            _spawn(_close_after(self.app, in_flight, rebuilt.retired))
        if self.after is not None:
            self.after()
        return {
            "reloaded": True,
            "source": str(self.path or "embedded default"),
            "layers_kept": rebuilt.kept,
            "layers_built": rebuilt.built,
            "router": "kept" if rebuilt.router_kept else "rebuilt",
            "restart_needed": later,
        }

    def _swap(self, gateway: Gateway) -> None:
        # No await in here: each request sees the old gateway or the new one whole.
        from ._admin_keys import key_resolver
        from ._app import model_lister
        from ._http import ApiKeys

        app, server = self.app, gateway.config.server
        router = gateway.router
        keys = key_resolver(gateway, store=app.keys.store)
        app.handler = gateway.stack
        app.api_keys = ApiKeys(gateway.api_keys)
        app.keys = keys
        app.models = router.models()
        app.list_models = model_lister(router)  # the new router's providers, not the old ones
        app.max_body_bytes = server.max_body_bytes
        app.max_json_depth = server.max_json_depth
        app.metrics_auth = server.metrics_auth
        app.readiness = Readiness(gateway.stack.layers, router)
        app.on_shutdown = gateway.aclose
        app.admin.rekey(server.admin_key, keys.is_client_key)

    async def on_hangup(self) -> None:
        """``SIGHUP``: reload, and log (never raise) a refusal."""
        try:
            await self.reload()
        except ConfigError:
            pass  # logged by reload
        except Exception:
            logger.exception("reload failed; the old config keeps serving")


def _load(path: str | None) -> GatewayConfig:
    from ..config import default_config, load_config

    return load_config(path) if path else default_config()


async def _close_after(app: Any, in_flight: set[Any], retired: list[Any]) -> None:
    """Close ``retired`` once none of ``in_flight`` (the calls running at the swap) runs."""
    # Polled: the app keeps no event per call, and a reload is rare.
    while in_flight & app._calls:  # noqa: ASYNC110
        await anyio.sleep(0.05)
    for thing in retired:
        close = getattr(thing, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:
                logger.warning("closing a replaced layer or router failed", exc_info=True)


_background: set[Any] = set()


def _spawn(work: Awaitable[Any]) -> None:
    """Run ``work`` in the background on asyncio (the server's loop); on another event
    loop, or outside one, it is dropped unstarted (in-process tests under trio)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not on asyncio
        close = getattr(work, "close", None)
        if close is not None:
            close()
        return
    task = loop.create_task(work)  # type: ignore[arg-type]
    _background.add(task)
    task.add_done_callback(_background.discard)
