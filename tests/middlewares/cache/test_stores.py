"""Laws of the cache stores: the byte bound holds, LRU order, TTL, msgspec round trip,
and the Redis store against a real redis-server."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlewares.cache.stores import (
    ENTRY_OVERHEAD,
    MemoryStore,
    RedisStore,
    decode_completion,
    encode_completion,
    make_store,
)
from onion import Completion, Context, Usage
from onion.testing import FakeClock


def cost(key: str, value: bytes) -> int:
    return len(key) + len(value) + ENTRY_OVERHEAD


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 20), st.integers(0, 400), st.sampled_from([None, 1.0, 5.0])),
        st.tuples(st.just("get"), st.integers(0, 20), st.just(0), st.just(None)),
        st.tuples(st.just("delete"), st.integers(0, 20), st.just(0), st.just(None)),
        st.tuples(st.just("advance"), st.just(0), st.integers(0, 3), st.just(None)),
    ),
    max_size=80,
)


@settings(max_examples=80, deadline=None)
@given(max_bytes=st.integers(100, 3000), ops=OPS)
def test_law_memory_store_matches_an_lru_model_and_stays_under_its_byte_bound(
    max_bytes: int, ops: list[tuple[str, int, int, float | None]]
) -> None:
    clock = FakeClock()
    store = MemoryStore(max_bytes, clock=clock)
    # A reference model: ordered dict of key -> (expires_at, value), oldest first.
    model: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
    for op, k, n, ttl in ops:
        key = f"k{k}"
        if op == "set":
            value = bytes([k % 256]) * n
            store.set_now(key, value, ttl)
            model.pop(key, None)
            if cost(key, value) <= max_bytes:
                while sum(cost(x, v) for x, (_, v) in model.items()) + cost(key, value) > max_bytes:
                    model.popitem(last=False)
                model[key] = (clock.now() + ttl if ttl is not None else float("inf"), value)
        elif op == "get":
            entry = model.get(key)
            expected = None
            if entry is not None:
                if entry[0] <= clock.now():
                    del model[key]
                else:
                    model.move_to_end(key)
                    expected = entry[1]
            assert store.get_now(key) == expected
        elif op == "delete":
            model.pop(key, None)
            store.delete_now(key)
        else:
            clock.advance(n)
        assert store.size_bytes <= max_bytes
        assert store.size_bytes == sum(cost(x, v) for x, (_, v) in model.items())
        assert list(store._entries) == list(model)


def test_value_larger_than_the_bound_is_not_stored() -> None:
    store = MemoryStore(200)
    store.set_now("small", b"x" * 10, None)
    store.set_now("huge", b"x" * 500, None)
    assert store.get_now("huge") is None
    assert store.get_now("small") == b"x" * 10
    assert store.stats.evictions == 0


def test_eviction_is_least_recently_used_first_and_counted() -> None:
    store = MemoryStore(3 * cost("a", b"1" * 10))
    for key in "abc":
        store.set_now(key, b"1" * 10, None)
    assert store.get_now("a") is not None
    store.set_now("d", b"1" * 10, None)
    assert store.get_now("b") is None
    assert all(store.get_now(k) is not None for k in "acd")
    assert store.stats.evictions == 1


@given(
    content=st.text(max_size=100),
    usage=st.none() | st.builds(Usage, st.integers(0, 9), st.integers(0, 9), st.integers(0, 99)),
    tool_calls=st.none() | st.lists(st.fixed_dictionaries({"id": st.text(max_size=5)}), max_size=2),
)
def test_law_completion_encoding_round_trips(content: str, usage: Usage | None, tool_calls: list | None) -> None:
    completion = Completion(content=content, model="m", usage=usage, tool_calls=tool_calls, id="x", created=7)
    assert decode_completion(encode_completion(completion)) == completion


def test_make_store_rejects_unknown_backends() -> None:
    with pytest.raises(ValueError, match="backend"):
        make_store("disk", max_bytes=10, redis_url=None, prefix="", clock=None)
    with pytest.raises(ValueError, match="redis_url"):
        make_store("redis", max_bytes=10, redis_url=None, prefix="", clock=None)


async def test_redis_store_round_trip_ttl_and_delete(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix="test:" + Context().request_id + ":")
    other = RedisStore(redis_url, prefix=store.prefix)
    try:
        await store.set("k", b"value", 60)
        assert await other.get("k") == b"value"
        ttl_ms = store.redis.sync.pttl(store.prefix + "k")
        assert 0 < ttl_ms <= 60_000
        await other.delete("k")
        assert await store.get("k") is None
        await store.set("forever", b"v", None)
        assert store.redis.sync.pttl(store.prefix + "forever") == -1
    finally:
        await store.aclose()
        await other.aclose()
