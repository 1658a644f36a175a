"""The HTTP transport under every provider's ``httpx.AsyncClient``: httpx's own, with
request writes coalesced into one socket send.

httpcore writes a request's headers and its body with two ``send`` calls. On a
keep-alive connection to a nearby upstream each send costs a kernel round through the
loopback or NIC path and wakes the peer twice; holding writes until the first read (an
HTTP/1.1 client always reads after it wrote the whole request) sends one segment
instead. Measured on the gateway benchmark: about 0.25 ms less per call at p50.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpcore
import httpx

__all__ = ["pooled_transport"]

_FLUSH_AT = 64 * 1024


class _CorkedStream(httpcore.AsyncNetworkStream):
    """Buffers writes until the next read (or 64 KiB), then sends them at once."""

    __slots__ = ("_inner", "_pending", "_size")

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._pending: list[bytes] = []
        self._size = 0

    async def _flush(self, timeout: float | None) -> None:  # noqa: ASYNC109 (httpcore's interface)
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            self._size = 0
            await self._inner.write(data, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self._pending.append(buffer)
        self._size += len(buffer)
        if self._size >= _FLUSH_AT:
            await self._flush(timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        await self._flush(timeout)
        return await self._inner.read(max_bytes, timeout)

    async def aclose(self) -> None:
        self._pending.clear()
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        await self._flush(timeout)
        return _CorkedStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _CorkedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's anyio backend (asyncio and trio), with corked streams."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _CorkedStream(await self._inner.connect_tcp(*args, **kwargs))

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _CorkedStream(await self._inner.connect_unix_socket(*args, **kwargs))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def pooled_transport(limits: httpx.Limits, *, trust_env: bool) -> httpx.AsyncHTTPTransport:
    """httpx's transport with ``limits``; its pool uses corked streams when no proxy is set.

    The pool is swapped through httpx's ``_pool`` attribute; if a future httpx lays it out
    differently, the stock pool stays (correct, just one send more per request).
    """
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=trust_env)
    pool = getattr(transport, "_pool", None)
    if type(pool) is not httpcore.AsyncConnectionPool:  # a proxy pool: leave it alone
        return transport
    with contextlib.suppress(AttributeError, TypeError):
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=pool._ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_CorkedBackend(),
        )
    return transport
