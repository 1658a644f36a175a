"""Token counters: one way to count a prompt, for trimming, guards, rate limits and budgets.

A counter turns text into a token count. Two kinds ship:

- ``BpeCounter``: exact counts with OpenAI's BPE vocabularies (``cl100k_base``,
  ``o200k_base``) from the ``bpe-openai`` package, which ships them and so works
  offline. If that package is missing, ``tiktoken`` is tried; tiktoken downloads its
  files at first use, so that fails without internet, and then the counter falls back
  to the estimate (logged once) instead of failing the request.
- ``EstimateCounter``: a fast estimate that errs high (each byte weighed by its class),
  used for models without a known tokenizer.

``counter_for(model)`` picks one per model; ``register_counter(prefix, counter)`` plugs
in another (for example a Llama tokenizer for ``llama-``).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

from ._types import Message, Request

__all__ = [
    "BpeCounter",
    "EstimateCounter",
    "TokenCounter",
    "counter_for",
    "counter_named",
    "input_tokens",
    "message_tokens",
    "prompt_tokens",
    "register_counter",
]

_log = logging.getLogger("onion.tokens")


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the tokens of a text."""

    name: str

    def count(self, text: str) -> int:
        """The number of tokens ``text`` encodes to."""
        ...


# Byte classes of the estimate. Each weight is about the most tokens one byte of its
# class was seen to cost in o200k_base over generated English, code, emoji and
# Japanese (tests/test_tokens.py checks the estimate is never lower, per text):
# lowercase letters 0.25 (about four per token, fewer inside short words), uppercase
# 0.75 (a capital usually starts a token), digits 0.7 (o200k splits numbers into groups
# of up to three and never joins a digit to the space before it), space and tab 0.6 (a
# space mostly starts a word; each pair of spaces takes 0.3 back, for indentation
# merges), ASCII punctuation and line breaks 1.0 (mostly tokens of their own), and
# bytes of non-ASCII characters 1.0: a byte-level BPE never spends more than one token
# per byte, and a rare kanji does spend three (common Japanese is far cheaper, so the
# estimate is high there).
_LOWER = bytes(range(97, 123))
_UPPER = bytes(range(65, 91))
_DIGITS = b"0123456789"
_SPACES = b" \t"
_HIGH = bytes(range(128, 256))
_WEIGHTS = ((_LOWER, 0.25), (_UPPER, 0.75), (_DIGITS, 0.7), (_SPACES, 0.6), (_HIGH, 1.0))
_PUNCT_WEIGHT = 1.0
# o200k never merges a digit into the space before it, and a lone digit is a token of
# its own: "0 0" is three tokens, which the per-byte weights above (0.7 + 0.6 + 0.7)
# count as two. Where a text has digits, each space before a digit is weighed a whole
# token and each lone digit too (found by regex only then, so prose pays nothing).
_SPACE_BEFORE_DIGIT = re.compile(rb"[ \t](?=[0-9])")
_LONE_DIGIT = re.compile(rb"(?<![0-9])[0-9](?![0-9])")


class EstimateCounter:
    """A fast estimate that errs high: each UTF-8 byte weighs what the most expensive
    byte of its class (lowercase, uppercase, digit, space, punctuation, non-ASCII) cost
    in OpenAI's o200k_base on generated English, code, emoji and Japanese.

    Measured against o200k_base on 10,000 generated texts of each kind (and checked
    per text by ``tests/test_tokens.py``): about 1.5x the real count on English, 1.6x
    on code, 1.65x on emoji, 1.7x on random Japanese and up to 4.5x on everyday
    Japanese (whose common words are single tokens; non-ASCII is counted at the
    byte-level bound, one token per UTF-8 byte). On 64 bytes or more of those four it
    was never low. On a text of a few words it can be one token low (never more), in
    about one of 5,000 generated texts: "Said\nSaid" is five tokens, the estimate
    four, because one merge the weights did not foresee is a large share of a short
    count. It can count low on text that no tokenizer compresses and that has few
    spaces or capitals: random base64 or hex strings come out at 0.8x on average,
    0.5x at worst. Against cl100k_base: the same on ASCII, 1.4x on emoji and
    Japanese. Texts with digits pay two regex scans (o200k splits digits from the
    spaces before them). Cost: a few byte translations in C, about 1.5 us per KB.
    """

    name = "estimate"

    def count(self, text: str) -> int:
        """Estimated tokens of ``text`` (never fewer than the real count on ordinary
        English, code, emoji and Japanese)."""
        if not text:
            return 0
        raw = text.encode()
        rest = len(raw)
        # Runs of spaces (indentation) merge into one or two tokens.
        total = -0.3 * raw.count(b"  ")
        encoded = raw
        for members, weight in _WEIGHTS:
            raw = raw.translate(None, members)
            kept = len(raw)
            if members is _DIGITS and kept < rest:
                total += 0.4 * len(_SPACE_BEFORE_DIGIT.findall(encoded)) + 0.3 * len(_LONE_DIGIT.findall(encoded))
            total += (rest - kept) * weight
            rest = kept
        return max(1, math.ceil(total + rest * _PUNCT_WEIGHT))


def _load_encoding(encoding: str) -> Any:
    try:
        import bpe_openai
    except ImportError:
        import tiktoken  # may download its vocabulary: fails offline

        return tiktoken.get_encoding(encoding)
    return bpe_openai.get_encoding(encoding)


class BpeCounter:
    """Exact OpenAI token counts with the ``encoding`` vocabulary, loaded on first use.

    If no tokenizer can be loaded (package missing, vocabulary download failed) the
    counter logs a warning once and answers with ``EstimateCounter``'s estimate.
    """

    def __init__(self, encoding: str = "o200k_base", *, loader: Callable[[str], Any] = _load_encoding) -> None:
        self.name = encoding
        self._loader = loader
        self._encode: Callable[[str], list[int]] | None = None
        self._fallback: EstimateCounter | None = None
        self._lock = threading.Lock()

    @property
    def exact(self) -> bool:
        """True once the real tokenizer is loaded; False while falling back."""
        self._load()
        return self._fallback is None

    def _load(self) -> None:
        if self._encode is not None or self._fallback is not None:
            return
        with self._lock:
            if self._encode is not None or self._fallback is not None:
                return
            try:
                self._encode = self._loader(self.name).encode_ordinary
            except Exception as error:
                # Any failure (ImportError, a network error inside tiktoken, an unknown
                # encoding): counting must not fail a request, an estimate will do.
                _log.warning("tokenizer %r unavailable (%s); using the estimate", self.name, type(error).__name__)
                self._fallback = EstimateCounter()

    def count(self, text: str) -> int:
        """Tokens of ``text`` (exact, or the estimate if the tokenizer failed to load)."""
        if self._encode is None:
            self._load()
            if self._fallback is not None:
                return self._fallback.count(text)
            assert self._encode is not None
        return len(self._encode(text))


_ESTIMATE = EstimateCounter()
_NAMED: dict[str, TokenCounter] = {"estimate": _ESTIMATE}
# Model-name prefixes to counters, longest prefix wins. OpenAI's current models use
# o200k_base; GPT-4 and GPT-3.5 use cl100k_base.
_BY_PREFIX: dict[str, str | TokenCounter] = {
    "gpt-4o": "o200k_base",
    "gpt-4.1": "o200k_base",
    "gpt-4.5": "o200k_base",
    "gpt-5": "o200k_base",
    "o1": "o200k_base",
    "o3": "o200k_base",
    "o4": "o200k_base",
    "chatgpt-4o": "o200k_base",
    "gpt-4": "cl100k_base",
    "gpt-3.5": "cl100k_base",
    "gpt-35": "cl100k_base",
    "text-embedding-3": "cl100k_base",
    "text-embedding-ada-002": "cl100k_base",
}


_ENCODINGS = frozenset({"o200k_base", "cl100k_base", "p50k_base", "r50k_base"})


def counter_named(name: str) -> TokenCounter:
    """The counter called ``name``: ``"estimate"`` or a BPE encoding name
    (``o200k_base``, ``cl100k_base``, ``p50k_base``, ``r50k_base``), one shared instance
    per name. Raises ``ValueError`` for any other name."""
    counter = _NAMED.get(name)
    if counter is None:
        if name not in _ENCODINGS:
            known = ", ".join(sorted({"estimate", *_ENCODINGS}))
            raise ValueError(f"unknown token counter {name!r}; expected one of {known}")
        counter = _NAMED[name] = BpeCounter(name)
    return counter


def register_counter(prefix: str, counter: str | TokenCounter) -> None:
    """Count tokens of models whose name starts with ``prefix`` with ``counter`` (a
    counter or a counter name)."""
    _BY_PREFIX[prefix] = counter


def counter_for(model: str) -> TokenCounter:
    """The counter for ``model``: the longest registered prefix of its name (provider
    prefixes like ``openai/`` are ignored), else the estimate."""
    bare = model.rsplit("/", 1)[-1]
    best = ""
    for prefix in _BY_PREFIX:
        if bare.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    if not best:
        return _ESTIMATE
    choice = _BY_PREFIX[best]
    return counter_named(choice) if isinstance(choice, str) else choice


# OpenAI's chat format adds a few tokens per message (role, separators) and primes the
# reply with a few more; counting them keeps budgets honest.
PER_MESSAGE_TOKENS = 3
"""Framing tokens each chat message costs on top of its text."""
REPLY_PRIMING_TOKENS = 3
"""Tokens that prime the assistant's reply, once per prompt."""


def message_tokens(message: Message, count: Callable[[str], int]) -> int:
    """Tokens one message costs in a prompt: its text, name and tool calls (counted with
    ``count``), plus the framing. Trimming, rate limits and budgets all count this way."""
    tokens = PER_MESSAGE_TOKENS + (count(message.text) if message.content else 0)
    if message.name:
        tokens += 1 + count(message.name)
    if message.tool_calls:
        tokens += count(msgspec.json.encode(message.tool_calls).decode())
    return tokens


def prompt_tokens(messages: Sequence[Message], counter: TokenCounter | None = None) -> int:
    """Tokens of a whole prompt (``counter`` defaults to the estimate, which errs high)."""
    count = (counter or _ESTIMATE).count
    return sum(message_tokens(message, count) for message in messages) + REPLY_PRIMING_TOKENS


def input_tokens(request: Request, counter: TokenCounter | None = None) -> int:
    """Tokens ``request`` sends, whatever it is: its prompt (``prompt_tokens``) or, for an
    embeddings request, the texts it embeds plus its token ids (one each). Rate limits and
    budgets reserve this before the call."""
    embedding = request.embedding
    if embedding is None:
        return prompt_tokens(request.messages, counter)
    count = (counter or _ESTIMATE).count
    return sum(count(text) for text in embedding.texts) + embedding.token_ids
