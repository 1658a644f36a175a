"""Model prices, for the cost that ``metrics`` and ``logging`` report and ``budget`` charges.

Not a layer: a small table from model name to dollars per million input and output
tokens. A default table for common models ships here as data; a deployment replaces or
extends it from config (``[[middleware]] use = "metrics", prices = {...}`` or a TOML/JSON
file with ``prices_file``). A model the table does not know is *unknown*: its cost is
``None`` and the metrics count it as unpriced; nothing is guessed from similar names.
The one normalisation is a trailing snapshot tag (``gpt-4o-2024-08-06``,
``claude-3-5-sonnet-20241022``, ``…-latest``), which names the same priced model.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from onion import ConfigError, Usage

__all__ = ["DEFAULT_PRICES", "Price", "PriceTable", "default_prices"]


class Price(msgspec.Struct, frozen=True):
    """Dollars per million tokens: ``input`` for the prompt, ``output`` for the answer;
    ``as_of``: the date (ISO) the price took effect, when known."""

    input: float
    output: float
    as_of: str = ""

    def cost(self, usage: Usage) -> float:
        """The dollars ``usage`` costs at this price."""
        return (usage.prompt_tokens * self.input + usage.completion_tokens * self.output) / 1_000_000


# USD per 1M tokens (input, output, the date the price took effect: the model's release
# or its last price change), standard tier, as the vendors list them on their pricing
# pages. It covers the models of the providers onion ships (OpenAI, Anthropic) and the
# Gemini models behind Google's OpenAI-compatible endpoint. Prices change: deployments
# that bill on these numbers should check them and override in ``[prices]``.
DEFAULT_PRICES: Mapping[str, tuple[float, float, str]] = {
    # OpenAI
    "gpt-5.1": (1.25, 10.00, "2025-11-13"),
    "gpt-5": (1.25, 10.00, "2025-08-07"),
    "gpt-5-chat": (1.25, 10.00, "2025-08-07"),
    "gpt-5-mini": (0.25, 2.00, "2025-08-07"),
    "gpt-5-nano": (0.05, 0.40, "2025-08-07"),
    "gpt-4.1": (2.00, 8.00, "2025-04-14"),
    "gpt-4.1-mini": (0.40, 1.60, "2025-04-14"),
    "gpt-4.1-nano": (0.10, 0.40, "2025-04-14"),
    "gpt-4o": (2.50, 10.00, "2024-08-06"),
    "gpt-4o-2024-05-13": (5.00, 15.00, "2024-05-13"),
    "gpt-4o-mini": (0.15, 0.60, "2024-07-18"),
    "text-embedding-3-small": (0.02, 0.0, "2024-01-25"),
    "text-embedding-3-large": (0.13, 0.0, "2024-01-25"),
    "text-embedding-ada-002": (0.10, 0.0, "2022-12-15"),
    "gpt-4-turbo": (10.00, 30.00, "2024-04-09"),
    "gpt-4": (30.00, 60.00, "2023-03-14"),
    "gpt-3.5-turbo": (0.50, 1.50, "2024-01-25"),
    "o1": (15.00, 60.00, "2024-12-17"),
    "o1-mini": (1.10, 4.40, "2025-01-31"),
    "o3-pro": (20.00, 80.00, "2025-06-10"),
    "o3": (2.00, 8.00, "2025-06-10"),
    "o3-mini": (1.10, 4.40, "2025-01-31"),
    "o4-mini": (1.10, 4.40, "2025-04-16"),
    # Anthropic
    "claude-opus-4-5": (5.00, 25.00, "2025-11-24"),
    "claude-opus-4-1": (15.00, 75.00, "2025-08-05"),
    "claude-opus-4": (15.00, 75.00, "2025-05-22"),
    "claude-sonnet-4-5": (3.00, 15.00, "2025-09-29"),
    "claude-sonnet-4": (3.00, 15.00, "2025-05-22"),
    "claude-3-7-sonnet": (3.00, 15.00, "2025-02-24"),
    "claude-3-5-sonnet": (3.00, 15.00, "2024-06-20"),
    "claude-haiku-4-5": (1.00, 5.00, "2025-10-15"),
    "claude-3-5-haiku": (0.80, 4.00, "2024-11-04"),
    "claude-3-opus": (15.00, 75.00, "2024-03-04"),
    "claude-3-haiku": (0.25, 1.25, "2024-03-07"),
    # Google (OpenAI-compatible endpoint)
    "gemini-2.5-pro": (1.25, 10.00, "2025-06-17"),
    "gemini-2.5-flash": (0.30, 2.50, "2025-06-17"),
    "gemini-2.0-flash": (0.10, 0.40, "2025-02-05"),
    "gemini-1.5-pro": (1.25, 5.00, "2024-10-01"),
    "gemini-1.5-flash": (0.075, 0.30, "2024-08-12"),
}

# A snapshot tag at the end of a model name: -2024-08-06, -20241022, -0613, -latest.
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)$")

PriceSpec = Price | tuple[float, float] | tuple[float, float, str] | list[float] | Mapping[str, Any]
"""A price as config gives it: ``Price``, ``(input, output[, as_of])`` or ``{input=…,
output=…, as_of="2025-08-07"}``. A price of zero is allowed: it says free on purpose."""


def _to_price(model: str, spec: Any) -> Price:
    try:
        if isinstance(spec, Price):
            return spec
        if isinstance(spec, (tuple, list)):
            input_price, output_price, *as_of = spec
            price = Price(float(input_price), float(output_price), *map(str, as_of))
        else:
            price = msgspec.convert(dict(spec), Price, strict=False)
        if price.input < 0 or price.output < 0:
            raise ValueError("a price cannot be negative")
        return price
    except (TypeError, ValueError, msgspec.ValidationError) as error:
        raise ConfigError(
            f"price for model {model!r} must be {{input = <$ per 1M>, output = <$ per 1M>}}: {error}"
        ) from None


class PriceTable:
    """Model name → ``Price``. ``cost(model, usage)`` is ``None`` for an unknown model."""

    __slots__ = ("_cache", "prices")

    def __init__(self, prices: Mapping[str, PriceSpec] | None = None) -> None:
        self.prices: dict[str, Price] = {model: _to_price(model, spec) for model, spec in (prices or {}).items()}
        # Lookups are per request; the snapshot regex runs once per distinct model name.
        self._cache: dict[str, Price | None] = {}

    @classmethod
    def default(cls) -> PriceTable:
        """The table shipped with onion (see ``DEFAULT_PRICES``)."""
        return cls(DEFAULT_PRICES)

    @classmethod
    def from_file(cls, path: str | Path) -> PriceTable:
        """Load ``{model = {input = …, output = …}}`` from a ``.toml`` or ``.json`` file.

        In TOML the models may also sit under a ``[prices]`` table.
        """
        path = Path(path)
        try:
            raw = path.read_bytes()
            data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read price table {str(path)!r}: {error}") from None
        if isinstance(data, dict) and "prices" in data:
            data = data["prices"]
        if not isinstance(data, dict):
            raise ConfigError(f"price table {str(path)!r} must map model names to prices")
        return cls(data)

    @classmethod
    def build(
        cls, prices: Mapping[str, PriceSpec] | None = None, prices_file: str | None = None, *, defaults: bool = True
    ) -> PriceTable:
        """The table a layer's config asks for: the defaults, then the file, then ``prices``."""
        if prices is None and prices_file is None and defaults:
            return default_prices()
        table = cls(DEFAULT_PRICES) if defaults else cls()
        if prices_file is not None:
            table.prices.update(cls.from_file(prices_file).prices)
        if prices:
            table.prices.update(cls(prices).prices)
        return table

    def lookup(self, model: str) -> Price | None:
        """The price of ``model`` (exact name, or the name without a snapshot tag)."""
        try:
            return self._cache[model]
        except KeyError:
            pass
        price = self.prices.get(model)
        if price is None:
            base = _SNAPSHOT.sub("", model)
            price = self.prices.get(base) if base != model else None
        if len(self._cache) < 4096:  # model names come from callers: bound the memo
            self._cache[model] = price
        return price

    def cost(self, model: str, usage: Usage | None) -> float | None:
        """Estimated dollars for ``usage`` on ``model``; ``None`` if the model is unknown
        or there is no usage to price."""
        if usage is None:
            return None
        price = self.lookup(model)
        return None if price is None else price.cost(usage)

    def __contains__(self, model: str) -> bool:
        return self.lookup(model) is not None

    def __repr__(self) -> str:
        return f"PriceTable({len(self.prices)} models)"


_DEFAULT: PriceTable | None = None


def default_prices() -> PriceTable:
    """The shared default table (built once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = PriceTable.default()
    return _DEFAULT
