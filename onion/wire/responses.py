"""OpenAI's Responses API on the wire: the dialect of ``POST /v1/responses``, stateless.

A Responses request is decoded into the one internal (chat-completions) ``Request`` and
its answer encoded back, so every layer works unchanged and any OpenAI-compatible
upstream serves it. What maps:

- ``input`` (a string, or items: messages with text, image, file and audio parts,
  ``function_call`` and ``function_call_output``) -> ``messages``: a function call joins
  the assistant message before it as a tool call, an output becomes a ``tool`` message;
- ``instructions`` -> a leading ``system`` message (and back: a leading system message
  with text content is the request's ``instructions``);
- function ``tools``, ``tool_choice``, ``parallel_tool_calls``; ``text.format`` ->
  ``response_format`` (``json_schema``, ``json_object``, ``text``), ``text.verbosity``;
  ``max_output_tokens`` -> ``max_completion_tokens``; ``temperature``, ``top_p``,
  ``user``, ``metadata``, ``service_tier``, ``safety_identifier``, ``prompt_cache_key``;
  ``reasoning.effort`` -> ``reasoning_effort``;
- the answer: reasoning text (``reasoning_content``, as reasoning models behind
  OpenAI-compatible servers and Anthropic's thinking blocks give it) -> a ``reasoning``
  item with ``reasoning_text`` content, first; text and refusal -> a ``message`` item,
  tool calls -> ``function_call`` items, ``finish_reason`` ``length``/``content_filter`` -> status ``incomplete``,
  usage -> ``input_tokens``/``output_tokens`` with their details.

What needs OpenAI's server-side state or tools is a 400 that says so, never dropped:
``previous_response_id``, ``conversation``, ``store: true``, ``background``, ``prompt``,
built-in tools (web search, file search, computer use…), ``item_reference`` and
``reasoning`` items, ``include``, ``truncation: "auto"``, and any field this module
does not know (``REFUSED`` lists the reasons).

Streams follow the documented event sequence (``response.created``,
``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta`` …, ``response.function_call_arguments.delta``/``.done``,
``response.output_item.done``, ``response.completed``), each with its
``sequence_number``. Pure functions of bytes and onion's types.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .._context import Context
from .._types import Chunk, Completion, Message, Request, Usage
from ..errors import BadRequest
from .openai_chat import encode_error

__all__ = [
    "REFUSED",
    "ResponsesStreamEncoder",
    "decode",
    "decode_json",
    "encode_completion",
    "encode_error",
    "encode_stream",
    "output_items",
    "to_responses",
]

_encode = msgspec.json.Encoder().encode

REFUSED: dict[str, str] = {
    "previous_response_id": "the gateway is stateless and keeps no responses; send the whole conversation in 'input'",
    "conversation": "the gateway is stateless and keeps no conversations; send the whole conversation in 'input'",
    "background": "background responses need server-side state the gateway does not keep",
    "prompt": "stored prompt templates live on OpenAI's servers; send the prompt in 'instructions' and 'input'",
    "include": "the gateway answers through chat completions, which give none of the outputs 'include' asks for",
    "max_tool_calls": "'max_tool_calls' limits built-in tools, which the gateway does not serve",
    "top_logprobs": "log probabilities are not translated to the Responses API; leave 'top_logprobs' out",
}
"""Responses fields refused with a 400, and why (when set to anything but their default)."""

_ACCEPTED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "max_output_tokens",
        "temperature",
        "top_p",
        "user",
        "metadata",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "reasoning",
        "store",
        "stream",
        "stream_options",
        "truncation",
    }
)
# Sent upstream as chat-completions fields of the same name.
_PASSED = ("metadata", "service_tier", "safety_identifier", "prompt_cache_key")
_ROLES = frozenset({"user", "assistant", "system", "developer"})


# -- decoding ------------------------------------------------------------------------


def decode(body: bytes, context: Context) -> Request:
    """The Responses request in ``body`` as an internal request carrying ``context``.

    Raises ``BadRequest`` naming the field (``param``) for a malformed body, a missing
    ``model`` or ``input``, a field of the wrong type, and any feature the gateway cannot
    serve statelessly through chat completions (see the module's docstring).
    """
    if not body:
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        raw = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON (UTF-8)", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise BadRequest("the request body must be a JSON object")
    return decode_json(raw, context)


def decode_json(raw: dict[str, Any], context: Context | None = None) -> Request:
    """``decode`` for a body already parsed (a dict)."""
    _refuse_stateful(raw)
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must name a model", param="model")
    messages = _messages(raw)
    extra: dict[str, Any] = {k: raw[k] for k in _PASSED if raw.get(k) is not None}
    format_, verbosity = _text(raw.get("text"))
    if verbosity is not None:
        extra["verbosity"] = verbosity
    effort = _reasoning(raw.get("reasoning"))
    if effort is not None:
        extra["reasoning_effort"] = effort
    fields: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": _typed(raw, "stream", bool) or False,
        "max_completion_tokens": _typed(raw, "max_output_tokens", int),
        "temperature": _number(raw, "temperature"),
        "top_p": _number(raw, "top_p"),
        "user": _typed(raw, "user", str),
        "tools": _tools(raw.get("tools")),
        "tool_choice": _tool_choice(raw.get("tool_choice")),
        "parallel_tool_calls": _typed(raw, "parallel_tool_calls", bool),
        "response_format": format_,
        "extra": extra,
    }
    request = Request(**{k: v for k, v in fields.items() if v is not None}, context=context or Context())
    if request.context.caller is None and request.user:
        request.context.caller = request.user
    return request


def _refuse_stateful(raw: dict[str, Any]) -> None:
    for field in raw:
        if field in REFUSED and raw[field] not in (None, False, []):
            raise BadRequest(f"'{field}' is not supported: {REFUSED[field]}", param=field, code="unsupported_parameter")
        if field not in _ACCEPTED and field not in REFUSED:
            raise BadRequest(
                f"'{field[:60]}' is not a Responses API field the gateway translates",
                param=field[:60],
                code="unsupported_parameter",
            )
    if raw.get("store"):
        raise BadRequest(
            "'store: true' is not supported: the gateway is stateless and keeps no responses; set 'store' to false",
            param="store",
            code="unsupported_parameter",
        )
    if raw.get("truncation") not in (None, "disabled"):
        raise BadRequest(
            "'truncation' must be 'disabled': the gateway's trim_context layer shortens conversations instead",
            param="truncation",
            code="unsupported_parameter",
        )


def _typed(raw: dict[str, Any], field: str, kind: type) -> Any:
    value = raw.get(field)
    if value is None or (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
        return value
    raise BadRequest(f"'{field}' must be a {kind.__name__}", param=field)


def _number(raw: dict[str, Any], field: str) -> float | None:
    value = raw.get(field)
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    raise BadRequest(f"'{field}' must be a number", param=field)


def _text(text: Any) -> tuple[dict[str, Any] | None, str | None]:
    """``text`` -> (``response_format``, ``verbosity``)."""
    if text is None:
        return None, None
    if not isinstance(text, dict) or not set(text) <= {"format", "verbosity"}:
        raise BadRequest("'text' must be an object with 'format' and 'verbosity'", param="text")
    fmt = text.get("format")
    if fmt is None:
        response_format = None
    elif not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise BadRequest("'text.format.type' must be 'text', 'json_object' or 'json_schema'", param="text.format")
    elif fmt["type"] != "json_schema":
        response_format = {"type": fmt["type"]}
    else:
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise BadRequest("'text.format' of type json_schema needs a 'name' and a 'schema'", param="text.format")
        schema = {k: fmt[k] for k in ("name", "schema", "description", "strict") if fmt.get(k) is not None}
        response_format = {"type": "json_schema", "json_schema": schema}
    verbosity = text.get("verbosity")
    if verbosity is not None and not isinstance(verbosity, str):
        raise BadRequest("'text.verbosity' must be a string", param="text.verbosity")
    return response_format, verbosity


def _reasoning(reasoning: Any) -> str | None:
    if reasoning is None:
        return None
    if not isinstance(reasoning, dict):
        raise BadRequest("'reasoning' must be an object", param="reasoning")
    for key, value in reasoning.items():
        if key != "effort" and value is not None:
            raise BadRequest(
                f"'reasoning.{key[:40]}' is not supported: chat completions return no reasoning summaries",
                param=f"reasoning.{key[:40]}",
                code="unsupported_parameter",
            )
    effort = reasoning.get("effort")
    if effort is not None and not isinstance(effort, str):
        raise BadRequest("'reasoning.effort' must be a string", param="reasoning.effort")
    return effort


def _tools(tools: Any) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be a list", param="tools")
    out = []
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise BadRequest(
                f"'tools[{index}]' of type {str(kind)[:40]!r} is not supported: built-in tools run on OpenAI's "
                "servers; the gateway serves function tools",
                param=f"tools[{index}].type",
                code="unsupported_parameter",
            )
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise BadRequest(f"'tools[{index}].name' must name the function", param=f"tools[{index}].name")
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> str | dict[str, Any] | None:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise BadRequest(
        "'tool_choice' must be 'auto', 'none', 'required' or a function ({'type': 'function', 'name': ...})",
        param="tool_choice",
        code="unsupported_parameter",
    )


# -- input items -> messages ---------------------------------------------------------


def _messages(raw: dict[str, Any]) -> list[Message]:
    messages: list[Message] = []
    instructions = raw.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise BadRequest("'instructions' must be a string", param="instructions")
        messages.append(Message("system", instructions))
    value = raw.get("input")
    if isinstance(value, str):
        messages.append(Message("user", value))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            _add_item(messages, item, index)
    else:
        raise BadRequest("'input' must be a string or a non-empty list of items", param="input")
    return messages


def _add_item(messages: list[Message], item: Any, index: int) -> None:
    where = f"input[{index}]"
    if not isinstance(item, dict):
        raise BadRequest(f"'{where}' must be an object", param=where)
    kind = item.get("type", "message")
    if kind == "message":
        messages.append(_message(item, where))
    elif kind == "function_call":
        call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
        if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(arguments, str)):
            raise BadRequest(f"'{where}' needs 'call_id', 'name' and 'arguments' strings", param=where)
        call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        last = messages[-1] if messages else None
        if last is not None and last.role == "assistant":
            # One assistant turn in chat: its text and every call that follows it.
            messages[-1] = msgspec.structs.replace(last, tool_calls=[*(last.tool_calls or ()), call])
        else:
            messages.append(Message("assistant", None, tool_calls=[call]))
    elif kind == "function_call_output":
        call_id, output = item.get("call_id"), item.get("output")
        if not isinstance(call_id, str):
            raise BadRequest(f"'{where}.call_id' must be a string", param=f"{where}.call_id")
        messages.append(Message("tool", _tool_output(output, where), tool_call_id=call_id))
    else:
        why = "needs server-side state" if kind == "item_reference" else "cannot be sent to a chat-completions upstream"
        raise BadRequest(
            f"'{where}.type' {str(kind)[:40]!r} is not supported: it {why}",
            param=f"{where}.type",
            code="unsupported_parameter",
        )


def _message(item: dict[str, Any], where: str) -> Message:
    role = item.get("role")
    if not isinstance(role, str) or role not in _ROLES:  # a list or an object cannot be looked up
        raise BadRequest(f"'{where}.role' must be one of {', '.join(sorted(_ROLES))}", param=f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return Message(role, content)
    if not isinstance(content, list):
        raise BadRequest(f"'{where}.content' must be a string or a list of parts", param=f"{where}.content")
    return Message(role, [_part(part, f"{where}.content[{i}]") for i, part in enumerate(content)])


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "refusal", "refusal": part["refusal"]}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image = {"url": part["image_url"]}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file" and part.get("file_url") is None:
        file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k) is not None}
        if file:
            return {"type": "file", "file": file}
    if kind == "input_audio" and isinstance(part.get("input_audio"), dict):
        return {"type": "input_audio", "input_audio": part["input_audio"]}
    raise BadRequest(
        f"'{where}' of type {str(kind)[:40]!r} cannot be translated (images need an 'image_url', files "
        "'file_data' or 'file_id')",
        param=where,
        code="unsupported_parameter",
    )


def _tool_output(output: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        parts = []
        for i, part in enumerate(output):
            if not (isinstance(part, dict) and part.get("type") == "input_text" and isinstance(part.get("text"), str)):
                raise BadRequest(
                    f"'{where}.output[{i}]' must be an input_text part: a chat tool result holds text only",
                    param=f"{where}.output[{i}]",
                    code="unsupported_parameter",
                )
            parts.append({"type": "text", "text": part["text"]})
        return parts
    raise BadRequest(f"'{where}.output' must be a string or a list of parts", param=f"{where}.output")


# -- the internal request as a Responses request (the inverse, for echo and tests) ----


def _item_part(part: dict[str, Any], role: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return {"type": "output_text" if role == "assistant" else "input_text", "text": part.get("text", "")}
    if kind == "image_url":
        image = part.get("image_url") or {}
        out = {"type": "input_image", "image_url": image.get("url")}
        if image.get("detail") is not None:
            out["detail"] = image["detail"]
        return out
    if kind == "file":
        return {"type": "input_file", **(part.get("file") or {})}
    return dict(part)  # refusal and input_audio parts are spelled alike


def _input_items(messages: list[Message]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            output = message.content
            if isinstance(output, list):
                output = [{"type": "input_text", "text": p.get("text", "")} for p in output]
            items.append({"type": "function_call_output", "call_id": message.tool_call_id, "output": output})
            continue
        if message.content is not None:
            content = message.content
            if isinstance(content, list):
                content = [_item_part(p, message.role) for p in content]
            items.append({"type": "message", "role": message.role, "content": content})
        for call in message.tool_calls or ():
            function = call.get("function") or {}
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments"),
                }
            )
    return items


def _responses_tools(request: Request) -> list[dict[str, Any]]:
    return [{"type": "function", **(tool.get("function") or {})} for tool in request.tools or ()]


def _responses_choice(choice: str | dict[str, Any] | None) -> Any:
    if isinstance(choice, dict):
        return {"type": "function", "name": (choice.get("function") or {}).get("name")}
    return choice


def _responses_format(response_format: dict[str, Any] | None) -> dict[str, Any]:
    if response_format is None:
        return {"type": "text"}
    if response_format.get("type") == "json_schema":
        return {"type": "json_schema", **(response_format.get("json_schema") or {})}
    return dict(response_format)


def _instructions(request: Request) -> str | None:
    first = request.messages[0] if request.messages else None
    if first is not None and first.role == "system" and isinstance(first.content, str):
        return first.content
    return None


def to_responses(request: Request) -> dict[str, Any]:
    """The internal request as a Responses API body: ``decode``'s inverse on everything
    both APIs express (a leading system message with text becomes ``instructions``)."""
    instructions = _instructions(request)
    messages = request.messages[1:] if instructions is not None else request.messages
    out: dict[str, Any] = {"model": request.model, "input": _input_items(messages)}
    if instructions is not None:
        out["instructions"] = instructions
    if request.tools:
        out["tools"] = _responses_tools(request)
    if request.tool_choice is not None:
        out["tool_choice"] = _responses_choice(request.tool_choice)
    text: dict[str, Any] = {}
    if request.response_format is not None:
        text["format"] = _responses_format(request.response_format)
    if "verbosity" in request.extra:
        text["verbosity"] = request.extra["verbosity"]
    if text:
        out["text"] = text
    if "reasoning_effort" in request.extra:
        out["reasoning"] = {"effort": request.extra["reasoning_effort"]}
    for ours, theirs in (("max_completion_tokens", "max_output_tokens"), ("temperature", "temperature")):
        if getattr(request, ours) is not None:
            out[theirs] = getattr(request, ours)
    for field in ("top_p", "user", "parallel_tool_calls"):
        if getattr(request, field) is not None:
            out[field] = getattr(request, field)
    if request.stream:
        out["stream"] = True
    out.update((k, request.extra[k]) for k in _PASSED if k in request.extra)
    return out


# -- the answer ----------------------------------------------------------------------

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _ids(request: Request) -> str:
    return request.context.request_id.removeprefix("req_")


def _usage(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    prompt = usage.prompt_tokens_details or {}
    answer = usage.completion_tokens_details or {}
    return {
        "input_tokens": usage.prompt_tokens,
        # cache_write_tokens: the tokens written to the prompt cache (Anthropic's cache
        # creation); the current openai SDK requires the field.
        "input_tokens_details": {
            "cached_tokens": prompt.get("cached_tokens") or 0,
            "cache_write_tokens": prompt.get("cache_write_tokens") or prompt.get("cache_creation_tokens") or 0,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": answer.get("reasoning_tokens") or 0},
        "total_tokens": usage.total_tokens,
    }


def _response(request: Request, model: str, created: int) -> dict[str, Any]:
    """The response object without its output, status and usage: what the request set."""
    extra = request.extra
    text: dict[str, Any] = {"format": _responses_format(request.response_format)}
    if "verbosity" in extra:
        text["verbosity"] = extra["verbosity"]
    return {
        "id": f"resp_{_ids(request)}",
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": _instructions(request),
        "max_output_tokens": request.max_completion_tokens,
        "model": model,
        "output": [],
        "parallel_tool_calls": True if request.parallel_tool_calls is None else request.parallel_tool_calls,
        "previous_response_id": None,
        "reasoning": {"effort": extra.get("reasoning_effort"), "summary": None},
        "service_tier": extra.get("service_tier"),
        "store": False,
        "temperature": request.temperature,
        "text": text,
        "tool_choice": _responses_choice(request.tool_choice) or "auto",
        "tools": _responses_tools(request),
        "top_p": request.top_p,
        "truncation": "disabled",
        "usage": None,
        "user": request.user,
        "metadata": extra.get("metadata") or {},
    }


def _finished(out: dict[str, Any], finish_reason: str | None, usage: Usage | None) -> dict[str, Any]:
    reason = _INCOMPLETE.get(finish_reason or "")
    out["status"] = "completed" if reason is None else "incomplete"
    out["incomplete_details"] = None if reason is None else {"reason": reason}
    out["usage"] = _usage(usage)
    return out


def _annotation(annotation: Any) -> Any:
    # Chat nests a citation's fields under its type ({"type": "url_citation",
    # "url_citation": {...}}); the Responses API spells them flat.
    if isinstance(annotation, dict) and isinstance(annotation.get(annotation.get("type", "")), dict):
        return {"type": annotation["type"], **annotation[annotation["type"]]}
    return annotation


def _text_part(text: str, annotations: list[Any] | None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [_annotation(a) for a in annotations or ()]}


def _call_item(rid: str, index: int, call: dict[str, Any], status: str) -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "id": f"fc_{rid}_{index}",
        "type": "function_call",
        "status": status,
        "call_id": call.get("id") or f"call_{rid}_{index}",
        "name": function.get("name") or "",
        "arguments": function.get("arguments") or "",
    }


def _reasoning_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if text else []
    return {"id": item_id, "type": "reasoning", "summary": [], "content": content, "status": status}


def output_items(completion: Completion, request: Request) -> list[dict[str, Any]]:
    """The Responses ``output`` of a chat answer: a ``reasoning`` item for its reasoning
    text (when it has some), a ``message`` item for its text and refusal (when it has
    either, or nothing else), then a ``function_call`` per tool call."""
    rid = _ids(request)
    status = "incomplete" if completion.finish_reason in _INCOMPLETE else "completed"
    parts: list[dict[str, Any]] = []
    calls = completion.tool_calls or []
    if completion.content or not (calls or completion.refusal):
        parts.append(_text_part(completion.content, completion.annotations))
    if completion.refusal:
        parts.append({"type": "refusal", "refusal": completion.refusal})
    items: list[dict[str, Any]] = []
    reasoning = completion.message_extra.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        items.append(_reasoning_item(f"rs_{rid}", reasoning, "completed"))
    if parts:
        items.append({"id": f"msg_{rid}", "type": "message", "status": status, "role": "assistant", "content": parts})
    items.extend(_call_item(rid, i, call, "completed") for i, call in enumerate(calls))
    return items


def encode_completion(completion: Completion, request: Request, model: str) -> bytes:
    """``completion`` (choice 0) as a Responses ``response`` object."""
    out = _response(request, completion.model or model, completion.created or int(time.time()))
    if completion.service_tier is not None:
        out["service_tier"] = completion.service_tier  # the tier that served it, as OpenAI says
    out["output"] = output_items(completion, request)
    return _encode(_finished(out, completion.finish_reason, completion.usage))


# -- a streamed answer ---------------------------------------------------------------


def _event(kind: str, payload: dict[str, Any], sequence: int) -> bytes:
    body = _encode({"type": kind, **payload, "sequence_number": sequence})
    return b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n"


class ResponsesStreamEncoder:
    """Writes one streamed chat answer as the Responses API's events.

    The first chunk opens the stream (``response.created``, ``response.in_progress``);
    reasoning text (``delta_extra`` ``reasoning_content``) opens a ``reasoning`` item
    (``response.reasoning_text.delta``), text a ``message`` item with an
    ``output_text`` part (a refusal its own part),
    and each tool call index a ``function_call`` item; an item is closed (its ``.done``
    events) when the next one opens or the answer ends, so items never interleave.
    ``end`` sends ``response.completed`` (``response.incomplete`` when the answer was cut
    by its token limit or a content filter) with every item and the usage.
    """

    __slots__ = (
        "_base",
        "_call",
        "_items",
        "_kind",
        "_message",
        "_part",
        "_reasoning",
        "_reasoning_id",
        "_request_id",
        "_rid",
        "_seq",
        "finish_reason",
        "usage",
    )

    def __init__(self, request: Request, model: str) -> None:
        self._request_id = request.context.request_id
        self._rid = _ids(request)
        self._base = _response(request, model, int(time.time()))
        self._seq = 0
        self._items: list[dict[str, Any]] = []
        self._kind: str | None = None  # the open item: "reasoning", "message", "call" or None
        self._message: dict[str, Any] = {}
        self._part: list[Any] = []  # the open part: [kind, pieces, annotations]
        self._call: dict[str, Any] = {}
        self._reasoning: list[str] = []
        self._reasoning_id = ""
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def _emit(self, kind: str, payload: dict[str, Any]) -> bytes:
        out = _event(kind, payload, self._seq)
        self._seq += 1
        return out

    def _start(self) -> bytes:
        snapshot = dict(self._base)
        return self._emit("response.created", {"response": snapshot}) + self._emit(
            "response.in_progress", {"response": snapshot}
        )

    def event(self, chunk: Chunk) -> bytes | None:
        """The events for ``chunk`` (several when it opens or closes an item), or ``None``."""
        if chunk.service_tier is not None:
            self._base["service_tier"] = chunk.service_tier
        if self._seq == 0 and chunk.created is not None:
            self._base["created_at"] = chunk.created  # the upstream answer's, as complete
        out = self._start() if self._seq == 0 else b""
        if chunk.model and chunk.model != self._base["model"]:
            self._base["model"] = chunk.model
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.index:
            return out or None  # the Responses API has one choice; decode never asks for more
        if chunk.delta_extra:
            reasoning = chunk.delta_extra.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                out += self._reasoning_delta(reasoning)
        if chunk.content:
            out += self._text("output_text", chunk.content)
        if chunk.annotations and self._part and self._part[0] == "output_text":
            self._part[2].extend(chunk.annotations)
        if chunk.refusal:
            out += self._text("refusal", chunk.refusal)
        for position, delta in enumerate(chunk.tool_calls or ()):
            out += self._call_delta(delta.get("index", position), delta)
        return out or None

    # -- message items ---------------------------------------------------------------

    def _text(self, kind: str, piece: str) -> bytes:
        out = b""
        if self._kind != "message":
            out += self._close()
            self._kind = "message"
            self._message = {"id": self._item_id("msg"), "type": "message", "role": "assistant", "content": []}
            added = {**self._message, "status": "in_progress", "content": []}
            out += self._emit("response.output_item.added", {"output_index": len(self._items), "item": added})
        if not self._part or self._part[0] != kind:
            out += self._close_part()
            self._part = [kind, [], []]
            empty = _text_part("", None) if kind == "output_text" else {"type": "refusal", "refusal": ""}
            out += self._emit("response.content_part.added", {**self._where(), "part": empty})
        if not piece:
            return out
        self._part[1].append(piece)
        payload = {**self._where(), "delta": piece}
        if kind == "output_text":
            payload["logprobs"] = []
            return out + self._emit("response.output_text.delta", payload)
        return out + self._emit("response.refusal.delta", payload)

    def _where(self) -> dict[str, Any]:
        index = len(self._message["content"])
        return {"item_id": self._message["id"], "output_index": len(self._items), "content_index": index}

    def _close_part(self) -> bytes:
        if not self._part:
            return b""
        kind, pieces, annotations = self._part
        text = "".join(pieces)
        where = self._where()
        if kind == "output_text":
            part = _text_part(text, annotations)
            out = self._emit("response.output_text.done", {**where, "text": text, "logprobs": []})
        else:
            part = {"type": "refusal", "refusal": text}
            out = self._emit("response.refusal.done", {**where, "refusal": text})
        self._message["content"].append(part)
        self._part = []
        return out + self._emit("response.content_part.done", {**where, "part": part})

    # -- reasoning items ---------------------------------------------------------------

    def _reasoning_delta(self, piece: str) -> bytes:
        out = b""
        if self._kind != "reasoning":
            out += self._close()
            self._kind = "reasoning"
            self._reasoning = []
            self._reasoning_id = self._item_id("rs")
            added = _reasoning_item(self._reasoning_id, "", "in_progress")
            out += self._emit("response.output_item.added", {"output_index": len(self._items), "item": added})
        self._reasoning.append(piece)
        where = {"item_id": self._reasoning_id, "output_index": len(self._items), "content_index": 0}
        return out + self._emit("response.reasoning_text.delta", {**where, "delta": piece})

    def _item_id(self, prefix: str) -> str:
        """The id of the item opening now: ``msg_<id>`` (``rs_<id>``) as the complete
        answer names its one message (reasoning) item; an answer that reopens one after
        another item (text after a tool call, as Anthropic models write) names the next
        by its output index, since clients key items by id."""
        if any(item["id"].startswith(prefix + "_") for item in self._items):
            return f"{prefix}_{self._rid}_{len(self._items)}"
        return f"{prefix}_{self._rid}"

    # -- function-call items ---------------------------------------------------------

    def _call_delta(self, index: int, delta: dict[str, Any]) -> bytes:
        out = b""
        function = delta.get("function") or {}
        if self._kind != "call" or self._call["index"] != index:
            out += self._close()
            self._kind = "call"
            self._call = {"index": index, "call": {"id": delta.get("id") or "", "function": {}}, "pieces": []}
            self._call["call"]["function"]["name"] = function.get("name") or ""
            item = _call_item(self._rid, index, self._call["call"], "in_progress")
            out += self._emit("response.output_item.added", {"output_index": len(self._items), "item": item})
        elif function.get("name"):
            self._call["call"]["function"]["name"] += function["name"]
        arguments = function.get("arguments")
        if arguments:
            self._call["pieces"].append(arguments)
            where = {"item_id": f"fc_{self._rid}_{index}", "output_index": len(self._items)}
            out += self._emit("response.function_call_arguments.delta", {**where, "delta": arguments})
        return out

    def _close(self) -> bytes:
        """The ``.done`` events of the open item, which joins the output."""
        out = b""
        if self._kind == "message":
            out = self._close_part()
            item = {**self._message, "status": "completed"}
        elif self._kind == "reasoning":
            text = "".join(self._reasoning)
            item = _reasoning_item(self._reasoning_id, text, "completed")
            where = {"item_id": item["id"], "output_index": len(self._items), "content_index": 0}
            out = self._emit("response.reasoning_text.done", {**where, "text": text})
        elif self._kind == "call":
            call = self._call["call"]
            call["function"]["arguments"] = "".join(self._call["pieces"])
            item = _call_item(self._rid, self._call["index"], call, "completed")
            where = {"item_id": item["id"], "output_index": len(self._items)}
            done = {**where, "name": item["name"], "arguments": item["arguments"]}
            out = self._emit("response.function_call_arguments.done", done)
        else:
            return out
        self._kind = None
        out += self._emit("response.output_item.done", {"output_index": len(self._items), "item": item})
        self._items.append(item)
        return out

    # -- the end ---------------------------------------------------------------------

    def end(self) -> bytes:
        """Closes the open item, then ``response.completed`` (or ``.incomplete``)."""
        out = self._start() if self._seq == 0 else b""
        if self._kind in (None, "reasoning") and all(item["type"] == "reasoning" for item in self._items):
            out += self._text("output_text", "")  # an empty answer is an empty message, as complete
        out += self._close()
        final = _finished({**self._base, "output": self._items}, self.finish_reason, self.usage)
        if final["status"] == "incomplete":
            for item in self._items:
                if item["type"] == "message":
                    item["status"] = "incomplete"
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        return out + self._emit(kind, {"response": final})

    def error(self, error: BaseException) -> bytes:
        """An ``error`` event, then ``response.failed``, for a stream cut by ``error``."""
        said = msgspec.json.decode(encode_error(error, self._request_id).body)["error"]
        out = self._emit("error", {"code": said.get("code"), "message": said["message"], "param": said.get("param")})
        failed = {**self._base, "output": self._items, "status": "failed"}
        failed["error"] = {"code": said.get("code") or "server_error", "message": said["message"]}
        return out + self._emit("response.failed", {"response": failed})


def encode_stream(request: Request, model: str) -> ResponsesStreamEncoder:
    """A ``ResponsesStreamEncoder`` for the streamed answer to ``request`` from ``model``."""
    return ResponsesStreamEncoder(request, model)
