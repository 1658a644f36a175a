"""The values that flow through the onion: requests in, chunks and completions out.

Field names follow the OpenAI chat-completions API so that one struct decodes an HTTP
body and encodes an upstream call. Fields onion does not know are kept in ``extra`` and
sent upstream untouched. Per-request state that must never leave the gateway (request
id, caller, deadline, the trace of layers) lives on ``Request.context``.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import msgspec

__all__ = [
    "Chunk",
    "Completion",
    "Context",
    "Message",
    "Request",
    "Usage",
    "decode_request",
    "request_to_wire",
]


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    """One chat message. ``content`` is a string or a list of OpenAI content parts."""

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    extra: dict[str, Any] = {}

    @property
    def text(self) -> str:
        """The message's text: the string content, or its text parts joined."""
        content = self.content
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )


class Usage(msgspec.Struct, frozen=True, omit_defaults=True):
    """Token counts reported by the upstream (or estimated by a layer)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
        )


# A random per-process prefix and a counter: unique across processes, and far cheaper
# per request than uuid4 (which reads the OS random source every time).
_ID_PREFIX = "req_" + os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


# ``Context.state`` keys that layers write and providers read: part of the core so that
# neither side imports the other (a stack need not load the providers, nor they the layers).
RESUME_PREFIX = "resume.prefix"
"""Set by a recovering retry/fallback layer only while it reopens a stream in
``resume = "auto"`` mode: ``(sent_text, messages)``. A provider that can continue an
assistant prefix sends the text as one and replays it in front of the continuation, so
its answer reads as a whole answer to the plain request."""
DEADLINE_GUARDED = "deadline.guarded"
"""Set by the timeout layer to the deadline it enforces around every pull itself: a
provider need not add a cancel scope of its own per read for that deadline."""


class Context(msgspec.Struct):
    """Per-request state that travels with a request but is never sent upstream.

    A context is shared by every copy of a request made with
    ``msgspec.structs.replace``, so a retry sees what outer layers recorded.

    - ``request_id``: unique id, shown to users in safe error messages and in logs.
    - ``caller``: identity of the client (API key name, ``user``), used for rate limits,
      cache scopes and metrics.
    - ``deadline``: absolute time in ``anyio.current_time()`` units, or ``None``.
    - ``trace``: names of the layers entered, in order (a retry appears twice).
    - ``options``: per-request switches set by the caller or the server
      (for example ``{"cache": False}``).
    - ``trace_headers``: the incoming W3C trace context (``traceparent``,
      ``tracestate``, ``baggage``), set by the server for a tracing layer to continue;
      never other headers.
    - ``state``: scratch space for layers, keyed by layer name.
    - ``upstream_seconds``: time spent waiting for upstreams (providers add to it), so
      the gateway's own overhead is the total minus this.
    """

    request_id: str = msgspec.field(default_factory=_new_request_id)
    caller: str | None = None
    deadline: float | None = None
    trace: list[str] = msgspec.field(default_factory=list)
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    state: dict[str, Any] = msgspec.field(default_factory=dict)
    upstream_seconds: float = 0.0
    trace_headers: dict[str, str] | None = None


class Request(msgspec.Struct, frozen=True, omit_defaults=True):
    """A chat-completions request: an immutable value.

    A layer that changes a request passes a new one inward with
    ``msgspec.structs.replace(request, ...)``; the original stays valid for a retry.
    Fields cannot be reassigned; the lists and dicts inside them (``messages``, ``tools``,
    ``extra``) are plain Python containers, shared with every copy, so build new ones
    (``replace(request, messages=[*request.messages, extra])``) instead of changing them
    in place: a list appended to would change what a retry, the cache key and every
    outer layer see. (Tuples would enforce it, at a copy per decoded request.)
    """

    model: str
    messages: list[Message]
    stream: bool = False
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    stream_options: dict[str, Any] | None = None
    extra: dict[str, Any] = {}
    context: Context = msgspec.field(default_factory=Context)

    @property
    def answer_tokens_limit(self) -> int | None:
        """The completion-token limit, whichever of the two OpenAI fields sets it."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class Chunk(msgspec.Struct, omit_defaults=True):
    """One streamed piece of an answer (flat; the server maps it to OpenAI's shape).

    ``usage`` is set on the final chunk when the upstream reports it.
    """

    content: str = ""
    role: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None


class Completion(msgspec.Struct, omit_defaults=True):
    """A complete answer: what a non-streamed call returns and what a cache stores."""

    content: str = ""
    model: str = ""
    role: str = "assistant"
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = "stop"
    usage: Usage | None = None
    id: str = ""
    created: int = 0


_MESSAGE_FIELDS = frozenset(Message.__struct_fields__) - {"extra"}
_REQUEST_FIELDS = frozenset(Request.__struct_fields__) - {"extra", "context"}


def _split_message(raw: Any) -> Any:
    if isinstance(raw, dict) and not _MESSAGE_FIELDS.issuperset(raw):
        known = {k: v for k, v in raw.items() if k in _MESSAGE_FIELDS}
        known["extra"] = {k: v for k, v in raw.items() if k not in _MESSAGE_FIELDS}
        return known
    return raw


def decode_request(data: bytes | str | dict[str, Any], *, context: Context | None = None) -> Request:
    """Decode a chat-completions body (JSON bytes or a dict) into a ``Request``.

    Unknown fields, at the top level and in messages, are kept in ``extra`` so they
    reach the upstream untouched. Raises ``msgspec.ValidationError`` or
    ``msgspec.DecodeError`` with the path of the offending field.
    """
    raw = msgspec.json.decode(data) if isinstance(data, (bytes, str)) else data
    if not isinstance(raw, dict):
        raise msgspec.ValidationError("Expected a JSON object as the request body")
    fields = {k: v for k, v in raw.items() if k in _REQUEST_FIELDS}
    if len(fields) != len(raw):
        fields["extra"] = {k: v for k, v in raw.items() if k not in _REQUEST_FIELDS}
    messages = fields.get("messages")
    if isinstance(messages, list):
        fields["messages"] = [_split_message(m) for m in messages]
    if context is not None:
        fields["context"] = context
    return msgspec.convert(fields, Request)


def _message_to_wire(message: Message) -> dict[str, Any]:
    out = msgspec.to_builtins(message)
    extra = out.pop("extra", None)
    if extra:
        out.update(extra)
    return out


def request_to_wire(request: Request, **overrides: Any) -> dict[str, Any]:
    """The request as an OpenAI-compatible JSON object (context dropped, extras merged)."""
    out: dict[str, Any] = {"model": request.model, "messages": [_message_to_wire(m) for m in request.messages]}
    for name in Request.__struct_fields__[2:]:
        if name in ("extra", "context"):
            continue
        value = getattr(request, name)
        if value is not None and not (name == "stream" and value is False):
            out[name] = value
    out.update(request.extra)
    out.update(overrides)
    return out
