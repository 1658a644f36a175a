"""``GET /readyz``: whether a load balancer should send this gateway traffic.

Ready means, at once:

- the gateway is not draining (a shutdown has not begun);
- every layer of the stack that keeps state in a shared store (``onion.Pingable``:
  caches, rate limits and budgets on Redis) has its store answering. The stores are
  pinged at most once per ``store_ttl`` seconds, whoever asks and however often (one
  ping in flight at a time; the others wait for its result), so a load balancer that
  polls ``/readyz`` cannot hammer Redis; each ping has ``timeout`` seconds;
- every model the config lists has at least one deployment the router counts as
  ready (``Router.ready_deployments``: not ejected, and not failed
  ``consecutive_failures`` times in a row within ``base_ejection_seconds``; the
  router's own health data, gathered from the traffic it routes, never a probe per
  ``/readyz``).

``/healthz`` stays liveness (the process answers); ``/readyz`` answers 200 with what it
checked, or 503 with ``"down"`` naming each store and model that is not.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec

from .._operable import Pingable

__all__ = ["Readiness"]

_encode = msgspec.json.Encoder().encode


class Readiness:
    """The readiness of one gateway: its stack's pingable layers and its router."""

    def __init__(self, layers: Sequence[Any], router: Any, *, store_ttl: float = 1.0, timeout: float = 1.0) -> None:
        self.stores: list[tuple[str, Any]] = []
        for layer in layers:
            if isinstance(layer, Pingable):
                name = _layer_name(layer)
                taken = sum(1 for other, _ in self.stores if other.split("#")[0] == name)
                self.stores.append((f"{name}#{taken + 1}" if taken else name, layer))
        self.router = router
        self.store_ttl = store_ttl
        self.timeout = timeout
        self._checked_at = float("-inf")
        self._stores: dict[str, str] = {}
        self._lock: anyio.Lock | None = None

    async def check(self, *, draining: bool = False) -> tuple[int, bytes]:
        """``(status, JSON body)``: 200 when ready, 503 naming what is down."""
        stores = await self._store_states()
        models = self._model_states()
        down = [f"store {name}: {state}" for name, state in stores.items() if state != "ok"]
        down += [f"model {model}: no healthy deployment" for model, state in models.items() if not state["healthy"]]
        if draining:
            down.insert(0, "gateway: draining (shutting down)")
        body = {"status": "not_ready" if down else "ready", "stores": stores, "models": models}
        if down:
            body["down"] = down
        return (503 if down else 200), _encode(body)

    def _model_states(self) -> dict[str, dict[str, Any]]:
        states: dict[str, dict[str, Any]] = {}
        if self.router is None:
            return states
        for model, _ in self.router.models():
            if model in states:
                continue
            try:
                # ready_deployments when the router has it (it also tells a model whose
                # only deployment fails), else the deployments not ejected.
                ready = getattr(self.router, "ready_deployments", self.router.healthy_deployments)
                healthy = [p.name for p in ready(model)]
                every = [p.name for p in self.router.deployments(model)]
            except Exception:  # a router that cannot resolve its own model: not ready
                healthy, every = [], []
            states[model] = {"healthy": healthy, "deployments": every}
        return states

    async def _store_states(self) -> dict[str, str]:
        if not self.stores:
            return {}
        if time.monotonic() - self._checked_at < self.store_ttl:
            return self._stores
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            # Whoever waited for the lock finds the result of the ping it waited on.
            if time.monotonic() - self._checked_at >= self.store_ttl:
                states: dict[str, str] = {}
                async with anyio.create_task_group() as group:
                    for name, layer in self.stores:
                        group.start_soon(self._ping, name, layer, states)
                self._stores = {name: states[name] for name, _ in self.stores}
                self._checked_at = time.monotonic()
        return self._stores

    async def _ping(self, name: str, layer: Any, states: dict[str, str]) -> None:
        try:
            with anyio.fail_after(self.timeout):
                await layer.ping()
        except Exception as error:
            states[name] = f"down ({type(error).__name__})"
        else:
            states[name] = "ok"


def _layer_name(layer: Any) -> str:
    name = getattr(layer, "name", None)
    return name if isinstance(name, str) and name else type(layer).__name__
