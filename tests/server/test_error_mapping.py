"""The gateway over real HTTP maps an open circuit to 503 with Retry-After and a timeout to
504, in OpenAI-shaped error bodies whose messages reveal nothing but the request id, for a
complete answer and for a stream that fails before its first chunk."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable

import httpx
import pytest

from onion import CallNext, Chunk, CircuitOpen, Request, Response, Stack, Timeout
from onion.server import GatewayApp
from onion.testing import ScriptedProvider
from onion.testing.upstream import ThreadedServer

SECRET = "10.0.0.7:8443 sk-upstream-key"

ERRORS: dict[str, tuple[Callable[[], Exception], int, str, str, str | None]] = {
    # name: (error, status, code, public message, Retry-After)
    "circuit_open": (
        lambda: CircuitOpen(f"circuit for 'm' is open after failures at {SECRET}", model="m", retry_after=4.2),
        503,
        "service_unavailable",
        "the model is temporarily unavailable",
        "5",
    ),
    "timeout": (
        lambda: Timeout(f"no chunk from {SECRET} within 3 s", phase="first_chunk"),
        504,
        "timeout",
        "the model took too long to answer",
        None,
    ),
}


class Raising:
    """A layer that fails the call with ``error``: at once for a complete answer, and
    before the first chunk for a stream (the provider's stream is opened, then closed)."""

    name = "raising"

    def __init__(self, error: Callable[[], Exception]) -> None:
        self.error = error

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        if not request.stream:
            raise self.error()

        async def fail_first(chunks: AsyncIterator[Chunk]) -> AsyncGenerator[Chunk, None]:
            try:
                raise self.error()
                yield Chunk()  # a generator that never yields
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]

        return response.wrap(fail_first)


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("name", list(ERRORS))
async def test_circuit_open_and_timeout_map_to_safe_openai_errors(name: str, stream: bool) -> None:
    error, status, code, public, retry_after = ERRORS[name]
    provider = ScriptedProvider()
    app = GatewayApp(Stack([Raising(error)], provider))
    async with ThreadedServer(app) as server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        response = await http.post("/v1/chat/completions", json=body)
    assert provider.calls == 1
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")  # a plain error, not an SSE stream
    assert response.headers.get("retry-after") == retry_after
    request_id = response.headers["x-request-id"]
    assert response.json() == {
        "error": {
            "message": f"{public} (request id {request_id})",
            "type": "server_error",
            "param": None,
            "code": code,
        }
    }
    assert "10.0.0.7" not in response.text and "sk-upstream" not in response.text
    if stream:
        assert all(record.closed for record in provider.streams)
