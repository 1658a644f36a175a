"""Laws of ``rebuild`` (hot reload) and ``Readiness``, in process: a reload keeps
exactly the layers whose table is unchanged (the same objects, so their state) and the
router exactly when the providers are unchanged; ready exactly when every store answers
and every model has a healthy deployment."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onion import ConfigError, Router, SimulatedProvider
from onion.config import build_gateway, parse_config
from onion.server._readiness import Readiness
from onion.server._reload import rebuild

TABLES = [
    {"use": "exact_cache"},
    {"use": "exact_cache", "ttl_seconds": 60.0},
    {"use": "retry"},
    {"use": "retry", "attempts": 2},
    {"use": "retry", "attempts": "many"},  # refused: a reload to it must fail whole
    {"use": "circuit_breaker"},
]
PROVIDERS = [
    [{"name": "a", "kind": "simulated", "models": ["m"]}],
    [{"name": "a", "kind": "simulated", "models": ["m"], "ttft": 0.2}],
]

stacks = st.lists(st.sampled_from(range(len(TABLES))), max_size=4).map(lambda picks: [dict(TABLES[i]) for i in picks])


def _gateway(stack: list[dict[str, Any]], providers: int) -> Any:
    return build_gateway(parse_config({"providers": PROVIDERS[providers], "stack": stack}))


@settings(max_examples=60, deadline=None)
@given(old=stacks, new=stacks, old_p=st.integers(0, 1), new_p=st.integers(0, 1))
def test_law_a_reload_keeps_exactly_the_unchanged_layers_and_router(
    old: list[dict[str, Any]], new: list[dict[str, Any]], old_p: int, new_p: int
) -> None:
    try:
        before = _gateway(old, old_p)
    except ConfigError:
        return  # an order the layers refuse; not a reload's concern
    config = parse_config({"providers": PROVIDERS[new_p], "stack": new})
    try:
        rebuilt = rebuild(config, before)
    except ConfigError:
        with pytest.raises(ConfigError):
            build_gateway(config)  # refused exactly when a fresh build is
        return
    olds = list(zip(before.config.stack, before.stack.layers, strict=True))
    expected_kept = sum((Counter(map(msgspec.json.encode, old)) & Counter(map(msgspec.json.encode, new))).values())
    kept = [layer for layer in rebuilt.gateway.stack.layers if any(layer is o for _, o in olds)]
    assert len(kept) == expected_kept == len(rebuilt.kept)
    for table, layer in zip(new, rebuilt.gateway.stack.layers, strict=True):
        same = [o for t, o in olds if o is layer]
        if same:
            assert next(t for t, o in olds if o is layer) == table  # kept only for an equal table
    assert (rebuilt.gateway.router is before.router) == (old_p == new_p) == rebuilt.router_kept
    retired = {id(x) for x in rebuilt.retired}
    for _, layer in olds:
        assert (id(layer) in retired) != any(layer is k for k in kept)  # each old layer kept or retired


class _Store:
    def __init__(self, name: str, up: bool) -> None:
        self.name = name
        self.up = up

    async def ping(self) -> None:
        if not self.up:
            raise ConnectionError("down")


class _HealthRouter(Router):
    def __init__(self, providers: list[Any], down: set[str]) -> None:
        super().__init__(providers)
        self.down = down

    def ready_deployments(self, model: str) -> list[Any]:  # what /readyz reads
        return [p for p in self.deployments(model) if p.name not in self.down]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stores=st.lists(st.booleans(), max_size=3),
    down=st.sets(st.sampled_from(["a", "b", "c"])),
    draining=st.booleans(),
)
async def test_law_ready_exactly_when_every_store_answers_and_every_model_has_a_healthy_deployment(
    stores: list[bool], down: set[str], draining: bool
) -> None:
    providers = [
        SimulatedProvider(name="a", models=("m", "n")),
        SimulatedProvider(name="b", models=("m",)),
        SimulatedProvider(name="c", models=("k",)),
    ]
    router = _HealthRouter(providers, down)
    layers = [_Store(f"s{i}", up) for i, up in enumerate(stores)]
    status, body = await Readiness(layers, router).check(draining=draining)
    models_ok = {"m": not {"a", "b"} <= down, "n": "a" not in down, "k": "c" not in down}
    ready = all(stores) and all(models_ok.values()) and not draining
    assert status == (200 if ready else 503)
    named = msgspec.json.decode(body).get("down", [])
    assert len(named) == stores.count(False) + list(models_ok.values()).count(False) + draining
