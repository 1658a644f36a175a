"""The wire: the HTTP APIs the gateway speaks, each one a dialect module of pure functions.

A dialect decodes the JSON body of its API's request into the one internal ``Request``
and encodes what comes back (a ``Completion``, a stream of ``Chunk``s, an error) into
its API's JSON and Server-Sent Events. It knows nothing of ASGI: the server
(``onion.server``) checks the key, reads the body, picks the dialect by route, calls the
stack and writes the bytes the dialect gives it. So every layer works unchanged for
every dialect, and what a dialect cannot translate is a 400 naming the field.

- ``openai_chat``: OpenAI chat completions, ``POST /v1/chat/completions``;
- ``responses``: OpenAI's Responses API, stateless, ``POST /v1/responses``;
- ``embeddings``: OpenAI embeddings, ``POST /v1/embeddings`` (``Request.embedding``);
- ``anthropic_messages``: Anthropic Messages, ``POST /v1/messages`` (and ``count_tokens``).

A new dialect is a new module here whose functions satisfy ``Dialect``, plus one route
in ``onion.server``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from .._context import Context
from .._types import Chunk, Completion, Request

__all__ = ["Dialect", "ErrorAnswer", "StreamEncoder"]


class ErrorAnswer(NamedTuple):
    """An error as a dialect answers it: the HTTP status, the body, and the headers it
    needs besides its JSON content type (``Retry-After``)."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


class StreamEncoder(Protocol):
    """Encodes one streamed answer as the dialect's Server-Sent Events; made per stream,
    so it may keep what it needs across chunks (the usage of the last one)."""

    def event(self, chunk: Chunk) -> bytes | None:
        """The event(s) for ``chunk``, or ``None`` when it carries nothing to send."""
        ...

    def end(self) -> bytes:
        """The events that close a stream that ran to its end."""
        ...

    def error(self, error: BaseException) -> bytes:
        """The last event of a stream that failed after its first chunk went out."""
        ...


class Dialect(Protocol):
    """What the server needs of a dialect; a module of four functions satisfies it."""

    def decode(self, body: bytes, context: Context) -> Request:
        """The request in ``body`` (JSON bytes), carrying ``context``; raises
        ``BadRequest`` naming the field that cannot be decoded or translated."""
        ...

    def encode_completion(self, completion: Completion, request: Request, model: str) -> bytes:
        """The JSON body of a complete answer to ``request``; ``model`` names the model
        that served it when ``completion`` does not."""
        ...

    def encode_stream(self, request: Request, model: str) -> StreamEncoder:
        """An encoder for the streamed answer to ``request``."""
        ...

    def encode_error(self, error: BaseException, request_id: str | None = None) -> ErrorAnswer:
        """The answer for ``error``: an ``OnionError`` shows its public message; anything
        else is a 500 that names only ``request_id``."""
        ...
