"""The values that flow through the onion: requests in, chunks and completions out.

Field names follow the OpenAI chat-completions API so that one struct decodes an HTTP
body and encodes an upstream call. Fields onion does not know are kept in ``extra`` and
sent upstream untouched. Per-request state that must never leave the gateway (request
id, caller, deadline, the trace of layers) lives on ``Request.context``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ._context import Context

__all__ = [
    "Choice",
    "Chunk",
    "Completion",
    "EmbeddingInput",
    "Message",
    "Request",
    "Usage",
    "decode_request",
    "request_to_wire",
    "usage_of",
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
    """Token counts reported by the upstream (or estimated by a layer).

    ``prompt_tokens_details`` and ``completion_tokens_details`` are the upstream's
    breakdowns as it sent them (``cached_tokens``, ``reasoning_tokens``, ``audio_tokens``…);
    ``extra`` its other usage fields, passed through untouched (``prompt_cache_hit_tokens``,
    ``queue_time``… of OpenAI-compatible servers): ``usage_of`` reads them from a body.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: dict[str, Any] | None = None
    completion_tokens_details: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            _add_details(self.prompt_tokens_details, other.prompt_tokens_details),
            _add_details(self.completion_tokens_details, other.completion_tokens_details),
            _add_details(self.extra, other.extra),
        )


_USAGE_FIELDS = frozenset(Usage.__struct_fields__) - {"extra"}


def usage_of(raw: Any) -> Usage:
    """An upstream's ``usage`` object as a ``Usage``, its unknown fields in ``extra``
    (a field the upstream itself names ``extra`` among them). Raises
    ``msgspec.ValidationError`` when a known field has the wrong type."""
    if not isinstance(raw, dict):
        return msgspec.convert(raw, Usage)  # its own error: "Expected `object`"
    if _USAGE_FIELDS.issuperset(raw):
        return msgspec.convert(raw, Usage)
    usage = msgspec.convert({k: v for k, v in raw.items() if k in _USAGE_FIELDS}, Usage)
    return msgspec.structs.replace(usage, extra={k: v for k, v in raw.items() if k not in _USAGE_FIELDS})


def _add_details(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    if a is None or b is None:
        return a if b is None else b
    out = dict(a)
    for key, value in b.items():
        mine = out.get(key)
        numbers = isinstance(value, int) and isinstance(mine, int)
        out[key] = mine + value if numbers else value if mine is None else mine
    return out


class EmbeddingInput(msgspec.Struct, frozen=True, omit_defaults=True):
    """What an embeddings request embeds (``Request.embedding``), as the embeddings API
    names it: ``input`` is a string, a list of strings, a list of token ids or a list of
    token-id lists (typed loosely: msgspec takes one list type in a union; the embeddings
    dialect checks the items); ``encoding_format`` (``"float"`` or ``"base64"``) and
    ``dimensions`` are passed to the upstream as the caller sent them."""

    input: str | list[Any]
    encoding_format: str | None = None
    dimensions: int | None = None

    @property
    def texts(self) -> list[str]:
        """The strings to embed (none when the input is token ids)."""
        value = self.input
        if isinstance(value, str):
            return [value]
        return [item for item in value if isinstance(item, str)]

    @property
    def token_ids(self) -> int:
        """How many token ids the input holds (``0`` when it is text)."""
        value = self.input
        if isinstance(value, str) or not value:
            return 0
        if isinstance(value[0], int):
            return len(value)
        return sum(len(item) for item in value if isinstance(item, list))

    @property
    def count(self) -> int:
        """How many vectors the answer holds: one per string or token-id list."""
        value = self.input
        if isinstance(value, str) or (value and isinstance(value[0], int)):
            return 1
        return len(value)


class Request(msgspec.Struct, frozen=True, omit_defaults=True):
    """A chat-completions request, or an embeddings request: an immutable value.

    An embeddings request (``POST /v1/embeddings``) is the same struct with ``embedding``
    set and no ``messages``: so authentication, rate limits, metrics and the exact cache
    treat it as any request, and the layers that read chat messages (guards, trimming,
    the semantic cache) find none and pass it by. ``embedding`` is never read from a
    chat-completions body (a field named so there stays in ``extra``).

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
    embedding: EmbeddingInput | None = None
    context: Context = msgspec.field(default_factory=Context)

    @property
    def answer_tokens_limit(self) -> int | None:
        """The completion-token limit, whichever of the two OpenAI fields sets it."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class Chunk(msgspec.Struct, omit_defaults=True):
    """One streamed piece of an answer (flat; the server maps it to OpenAI's shape).

    ``index`` is the choice it belongs to (``0`` unless the request asked for ``n > 1``).
    ``usage`` is set on the final chunk when the upstream reports it. ``model`` names the
    model that produced this chunk and the ones after it (set on the first chunk of each
    upstream answer, so after a fallback or a resumption the tail names its own model).
    The other fields are the OpenAI delta's and chunk's as the upstream sent them:
    ``refusal`` and ``logprobs`` pieces, ``annotations``, ``audio``; ``system_fingerprint``
    and ``service_tier``; ``extra`` holds the chunk's unknown top-level fields,
    ``choice_extra`` its choice's and ``delta_extra`` its delta's, passed through untouched.
    ``id`` and ``created`` are the upstream answer's, on its first chunk (as ``model``): a
    stream the client sees carries the id and time of the answer it began with.
    ``prompt_usage``, on a first chunk, is the usage known when the answer began (an
    Anthropic upstream's ``message_start``: input and cache tokens), for a dialect that
    announces it there; layers read ``usage``, the final count.
    """

    content: str = ""
    role: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    index: int = 0
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None
    annotations: list[Any] | None = None
    audio: dict[str, Any] | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None
    extra: dict[str, Any] = {}
    delta_extra: dict[str, Any] = {}
    choice_extra: dict[str, Any] = {}
    id: str | None = None
    created: int | None = None
    prompt_usage: Usage | None = None


class Choice(msgspec.Struct, omit_defaults=True):
    """One choice of an answer: what ``Completion`` holds for choice 0, for every other
    choice of a request with ``n > 1`` (``Completion.other_choices``, ``.all_choices()``).

    ``extra`` holds the message's unknown fields, ``choice_extra`` the choice's own
    (``stop_reason``, ``native_finish_reason``… of OpenAI-compatible servers).
    """

    index: int = 0
    content: str | None = ""
    role: str = "assistant"
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = "stop"
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None
    annotations: list[Any] | None = None
    audio: dict[str, Any] | None = None
    extra: dict[str, Any] = {}
    choice_extra: dict[str, Any] = {}


class Completion(msgspec.Struct, omit_defaults=True):
    """A complete answer: what a non-streamed call returns and what a cache stores.

    Its flat fields are choice 0's (``content``, ``tool_calls``, ``refusal``…, with
    ``message_extra`` for the message's unknown fields, ``choice_extra`` for the choice's
    own); ``other_choices`` holds the
    choices after it when the request asked for ``n > 1``. ``system_fingerprint``,
    ``service_tier`` and ``extra`` (unknown top-level fields) are the answer's own.
    A layer that reads or rewrites every choice (an output guard) uses ``all_choices``
    and ``with_choices``. The answer to an embeddings request has no text: its
    ``embeddings`` are the vectors in input order, each a list of floats or, when the
    request asked for ``encoding_format = "base64"``, the upstream's base64 string.
    """

    content: str = ""
    model: str = ""
    role: str = "assistant"
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = "stop"
    usage: Usage | None = None
    id: str = ""
    created: int = 0
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None
    annotations: list[Any] | None = None
    audio: dict[str, Any] | None = None
    message_extra: dict[str, Any] = {}
    system_fingerprint: str | None = None
    service_tier: str | None = None
    extra: dict[str, Any] = {}
    other_choices: list[Choice] | None = None
    content_null: bool = False
    embeddings: list[list[float] | str] | None = None
    choice_extra: dict[str, Any] = {}

    def all_choices(self) -> list[Choice]:
        """Every choice, choice 0 first."""
        first = Choice(
            0,
            None if self.content_null and not self.content else self.content,
            self.role,
            self.tool_calls,
            self.finish_reason,
            self.refusal,
            self.logprobs,
            self.annotations,
            self.audio,
            self.message_extra,
            self.choice_extra,
        )
        return [first, *(self.other_choices or ())]

    def with_choices(self, choices: list[Choice]) -> Completion:
        """This answer with ``choices`` in place of its own (choice 0 first)."""
        first, rest = choices[0], choices[1:]
        return msgspec.structs.replace(
            self,
            content=first.content or "",
            content_null=first.content is None,
            role=first.role,
            tool_calls=first.tool_calls,
            finish_reason=first.finish_reason,
            refusal=first.refusal,
            logprobs=first.logprobs,
            annotations=first.annotations,
            audio=first.audio,
            message_extra=first.extra,
            choice_extra=first.choice_extra,
            other_choices=rest or None,
        )


_MESSAGE_FIELDS = frozenset(Message.__struct_fields__) - {"extra"}
# ``embedding`` is set by the embeddings dialect only, never decoded from a chat body.
_REQUEST_FIELDS = frozenset(Request.__struct_fields__) - {"extra", "context", "embedding"}


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


# The fields an upstream sees, in their order (model and messages come first); a tuple
# built once, not a filter over every field on every request.
_WIRE_FIELDS = tuple(n for n in Request.__struct_fields__[2:] if n not in ("extra", "context", "embedding"))


def request_to_wire(request: Request, **overrides: Any) -> dict[str, Any]:
    """The request as an OpenAI-compatible JSON object (context dropped, extras merged)."""
    out: dict[str, Any] = {"model": request.model, "messages": [_message_to_wire(m) for m in request.messages]}
    for name in _WIRE_FIELDS:
        value = getattr(request, name)
        if value is not None:
            out[name] = value
    if out.get("stream") is False:  # the upstream's default; an explicit false is noise
        del out["stream"]
    out.update(request.extra)
    out.update(overrides)
    return out
