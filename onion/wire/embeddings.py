"""OpenAI embeddings on the wire: the dialect of ``POST /v1/embeddings``.

An embeddings call is decoded into the one internal ``Request``, with
``Request.embedding`` (an ``EmbeddingInput``) set and no messages, so it runs through
the same stack as a chat call: the API key, rate limits and budgets (which count its
input tokens with ``onion.input_tokens``), metrics (token usage and cost), the exact
cache (``embedding`` is part of its key). The layers that read chat messages (guards,
trimming, the semantic cache) find none and pass it by. The answer's vectors travel in
``Completion.embeddings``.

- ``decode``: the JSON body into a ``Request``: ``model``, ``input`` (a string, a list of
  strings, a list of token ids, a list of token-id lists), ``encoding_format``
  (``"float"`` or ``"base64"``), ``dimensions``, ``user``; unknown fields pass through
  to the upstream in ``extra``. What is malformed is a ``BadRequest`` naming the field.
- ``encode_completion``: the answer as OpenAI's ``list`` of ``embedding`` objects, each
  vector in the format the caller asked for (a float vector becomes little-endian
  float32 base64, and back, whatever the upstream sent).
- ``request_to_wire`` and ``decode_answer``: the upstream side, for the OpenAI provider.

Embeddings are never streamed: ``stream: true`` is a 400.
"""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Any

import msgspec

from .._context import Context
from .._types import Completion, EmbeddingInput, Request, usage_of
from ..errors import BadRequest
from . import StreamEncoder
from .openai_chat import _explain, encode_error

__all__ = ["decode", "decode_answer", "encode_completion", "encode_error", "encode_stream", "request_to_wire"]

_encode = msgspec.json.Encoder().encode
_MAX_INPUTS = 2048
_FORMATS = ("float", "base64")
_KNOWN = frozenset({"model", "input", "encoding_format", "dimensions", "user", "stream"})


class _Body(msgspec.Struct):
    model: str
    input: str | list[Any]
    encoding_format: str | None = None
    dimensions: int | None = None
    user: str | None = None
    stream: bool | None = None


# -- decoding ------------------------------------------------------------------------


def decode(body: bytes, context: Context) -> Request:
    """The embeddings request in ``body``, carrying ``context``.

    Raises ``BadRequest`` for a body that is not a JSON object, a missing or mistyped
    field (``param`` names it), an empty input or one of more than 2048 items, an unknown
    ``encoding_format``, ``dimensions`` below 1 and ``stream: true``. Without an API key
    the ``user`` field names the caller.
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
        parsed = msgspec.convert({k: v for k, v in raw.items() if k in _KNOWN}, _Body)
    except msgspec.ValidationError as error:
        message, param = _explain(error)
        raise BadRequest(f"invalid request: {message}", param=param) from None
    _check(parsed)
    embedding = EmbeddingInput(parsed.input, parsed.encoding_format, parsed.dimensions)
    extra = {k: v for k, v in raw.items() if k not in _KNOWN}
    request = Request(parsed.model, [], user=parsed.user, extra=extra, embedding=embedding, context=context)
    if context.caller is None and request.user:
        context.caller = request.user
    return request


def _check(body: _Body) -> None:
    if not body.model:
        raise BadRequest("'model' must name a model", param="model")
    if body.stream:
        raise BadRequest("embeddings are not streamed; leave 'stream' out", param="stream")
    value = body.input
    if isinstance(value, str):
        if not value:
            raise BadRequest("'input' must not be an empty string", param="input")
    elif not value:
        raise BadRequest("'input' must hold at least one item", param="input")
    elif len(value) > _MAX_INPUTS:
        raise BadRequest(f"'input' may hold at most {_MAX_INPUTS} items", param="input")
    else:
        for index, item in enumerate(value):
            _check_item(index, item, type(value[0]))
    if body.encoding_format is not None and body.encoding_format not in _FORMATS:
        raise BadRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format", code="invalid_value")
    if body.dimensions is not None and body.dimensions < 1:
        raise BadRequest("'dimensions' must be at least 1", param="dimensions", code="invalid_value")


def _check_item(index: int, item: Any, kind: type) -> None:
    where = f"input[{index}]"
    if kind not in (str, int, list) or not isinstance(item, kind) or isinstance(item, bool):
        raise BadRequest(
            "'input' must be a string, a list of strings, a list of token ids or a list of token-id lists, "
            f"one kind throughout ('{where}' differs)",
            param="input",
        )
    if item == "" or item == []:
        raise BadRequest(f"'{where}' must not be empty", param=where)
    if kind is int and item < 0:
        raise BadRequest(f"'{where}' is a negative token id", param=where)
    if kind is list and not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in item):
        raise BadRequest(f"'{where}' must hold token ids (integers from 0)", param=where)


# -- the upstream side (the OpenAI provider) ------------------------------------------


def request_to_wire(request: Request) -> dict[str, Any]:
    """The embeddings request as the upstream's JSON object (unknown fields merged)."""
    embedding = request.embedding
    if embedding is None:
        raise ValueError("not an embeddings request")
    out: dict[str, Any] = {"model": request.model, "input": embedding.input}
    if embedding.encoding_format is not None:
        out["encoding_format"] = embedding.encoding_format
    if embedding.dimensions is not None:
        out["dimensions"] = embedding.dimensions
    if request.user is not None:
        out["user"] = request.user
    out.update(request.extra)
    return out


_ANSWER_FIELDS = frozenset({"object", "data", "model", "usage"})


def decode_answer(data: bytes, request: Request) -> Completion:
    """An OpenAI embeddings answer as a ``Completion``: its vectors in input order in
    ``embeddings``, its usage, its unknown top-level fields in ``extra``. Raises
    ``ValueError`` or ``TypeError`` when it is not one."""
    body = msgspec.json.decode(data)
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise ValueError("the answer is not an embeddings list")
    items = sorted(body["data"], key=lambda item: item.get("index", 0))
    vectors: list[list[float] | str] = []
    for item in items:
        vector = item.get("embedding")
        if not isinstance(vector, (list, str)):
            raise TypeError("an embedding is neither a list of numbers nor a base64 string")
        vectors.append(vector)
    usage = body.get("usage")
    return Completion(
        model=str(body.get("model") or request.model),
        usage=None if usage is None else usage_of(usage),
        finish_reason=None,
        extra={k: v for k, v in body.items() if k not in _ANSWER_FIELDS},
        embeddings=vectors,
    )


# -- the answer ----------------------------------------------------------------------


def _to_base64(vector: list[float]) -> str:
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _from_base64(text: str) -> list[float]:
    packed = array("f")
    packed.frombytes(base64.b64decode(text))
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tolist()


def _as_asked(vector: list[float] | str, want_base64: bool) -> list[float] | str:
    if want_base64:
        return vector if isinstance(vector, str) else _to_base64(vector)
    return _from_base64(vector) if isinstance(vector, str) else vector


def encode_completion(completion: Completion, request: Request, model: str) -> bytes:
    """``completion`` as OpenAI's embeddings answer: one ``embedding`` object per vector
    in input order, each in the ``encoding_format`` the request asked for (``float`` by
    default), the model, ``usage`` (prompt and total tokens) and unknown fields."""
    embedding = request.embedding
    want_base64 = embedding is not None and embedding.encoding_format == "base64"
    data = [
        {"object": "embedding", "index": index, "embedding": _as_asked(vector, want_base64)}
        for index, vector in enumerate(completion.embeddings or ())
    ]
    usage = completion.usage
    out: dict[str, Any] = {
        "object": "list",
        "data": data,
        "model": completion.model or model,
        "usage": {
            "prompt_tokens": 0 if usage is None else usage.prompt_tokens,
            "total_tokens": 0 if usage is None else usage.total_tokens,
        },
    }
    if usage is not None:  # what else the upstream's usage said, as it said it
        if usage.prompt_tokens_details is not None:
            out["usage"]["prompt_tokens_details"] = usage.prompt_tokens_details
        if usage.extra:
            out["usage"].update(usage.extra)
    if completion.extra:
        out.update(completion.extra)
    return _encode(out)


def encode_stream(request: Request, model: str) -> StreamEncoder:
    """Never used: ``decode`` refuses ``stream: true``, so the answer is always complete."""
    raise BadRequest("embeddings are not streamed; leave 'stream' out", param="stream")
