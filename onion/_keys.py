"""Virtual keys: who a client key belongs to and what it may do, for the server's key check.

A key is a ``KeyPolicy``: a name (the request's ``context.caller``), an optional team
(``context.team``), the models it may call (globs), its own rate limits (``rpm``,
``tpm``), a budget (``budget_usd`` per ``budget_window``), an expiry and free metadata.
The server sets the policy on ``context.key``; ``rate_limit`` and ``budget`` read their
per-key limits from it, so a key issued a minute ago is limited like one in the config.

Keys come from the config (``[server] api_keys`` tables) or are **issued** through the
admin API. An issued key is shown once and stored only as a keyed hash,
HMAC-SHA256(secret, key). A slow hash (argon2, bcrypt) protects low-entropy passwords
from guessing; an issued key is 256 random bits, which no guessing reaches, and the
lookup runs on every request, where a slow hash would cost milliseconds. The keyed hash
adds that a copy of the store without the secret (``[state] secret``) cannot even be
checked against a candidate key. Without a configured secret one is generated and kept
in the store itself: then the hashes are as strong as SHA-256 of a random key.

Stores (``memory`` | ``sqlite`` | ``redis``, as ``[state] backend``): memory is one
process and lost on restart; SQLite is a local file shared by the workers of one
machine and survives restarts; Redis is shared by every worker and machine.
``KeyResolver`` caches what it looked up for ``ttl`` seconds (0.5 by default), so a
revoked key is refused on every worker within that time, and an unknown key costs one
store read per ``ttl``, not one per request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
import msgspec

from ._policy import KeyPolicy
from ._redis import RedisClient
from .errors import BadRequest, OnionError, Unauthorized

__all__ = [
    "KeyPolicy",
    "KeyResolver",
    "KeyStore",
    "MemoryKeyStore",
    "RedisKeyStore",
    "SQLiteKeyStore",
    "StoredKey",
    "new_key",
]

_TOKEN = re.compile(rb"[\x21-\x7e]+")  # one token of visible ASCII: no spaces, no controls
KEY_PREFIX = "sk-onion-"


class StoredKey(msgspec.Struct, frozen=True):
    """An issued key as the store keeps it: its policy, the keyed hash, revoked or not."""

    policy: KeyPolicy
    digest: str
    revoked: bool = False


def new_key() -> str:
    """A fresh client key: ``sk-onion-`` and 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyStore(Protocol):
    """Where issued keys live. ``secret()`` is the hash secret kept by the store (made
    on first use) unless the config gives one."""

    async def secret(self) -> bytes: ...

    async def add(self, key: StoredKey) -> None: ...

    async def find(self, digest: str) -> StoredKey | None: ...

    async def get(self, key_id: str) -> StoredKey | None: ...

    async def all(self) -> list[StoredKey]: ...

    async def replace(self, key: StoredKey) -> None:
        """Write ``key`` over the stored one with its id (revoke, rotate)."""
        ...


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(StoredKey).decode


class MemoryKeyStore:
    """Issued keys in this process (lost on restart; one worker only)."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)
        self._by_id: dict[str, StoredKey] = {}
        self._by_digest: dict[str, str] = {}

    async def secret(self) -> bytes:
        return self._secret

    async def add(self, key: StoredKey) -> None:
        await self.replace(key)

    async def find(self, digest: str) -> StoredKey | None:
        key_id = self._by_digest.get(digest)
        return None if key_id is None else self._by_id.get(key_id)

    async def get(self, key_id: str) -> StoredKey | None:
        return self._by_id.get(key_id)

    async def all(self) -> list[StoredKey]:
        return list(self._by_id.values())

    async def replace(self, key: StoredKey) -> None:
        old = self._by_id.get(key.policy.id)
        if old is not None:
            self._by_digest.pop(old.digest, None)
        self._by_id[key.policy.id] = key
        self._by_digest[key.digest] = key.policy.id


class SQLiteKeyStore:
    """Issued keys in a local SQLite file (survives restarts; the machine's workers share
    it). One small statement per call, in a worker thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS onion_keys "
            "(id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, body BLOB NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS onion_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)")

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    async def _call(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        return await anyio.to_thread.run_sync(self._run, sql, args)

    async def secret(self) -> bytes:
        # INSERT OR IGNORE then read: two workers starting at once agree on one secret.
        await self._call("INSERT OR IGNORE INTO onion_meta VALUES ('key_secret', ?)", (secrets.token_bytes(32),))
        return bytes((await self._call("SELECT value FROM onion_meta WHERE name = 'key_secret'"))[0][0])

    async def add(self, key: StoredKey) -> None:
        await self.replace(key)

    async def find(self, digest: str) -> StoredKey | None:
        rows = await self._call("SELECT body FROM onion_keys WHERE digest = ?", (digest,))
        return _decode(rows[0][0]) if rows else None

    async def get(self, key_id: str) -> StoredKey | None:
        rows = await self._call("SELECT body FROM onion_keys WHERE id = ?", (key_id,))
        return _decode(rows[0][0]) if rows else None

    async def all(self) -> list[StoredKey]:
        return [_decode(row[0]) for row in await self._call("SELECT body FROM onion_keys ORDER BY rowid")]

    async def replace(self, key: StoredKey) -> None:
        await self._call(
            "INSERT INTO onion_keys (id, digest, body) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET digest = excluded.digest, body = excluded.body",
            (key.policy.id, key.digest, _encode(key)),
        )

    async def aclose(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()


class RedisKeyStore:
    """Issued keys in Redis, shared by every worker and machine: ``{prefix}:key:{id}``
    holds the stored key, ``{prefix}:digest:{hash}`` its id."""

    def __init__(self, url: str, *, prefix: str = "onion:keys", client: RedisClient | None = None) -> None:
        self.redis = client or RedisClient(url, timeout=1.0, deadline=0.5)
        self.prefix = prefix

    async def secret(self) -> bytes:
        name = f"{self.prefix}:secret"

        def fetch() -> bytes:
            self.redis.sync.set(name, secrets.token_bytes(32), nx=True)
            return bytes(self.redis.sync.get(name))

        return await self.redis.run(fetch)

    async def add(self, key: StoredKey) -> None:
        await self.replace(key)

    async def find(self, digest: str) -> StoredKey | None:
        key_id = await self.redis.run(self.redis.sync.get, f"{self.prefix}:digest:{digest}")
        return None if key_id is None else await self.get(key_id.decode())

    async def get(self, key_id: str) -> StoredKey | None:
        body = await self.redis.run(self.redis.sync.get, f"{self.prefix}:key:{key_id}")
        return None if body is None else _decode(body)

    async def all(self) -> list[StoredKey]:
        def fetch() -> list[bytes]:
            ids = sorted(self.redis.sync.smembers(f"{self.prefix}:ids"))
            return (
                [body for body in self.redis.sync.mget([f"{self.prefix}:key:{i.decode()}" for i in ids]) if body]
                if ids
                else []
            )

        keys = [_decode(body) for body in await self.redis.run(fetch)]
        return sorted(keys, key=lambda key: key.policy.created)

    async def replace(self, key: StoredKey) -> None:
        prefix, key_id = self.prefix, key.policy.id

        def write() -> None:
            old = self.redis.sync.get(f"{prefix}:key:{key_id}")
            pipe = self.redis.sync.pipeline(transaction=True)
            if old is not None:
                pipe.delete(f"{prefix}:digest:{_decode(old).digest}")
            pipe.set(f"{prefix}:key:{key_id}", _encode(key))
            pipe.set(f"{prefix}:digest:{key.digest}", key_id)
            pipe.sadd(f"{prefix}:ids", key_id)
            pipe.execute()

        await self.redis.run(write)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()


def bearer(authorization: bytes | None) -> bytes:
    """The token of an ``Authorization: Bearer <key>`` header value; ``Unauthorized``
    when none is sent, ``BadRequest`` when the header is not ``Bearer <one token>``."""
    if not authorization or not authorization.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    given = authorization[7:].strip()
    if authorization[:7].lower() != b"bearer " or not _TOKEN.fullmatch(given):
        raise BadRequest(
            "malformed Authorization header: send 'Authorization: Bearer <key>'",
            code="invalid_authorization_header",
        )
    return given


class KeyResolver:
    """The server's key check: config keys and issued keys, by keyed hash.

    ``configured``: ``(key, policy)`` pairs from the config; ``store``: issued keys (or
    ``None``). When there is neither, ``resolve`` answers ``None`` (the gateway is open).
    Call ``start()`` once (it reads the store's secret) before ``resolve``.
    """

    def __init__(
        self,
        configured: Iterable[tuple[str, KeyPolicy]] = (),
        store: KeyStore | None = None,
        *,
        secret: bytes | None = None,
        ttl: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._secret = secret
        # Config keys are hashed with a secret of this process's own: checking them needs
        # no store, and a dict lookup by digest takes the same time for every key.
        self._local = secrets.token_bytes(32)
        self._configured = {self._local_digest(key.encode()): policy for key, policy in configured}
        self._names = {policy.name for policy in self._configured.values()}
        self._cache: dict[str, tuple[KeyPolicy | None, float]] = {}
        self.required = bool(self._configured) or store is not None
        if store is None and secret is None:
            self._secret = secrets.token_bytes(32)

    def _local_digest(self, token: bytes) -> str:
        return hmac.new(self._local, token, hashlib.sha256).hexdigest()

    async def start(self) -> None:
        """Read the hash secret from the store if the config gave none."""
        if self._secret is None and self.store is not None:
            self._secret = await self.store.secret()

    def digest(self, token: bytes) -> str:
        """The keyed hash an issued key is stored as."""
        assert self._secret is not None, "KeyResolver.start() was not awaited"
        return hmac.new(self._secret, token, hashlib.sha256).hexdigest()

    def names(self) -> set[str]:
        """Names of the keys from the config."""
        return set(self._names)

    def forget(self) -> None:
        """Drop the cache (this worker sees a revocation at once)."""
        self._cache.clear()

    async def resolve(self, authorization: bytes | None) -> KeyPolicy | None:
        """The policy of the key in an ``Authorization`` header value (``None`` when the
        gateway needs no key); ``Unauthorized`` for a missing, unknown, revoked or
        expired key."""
        if not self.required:
            return None
        token = bearer(authorization)
        policy = self._configured.get(self._local_digest(token))
        if policy is None and self.store is not None:
            if self._secret is None:
                await self.start()
            policy = await self._issued(self.digest(token))
        if policy is None:
            raise Unauthorized("incorrect API key provided")
        if policy.expired(time.time()):
            raise Unauthorized(f"the API key {policy.name!r} has expired")
        return policy

    async def _issued(self, digest: str) -> KeyPolicy | None:
        now = self.clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        assert self.store is not None
        try:
            found = await self.store.find(digest)
        except OnionError:
            raise
        except Exception as error:
            # The store is down: a key cannot be checked, so it is not accepted.
            raise Unauthorized(f"the key store is unreachable ({type(error).__name__})") from None
        policy = None if found is None or found.revoked else found.policy
        if len(self._cache) >= 65536:
            self._cache.clear()
        self._cache[digest] = (policy, now + self.ttl)
        return policy

    async def is_client_key(self, token: bytes) -> bool:
        """Whether ``token`` is a client key (from the config, or issued and not revoked):
        the admin API then answers 403 rather than 401."""
        if self._local_digest(token) in self._configured:
            return True
        if self.store is None:
            return False
        if self._secret is None:
            await self.start()
        try:
            return await self._issued(self.digest(token)) is not None
        except Unauthorized:  # the store is down: not known to be a client key
            return False


class ModelNotAllowed(BadRequest):
    """The caller's key may not call the model it asked for (403 ``model_not_allowed``)."""

    status = 403
    code = "model_not_allowed"


def check_model(policy: KeyPolicy, model: str) -> None:
    """Raise ``ModelNotAllowed`` unless ``policy`` allows ``model``."""
    if not policy.allows(model):
        allowed = ", ".join(policy.models)
        raise ModelNotAllowed(
            f"the API key {policy.name!r} may not use the model {model[:200]!r} (allowed: {allowed})", param="model"
        )
