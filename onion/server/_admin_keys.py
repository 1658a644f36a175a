"""The key routes of the admin API: issue, list, revoke and rotate virtual keys.

- ``POST /admin/keys`` ``{name, team?, models?, budget_usd?, budget_window?, rpm?, tpm?,
  expires?, metadata?}`` → 201 ``{"id", "key", …}``: the key is in this answer only.
- ``GET /admin/keys`` → ``{"data": [...]}``: every key's policy, never a key or a hash.
- ``DELETE /admin/keys/{id}`` → 200 ``{"id", "revoked": true}``: refused within the
  resolver's ``ttl`` (0.5 s) on every worker sharing the store.
- ``POST /admin/keys/{id}/rotate`` → 200 ``{"id", "key"}``: a new secret for the same
  key (same name, limits, budget and spend); the old one is refused like a revoked key.

Bad input is a 400 naming the field (``param``); an unknown id a 404.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from .._keys import (
    KeyResolver,
    KeyStore,
    MemoryKeyStore,
    RedisKeyStore,
    SQLiteKeyStore,
    StoredKey,
    new_key,
)
from .._policy import KeyPolicy, expiry
from ..errors import BadRequest
from ._admin import AdminAnswer, AdminRequest, AdminRoutes

if TYPE_CHECKING:
    from ..config import ApiKey, Gateway

__all__ = ["KeyRoutes", "key_resolver", "policy_of"]


class _NewKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    team: str | None = None
    models: list[str] = []
    budget_usd: float | None = None
    budget_window: Literal["day", "month"] = "month"
    rpm: int | None = None
    tpm: int | None = None
    expires: float | str | None = None
    metadata: dict[str, Any] = {}


def policy_of(key: ApiKey) -> KeyPolicy:
    """The policy of a key from the config."""
    return KeyPolicy(
        name=key.name,
        team=key.team,
        models=tuple(key.models),
        budget_usd=key.budget_usd,
        budget_window=key.budget_window,
        rpm=key.rpm,
        tpm=key.tpm,
        expires=None if key.expires is None else expiry(key.expires),
        metadata=dict(key.metadata),
    )


def _store(gateway: Gateway) -> KeyStore:
    from ..config import state_settings

    backend, path, redis_url = state_settings(gateway.config)
    if backend == "redis":
        assert redis_url is not None
        return RedisKeyStore(redis_url)
    if backend == "sqlite":
        assert path is not None
        return SQLiteKeyStore(path)
    return MemoryKeyStore()


def key_resolver(gateway: Gateway, *, store: KeyStore | None = None) -> KeyResolver:
    """The key check of a gateway: its config keys, and issued keys in ``[state]`` when
    the admin API is on (``[server] admin_key``). A reload passes the running
    ``store`` so issued keys (in memory too) carry over."""
    from ..config import ApiKey

    configured = [(key.key, policy_of(key)) for key in gateway.config.server.api_keys if isinstance(key, ApiKey)]
    if not gateway.config.server.admin_key:
        store = None
    elif store is None:
        store = _store(gateway)
    secret = gateway.config.state.secret
    return KeyResolver(configured, store, secret=secret.encode() if secret else None)


def _public(key: StoredKey) -> dict[str, Any]:
    out = msgspec.to_builtins(key.policy)
    out["revoked"] = key.revoked
    out["source"] = "issued"
    return out


class KeyRoutes:
    """The handlers, over one ``KeyResolver`` (its store) and the stack's capabilities
    (a key's ``rpm``/``tpm`` needs a ``rate_limit`` layer, its budget a ``budget`` one)."""

    def __init__(self, resolver: KeyResolver, provides: frozenset[str]) -> None:
        assert resolver.store is not None
        self.resolver = resolver
        self.store: KeyStore = resolver.store
        self.provides = provides

    def add_to(self, routes: AdminRoutes) -> None:
        """Register the routes."""
        routes.add("POST", "/admin/keys", self.create)
        routes.add("GET", "/admin/keys", self.list)
        routes.add("DELETE", "/admin/keys/", self.revoke)
        routes.add("POST", "/admin/keys/", self.rotate)

    def _parse(self, body: Any) -> _NewKey:
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object with at least 'name'", param="body")
        try:
            new = msgspec.convert(body, _NewKey)
        except msgspec.ValidationError as error:
            text = str(error)
            field = text.rsplit("`$.", 1)[1].rstrip("`").split("[")[0].split(".")[0] if "`$." in text else None
            if "unknown field" in text or "missing required" in text:
                field = text.split("`")[1]
            raise BadRequest(f"field {field!r}: {text.split(' - at ')[0]}", param=field) from None
        problems = (
            ("name", not new.name.strip() or len(new.name) > 200, "must be 1-200 characters"),
            ("budget_usd", new.budget_usd is not None and not new.budget_usd >= 0, "must be >= 0"),
            ("rpm", new.rpm is not None and new.rpm < 1, "must be at least 1"),
            ("tpm", new.tpm is not None and new.tpm < 1, "must be at least 1"),
            ("rpm", new.rpm is not None and "rate_limit" not in self.provides, "needs a rate_limit layer in the stack"),
            ("tpm", new.tpm is not None and "rate_limit" not in self.provides, "needs a rate_limit layer in the stack"),
            ("budget_usd", new.budget_usd is not None and "budget" not in self.provides, "needs a budget layer"),
        )
        for field, bad, why in problems:
            if bad:
                raise BadRequest(f"field {field!r}: {why}", param=field)
        return new

    async def create(self, request: AdminRequest) -> AdminAnswer:
        new = self._parse(request.json())
        try:
            expires = None if new.expires is None else expiry(new.expires)
        except ValueError as error:
            raise BadRequest(f"field 'expires': {error}", param="expires") from None
        taken = self.resolver.names() | {k.policy.name for k in await self.store.all() if not k.revoked}
        if new.name in taken:
            raise BadRequest(f"field 'name': a key named {new.name!r} exists", param="name")
        policy = KeyPolicy(
            name=new.name,
            id="key_" + secrets.token_hex(8),
            team=new.team,
            models=tuple(new.models),
            budget_usd=new.budget_usd,
            budget_window=new.budget_window,
            rpm=new.rpm,
            tpm=new.tpm,
            expires=expires,
            metadata=new.metadata,
            created=time.time(),
        )
        await self.resolver.start()
        token = new_key()
        await self.store.add(StoredKey(policy, self.resolver.digest(token.encode())))
        return AdminAnswer(201, {**msgspec.to_builtins(policy), "key": token})

    async def list(self, request: AdminRequest) -> AdminAnswer:
        data: list[dict[str, Any]] = [{"name": name, "source": "config"} for name in sorted(self.resolver.names())]
        data += [_public(key) for key in await self.store.all()]
        return AdminAnswer(200, {"object": "list", "data": data})

    async def _found(self, key_id: str) -> StoredKey:
        key = await self.store.get(key_id) if key_id and "/" not in key_id else None
        if key is None:
            raise _NoSuchKey(f"no issued key with id {key_id[:100]!r}", param="id")
        return key

    async def revoke(self, request: AdminRequest) -> AdminAnswer:
        key = await self._found(request.tail)
        await self.store.replace(msgspec.structs.replace(key, revoked=True))
        self.resolver.forget()
        return AdminAnswer(200, {"id": key.policy.id, "name": key.policy.name, "revoked": True})

    async def rotate(self, request: AdminRequest) -> AdminAnswer:
        key_id, _, action = request.tail.partition("/")
        if action != "rotate":
            raise _NoSuchKey(f"no admin route {request.path}")
        key = await self._found(key_id)
        if key.revoked:
            raise BadRequest(f"the key {key_id!r} is revoked; issue a new one", param="id")
        await self.resolver.start()
        token = new_key()
        await self.store.replace(msgspec.structs.replace(key, digest=self.resolver.digest(token.encode())))
        self.resolver.forget()
        return AdminAnswer(200, {"id": key.policy.id, "name": key.policy.name, "key": token})


class _NoSuchKey(BadRequest):
    status = 404
    code = "not_found"
