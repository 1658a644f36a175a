"""Running the gateway's ASGI app under uvicorn, with the limits of ``[server]``.

Why uvicorn with a protocol wrapper rather than another server: what uvicorn lacks
(header and body deadlines, header caps, a connection cap that refuses instead of
starving; it has the keep-alive idle timeout) is one small subclass of its httptools
protocol (``_protocol``), and everything else stays as measured and tested: httptools and
uvloop, ``http.disconnect`` as soon as the client leaves (the app cancels its call on
it), flow control on slow readers. benchmarks/gateway.py (``--scale-out``) runs the app
under plain uvicorn and under the wrapper: within the noise of a shared two-core machine.
Granian and Hypercorn were not measured (neither is installed here); switching servers
would change those semantics for limits we could add in ~200 lines.

Here: raising the soft open-file limit, fitting ``max_connections`` under it, and
``GatewayServer``, uvicorn's server with onion's shutdown (see ``GatewayApp.drain``) and
a clean exit status after SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import uvicorn

from ._protocol import ConnectionLimits, GuardedProtocol

if TYPE_CHECKING:
    from ..config import ServerConfig

__all__ = ["GatewayServer", "fit_connection_cap", "note_early_hangup", "raise_open_file_limit", "run"]

logger = logging.getLogger("onion.server")

# File descriptors kept for everything that is not a client: upstream connections,
# Redis, log files, the listening socket.
_RESERVED_FILES = 256


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard one; ``(before, after)``."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return (0, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return (soft, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return (soft, soft)
    return (soft, target)


def fit_connection_cap(max_connections: int, open_files: int) -> int:
    """``max_connections`` lowered so that the cap is reached before the files run out."""
    if open_files <= 0:
        return max_connections
    return max(1, min(max_connections, open_files - _RESERVED_FILES))


class GatewayServer(uvicorn.Server):
    """uvicorn's server; on SIGTERM or SIGINT the app drains its calls (``drain``) and
    the process exits 0 instead of re-raising the signal."""

    def __init__(self, config: uvicorn.Config, *, grace: float, drain: Any = None, on_hangup: Any = None) -> None:
        super().__init__(config)
        self.grace = grace
        self.drain = drain
        self.on_hangup = on_hangup

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.on_hangup is not None and hasattr(signal, "SIGHUP"):
            # SIGHUP reloads the config (``_reload``) on the server's own loop; its
            # default action would end the process.
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hangup)
            if _early_hangups:  # one came while the process started: the file may be newer
                _early_hangups.clear()
                self._hangup()

    def _hangup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.on_hangup())
        _hangups.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(_hangups.discard)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()  # a requested stop is a clean exit, status 0

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # New connections are refused at once, idle ones closed; the calls in flight get
        # the grace period, then the app ends them with a shutting-down answer.
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        if self.drain is not None:
            await self.drain(self.grace)
        await super().shutdown(sockets)


_hangups: set[Any] = set()
_early_hangups: list[int] = []


def note_early_hangup(signum: int, frame: Any) -> None:
    """The ``SIGHUP`` handler until the server runs: remembered, then reloaded on (its
    default action would end the process, and ignoring it would lose the reload)."""
    _early_hangups.append(signum)


def run(
    app: Any,
    sock: socket.socket,
    server: ServerConfig,
    log_level: str,
    limits: ConnectionLimits,
    on_hangup: Any = None,
) -> None:
    """Serve ``app`` on the bound ``sock`` until SIGTERM or SIGINT; ``SIGHUP`` awaits
    ``on_hangup()`` (a config reload)."""
    config = uvicorn.Config(
        app,
        interface="asgi3",
        http=GuardedProtocol.with_limits(limits),
        loop="auto",  # uvloop when installed
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,  # uvicorn's records go through configure_logging's handler (JSON, scrubbed)
        log_level=log_level,
        timeout_keep_alive=server.keepalive_idle_seconds,  # type: ignore[arg-type]
        # After the app's own drain, what is left is connections that outlived it.
        timeout_graceful_shutdown=1 if hasattr(app, "drain") else server.shutdown_grace_seconds,  # type: ignore[arg-type]
        backlog=min(4096, limits.max_connections),
    )
    drain = getattr(app, "drain", None)
    gateway = GatewayServer(config, grace=server.shutdown_grace_seconds, drain=drain, on_hangup=on_hangup)
    with _named_library("asyncio"):
        gateway.run(sockets=[sock])
    sys.stdout.flush()


@contextlib.contextmanager
def _named_library(name: str) -> Iterator[None]:
    """Tell sniffio which async library runs this thread while the server does, as trio's
    own ``run`` does: every anyio call (a cancel scope, ``current_time``, an event)
    otherwise asks sniffio, which finds asyncio by looking up the current task each time
    (a twentieth of the gateway's CPU per request). anyio without sniffio needs nothing."""
    try:
        import sniffio
    except ImportError:
        yield
        return
    previous, sniffio.thread_local.name = sniffio.thread_local.name, name
    try:
        yield
    finally:
        sniffio.thread_local.name = previous
