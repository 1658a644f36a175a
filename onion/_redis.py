"""One Redis client helper for every layer that shares state between gateway processes.

Caches, rate limits (and, later, budgets and deployment health) keep shared state in
Redis. They all talk to it the same way: the synchronous ``redis`` client (thread-safe
connection pool) with short socket timeouts, each call run in a worker thread so it works
the same under asyncio and trio, and abandoned when the caller is cancelled (the socket
timeout then ends the thread). ``redis`` is imported only when a client is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.to_thread

__all__ = ["RedisClient"]


class RedisClient:
    """A Redis connection pool used from async code.

    ``RedisClient(url)`` (or ``client=`` an existing ``redis.Redis``); ``await
    client.run(fn, *args)`` runs ``fn(*args)`` in a worker thread, where ``fn`` is a
    method of ``client.sync`` (the synchronous client) or a function that does several
    calls on it; ``client.script(lua)`` registers a Lua script (``EVALSHA``, reloaded if
    the server lost it). ``timeout`` bounds every socket wait, connecting included.
    """

    __slots__ = ("sync", "url")

    def __init__(self, url: str, *, timeout: float = 1.0, client: Any = None) -> None:
        if client is None:
            import redis

            client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.url = url
        self.sync: Any = client

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker thread; abandoned (not waited for) if cancelled."""
        return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)

    def script(self, source: str) -> Any:
        """A callable Lua script: ``script(keys=[...], args=[...])`` (call it through ``run``)."""
        return self.sync.register_script(source)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.run(self.sync.close)

    def __repr__(self) -> str:
        return "RedisClient(<url hidden>)"  # a URL can carry a password
