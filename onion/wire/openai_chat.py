"""OpenAI chat completions on the wire: the dialect of ``POST /v1/chat/completions``.

- ``decode``: a JSON body into a ``Request``; what is malformed or unsupported is a
  ``BadRequest`` whose message and ``param`` name the field.
- ``encode_completion``: a ``Completion`` as a ``chat.completion`` object.
- ``encode_stream``: a ``ChunkEncoder`` that writes each ``Chunk`` as a
  ``chat.completion.chunk`` Server-Sent Event, then the usage event when the request
  asked for it (``stream_options.include_usage``) and ``data: [DONE]``. A stream that
  fails after its first chunk ends with a ``data: {"error": ...}`` event and no
  ``[DONE]``, so a client cannot mistake a cut answer for a whole one.
- ``encode_error``: OpenAI's error body, ``{"error": {message, type, param, code}}``,
  with the status and headers for a typed error.

Pure functions of bytes and onion's types (the server does the HTTP). A stream's event
prefix (id, created, model) is encoded once, so a chunk costs one small msgspec encode
and one concatenation.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .._context import Context
from .._types import Choice, Chunk, Completion, Message, Request, Usage, decode_request, usage_of
from ..errors import BadRequest, OnionError
from . import ErrorAnswer

__all__ = [
    "ChunkEncoder",
    "decode",
    "decode_chunk",
    "decode_completion",
    "encode_completion",
    "encode_error",
    "encode_stream",
    "error_body",
]

_encode = msgspec.json.Encoder().encode
_DONE = b"data: [DONE]\n\n"
_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


# -- decoding ------------------------------------------------------------------------


def decode(body: bytes, context: Context) -> Request:
    """The request in ``body``, carrying ``context``.

    Raises ``BadRequest`` for an empty or non-JSON body (``code="invalid_json"``), a
    field of the wrong type (``param`` is the top-level field), a missing model or
    message, ``n`` outside 1..128, and a message the upstream would refuse (an unknown
    role, no ``content`` where the role needs it, a tool message without
    ``tool_call_id``; ``param`` is its path, ``messages[2].content``). Without an API
    key the ``user`` field names the caller.
    """
    if not body:
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        raw = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON (UTF-8)", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise BadRequest("the request body must be a JSON object")
    try:
        request = decode_request(raw, context=context)
    except msgspec.ValidationError as error:
        message, param = _explain(error)
        raise BadRequest(f"invalid request: {message}", param=param) from None
    _check(request)
    if context.caller is None and request.user:
        context.caller = request.user
    return request


def _explain(error: msgspec.ValidationError) -> tuple[str, str | None]:
    # msgspec ends its message with " - at `$.messages[0].role`": say it in words, and
    # name the top-level field as OpenAI's ``param`` does.
    text = str(error)
    marker = text.rfind(" - at `$")
    if marker < 0:
        return text[:300], None
    path = text[marker + 8 : -1].lstrip(".")
    return f"{text[:marker]} at '{path}'"[:300], path.split("[")[0].split(".")[0] or None


_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_NEEDS_CONTENT = frozenset({"system", "developer", "user", "tool", "function"})


def _check(request: Request) -> None:
    if not request.model:
        raise BadRequest("'model' must name a model", param="model")
    if not request.messages:
        raise BadRequest("'messages' must hold at least one message", param="messages")
    if request.n is not None and not 1 <= request.n <= 128:
        raise BadRequest("'n' must be between 1 and 128", param="n", code="invalid_value")
    for index, message in enumerate(request.messages):
        _check_message(index, message)
    for index, tool in enumerate(request.tools or ()):
        function = tool.get("function")
        named = isinstance(function, dict) and isinstance(function.get("name"), str)
        if tool.get("type") == "function" and not named:
            raise BadRequest(
                f"'tools[{index}].function' must be an object with a string 'name'", param=f"tools[{index}].function"
            )


def _check_message(index: int, message: Message) -> None:
    # What an upstream would refuse anyway, refused here with the field's path: before
    # any layer runs, so a guard, a cache or a retry never sees a request that cannot be.
    role = message.role
    if role not in _ROLES:
        raise BadRequest(
            f"'messages[{index}].role' must be one of {', '.join(sorted(_ROLES))}, not {role[:40]!r}",
            param=f"messages[{index}].role",
            code="invalid_value",
        )
    if message.content is None:
        if role in _NEEDS_CONTENT:
            raise BadRequest(
                f"'messages[{index}].content' is required for a {role} message", param=f"messages[{index}].content"
            )
        answered = message.tool_calls or "function_call" in message.extra or "audio" in message.extra
        if role == "assistant" and not answered:
            raise BadRequest(
                f"'messages[{index}].content' is required for an assistant message without tool_calls",
                param=f"messages[{index}].content",
            )
    if isinstance(message.content, list):
        for part_index, part in enumerate(message.content):
            _check_part(f"messages[{index}].content[{part_index}]", part)
    if role == "tool" and not message.tool_call_id:
        raise BadRequest(
            f"'messages[{index}].tool_call_id' is required for a tool message", param=f"messages[{index}].tool_call_id"
        )


def _check_part(where: str, part: dict[str, Any]) -> None:
    # A part the guards could not read (a text that is not a string) is one the upstream
    # refuses: refused here, so no layer passes over it unread.
    if not isinstance(part.get("type"), str):
        raise BadRequest(f"'{where}' must be an object with a string 'type'", param=where)
    if part["type"] == "text" and not isinstance(part.get("text"), str):
        raise BadRequest(f"'{where}.text' must be a string", param=f"{where}.text")


# -- a complete answer ---------------------------------------------------------------


def _usage(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.prompt_tokens_details is not None:
        out["prompt_tokens_details"] = usage.prompt_tokens_details
    if usage.completion_tokens_details is not None:
        out["completion_tokens_details"] = usage.completion_tokens_details
    if usage.extra:
        out.update(usage.extra)
    return out


def _message(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {"role": choice.role or "assistant", "content": choice.content, "refusal": choice.refusal}
    if choice.tool_calls:
        message["tool_calls"] = choice.tool_calls
    if choice.annotations is not None:
        message["annotations"] = choice.annotations
    if choice.audio is not None:
        message["audio"] = choice.audio
    if choice.extra:
        message.update(choice.extra)
    return message


def _choice_out(choice: Choice) -> dict[str, Any]:
    out = {"index": choice.index, "message": _message(choice), "logprobs": choice.logprobs}
    out["finish_reason"] = choice.finish_reason
    if choice.choice_extra:
        out.update(choice.choice_extra)
    return out


def encode_completion(completion: Completion, request: Request, model: str) -> bytes:
    """``completion`` as a ``chat.completion`` JSON object, every choice and every field it
    carries (unknown ones included). Its id, creation time and model default to
    ``chatcmpl-<request id>``, now, and ``model``."""
    choices = [_choice_out(c) for c in completion.all_choices()]
    out: dict[str, Any] = {
        "id": completion.id or f"chatcmpl-{request.context.request_id}",
        "object": "chat.completion",
        "created": completion.created or int(time.time()),
        "model": completion.model or model,
        "choices": choices,
        "usage": None if completion.usage is None else _usage(completion.usage),
    }
    if completion.system_fingerprint is not None:
        out["system_fingerprint"] = completion.system_fingerprint
    if completion.service_tier is not None:
        out["service_tier"] = completion.service_tier
    if completion.extra:
        out.update(completion.extra)
    return _encode(out)


# -- the upstream's answer (the same dialect, read by the OpenAI provider) ------------

_TOP_FIELDS = frozenset({"id", "object", "created", "model", "choices", "usage", "system_fingerprint", "service_tier"})
_MESSAGE_FIELDS = frozenset({"role", "content", "tool_calls", "refusal", "annotations", "audio"})
_CHUNK_FIELDS = _TOP_FIELDS
_DELTA_FIELDS = _MESSAGE_FIELDS
_CHOICE_FIELDS = frozenset({"index", "message", "logprobs", "finish_reason"})
_CHUNK_CHOICE_FIELDS = frozenset({"index", "delta", "logprobs", "finish_reason"})


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _choice(raw: dict[str, Any], position: int) -> Choice:
    message = raw.get("message") or {}
    index = raw.get("index", position)
    if not isinstance(index, int) or not isinstance(message, dict):
        raise TypeError("a choice needs an integer index and a message object")
    return Choice(
        index,
        _str(message.get("content")),
        _str(message.get("role")) or "assistant",
        message.get("tool_calls") or None,
        _str(raw.get("finish_reason")),
        _str(message.get("refusal")),
        raw.get("logprobs"),
        message.get("annotations"),
        message.get("audio"),
        _extra(message, _MESSAGE_FIELDS),
        _extra(raw, _CHOICE_FIELDS),
    )


def _extra(body: dict[str, Any], known: frozenset[str]) -> dict[str, Any]:
    if known.issuperset(body):
        return {}
    return {k: v for k, v in body.items() if k not in known}


def _index(choice: Choice) -> int:
    return choice.index


def decode_completion(data: bytes, model: str = "") -> Completion:
    """An OpenAI ``chat.completion`` body as a ``Completion``: every choice, every field
    (unknown ones kept). Raises ``ValueError`` or ``TypeError`` when it is not one."""
    body = msgspec.json.decode(data)
    if not isinstance(body, dict):
        raise TypeError("the answer is not a JSON object")
    raw_choices = body.get("choices")
    if not isinstance(raw_choices, list) or not raw_choices:
        raise ValueError("the answer has no choices")
    choices = [_choice(c, i) for i, c in enumerate(raw_choices)]
    if len(choices) > 1:
        choices.sort(key=_index)
    usage = body.get("usage")
    completion = Completion(
        model=_str(body.get("model")) or model,
        usage=None if usage is None else usage_of(usage),
        id=_str(body.get("id")) or "",
        created=body.get("created") or 0,
        system_fingerprint=_str(body.get("system_fingerprint")),
        service_tier=_str(body.get("service_tier")),
        extra=_extra(body, _TOP_FIELDS),
    )
    return completion.with_choices(choices)


def decode_chunk(body: dict[str, Any], *, with_model: bool) -> list[Chunk]:
    """The chunks of one decoded ``chat.completion.chunk`` event: one per choice (the
    usage on the last), or one for the usage alone. ``with_model``: name its model."""
    model = _str(body.get("model")) if with_model else None
    if with_model:  # the answer's first event: its id and time name the stream
        answer_id, created = _str(body.get("id")), body.get("created")
        created = created if isinstance(created, int) and not isinstance(created, bool) else None
    else:
        answer_id = created = None
    usage = body.get("usage")
    usage = None if usage is None else usage_of(usage)
    fingerprint, tier = _str(body.get("system_fingerprint")), _str(body.get("service_tier"))
    extra = _extra(body, _CHUNK_FIELDS)
    choices = body.get("choices") or []
    chunks: list[Chunk] = []
    for position, choice in enumerate(choices):
        delta = choice.get("delta") or {}
        chunks.append(
            Chunk(
                content=_str(delta.get("content")) or "",
                role=_str(delta.get("role")),
                tool_calls=delta.get("tool_calls") or None,
                finish_reason=_str(choice.get("finish_reason")),
                model=model if not chunks else None,
                id=answer_id if not chunks else None,
                created=created if not chunks else None,
                index=choice.get("index", position),
                refusal=_str(delta.get("refusal")),
                logprobs=choice.get("logprobs"),
                annotations=delta.get("annotations"),
                audio=delta.get("audio"),
                system_fingerprint=fingerprint,
                service_tier=tier,
                extra=extra,
                delta_extra=_extra(delta, _DELTA_FIELDS),
                choice_extra=_extra(choice, _CHUNK_CHOICE_FIELDS),
            )
        )
    if not chunks:
        if usage is None and not model and not extra:
            return chunks
        only = Chunk(model=model, system_fingerprint=fingerprint, service_tier=tier, extra=extra)
        only.id, only.created = answer_id, created
        chunks.append(only)
    chunks[-1].usage = usage
    return chunks


# -- a streamed answer ---------------------------------------------------------------


class _OutDelta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | msgspec.UnsetType | None = msgspec.UNSET  # a first delta's null is sent
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    annotations: list[Any] | None = None
    audio: dict[str, Any] | None = None


class ChunkEncoder:
    """Writes one streamed answer as ``chat.completion.chunk`` events.

    Every event shares one id and creation time: the upstream answer's, from its first
    chunk (after a fallback or a resumption the stream keeps the id it began with), else
    ``chatcmpl-<request id>`` and now; encoded once, at the first chunk. The model is the
    one the latest chunk that named one named (after a fallback or a resumption, the
    tail's), ``system_fingerprint`` and ``service_tier`` the latest the upstream sent.
    Each event carries one choice, with its ``index``; a tool-call delta without an
    ``index`` gets its position. It keeps the usage of the last chunk that had one, for
    the usage event ``end`` sends when the request set ``stream_options.include_usage``.

    A choice's first delta, the bare role, waits for the choice's next chunk: its
    ``content`` is ``""`` before text, as OpenAI's is, and ``null`` before tool calls or
    a refusal, as OpenAI's is there (the SDKs' stream helpers then end a tool-only
    answer with ``content`` ``None``, as the complete answer has it).
    """

    __slots__ = (
        "_created",
        "_head",
        "_held",
        "_include_usage",
        "_model",
        "_model_name",
        "_request_id",
        "_top",
        "_top_values",
        "usage",
    )

    def __init__(self, request: Request, model: str, *, created: int | None = None) -> None:
        self._request_id = request.context.request_id
        self._created = created
        self._head = b""
        self._model_name = model
        self._model = _encode(model)
        self._top = b""
        self._top_values: tuple[str | None, str | None] = (None, None)
        self._held: dict[int, Chunk] = {}
        options = request.stream_options
        self._include_usage = bool(options and options.get("include_usage"))
        self.usage: Usage | None = None

    def _name(self, answer_id: str | None, created: int | None) -> bytes:
        self._head = (
            b'data: {"id":'
            + _encode(answer_id or f"chatcmpl-{self._request_id}")
            + b',"object":"chat.completion.chunk","created":'
            + str(created or self._created or int(time.time())).encode()
            + b',"model":'
        )
        return self._head

    def _prefix(self, chunk: Chunk) -> bytes:
        head = self._head or self._name(chunk.id, chunk.created)
        if chunk.model and chunk.model != self._model_name:
            self._model_name, self._model = chunk.model, _encode(chunk.model)
        fingerprint = chunk.system_fingerprint or self._top_values[0]
        tier = chunk.service_tier or self._top_values[1]
        if (fingerprint, tier) != self._top_values:
            self._top_values = (fingerprint, tier)
            top = b""
            if fingerprint is not None:
                top += b',"system_fingerprint":' + _encode(fingerprint)
            if tier is not None:
                top += b',"service_tier":' + _encode(tier)
            self._top = top
        return head + self._model + self._top

    def event(self, chunk: Chunk) -> bytes | None:
        """The event for ``chunk``, or ``None`` when it has nothing to show (empty, or usage only)."""
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.id and not self._head:  # named by the answer's first chunk, shown or not
            self._name(chunk.id, chunk.created)
        if _says_nothing(chunk):
            if chunk.role:  # a bare role: its content depends on what comes next
                self._held[chunk.index] = chunk
            return None
        held = self._held.pop(chunk.index, None) if self._held else None
        if held is not None:
            return self._event(held, text_next=bool(chunk.content) or not _opens_other(chunk)) + self._event(chunk)
        return self._event(chunk)

    def _event(self, chunk: Chunk, text_next: bool = True) -> bytes:
        # A delta after the first omits what it does not change. A first delta (the one
        # with the role) says ``content`` "" before text and null before tool calls or a
        # refusal, as OpenAI's do.
        content: str | msgspec.UnsetType | None = msgspec.UNSET
        if chunk.content:
            content = chunk.content
        elif chunk.role:
            content = "" if text_next and not _opens_other(chunk) else None
        tool_calls = chunk.tool_calls
        if tool_calls and any("index" not in d for d in tool_calls):
            tool_calls = [d if "index" in d else {"index": i, **d} for i, d in enumerate(tool_calls)]
        delta_struct = _OutDelta(chunk.role, content, chunk.refusal, tool_calls, chunk.annotations, chunk.audio)
        if chunk.delta_extra:
            delta = _encode({**msgspec.to_builtins(delta_struct), **chunk.delta_extra})
        else:
            delta = _encode(delta_struct)
        return self._wrap(chunk, delta)

    def _wrap(self, chunk: Chunk, delta: bytes) -> bytes:
        out = self._prefix(chunk) + b',"choices":[{"index":' + str(chunk.index).encode() + b',"delta":' + delta
        # ``logprobs`` and (when the usage event was asked for) ``usage`` are null on every
        # event, as OpenAI sends them: clients that read the JSON see the same fields.
        out += b',"logprobs":' + (b"null" if chunk.logprobs is None else _encode(chunk.logprobs))
        finish = b"null" if chunk.finish_reason is None else _encode(chunk.finish_reason)
        out += b',"finish_reason":' + finish
        if chunk.choice_extra:
            out += b"," + _encode(chunk.choice_extra)[1:-1]
        out += b'}],"usage":null' if self._include_usage else b"}]"
        if chunk.extra:
            out += b"," + _encode(chunk.extra)[1:-1]
        return out + b"}\n\n"

    def end(self) -> bytes:
        """``data: [DONE]``, after the usage event when the request asked for one (and
        after the role of a choice that ended with nothing more)."""
        roles = b"".join(self._event(held) for held in self._held.values())
        self._held.clear()
        if self.usage is None or not self._include_usage:
            return roles + _DONE
        head = (self._head or self._name(None, None)) + self._model + self._top
        return roles + head + b',"choices":[],"usage":' + _encode(_usage(self.usage)) + b"}\n\n" + _DONE

    def error(self, error: BaseException) -> bytes:
        """The ``data: {"error": ...}`` event that ends a stream cut by ``error``."""
        return b"data: " + encode_error(error, self._request_id).body + b"\n\n"


def _says_nothing(chunk: Chunk) -> bool:
    """Whether ``chunk`` has nothing to show but, perhaps, who speaks (a choice's first
    delta, as OpenAI sends it)."""
    return not (
        chunk.content
        or chunk.tool_calls
        or chunk.finish_reason
        or chunk.refusal is not None
        or chunk.logprobs is not None
        or chunk.annotations is not None
        or chunk.audio is not None
        or chunk.delta_extra
        or chunk.choice_extra
    )


def _opens_other(chunk: Chunk) -> bool:
    """Whether ``chunk`` begins a choice's tool calls or refusal (its content is null)."""
    return bool(chunk.tool_calls) or chunk.refusal is not None


def encode_stream(request: Request, model: str) -> ChunkEncoder:
    """A ``ChunkEncoder`` for the streamed answer to ``request`` from ``model``."""
    return ChunkEncoder(request, model)


# -- errors --------------------------------------------------------------------------


class _OutError(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _OutError


def error_body(status: int, message: str, code: str | None, param: str | None = None, kind: str | None = None) -> bytes:
    """OpenAI's error body; its ``type`` is ``kind``, else follows from ``status`` as OpenAI's does."""
    kind = kind or _ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "server_error")
    return _encode(_ErrorBody(_OutError(message, kind, param, code)))


_RETRY_YES = (b"x-should-retry", b"true")
_RETRY_NO = (b"x-should-retry", b"false")


def encode_error(error: BaseException, request_id: str | None = None) -> ErrorAnswer:
    """The answer for ``error``.

    An ``OnionError`` keeps its status, type, code and param and shows its public message,
    with ``request_id`` appended for a 5xx (once: a message that already names it, as a
    masked error's does, is left alone); a 429 or 503 carries ``Retry-After`` (whole
    seconds, rounded up) when the error knows one. Anything else is a 500 that names only
    the request id. Every answer says ``x-should-retry: true|false`` (the OpenAI SDKs
    honour it): false for what the same request cannot get past.
    """
    if not isinstance(error, OnionError):
        message = "internal error" if request_id is None else f"internal error (request id {request_id})"
        return ErrorAnswer(500, error_body(500, message, "internal_error"), [_RETRY_YES])
    status, message, code = error.status, error.public_message, error.code
    if status >= 500 and request_id is not None and request_id not in message:
        message = f"{message} (request id {request_id})"
    headers = [_RETRY_YES if error.should_retry else _RETRY_NO]
    retry_after = getattr(error, "retry_after", None)
    if isinstance(retry_after, (int, float)) and status in (429, 503, 529):
        headers.append((b"retry-after", str(max(1, int(-(-retry_after // 1)))).encode()))
    return ErrorAnswer(status, error_body(status, message, code, error.param, error.type), headers)
