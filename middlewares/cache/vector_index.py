"""The semantic cache's vector index: nearest stored prompt within one scope.

``VectorIndex`` keeps every vector L2-normalized (once, at insert) in one preallocated,
contiguous float32 matrix that grows by doubling up to a fixed capacity. A lookup is one
vector-matrix product over the used slots (BLAS sgemv, memory-bandwidth bound) and an
argmax restricted to the scope; there is no Python loop and no per-lookup norm. float32
on purpose: numpy has no BLAS path for float16 and was measured ~50x slower with it.
The matrix is stored dim x capacity (one column per entry): sgemv then streams the
matrix row by row into a small accumulator, measured 2-3x faster here than the
entries-as-rows layout, whose kernel computes one short dot product per entry.
Deleting an entry frees its slot for reuse; expiry is checked on the match and swept in bulk
when room is needed, so nothing is ever rebuilt. When full, the least recently used
entry is evicted.

``UsearchIndex`` is the same interface over an HNSW graph (the ``usearch`` package), for
caches too large for a full scan per lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import numpy as np

from onion import Clock, system_clock

__all__ = ["Match", "NearestIndex", "UsearchIndex", "VectorIndex", "make_index", "normalize"]


class Match(msgspec.Struct, frozen=True):
    """The best stored entry for a query: its ``key`` and cosine ``score``."""

    key: str
    score: float


class NearestIndex(Protocol):
    """What the semantic cache needs from an index."""

    on_remove: Callable[[str], None] | None
    dim: int

    def add(self, key: str, vector: np.ndarray, scope: str, ttl_seconds: float | None = None) -> None:
        """Store (or replace) ``key``'s vector in ``scope``."""
        ...

    def search(self, vector: np.ndarray, scope: str) -> Match | None:
        """The most similar live entry in ``scope``, or ``None``."""
        ...

    def delete(self, key: str) -> bool:
        """Remove ``key``; ``False`` if it was not there."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, key: object) -> bool: ...


def normalize(vector: np.ndarray) -> np.ndarray:
    """``vector`` as float32 with unit L2 norm (a zero vector stays zero)."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


class VectorIndex:
    """Exact nearest-neighbour index: a float32 matrix scanned by one mat-vec per lookup.

    ``capacity`` bounds the number of entries; ``initial_rows`` is the first allocation
    (it doubles as needed). ``on_remove(key)`` is called for every entry removed by
    expiry or eviction (not for ``delete``), so the owner can drop what it keeps beside.
    """

    def __init__(
        self,
        dim: int,
        capacity: int = 100_000,
        *,
        initial_rows: int = 1024,
        clock: Clock | None = None,
        on_remove: Callable[[str], None] | None = None,
    ) -> None:
        if dim <= 0 or capacity <= 0:
            raise ValueError("dim and capacity must be positive")
        self.dim = dim
        self.capacity = capacity
        self.clock = clock or system_clock
        self.on_remove = on_remove
        rows = max(1, min(capacity, initial_rows))
        self._vectors = np.zeros((dim, rows), dtype=np.float32)  # column j = entry j
        self._scopes = np.full(rows, -1, dtype=np.int32)  # -1 marks a free row
        self._expires = np.full(rows, np.inf, dtype=np.float64)
        self._used = np.zeros(rows, dtype=np.float64)  # last insert or hit, for LRU
        self._keys: list[str | None] = [None] * rows
        self._rows: dict[str, int] = {}
        self._free: list[int] = []
        self._high = 0  # rows [0, _high) have been used; lookups scan only those
        self._scope_ids: dict[str, int] = {}
        self._scope_sizes: dict[int, int] = {}
        self._next_scope = 0
        self.evictions = 0
        self.expirations = 0

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated arrays (vectors and per-row bookkeeping)."""
        arrays = (self._vectors, self._scopes, self._expires, self._used)
        return sum(a.nbytes for a in arrays) + 8 * len(self._keys)

    def add(self, key: str, vector: np.ndarray, scope: str, ttl_seconds: float | None = None) -> None:
        """Store ``vector`` (normalized here) under ``key`` in ``scope``."""
        v = normalize(vector)
        if v.shape[0] != self.dim:
            raise ValueError(f"vector has {v.shape[0]} dimensions, the index {self.dim}")
        if key in self._rows:
            self.delete(key)
        row = self._take_row()
        now = self.clock.now()
        self._vectors[:, row] = v
        sid = self._scope_id(scope)
        self._scopes[row] = sid
        self._scope_sizes[sid] = self._scope_sizes.get(sid, 0) + 1
        self._expires[row] = now + ttl_seconds if ttl_seconds is not None else np.inf
        self._used[row] = now
        self._keys[row] = key
        self._rows[key] = row

    def add_many(self, keys: list[str], vectors: np.ndarray, scope: str, ttl_seconds: float | None = None) -> None:
        """``add`` for a batch (one scope): a bulk load, as after a Redis resync.

        New keys that fit without eviction are copied in one vectorized step.
        """
        if not keys:
            return
        needed = self._high + len(keys)
        if self._free or needed > self.capacity or any(key in self._rows for key in keys):
            for key, vector in zip(keys, vectors, strict=True):
                self.add(key, vector, scope, ttl_seconds)
            return
        unit = np.asarray(vectors, dtype=np.float32).reshape(len(keys), self.dim)
        unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-30)
        if len(self._keys) < needed:
            # Still doubling, but in one copy rather than one per doubling.
            rows = len(self._keys)
            while rows < needed:
                rows *= 2
            self._grow(min(self.capacity, rows))
        rows = slice(self._high, needed)
        now = self.clock.now()
        sid = self._scope_id(scope)
        self._vectors[:, rows] = unit.T
        self._scopes[rows] = sid
        self._scope_sizes[sid] = self._scope_sizes.get(sid, 0) + len(keys)
        self._expires[rows] = now + ttl_seconds if ttl_seconds is not None else np.inf
        self._used[rows] = now
        self._keys[rows] = keys
        self._rows.update(zip(keys, range(self._high, needed), strict=True))
        self._high = needed

    def search(self, vector: np.ndarray, scope: str) -> Match | None:
        """The most similar live entry in ``scope`` (cosine similarity), or ``None``."""
        found = self.search_many(vector, scope, 1)
        return found[0] if found else None

    def search_many(self, vector: np.ndarray, scope: str, k: int) -> list[Match]:
        """The ``k`` most similar live entries in ``scope``, best first (fewer if the
        scope holds fewer); expired rows met on the way are removed."""
        sid = self._scope_ids.get(scope)
        if sid is None:
            return []
        n = self._high
        sims = normalize(vector) @ self._vectors[:, :n]
        if self._scope_sizes[sid] != n:
            # Other scopes or free rows are present: mask them (one pass over n ints,
            # small beside the n x dim product).
            sims[self._scopes[:n] != sid] = -np.inf
        now = self.clock.now()
        found: list[Match] = []
        while len(found) < k:
            row = int(np.argmax(sims))
            score = float(sims[row])
            if score == -np.inf:
                break
            sims[row] = -np.inf
            if self._expires[row] > now:
                self._used[row] = now
                key = self._keys[row]
                assert key is not None
                found.append(Match(key, score))
            else:
                self._remove_row(row, expired=True)
        return found

    def delete(self, key: str) -> bool:
        """Remove ``key``: its row is freed for reuse, nothing is rebuilt."""
        row = self._rows.get(key)
        if row is None:
            return False
        self._free_row(row)
        return True

    def sweep(self) -> int:
        """Remove every expired entry; returns how many."""
        n = self._high
        rows = np.flatnonzero((self._expires[:n] <= self.clock.now()) & (self._scopes[:n] >= 0))
        for row in rows.tolist():
            self._remove_row(row, expired=True)
        return len(rows)

    def _take_row(self) -> int:
        if self._free:
            return self._free.pop()
        if self._high < len(self._keys):
            self._high += 1
            return self._high - 1
        if len(self._keys) < self.capacity:
            self._grow(min(self.capacity, 2 * len(self._keys)))
            self._high += 1
            return self._high - 1
        if not self.sweep():
            live = self._scopes[: self._high] >= 0
            row = int(np.argmin(np.where(live, self._used[: self._high], np.inf)))
            self._remove_row(row, expired=False)
        return self._free.pop()

    def _grow(self, rows: int) -> None:
        n = len(self._keys)
        vectors = np.zeros((self.dim, rows), dtype=np.float32)
        vectors[:, :n] = self._vectors
        self._vectors = vectors
        self._scopes = np.concatenate([self._scopes, np.full(rows - n, -1, dtype=np.int32)])
        self._expires = np.concatenate([self._expires, np.full(rows - n, np.inf)])
        self._used = np.concatenate([self._used, np.zeros(rows - n)])
        self._keys.extend([None] * (rows - n))

    def _remove_row(self, row: int, *, expired: bool) -> None:
        key = self._free_row(row)
        if expired:
            self.expirations += 1
        else:
            self.evictions += 1
        if self.on_remove is not None:
            self.on_remove(key)

    def _free_row(self, row: int) -> str:
        key = self._keys[row]
        assert key is not None
        sid = int(self._scopes[row])
        size = self._scope_sizes[sid] - 1
        if size:
            self._scope_sizes[sid] = size
        else:
            del self._scope_sizes[sid]
            self._scope_ids = {name: i for name, i in self._scope_ids.items() if i != sid}
        self._scopes[row] = -1
        self._keys[row] = None
        del self._rows[key]
        self._free.append(row)
        return key

    def _scope_id(self, scope: str) -> int:
        sid = self._scope_ids.get(scope)
        if sid is None:
            sid = self._scope_ids[scope] = self._next_scope
            self._next_scope += 1
        return sid


class UsearchIndex:
    """Approximate nearest-neighbour index (HNSW, ``usearch``) with ``VectorIndex``'s interface.

    The graph cannot filter by scope, so a lookup fetches ``oversample`` candidates and
    keeps the best one in the scope; with many tenants of similar traffic raise it, or
    use one index per tenant. When full, the oldest insert is evicted (FIFO).
    """

    def __init__(
        self,
        dim: int,
        capacity: int = 1_000_000,
        *,
        clock: Clock | None = None,
        on_remove: Callable[[str], None] | None = None,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
        oversample: int = 16,
    ) -> None:
        from usearch.index import Index

        self.dim = dim
        self.capacity = capacity
        self.clock = clock or system_clock
        self.on_remove = on_remove
        self.oversample = oversample
        self._index: Any = Index(
            ndim=dim,
            metric="ip",
            dtype="f32",
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )
        # label -> (key, scope, expires_at); insertion order is eviction order.
        self._meta: dict[int, tuple[str, str, float]] = {}
        self._labels: dict[str, int] = {}
        self._next_label = 0
        self.evictions = 0
        self.expirations = 0

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, key: object) -> bool:
        return key in self._labels

    def add(self, key: str, vector: np.ndarray, scope: str, ttl_seconds: float | None = None) -> None:
        """Store ``vector`` (normalized here) under ``key`` in ``scope``."""
        if key in self._labels:
            self.delete(key)
        while len(self._labels) >= self.capacity:
            oldest = next(iter(self._meta))
            self._remove_label(oldest)
            self.evictions += 1
        label = self._next_label
        self._next_label += 1
        self._index.add(label, normalize(vector))
        expires = self.clock.now() + ttl_seconds if ttl_seconds is not None else np.inf
        self._meta[label] = (key, scope, expires)
        self._labels[key] = label

    def add_many(self, keys: list[str], vectors: np.ndarray, scope: str, ttl_seconds: float | None = None) -> None:
        """``add`` for a batch (one scope), inserted by usearch's own threads."""
        for key in keys:
            if key in self._labels:
                self.delete(key)
        while self._labels and len(self._labels) + len(keys) > self.capacity:
            self._remove_label(next(iter(self._meta)))
            self.evictions += 1
        keys = keys[-self.capacity :]
        vectors = vectors[-self.capacity :]
        first = self._next_label
        self._next_label += len(keys)
        unit = np.asarray(vectors, dtype=np.float32)
        unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-30)
        self._index.add(np.arange(first, first + len(keys), dtype=np.uint64), unit)
        expires = self.clock.now() + ttl_seconds if ttl_seconds is not None else np.inf
        for offset, key in enumerate(keys):
            self._meta[first + offset] = (key, scope, expires)
            self._labels[key] = first + offset

    def search(self, vector: np.ndarray, scope: str) -> Match | None:
        """The best live candidate in ``scope`` among the ``oversample`` nearest."""
        found = self.search_many(vector, scope, 1)
        return found[0] if found else None

    def search_many(self, vector: np.ndarray, scope: str, k: int) -> list[Match]:
        """Up to ``k`` live candidates in ``scope`` among the ``oversample`` nearest, best first."""
        if not self._labels:
            return []
        found = self._index.search(normalize(vector), min(self.oversample, len(self._labels)))
        now = self.clock.now()
        out: list[Match] = []
        for label, distance in zip(found.keys.tolist(), found.distances.tolist(), strict=True):
            meta = self._meta.get(label)
            if meta is None or meta[1] != scope:
                continue
            if meta[2] <= now:
                self._remove_label(label)
                self.expirations += 1
                continue
            # usearch's "ip" distance is 1 - inner product.
            out.append(Match(meta[0], 1.0 - distance))
            if len(out) == k:
                break
        return out

    def delete(self, key: str) -> bool:
        """Remove ``key`` from the graph (marked deleted, not rebuilt)."""
        label = self._labels.get(key)
        if label is None:
            return False
        self._index.remove(label)
        del self._meta[label]
        del self._labels[key]
        return True

    def _remove_label(self, label: int) -> None:
        key = self._meta[label][0]
        self.delete(key)
        if self.on_remove is not None:
            self.on_remove(key)


def make_index(
    kind: str,
    dim: int,
    capacity: int,
    *,
    clock: Clock | None = None,
    on_remove: Callable[[str], None] | None = None,
) -> VectorIndex | UsearchIndex:
    """The index named by ``kind``: ``"numpy"`` (exact) or ``"usearch"`` (HNSW)."""
    if kind == "numpy":
        return VectorIndex(dim, capacity, clock=clock, on_remove=on_remove)
    if kind == "usearch":
        return UsearchIndex(dim, capacity, clock=clock, on_remove=on_remove)
    raise ValueError(f"index must be 'numpy' or 'usearch', got {kind!r}")
