"""The router: the handler at the centre of the onion that picks a provider by model.

A model name goes to the provider that lists it; ``provider/model`` picks a provider
explicitly (the prefix is removed before the call); a provider that lists no models
serves any name no other provider claims. An unknown model is ``ModelNotFound`` (404)
naming the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

from .._response import Response
from .._types import Request
from ..errors import ConfigError, ModelNotFound

__all__ = ["Provider", "Router"]


@runtime_checkable
class Provider(Protocol):
    """A terminal handler with a ``name`` and the ``models`` it serves (empty: any)."""

    name: str
    models: tuple[str, ...]

    async def __call__(self, request: Request, /) -> Response: ...


class Router:
    """Routes each request to a provider by its ``model``; itself a handler.

    ``Router([primary, backup])``: the first provider listing a model serves it.
    """

    name = "router"

    def __init__(self, providers: Sequence[Provider]) -> None:
        if not providers:
            raise ConfigError("the router needs at least one provider")
        self.providers: dict[str, Provider] = {}
        self._by_model: dict[str, Provider] = {}
        self._all_by_model: dict[str, list[Provider]] = {}
        self._catch_all: Provider | None = None
        for provider in providers:
            if provider.name in self.providers:
                raise ConfigError(f"two providers are named {provider.name!r}")
            self.providers[provider.name] = provider
            for model in provider.models:
                self._by_model.setdefault(model, provider)
                self._all_by_model.setdefault(model, []).append(provider)
            if not provider.models and self._catch_all is None:
                self._catch_all = provider

    def route(self, model: str) -> tuple[Provider, str]:
        """The provider for ``model`` and the model name to send it."""
        provider = self._by_model.get(model)
        if provider is not None:
            return provider, model
        prefix, slash, rest = model.partition("/")
        if slash and rest:
            explicit = self.providers.get(prefix)
            if explicit is not None and (not explicit.models or rest in explicit.models):
                return explicit, rest
        if self._catch_all is not None:
            return self._catch_all, model
        raise ModelNotFound(model if len(model) <= 200 else model[:200] + "…")

    def models(self) -> list[tuple[str, str]]:
        """``(model, provider name)`` for every model a provider lists, in order."""
        return [(model, provider.name) for model, provider in self._by_model.items()]

    def deployments(self, model: str) -> list[Provider]:
        """Every provider that lists ``model``, in configuration order.

        A name no provider lists resolves as ``route`` does (explicit prefix, then the
        catch-all); an unknown model is ``ModelNotFound``.
        """
        listed = self._all_by_model.get(model)
        if listed:
            return list(listed)
        return [self.route(model)[0]]

    def healthy_deployments(self, model: str) -> list[Provider]:
        """The deployments of ``model`` not currently ejected.

        The router does not eject deployments yet (no health data is kept), so this is
        every deployment; ``/readyz`` asks this name so that ejection can land behind it.
        """
        return self.deployments(model)

    async def __call__(self, request: Request) -> Response:
        provider, model = self.route(request.model)
        if model != request.model:
            request = msgspec.structs.replace(request, model=model)
        return await provider(request)

    async def aclose(self) -> None:
        """Close every provider's connections."""
        for provider in self.providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()

    def __repr__(self) -> str:
        return f"Router({list(self.providers.values())!r})"
