"""Caches: answer a request that was already answered.

In the order a request meets them::

    exact_cache ─▶ semantic_cache ─▶ … ─▶ provider

``stores`` keeps answers (memory, Redis); ``embedders`` and ``vector_index`` are what
the semantic cache finds its neighbours with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onion import lazy_getattr

if TYPE_CHECKING:
    # Static twins of the lazy names below (``X as X`` marks a re-export).
    from .embedders import Embedder as Embedder
    from .embedders import EmbedderError as EmbedderError
    from .embedders import HashedEmbedder as HashedEmbedder
    from .embedders import OpenAIEmbedder as OpenAIEmbedder
    from .embedders import SentenceTransformerEmbedder as SentenceTransformerEmbedder
    from .exact import CachePolicy as CachePolicy
    from .exact import ExactCache as ExactCache
    from .exact import request_key as request_key
    from .semantic import SemanticCache as SemanticCache
    from .semantic import SemanticStats as SemanticStats
    from .stores import CacheStats as CacheStats
    from .stores import CacheStore as CacheStore
    from .stores import MemoryStore as MemoryStore
    from .stores import RedisStore as RedisStore
    from .vector_index import Match as Match
    from .vector_index import NearestIndex as NearestIndex
    from .vector_index import UsearchIndex as UsearchIndex
    from .vector_index import VectorIndex as VectorIndex
    from .vector_index import make_index as make_index

_EXPORTS: dict[str, tuple[str, ...]] = {
    "exact": ("CachePolicy", "ExactCache", "request_key"),
    "semantic": ("SemanticCache", "SemanticStats"),
    "stores": ("CacheStats", "CacheStore", "MemoryStore", "RedisStore"),
    "embedders": ("Embedder", "EmbedderError", "HashedEmbedder", "OpenAIEmbedder", "SentenceTransformerEmbedder"),
    "vector_index": ("Match", "NearestIndex", "UsearchIndex", "VectorIndex", "make_index"),
}

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)

__getattr__ = lazy_getattr(__name__, _MODULE_OF, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
