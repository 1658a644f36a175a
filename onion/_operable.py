"""Hooks a layer may implement for the operator: readiness and cache purge.

The server finds them on the layers of the stack by shape (``isinstance`` against a
runtime-checkable protocol), never by importing a layer, so a third-party layer takes
part by defining the method:

- ``ping()``: the layer keeps state in a store outside the process (Redis, a database)
  and ``GET /readyz`` needs it answering. It returns when the store answers and raises
  when it does not; a layer whose backend is in process memory returns at once.
- ``purge(selector)``: the layer keeps answers (a cache) and ``DELETE /admin/cache``
  removes those the ``CacheSelector`` names, returning how many it removed.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import msgspec

__all__ = ["CacheSelector", "Pingable", "Purgeable"]


@runtime_checkable
class Pingable(Protocol):
    """A layer whose shared store ``/readyz`` checks: ``await layer.ping()`` returns when
    the store answers and raises (any exception) when it does not."""

    async def ping(self) -> None: ...


class CacheSelector(msgspec.Struct, frozen=True):
    """Which cached answers a purge removes: every field left ``None`` matches all.

    - ``model``: answers to requests for this model (the name the caller sent);
    - ``scope``: answers kept for this caller (the API key's name, or ``user``);
      ``""`` names the shared scope of ``scope = "shared"`` caches;
    - ``key``: the one entry with this key (the ``x-onion-cache-key`` of an answer).
    """

    model: str | None = None
    scope: str | None = None
    key: str | None = None


@runtime_checkable
class Purgeable(Protocol):
    """A layer that keeps answers: ``await layer.purge(selector)`` removes those the
    selector names, in every process sharing its store, and returns how many."""

    async def purge(self, selector: CacheSelector) -> int: ...
