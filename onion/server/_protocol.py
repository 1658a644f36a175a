"""Connection limits: what uvicorn's HTTP protocol lacks to survive slow and idle clients.

uvicorn bounds only the keep-alive idle time. A client that sends its headers a byte at
a time, trickles its body, or connects and says nothing holds a socket (and a file
descriptor) for as long as it likes; with the usual 1,024 open files, 1,100 such sockets
locked every other caller out. ``GuardedProtocol`` is uvicorn's ``httptools`` protocol
with, per connection:

- a deadline for the request headers, armed when the connection opens (or, on a
  kept-alive connection, when the next request's first byte arrives): 408, then closed;
- a deadline for the body, armed when the headers are complete and pushed later by
  each piece received at the rate of ``_BODY_RATE`` (a large body on a slow link gets
  the time it needs; a trickle gains nothing): 408 if the answer has not started, else
  the connection is closed;
- caps on the number of headers and on the bytes of the request line and headers: 431;
- a cap on open connections: the ones above it get a 503 at once and are closed, so
  the process never runs out of file descriptors.

Closed connections are counted and logged once a second as one warning line, not one
line per socket (an attack would flood the log). The answers are the OpenAI error shape
with ``connection: close``; the request never reached the app, so there is no request id.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..wire.openai_chat import error_body
from ._http import DISCONNECT, DisconnectHook

__all__ = ["ConnectionLimits", "GuardedProtocol"]


logger = logging.getLogger("onion.server")

_HEADERS_TOO_LARGE = "request_header_fields_too_large"
# Bytes per second of body that earn a second more of the body deadline: a 32 MiB image
# at 1 MiB/s has its 32 s, a client trickling bytes is closed on time (it must send a
# MiB a second to hold the connection a second longer).
_BODY_RATE = 1024 * 1024
_REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


class ConnectionLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The bounds ``GuardedProtocol`` enforces (``[server]`` fields of the same meaning)."""

    header_timeout: float = 5.0
    body_timeout: float = 10.0
    max_connections: int = 4096
    max_headers: int = 100
    max_header_bytes: int = 32 * 1024


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a connection already answered."""


class _Closures:
    """Counts of connections closed by a limit, logged as one line per second."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.scheduled = False

    def note(self, reason: str, loop: asyncio.AbstractEventLoop) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if not self.scheduled:
            self.scheduled = True
            loop.call_later(1.0, self.flush)

    def flush(self) -> None:
        counts, self.counts, self.scheduled = self.counts, {}, False
        total = sum(counts.values())
        detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))
        logger.warning("closed %d connection(s) that broke a limit (%s)", total, detail)


class _HeldHead:
    """The transport as one request's cycle sees it: the answer's status line and headers
    are held until its body's first write and go out with it in one segment. uvicorn
    writes them apart: on loopback every write is a send that wakes the client, and a
    complete answer took two.

    A head without ``content-length`` (a stream: uvicorn chunks it) is also flushed at the
    end of the event loop's current pass, as a stream's first event may come much later.
    One with a length is the app's promise of a body, which the gateway sends right after
    it (uvicorn writes a body with a length even when it is empty): it is held until that
    write or the close, with no callback per answer. An answer to ``HEAD`` has no body
    write (``lengthy=False``): its head is flushed at the end of the pass as well.
    """

    __slots__ = ("_held", "_lengthy", "_loop", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, lengthy: bool = True) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._started = False
        self._lengthy = lengthy

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif not self._started:
            self._started = True
            self._held = data
            if not (self._lengthy and _LENGTH in data):
                # A stream's first event may come much later: the headers must not wait for it.
                self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


# uvicorn writes every header name lower-case, each on its own line.
_LENGTH = b"\r\ncontent-length: "


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines and caps; build with ``with_limits``."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    closures: ClassVar[_Closures] = _Closures()

    @classmethod
    def with_limits(cls, limits: ConnectionLimits) -> type[GuardedProtocol]:
        """A subclass enforcing ``limits`` (uvicorn takes a protocol class, not an instance)."""
        return type("GuardedProtocol", (cls,), {"limits": limits, "closures": _Closures()})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One timer per connection, moved only when a deadline comes sooner than it: the
        # phases arm and clear ``_due`` (a time on the loop's clock), and the timer, when it
        # fires early, sleeps again until ``_due``. A timer per phase cost two timers and
        # two cancels per request.
        self._due: float | None = None
        self._phase = "headers"
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._in_head = False
        self._head_bytes = 0
        self._header_count = 0
        self._refused = False

    # -- connection ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "the gateway is at its connection limit; retry shortly", "over_capacity", "over the cap")
            return
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._drop_timer()
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and cycle.disconnected:
            hook = cycle.scope.get("extensions", {}).get(DISCONNECT)
            if hook is not None:
                hook.fire()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._in_head and not self._refused:
            # Bounds what the parser buffers while a huge header trickles in; the exact
            # count is in on_url/on_header.
            self._head_bytes += len(data)
            if self._head_bytes > 2 * self.limits.max_header_bytes:
                self._refuse(431, "the request headers are too large", _HEADERS_TOO_LARGE, "headers too large")

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a refusal raised inside the parser was answered already
            super().send_400_response(msg)

    # -- parser callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._due is None:
            self._await_head()
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._too_large(f"more than {self.limits.max_headers} request headers")
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self.limits.body_timeout, "body")
        self.scope.setdefault("extensions", {})[DISCONNECT] = DisconnectHook(self.loop)
        super().on_headers_complete()
        if self.cycle is not None:
            lengthy = self.scope["method"] != "HEAD"
            self.cycle.transport = _HeldHead(self.transport, self.loop, lengthy)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        due = self._due
        if due is not None and self._phase == "body":
            self._due = due + len(body) / _BODY_RATE  # the timer, if it fires early, re-arms
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        super().on_message_complete()

    # -- limits ------------------------------------------------------------------------

    def _await_head(self) -> None:
        self._in_head = True
        self._head_bytes = self._header_count = 0
        self._arm(self.limits.header_timeout, "headers")

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_header_bytes:
            self._too_large(f"the request headers are larger than {self.limits.max_header_bytes} bytes")

    def _too_large(self, message: str) -> None:
        self._refuse(431, message, _HEADERS_TOO_LARGE, "headers too large")
        raise _Refused

    def _arm(self, seconds: float, phase: str) -> None:
        due = self.loop.time() + seconds
        self._due, self._phase = due, phase
        timer = self._timer
        if timer is None or self._timer_at > due:
            if timer is not None:
                timer.cancel()
            self._timer_at = due
            self._timer = self.loop.call_at(due, self._wake)

    def _cancel_deadline(self) -> None:
        self._due = None  # the timer, if it fires, finds nothing due

    def _drop_timer(self) -> None:
        self._due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self) -> None:
        self._timer = None
        due = self._due
        if due is None:
            return
        if due - self.loop.time() > 0.005:  # armed again since this timer was set (a timer may fire a hair early)
            self._timer_at = due
            self._timer = self.loop.call_at(due, self._wake)
            return
        self._expire(self._phase)

    def _expire(self, phase: str) -> None:
        self._due = None
        if self.transport.is_closing():
            return
        seconds = self.limits.header_timeout if phase == "headers" else self.limits.body_timeout
        self._refuse(408, f"the request {phase} did not arrive within {seconds:g} s", "request_timeout", phase)

    def _refuse(self, status: int, message: str, code: str, reason: str) -> None:
        """Answer ``status`` (unless an answer has started) and close the connection."""
        self._refused = True
        self._cancel_deadline()
        self.closures.note(reason, self.loop)
        cycle = self.cycle
        # A finished cycle is the previous request's on a kept-alive connection: this one's
        # answer has not started, so it gets the status too.
        if cycle is None or not cycle.response_started or cycle.response_complete:
            # The app, if it runs, sees a disconnect; its own answer is dropped.
            body = error_body(status, message, code)
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                b"connection: close\r\nx-onion-served-by: onion\r\n\r\n%s" % (status, _REASONS[status], len(body), body)
            )
        self.transport.close()
