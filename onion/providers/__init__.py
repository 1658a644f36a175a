"""Providers: the terminal handlers at the centre of the onion.

- ``OpenAIProvider``: any OpenAI-compatible chat-completions API over one pooled
  ``httpx.AsyncClient``;
- ``AnthropicProvider``: Anthropic's Messages API behind the same request shape;
- ``SimulatedProvider``: an in-process model with latency and injected faults;
- ``Router``: picks the provider for a request's model (``provider/model`` explicit),
  balancing a model's several deployments (``HealthTable``, ``EjectionPolicy``,
  ``SharedHealth`` in ``balance.py``).

``build_provider(kind, **params)`` builds one from a configuration table's values.
"""

from __future__ import annotations

from typing import Any

from ._http import HTTPProvider, classify_status, parse_retry_after
from .anthropic import AnthropicProvider
from .balance import DeploymentState, EjectionPolicy, HealthTable, SharedHealth
from .openai import OpenAIProvider
from .router import Provider, Router
from .simulated import SimulatedProvider

__all__ = [
    "AnthropicProvider",
    "DeploymentState",
    "EjectionPolicy",
    "HTTPProvider",
    "HealthTable",
    "OpenAIProvider",
    "Provider",
    "Router",
    "SharedHealth",
    "SimulatedProvider",
    "build_provider",
    "classify_status",
    "parse_retry_after",
]

KINDS: dict[str, type[Any]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "simulated": SimulatedProvider,
}
"""Provider classes by the ``kind`` a configuration names."""


def build_provider(kind: str, **params: Any) -> Provider:
    """A provider of ``kind`` (``openai``, ``anthropic``, ``simulated``) built from ``params``."""
    try:
        cls = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown provider kind {kind!r}; expected one of {', '.join(KINDS)}") from None
    return cls(**params)
