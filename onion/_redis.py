"""One Redis client helper for every layer that shares state between gateway processes.

Caches, rate limits (and, later, budgets and deployment health) keep shared state in
Redis. They all talk to it the same way: the synchronous ``redis`` client (thread-safe
connection pool) with short socket timeouts, each call run in a worker thread so it works
the same under asyncio and trio, and abandoned when the caller is cancelled (the socket
timeout then ends the thread). ``redis`` is imported only when a client is built.

A Redis that hangs (paused, partitioned, swapping) must not hang requests. So every
operation has a short deadline (``deadline``, 50 ms by default: a local Redis answers in
well under a millisecond), enforced as the socket timeout of each read and write, where
it measures Redis and not the wait for a worker thread or the GIL (40 concurrent calls
on a busy two-core machine wait 30-120 ms for threads alone); ``timeout`` bounds the
connect and a whole ``run``. Each client has a small breaker: after ``failures`` failed
operations in a row it skips Redis for ``cooldown`` seconds, raising ``RedisUnavailable``
at once, then lets one operation through to probe. Callers decide what a missing Redis
means: a cache bypasses itself (fail open), a rate limiter admits or answers 503
``rate_limiter_unavailable`` (fail closed), never a 429.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

__all__ = ["RedisClient", "RedisUnavailable"]


class RedisUnavailable(TimeoutError):
    """Redis did not answer within the operation's deadline, or the client's breaker is
    skipping it while it fails. A ``TimeoutError``, so callers that treat timeouts and
    connection errors as "the backend is down" handle it unchanged."""


class _Breaker:
    """Consecutive failures open it for ``cooldown`` seconds; then one probe at a time."""

    __slots__ = ("cooldown", "failures", "open_until", "probing", "threshold")

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.open_until = 0.0
        self.probing = False

    def admit(self) -> bool:
        if self.failures < self.threshold:
            return True
        if self.probing or time.monotonic() < self.open_until:
            return False
        self.probing = True  # half-open: this call probes, the others keep skipping
        return True

    def succeeded(self) -> None:
        self.failures = 0
        self.probing = False

    def failed(self) -> None:
        self.failures += 1
        self.probing = False
        if self.failures >= self.threshold:
            self.open_until = time.monotonic() + self.cooldown


class RedisClient:
    """A Redis connection pool used from async code.

    ``RedisClient(url)`` (or ``client=`` an existing ``redis.Redis``); ``await
    client.run(fn, *args)`` runs ``fn(*args)`` in a worker thread, where ``fn`` is a
    method of ``client.sync`` (the synchronous client) or a function that does several
    calls on it; ``client.script(lua)`` registers a Lua script (``EVALSHA``, reloaded if
    the server lost it). ``deadline`` is the socket timeout of every read and write (a
    Redis that does not answer within it fails the operation); ``timeout`` bounds the
    connect and each ``run`` as the caller sees it; ``failures`` and ``cooldown`` shape
    the breaker. ``run`` raises ``RedisUnavailable`` when it is late or the breaker is
    open, and redis-py's ``TimeoutError`` past the deadline.
    """

    __slots__ = ("_breaker", "deadline", "sync", "timeout", "url")

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 1.0,
        client: Any = None,
        deadline: float = 0.05,
        failures: int = 3,
        cooldown: float = 1.0,
    ) -> None:
        if client is None:
            import redis

            client = redis.Redis.from_url(url, socket_timeout=deadline, socket_connect_timeout=timeout)
        self.url = url
        self.sync: Any = client
        self.deadline = deadline
        self.timeout = max(timeout, deadline)
        self._breaker = _Breaker(failures, cooldown)

    @property
    def available(self) -> bool:
        """False while the breaker skips Redis."""
        breaker = self._breaker
        return breaker.failures < breaker.threshold or time.monotonic() >= breaker.open_until

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker thread, within ``timeout``; abandoned (not waited
        for) if cancelled or late. Raises ``RedisUnavailable`` (late, or skipped while the
        breaker is open) and whatever ``fn`` raises (timeouts and connection errors count
        as failures of Redis)."""
        breaker = self._breaker
        if not breaker.admit():
            raise RedisUnavailable("Redis is skipped while it fails (breaker open)")
        try:
            with anyio.fail_after(self.timeout):
                result = await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
        except TimeoutError:
            breaker.failed()
            raise RedisUnavailable(f"Redis did not answer within {self.timeout:g} s") from None
        except (ConnectionError, OSError):
            breaker.failed()
            raise
        except Exception as error:
            if _is_connection_error(error):
                breaker.failed()
            else:
                breaker.succeeded()  # Redis answered (with an error of the command's own)
            raise
        except BaseException:
            breaker.probing = False  # the caller was cancelled: no verdict on Redis
            raise
        breaker.succeeded()
        return result

    async def ping(self) -> None:
        """Return when Redis answers ``PING``; raise as ``run`` does when it does not."""
        await self.run(self.sync.ping)

    def script(self, source: str) -> Any:
        """A callable Lua script: ``script(keys=[...], args=[...])`` (call it through ``run``)."""
        return self.sync.register_script(source)

    async def aclose(self) -> None:
        """Close the connection pool (without the deadline: closing waits for nothing)."""
        await anyio.to_thread.run_sync(self.sync.close, abandon_on_cancel=True)

    def __repr__(self) -> str:
        return "RedisClient(<url hidden>)"  # a URL can carry a password


def _is_connection_error(error: BaseException) -> bool:
    # redis-py's ConnectionError and TimeoutError do not derive from the builtins.
    return type(error).__module__.startswith("redis") and type(error).__name__ in ("ConnectionError", "TimeoutError")
