"""Context trimming: keeps a conversation within the model's token budget.

It sits inside the input guard (the guard sees what the user sent) and outside the
providers, fallback and retry (every attempt sends the same trimmed request). The
budget for the prompt is ``max_tokens`` if set, else the model's context window minus
the answer's limit (``request.max_tokens``, or ``answer_reserve`` when the request sets
none). Models with no known window and no set budget pass through untouched.

What is kept, always: every system (and developer) message, the latest user message
and everything after it (an agent's tool calls in progress). What goes: the oldest
other messages first, where an assistant message with ``tool_calls`` and the tool
results answering it count as one unit, so a call never loses its result or the
reverse; an assistant turn left first by the trim goes too, so what is kept starts
with a user turn. Nothing is summarised and no model is called. If even the kept part does not
fit, the request fails with ``BadRequest`` naming both numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import msgspec

from onion import (
    REPLY_PRIMING_TOKENS,
    BadRequest,
    CallNext,
    Layer,
    Message,
    Request,
    Response,
    TokenCounter,
    TrimReport,
    counter_for,
    counter_named,
    message_tokens,
)

__all__ = ["CONTEXT_WINDOWS", "TrimContext", "message_units"]

CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-4o": 128_000,
    "chatgpt-4o": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4-turbo": 128_000,
    "gpt-4-32k": 32_768,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "gpt-5": 400_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "claude-": 200_000,
}
"""Context windows (tokens) by model-name prefix; the longest matching prefix wins."""

_COUNTED_CHARS_KEPT = 4_000_000
_PINNED_ROLES = frozenset({"system", "developer"})


def _prefix_lookup(table: dict[str, Any], model: str) -> Any:
    bare = model.rsplit("/", 1)[-1]
    best = ""
    for prefix in table:
        if bare.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return table[best] if best else None


def _counter(spec: str | TokenCounter) -> TokenCounter:
    return counter_named(spec) if isinstance(spec, str) else spec


def message_units(messages: Sequence[Message], end: int) -> list[list[int]]:
    """The droppable units among ``messages[:end]``, oldest first: an assistant message
    with tool calls plus the tool messages answering it form one unit, every other
    non-system message is a unit of its own."""
    units: list[list[int]] = []
    i = 0
    while i < end:
        message = messages[i]
        if message.role in _PINNED_ROLES:
            i += 1
            continue
        unit = [i]
        if message.role == "assistant" and message.tool_calls:
            ids = {call.get("id") for call in message.tool_calls if isinstance(call, dict)}
            j = i + 1
            # Results follow their call; a system message may sit between them, it stays.
            while j < end and (
                messages[j].role in _PINNED_ROLES or (messages[j].role == "tool" and messages[j].tool_call_id in ids)
            ):
                if messages[j].role == "tool":
                    unit.append(j)
                j += 1
            i = j
        else:
            i += 1
        units.append(unit)
    return units


class TrimContext(Layer):
    """Drops the oldest turns until the prompt fits its token budget (see module doc).

    ``max_tokens``: the prompt budget; when unset it is the model's window
    (``context_windows``, else ``CONTEXT_WINDOWS``) minus the answer's limit (or
    ``answer_reserve``). ``counter``: a tokenizer name (``o200k_base``,
    ``cl100k_base``, ``estimate``) or a ``TokenCounter`` for every model; ``counters``
    maps model-name prefixes to tokenizer names; otherwise each model gets
    ``tokens.counter_for(model)`` (exact for OpenAI models, an estimate otherwise).
    """

    name = "trim_context"
    provides = frozenset({"trim_context"})

    def __init__(
        self,
        *,
        max_tokens: int | None = None,
        counter: str | TokenCounter | None = None,
        counters: dict[str, str] | None = None,
        context_windows: dict[str, int] | None = None,
        answer_reserve: int = 1024,
    ) -> None:
        if max_tokens is not None and max_tokens <= 0:
            raise ValueError("max_tokens must be positive")
        self.max_tokens = max_tokens
        self._counter: TokenCounter | None = _counter(counter) if counter is not None else None
        self._by_model = {prefix: _counter(name) for prefix, name in (counters or {}).items()}
        self.windows = {**CONTEXT_WINDOWS, **(context_windows or {})}
        self.answer_reserve = answer_reserve
        # Chat clients resend the whole history every turn: counting each text once
        # saves re-tokenising it. Bounded by the characters kept (texts are the keys);
        # cleared when full (cheap and good enough).
        self._counts: dict[tuple[str, str], int] = {}
        self._counted_chars = 0

    def budget(self, request: Request) -> int | None:
        """The prompt's token budget for ``request``, or ``None`` if unknown."""
        if self.max_tokens is not None:
            return self.max_tokens
        window = _prefix_lookup(self.windows, request.model)
        if window is None:
            return None
        answer = request.answer_tokens_limit
        return window - (answer if answer is not None else self.answer_reserve)

    def counter(self, model: str) -> TokenCounter:
        """The token counter used for ``model``: ``counters`` by prefix, else ``counter``,
        else ``tokens.counter_for(model)``."""
        if self._by_model:
            found = _prefix_lookup(self._by_model, model)
            if found is not None:
                return found
        return self._counter or counter_for(model)

    def _count(self, counter: TokenCounter, text: str) -> int:
        if not text:
            return 0
        key = (counter.name, text)
        cached = self._counts.get(key)
        if cached is None:
            self._counted_chars += len(text)
            if self._counted_chars > _COUNTED_CHARS_KEPT:
                self._counts.clear()
                self._counted_chars = len(text)
            cached = self._counts[key] = counter.count(text)
        return cached

    def message_tokens(self, message: Message, counter: TokenCounter) -> int:
        """Tokens one message costs in the prompt (``onion.message_tokens``, counts cached)."""
        return message_tokens(message, partial(self._count, counter))

    def trim(self, request: Request) -> tuple[Request, int, int]:
        """The trimmed request, how many messages were dropped, and its token count.

        Raises ``BadRequest`` when the messages that must stay exceed the budget.
        """
        budget = self.budget(request)
        messages = request.messages
        if budget is None or not messages:
            return request, 0, -1
        counter = self.counter(request.model)
        costs = [self.message_tokens(m, counter) for m in messages]
        total = sum(costs) + REPLY_PRIMING_TOKENS
        if total <= budget:
            return request, 0, total
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=len(messages) - 1)
        units = message_units(messages, last_user)
        droppable = sum(costs[i] for unit in units for i in unit)
        needed = total - droppable
        if needed > budget:
            raise BadRequest(
                f"the conversation does not fit the model's context: the system messages and the latest "
                f"user message need {needed} tokens, the budget for the prompt is {budget}",
                param="messages",
            )
        dropped: set[int] = set()
        for unit in units:
            # Past the budget, an assistant turn whose question went is dropped too:
            # the kept history then starts with a user turn, which Anthropic requires
            # and every model reads better than an answer to nothing.
            if total <= budget and messages[unit[0]].role != "assistant":
                break
            dropped.update(unit)
            total -= sum(costs[i] for i in unit)
        kept = [m for i, m in enumerate(messages) if i not in dropped]
        return msgspec.structs.replace(request, messages=kept), len(dropped), total

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        trimmed, dropped, tokens = self.trim(request)
        if dropped:
            request.context.trimmed = TrimReport(dropped, tokens)
        return await call_next(trimmed)
