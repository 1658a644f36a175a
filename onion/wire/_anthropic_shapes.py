"""The one mapping between Anthropic Messages and onion's OpenAI-shaped types.

Used by both edges: the Anthropic provider (internal ``Request`` -> Anthropic body,
Anthropic answer -> ``Completion`` / ``Chunk``) and the ``anthropic_messages`` dialect
(Anthropic body -> ``Request``, ``Completion`` / ``Chunk`` -> Anthropic answer), so each
field is mapped once and the two directions stay inverse.

Internal conventions for what OpenAI has no field for:

- extended thinking: an assistant message's (or answer's) ``reasoning_content`` text and
  ``thinking_blocks`` (the Anthropic blocks, signatures included, replayed verbatim on
  the next turn); streamed as ``delta_extra`` ``reasoning_content`` / ``thinking_signature``;
- a tool result's ``is_error`` is kept in the tool message's ``extra``;
- ``top_k``, ``thinking`` and any other Anthropic-only top-level field ride in
  ``Request.extra`` and are sent back to an Anthropic upstream unchanged;
- ``cache_control`` stays on the content part, system block or tool that carries it.

What cannot be translated raises ``BadRequest`` naming the field; nothing is dropped.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .._types import Chunk, Completion, Message, Request, Usage
from ..errors import BadRequest

__all__ = [
    "JSON_TOOL",
    "STOP_REASONS",
    "anthropic_usage",
    "completion_from_message",
    "completion_to_message",
    "request_from_anthropic",
    "request_to_anthropic",
    "usage_from_anthropic",
]

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
_FINISH_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}

# The tool a JSON-schema ``response_format`` is forced through (Anthropic has no
# structured-output field): its input is the answer's content.
JSON_TOOL = "json_response"

# OpenAI fields Anthropic has no equivalent for: refused, never dropped.
_UNTRANSLATABLE = ("seed", "presence_penalty", "frequency_penalty", "logit_bias")
_UNTRANSLATABLE_EXTRA = (
    "logprobs", "top_logprobs", "audio", "modalities", "prediction", "web_search_options", "store", "reasoning_effort",
)  # fmt: skip


# -- OpenAI-shaped Request -> Anthropic body -----------------------------------------


def _image_block(part: dict[str, Any], param: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise BadRequest(f"'{param}.image_url.url' must be a string", param=param)
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media = header[5:].split(";")[0]
        if ";base64" not in header or not media:
            raise BadRequest(f"'{param}' must be a base64 data URL or an http(s) URL", param=param)
        block: dict[str, Any] = {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    else:
        block = {"type": "image", "source": {"type": "url", "url": url}}
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _document_block(part: dict[str, Any], param: str) -> dict[str, Any]:
    """An OpenAI ``file`` part as an Anthropic ``document`` block: a PDF as its base64
    source, a plain-text file as a text source; the file name as its title."""
    file = part.get("file")
    if not isinstance(file, dict):
        raise BadRequest(f"'{param}.file' must be an object", param=f"{param}.file")
    data = file.get("file_data")
    if not isinstance(data, str):
        if file.get("file_id") is not None:
            raise BadRequest(
                f"'{param}.file.file_id' cannot be sent to an Anthropic model: send the file's content as file_data",
                param=f"{param}.file.file_id",
            )
        raise BadRequest(f"'{param}.file.file_data' must be a string", param=f"{param}.file.file_data")
    media = "application/pdf"  # OpenAI's own examples also send bare base64 for a PDF
    if data.startswith("data:"):
        header, _, data = data.partition(",")
        media = header[5:].split(";")[0]
        if ";base64" not in header:
            raise BadRequest(f"'{param}.file.file_data' must be base64 (a data URL)", param=f"{param}.file.file_data")
    if media == "application/pdf":
        source = {"type": "base64", "media_type": media, "data": data}
    elif media == "text/plain":
        try:
            text = base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest(
                f"'{param}.file.file_data' is not base64 of UTF-8 text", param=f"{param}.file.file_data"
            ) from None
        source = {"type": "text", "media_type": media, "data": text}
    else:
        raise BadRequest(
            f"'{param}.file' of type {media[:60]!r} cannot be sent to an Anthropic model (PDF and plain text can)",
            param=f"{param}.file",
        )
    block: dict[str, Any] = {"type": "document", "source": source}
    if isinstance(file.get("filename"), str):
        block["title"] = file["filename"]
    block.update((k, part[k]) for k in _DOCUMENT_KEEPS if k in part)
    return block


def _blocks(content: Any, param: str) -> list[dict[str, Any]] | str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    out: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            out.append(part)
        elif kind == "image_url":
            out.append(_image_block(part, f"{param}[{i}]"))
        elif kind == "file":
            out.append(_document_block(part, f"{param}[{i}]"))
        elif kind in ("image", "document", "search_result"):
            out.append(part)  # already Anthropic-shaped (from the Anthropic dialect)
        else:
            raise BadRequest(
                f"'{param}[{i}].type' {str(kind)[:40]!r} cannot be sent to an Anthropic model", param=f"{param}[{i}]"
            )
    return out


def _as_list(blocks: list[dict[str, Any]] | str) -> list[dict[str, Any]]:
    if isinstance(blocks, str):
        return [{"type": "text", "text": blocks}] if blocks else []
    return blocks


def _assistant(message: Message, index: int) -> dict[str, Any]:
    if isinstance(message.content, str) and not message.tool_calls and "thinking_blocks" not in message.extra:
        return {"role": "assistant", "content": message.content}  # a prefill stays a plain string
    blocks: list[dict[str, Any]] = list(message.extra.get("thinking_blocks") or ())
    blocks += _as_list(_blocks(message.content, f"messages[{index}].content"))
    for j, call in enumerate(message.tool_calls or ()):
        function = call.get("function") or {}
        arguments = function.get("arguments") or "{}"
        try:
            value = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            raise BadRequest(
                f"'messages[{index}].tool_calls[{j}].function.arguments' is not JSON",
                param=f"messages[{index}].tool_calls[{j}].function.arguments",
            ) from None
        block = {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": value}
        if "cache_control" in call:
            block["cache_control"] = call["cache_control"]
        blocks.append(block)
    return {"role": "assistant", "content": blocks}


def _tool_result(message: Message, index: int) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    content = _blocks(message.content, f"messages[{index}].content")
    if content:
        block["content"] = content
    for key in ("is_error", "cache_control"):
        if key in message.extra:
            block[key] = message.extra[key]
    return block


def _messages(request: Request) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        role = message.role
        if role in ("system", "developer"):
            system += _as_list(_blocks(message.content, f"messages[{index}].content"))
            continue
        if role == "assistant":
            turn = _assistant(message, index)
        elif role == "tool":
            turn = {"role": "user", "content": [_tool_result(message, index)]}
        elif role == "user":
            turn = {"role": "user", "content": _blocks(message.content, f"messages[{index}].content")}
        else:
            raise BadRequest(
                f"'messages[{index}].role' {role!r} has no Anthropic equivalent", param=f"messages[{index}].role"
            )
        if out and out[-1]["role"] == turn["role"]:
            # Anthropic alternates roles: several tool results (and the user text after
            # them) are one user turn.
            out[-1]["content"] = _as_list(out[-1]["content"]) + _as_list(turn["content"])
        else:
            out.append(turn)
    return system, out


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            out.append(tool)  # an Anthropic server tool, already in its shape
            continue
        function = tool.get("function") or {}
        if "name" not in function:
            raise BadRequest(f"'tools[{i}].function.name' is required", param=f"tools[{i}].function.name")
        item: dict[str, Any] = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            item["description"] = function["description"]
        if "cache_control" in tool:
            item["cache_control"] = tool["cache_control"]
        out.append(item)
    return out


def _tool_choice(choice: str | dict[str, Any], parallel: bool | None) -> dict[str, Any]:
    if choice == "auto":
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    elif isinstance(choice, dict) and choice.get("type") in ("auto", "any", "tool", "none"):
        out = dict(choice)
    else:
        raise BadRequest(f"'tool_choice' {str(choice)[:60]!r} has no Anthropic equivalent", param="tool_choice")
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _response_format(body: dict[str, Any], fmt: dict[str, Any]) -> None:
    kind = fmt.get("type")
    if kind == "text":
        return
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
    elif kind == "json_object":
        schema = {"type": "object"}
    else:
        raise BadRequest(f"'response_format.type' {str(kind)[:40]!r} is not supported", param="response_format")
    if body.get("tools") or body.get("tool_choice"):
        raise BadRequest(
            "'response_format' with 'tools' cannot be sent to an Anthropic model (it is forced through a tool)",
            param="response_format",
        )
    body["tools"] = [{"name": JSON_TOOL, "description": "Answer with this JSON.", "input_schema": schema}]
    body["tool_choice"] = {"type": "tool", "name": JSON_TOOL}


def request_to_anthropic(request: Request, default_max_tokens: int) -> dict[str, Any]:
    """The Anthropic Messages body for ``request``; ``BadRequest`` names what has no equivalent."""
    for name in _UNTRANSLATABLE:
        if getattr(request, name) is not None:
            raise BadRequest(f"'{name}' cannot be sent to an Anthropic model", param=name)
    if request.n not in (None, 1):
        raise BadRequest("'n' other than 1 cannot be sent to an Anthropic model", param="n")
    for name in _UNTRANSLATABLE_EXTRA:
        if request.extra.get(name) not in (None, False):
            raise BadRequest(f"'{name}' cannot be sent to an Anthropic model", param=name)
    system, messages = _messages(request)
    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_completion_tokens or request.max_tokens or default_max_tokens,
    }
    if system:
        plain = all(set(b) == {"type", "text"} for b in system)
        body["system"] = "\n\n".join(b["text"] for b in system) if plain else system
    for name in ("temperature", "top_p"):
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    if request.stop is not None:
        body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    if request.tools:
        body["tools"] = _tools(request.tools)
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice, request.parallel_tool_calls)
    elif request.parallel_tool_calls is False and request.tools:
        body["tool_choice"] = {"type": "auto", "disable_parallel_tool_use": True}
    if request.response_format is not None:
        _response_format(body, request.response_format)
    if request.stream:
        body["stream"] = True
    for key, value in request.extra.items():
        if key not in _UNTRANSLATABLE_EXTRA:  # those are false or null here: the default
            if key == "metadata" and "metadata" in body:
                body["metadata"] = {**value, **body["metadata"]}
            else:
                body.setdefault(key, value)
    return body


# -- Anthropic answer -> Completion -----------------------------------------------------


def usage_from_anthropic(usage: dict[str, Any]) -> Usage:
    """Anthropic usage as OpenAI-shaped usage: prompt tokens count the cached ones too,
    with ``cached_tokens`` (reads) and ``cache_creation_tokens`` in the details."""
    fresh = usage.get("input_tokens") or 0
    created = usage.get("cache_creation_input_tokens") or 0
    read = usage.get("cache_read_input_tokens") or 0
    output = usage.get("output_tokens") or 0
    prompt = fresh + created + read
    details = {"cached_tokens": read, "cache_creation_tokens": created} if created or read else None
    # The rest as sent (cache_creation's per-TTL split, server_tool_use, service_tier …).
    extra = {k: v for k, v in usage.items() if k not in _USAGE_COUNTS} or None
    return Usage(prompt, output, prompt + output, details, None, extra)


_USAGE_COUNTS = frozenset({"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"})


def anthropic_usage(usage: Usage | None) -> dict[str, Any]:
    """The inverse of ``usage_from_anthropic``."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    details = usage.prompt_tokens_details or {}
    read = details.get("cached_tokens") or 0
    created = details.get("cache_creation_tokens") or 0
    out: dict[str, Any] = {
        "input_tokens": max(0, usage.prompt_tokens - read - created),
        "output_tokens": usage.completion_tokens,
    }
    if read or created:
        out["cache_creation_input_tokens"] = created
        out["cache_read_input_tokens"] = read
    if usage.extra:
        out.update((k, v) for k, v in usage.extra.items() if k not in out)
    return out


_MESSAGE_FIELDS = frozenset({"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"})


def completion_from_message(body: dict[str, Any], request: Request) -> Completion:
    """An Anthropic ``message`` as a ``Completion`` (a forced JSON tool's input as content)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    forced_json = request.response_format is not None and request.response_format.get("type") != "text"
    for block in body.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use" and forced_json and block.get("name") == JSON_TOOL:
            texts.append(json.dumps(block.get("input"), separators=(",", ":")))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input") or {}, separators=(",", ":"))
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            thinking.append(block)
        else:
            raise ValueError(f"the upstream sent a content block of type {str(kind)[:40]!r}")
    extra: dict[str, Any] = {}
    if thinking:
        extra["reasoning_content"] = "".join(b.get("thinking", "") for b in thinking)
        extra["thinking_blocks"] = thinking
    reason = body.get("stop_reason")
    top = {k: v for k, v in body.items() if k not in _MESSAGE_FIELDS}
    if body.get("stop_sequence") is not None:
        top["stop_sequence"] = body["stop_sequence"]
    return Completion(
        content="".join(texts),
        model=body.get("model") or request.model,
        finish_reason="stop" if forced_json and reason == "tool_use" else STOP_REASONS.get(reason or "", reason),
        tool_calls=calls or None,
        usage=usage_from_anthropic(body.get("usage") or {}),
        id=body.get("id") or "",
        message_extra=extra,
        extra=top,
        content_null=not texts and bool(calls),
    )


def stop_reason(finish_reason: str | None, stop_sequence: Any = None) -> str | None:
    """The Anthropic ``stop_reason`` for an OpenAI ``finish_reason``."""
    if finish_reason == "stop" and stop_sequence is not None:
        return "stop_sequence"
    return _FINISH_REASONS.get(finish_reason or "", finish_reason)


def completion_to_message(completion: Completion, model: str, message_id: str) -> dict[str, Any]:
    """``completion`` as an Anthropic ``message`` object (its unknown top-level fields kept)."""
    extra = dict(completion.extra)
    content: list[dict[str, Any]] = list(completion.message_extra.get("thinking_blocks") or ())
    if completion.content:
        content.append({"type": "text", "text": completion.content})
    for call in completion.tool_calls or ():
        function = call.get("function") or {}
        try:
            value = json.loads(function.get("arguments") or "{}")
        except ValueError:
            value = {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": value})
    sequence = extra.pop("stop_sequence", None)
    out: dict[str, Any] = {
        "id": completion.id if completion.id.startswith("msg") else message_id,
        "type": "message",
        "role": "assistant",
        "model": completion.model or model,
        "content": content,
        "stop_reason": stop_reason(completion.finish_reason, sequence),
        "stop_sequence": sequence,
        "usage": anthropic_usage(completion.usage),
    }
    for key, value in extra.items():
        if key not in ("object", "created", "choices", "system_fingerprint"):
            out.setdefault(key, value)
    return out


# -- Anthropic body -> Request ---------------------------------------------------------


def _part_from_block(block: Any, param: str) -> dict[str, Any]:
    if not isinstance(block, dict):
        raise BadRequest(f"'{param}' must be a content block object", param=param)
    kind = block.get("type")
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise BadRequest(f"'{param}.text' must be a string", param=param)
        return block
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        elif source.get("type") == "url":
            url = source.get("url")
        else:
            return block  # a file source: only an Anthropic upstream can read it
        part: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
        if "cache_control" in block:
            part["cache_control"] = block["cache_control"]
        return part
    if kind == "document":
        source = block.get("source") or {}
        if source.get("type") != "base64" or source.get("media_type") != "application/pdf":
            return block  # text, content, URL and file sources: only an Anthropic upstream reads them
        file = {"file_data": f"data:application/pdf;base64,{source.get('data')}"}
        if "title" in block:
            file["filename"] = block["title"]
        # Anthropic's own fields ride on the part, so an Anthropic upstream gets them back.
        return {"type": "file", "file": file, **{k: block[k] for k in _DOCUMENT_KEEPS if k in block}}
    if kind == "search_result":
        return block
    raise BadRequest(f"'{param}.type' {str(kind)[:40]!r} is not a known content block", param=param)


_DOCUMENT_KEEPS = ("context", "citations", "cache_control")


def _content_parts(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"'{param}' must be a string or a list of content blocks", param=param)
    return [_part_from_block(b, f"{param}[{i}]") for i, b in enumerate(content)]


def _user_turn(content: Any, param: str) -> list[Message]:
    if isinstance(content, str):
        return [Message("user", content)]
    if not isinstance(content, list):
        raise BadRequest(f"'{param}' must be a string or a list of content blocks", param=param)
    out: list[Message] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        if isinstance(block, dict) and block.get("type") == "tool_result":
            if parts:
                out.append(Message("user", parts))
                parts = []
            result = block.get("content", "")
            # is_error false is the default: kept only when true (OpenAI has no such flag,
            # so an OpenAI upstream sees it as the unknown field it is).
            extra = {k: block[k] for k in ("is_error", "cache_control") if block.get(k)}
            tool_id = block.get("tool_use_id")
            if not isinstance(tool_id, str):
                raise BadRequest(f"'{param}[{i}].tool_use_id' is required", param=f"{param}[{i}].tool_use_id")
            out.append(
                Message("tool", _content_parts(result, f"{param}[{i}].content"), tool_call_id=tool_id, extra=extra)
            )
        else:
            parts.append(_part_from_block(block, f"{param}[{i}]"))
    if parts:
        out.append(Message("user", parts))
    return out


def _assistant_turn(content: Any, param: str) -> Message:
    if isinstance(content, str):
        return Message("assistant", content)
    if not isinstance(content, list):
        raise BadRequest(f"'{param}' must be a string or a list of content blocks", param=param)
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_use":
            arguments = json.dumps(block.get("input") or {}, separators=(",", ":"))
            call = {
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": arguments},
            }
            if "cache_control" in block:
                call["cache_control"] = block["cache_control"]
            calls.append(call)
        elif kind in ("thinking", "redacted_thinking"):
            thinking.append(block)
        else:
            parts.append(_part_from_block(block, f"{param}[{i}]"))
    extra: dict[str, Any] = {}
    if thinking:
        extra = {"reasoning_content": "".join(b.get("thinking", "") for b in thinking), "thinking_blocks": thinking}
    plain = all(set(p) == {"type", "text"} for p in parts)
    text: str | list[dict[str, Any]] | None = "".join(p["text"] for p in parts) if plain else parts
    return Message("assistant", text if text or not calls else None, tool_calls=calls or None, extra=extra)


_REQUEST_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stop_sequences",
        "temperature",
        "top_p",
        "stream",
        "metadata",
        "tools",
        "tool_choice",
    }
)


def _tools_from(raw: Any) -> tuple[list[dict[str, Any]], bool]:
    if not isinstance(raw, list):
        raise BadRequest("'tools' must be a list", param="tools")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise BadRequest(f"'tools[{i}].name' is required", param=f"tools[{i}]")
        if tool.get("type") not in (None, "custom"):
            out.append(tool)  # a server tool: only an Anthropic upstream runs it
            continue
        function: dict[str, Any] = {"name": tool["name"], "parameters": tool.get("input_schema") or {}}
        if "description" in tool:
            function["description"] = tool["description"]
        item: dict[str, Any] = {"type": "function", "function": function}
        if "cache_control" in tool:
            item["cache_control"] = tool["cache_control"]
        out.append(item)
    return out, True


def _tool_choice_from(raw: Any) -> tuple[str | dict[str, Any], bool | None]:
    if not isinstance(raw, dict):
        raise BadRequest("'tool_choice' must be an object", param="tool_choice")
    kind = raw.get("type")
    parallel = False if raw.get("disable_parallel_tool_use") else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", parallel
    if kind == "tool" and isinstance(raw.get("name"), str):
        return {"type": "function", "function": {"name": raw["name"]}}, parallel
    raise BadRequest(f"'tool_choice.type' {str(kind)[:40]!r} is not auto, any, tool or none", param="tool_choice")


def request_from_anthropic(raw: dict[str, Any], context: Any) -> Request:
    """The internal request for an Anthropic Messages body; unknown fields kept in ``extra``."""
    model, max_tokens = raw.get("model"), raw.get("max_tokens")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must name a model", param="model")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("'max_tokens' must be a positive integer", param="max_tokens")
    messages: list[Message] = []
    system = raw.get("system")
    if system is not None:
        messages.append(Message("system", _content_parts(system, "system")))
    turns = raw.get("messages")
    if not isinstance(turns, list) or not turns:
        raise BadRequest("'messages' must hold at least one message", param="messages")
    for i, turn in enumerate(turns):
        role = turn.get("role") if isinstance(turn, dict) else None
        if role == "user":
            messages += _user_turn(turn.get("content"), f"messages[{i}].content")
        elif role == "assistant":
            messages.append(_assistant_turn(turn.get("content"), f"messages[{i}].content"))
        else:
            raise BadRequest(f"'messages[{i}].role' must be user or assistant", param=f"messages[{i}].role")
    fields: dict[str, Any] = {}
    for name in ("temperature", "top_p"):
        value = raw.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise BadRequest(f"'{name}' must be a number", param=name)
        fields[name] = value
    stream = raw.get("stream")
    if stream is not None and not isinstance(stream, bool):
        # As Anthropic's: 1 or "yes" is not a boolean (read as truthy, it streamed).
        raise BadRequest("'stream' must be a boolean", param="stream")
    stop = raw.get("stop_sequences")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        raise BadRequest("'stop_sequences' must be a list of strings", param="stop_sequences")
    extra = {k: v for k, v in raw.items() if k not in _REQUEST_FIELDS}
    metadata = raw.get("metadata")
    user = None
    if isinstance(metadata, dict):
        user = metadata.get("user_id")
        rest = {k: v for k, v in metadata.items() if k != "user_id"}
        if rest:
            extra["metadata"] = rest
    tools = _tools_from(raw["tools"])[0] if raw.get("tools") is not None else None
    choice, parallel = _tool_choice_from(raw["tool_choice"]) if raw.get("tool_choice") is not None else (None, None)
    return Request(
        model=model,
        messages=messages,
        stream=bool(stream),
        max_tokens=max_tokens,
        stop=stop,
        user=user if isinstance(user, str) else None,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        extra=extra,
        context=context,
        **fields,
    )


def chunk_tool_start(index: int, block: dict[str, Any]) -> Chunk:
    """The OpenAI-shaped tool-call delta that opens tool call ``index``."""
    return Chunk(
        tool_calls=[
            {
                "index": index,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
        ]
    )
