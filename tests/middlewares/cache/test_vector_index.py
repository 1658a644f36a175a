"""Laws of the vector index: the same best match as a brute-force reference, capacity
bounds, deletion and expiry without rebuild, LRU eviction; the HNSW backend agrees."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlewares.cache.vector_index import UsearchIndex, VectorIndex, make_index, normalize
from onion.testing import FakeClock

DIM = 8

vectors = st.lists(st.integers(-4, 4), min_size=DIM, max_size=DIM).filter(any).map(lambda v: np.array(v, float))
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 30), vectors, st.sampled_from("ab"), st.sampled_from([None, 1, 5])),
        st.tuples(st.just("delete"), st.integers(0, 30), st.none(), st.none(), st.none()),
        st.tuples(st.just("search"), st.none(), vectors, st.sampled_from("abc"), st.none()),
        st.tuples(st.just("advance"), st.integers(0, 3), st.none(), st.none(), st.none()),
    ),
    max_size=60,
)


@settings(max_examples=80, deadline=None)
@given(capacity=st.integers(1, 12), initial=st.integers(1, 4), ops=OPS)
def test_law_same_best_match_as_brute_force_and_capacity_holds(capacity: int, initial: int, ops: list) -> None:
    clock = FakeClock()
    removed: list[str] = []
    index = VectorIndex(DIM, capacity, initial_rows=initial, clock=clock, on_remove=removed.append)
    # Reference: key -> (unit vector in float64, scope, expires_at).
    live: dict[str, tuple[np.ndarray, str, float]] = {}
    for op, key_n, vector, scope, ttl in ops:
        key = f"k{key_n}"
        if op == "add":
            index.add(key, vector, scope, ttl)
            unit = vector / np.linalg.norm(vector)
            live[key] = (unit, scope, clock.now() + ttl if ttl is not None else np.inf)
        elif op == "delete":
            assert index.delete(key) == (key in live)
            live.pop(key, None)
        elif op == "advance":
            clock.advance(key_n)
        else:
            query = vector / np.linalg.norm(vector)
            candidates = {k: float(u @ query) for k, (u, s, exp) in live.items() if s == scope and exp > clock.now()}
            match = index.search(vector, scope)
            if not candidates:
                assert match is None
            else:
                assert match is not None
                best = max(candidates.values())
                assert match.score == pytest.approx(best, abs=1e-5)
                assert candidates[match.key] == pytest.approx(best, abs=1e-5)
        for key_removed in removed:
            live.pop(key_removed, None)
        removed.clear()
        assert len(index) <= capacity
        assert len(index._keys) <= capacity
        # Every entry the index holds is one the reference holds (evicted/expired ones
        # were reported through on_remove and dropped from the reference).
        assert set(index._rows) == {k for k in live if k in index}
        assert set(index._rows) <= set(live)


def test_vectors_are_stored_normalized_float32_and_the_matrix_grows_by_doubling() -> None:
    index = VectorIndex(4, capacity=10, initial_rows=2)
    for i in range(5):
        index.add(f"k{i}", np.array([i + 1.0, 0, 0, 1]), "s")
    assert index._vectors.dtype == np.float32
    assert index._vectors.flags.c_contiguous
    assert index._vectors.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(index._vectors[:, :5], axis=0), 1.0, rtol=1e-6)
    for i in range(5, 12):
        index.add(f"k{i}", np.array([i + 1.0, 0, 0, 1]), "s")
    assert index._vectors.shape == (4, 10) and len(index) == 10


def test_delete_reuses_the_row_without_rebuilding() -> None:
    index = VectorIndex(3, capacity=4)
    index.add("a", np.array([1.0, 0, 0]), "s")
    index.add("b", np.array([0, 1.0, 0]), "s")
    matrix = index._vectors
    assert index.delete("a") and not index.delete("a")
    assert index.search(np.array([1.0, 0, 0]), "s").key == "b"
    index.add("c", np.array([0, 0, 1.0]), "s")
    assert index._vectors is matrix and index._high == 2


def test_scope_restricts_the_match() -> None:
    index = VectorIndex(2, capacity=4)
    index.add("alice", np.array([1.0, 0]), "tenant-a")
    index.add("bob", np.array([0.7, 0.7]), "tenant-b")
    assert index.search(np.array([1.0, 0]), "tenant-b").key == "bob"
    assert index.search(np.array([1.0, 0]), "tenant-c") is None


def test_full_index_drops_expired_entries_first_then_the_least_recently_used() -> None:
    clock = FakeClock()
    removed: list[str] = []
    index = VectorIndex(2, capacity=3, clock=clock, on_remove=removed.append)
    index.add("old", np.array([1.0, 0]), "s")
    clock.advance(1)
    index.add("short", np.array([0, 1.0]), "s", ttl_seconds=5)
    clock.advance(1)
    index.add("new", np.array([1.0, 1.0]), "s")
    clock.advance(10)
    index.add("d", np.array([1.0, 2.0]), "s")
    assert removed == ["short"] and index.expirations == 1
    clock.advance(1)
    assert index.search(np.array([1.0, 0]), "s").key == "old"  # a hit refreshes "old"
    index.add("e", np.array([2.0, 1.0]), "s")
    assert removed == ["short", "new"] and index.evictions == 1


def test_zero_vector_and_wrong_dimension() -> None:
    assert not normalize(np.zeros(3)).any()
    index = VectorIndex(3)
    with pytest.raises(ValueError, match="dimensions"):
        index.add("k", np.ones(4), "s")
    with pytest.raises(ValueError, match="index"):
        make_index("faiss", 3, 10)


def test_usearch_backend_finds_the_same_best_match_on_near_duplicates() -> None:
    pytest.importorskip("usearch")
    rng = np.random.default_rng(7)
    data = rng.standard_normal((2000, 32)).astype(np.float32)
    exact = VectorIndex(32, 5000)
    ann = UsearchIndex(32, 5000)
    for i, v in enumerate(data):
        scope = "a" if i % 2 else "b"
        exact.add(str(i), v, scope)
        ann.add(str(i), v, scope)
    agree = 0
    for i in range(0, 2000, 20):
        query = data[i] + 0.1 * rng.standard_normal(32).astype(np.float32)
        scope = "a" if i % 2 else "b"
        assert exact.search(query, scope).key == str(i)
        found = ann.search(query, scope)
        agree += found is not None and found.key == str(i)
    assert agree >= 95
    assert ann.delete("0") and "0" not in ann
    found = ann.search(data[0], "b")
    assert found is None or found.key != "0"


def test_usearch_backend_bounds_capacity_and_expires() -> None:
    pytest.importorskip("usearch")
    clock = FakeClock()
    removed: list[str] = []
    ann = UsearchIndex(4, capacity=3, clock=clock, on_remove=removed.append)
    for i in range(4):
        ann.add(f"k{i}", np.array([1.0, i, 0, 0]), "s", ttl_seconds=10)
    assert len(ann) == 3 and removed == ["k0"]
    clock.advance(11)
    assert ann.search(np.array([1.0, 1, 0, 0]), "s") is None
    assert len(ann) == 0


@settings(max_examples=40, deadline=None)
@given(
    capacity=st.integers(1, 20),
    first=st.lists(vectors, max_size=8),
    batch=st.lists(vectors, min_size=1, max_size=12),
    queries=st.lists(vectors, min_size=1, max_size=5),
)
def test_law_add_many_is_the_same_as_adding_one_by_one(capacity: int, first: list, batch: list, queries: list) -> None:
    bulk, single = VectorIndex(DIM, capacity, initial_rows=2), VectorIndex(DIM, capacity, initial_rows=2)
    for i, v in enumerate(first):
        bulk.add(f"f{i}", v, "s")
        single.add(f"f{i}", v, "s")
    keys = [f"b{i}" for i in range(len(batch))]
    bulk.add_many(keys, np.array(batch), "s")
    for key, v in zip(keys, batch, strict=True):
        single.add(key, v, "s")
    assert set(bulk._rows) == set(single._rows) and len(bulk) <= capacity
    for q in queries:
        a, b = bulk.search(q, "s"), single.search(q, "s")
        assert a is not None and b is not None and a.score == pytest.approx(b.score, abs=1e-6)


def test_usearch_add_many_respects_capacity() -> None:
    pytest.importorskip("usearch")
    ann = UsearchIndex(4, capacity=5)
    ann.add("x", np.array([0, 0, 0, 1.0]), "s")
    ann.add_many([f"k{i}" for i in range(7)], np.eye(4)[np.arange(7) % 4] + 0.01, "s")
    assert len(ann) == 5 and "x" not in ann
    assert ann.search(np.array([0, 0, 1.0, 0]), "s").key in {"k2", "k6"}


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(vectors, st.sampled_from("ab"), st.sampled_from([None, 1])), max_size=20),
    vectors,
    st.sampled_from("ab"),
    st.integers(1, 5),
)
def test_law_search_many_is_the_k_best_live_entries_in_order(
    entries: list[tuple[np.ndarray, str, float | None]], query: np.ndarray, scope: str, k: int
) -> None:
    clock = FakeClock()
    index = VectorIndex(DIM, 64, clock=clock)
    live: dict[str, float] = {}
    unit = query / np.linalg.norm(query)
    for n, (vector, in_scope, ttl) in enumerate(entries):
        index.add(f"k{n}", vector, in_scope, ttl)
        if in_scope == scope and ttl is None:
            live[f"k{n}"] = float(vector / np.linalg.norm(vector) @ unit)
    clock.advance(2)  # the entries with a TTL of 1 s are gone
    found = index.search_many(query, scope, k)
    best = sorted(live.values(), reverse=True)[:k]
    assert [m.score for m in found] == pytest.approx(best, abs=1e-5)
    assert all(live[m.key] == pytest.approx(m.score, abs=1e-5) for m in found)
    assert len({m.key for m in found}) == len(found)
    single = index.search(query, scope)
    assert (single is None) == (not found) and (single is None or single.score == pytest.approx(found[0].score))
