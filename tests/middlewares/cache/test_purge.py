"""Laws of cache purge (``onion.Purgeable``) and refresh, for the exact cache (memory
and a real Redis) and the semantic cache (memory and Redis): a purge removes exactly
the entries its selector names and says how many; a refresh skips the lookup and
replaces the stored answer."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from middlewares.cache.exact import ExactCache
from middlewares.cache.semantic import SemanticCache
from onion import CacheSelector, Context, Message, Purgeable, Request, RequestOptions, Stack
from onion.testing import Reply, ScriptedProvider

CALLERS = ["alice", "bob"]
MODELS = ["m1", "m2"]
PROMPTS = ["what is an onion", "how do shallots grow"]
ENTRIES = list(itertools.product(CALLERS, MODELS, PROMPTS))
_prefixes = itertools.count()


def _request(caller: str, model: str, prompt: str, refresh: bool = False) -> Request:
    context = Context(caller=caller)
    if refresh:
        context.options = RequestOptions(refresh=True)
    return Request(model=model, messages=[Message("user", prompt)], context=context)


def _cache(kind: str, redis_url: str | None) -> Any:
    prefix = f"purge-law-{next(_prefixes)}:"
    backend = {"backend": "redis", "redis_url": redis_url, "prefix": prefix} if redis_url else {}
    return ExactCache(**backend) if kind == "exact" else SemanticCache(**backend)


def _selected(entry: tuple[str, str, str], selector: CacheSelector) -> bool:
    caller, model, _ = entry
    return (selector.scope in (None, caller)) and (selector.model in (None, model))


selectors = st.builds(CacheSelector, model=st.sampled_from([None, *MODELS]), scope=st.sampled_from([None, *CALLERS]))


async def _law(kind: str, redis_url: str | None, selector: CacheSelector, by_key: int | None) -> None:
    cache = _cache(kind, redis_url)
    assert isinstance(cache, Purgeable)
    stack = Stack([cache], ScriptedProvider(default=Reply("an answer")))
    keys = {}
    for entry in ENTRIES:
        response = await stack(_request(*entry))
        await response.result()
        assert response.cache == "miss"
        keys[entry] = response.headers["x-onion-cache-key"]
    if by_key is not None:
        target = ENTRIES[by_key]
        selector = msgspec.structs.replace(selector, key=keys[target])
        # The key's tags must agree with the narrowing fields for anything to go.
        doomed = {target} if _selected(target, selector) else set()
    else:
        doomed = {entry for entry in ENTRIES if _selected(entry, selector)}
    assert await cache.purge(selector) == len(doomed)
    for entry in ENTRIES:
        response = await stack(_request(*entry))
        await response.result()
        assert (response.cache == "miss") == (entry in doomed), (entry, selector)
    await cache.aclose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["exact", "semantic"]), selector=selectors, by_key=st.none() | st.integers(0, 7))
async def test_law_purge_removes_exactly_what_the_selector_names_in_memory(
    kind: str, selector: CacheSelector, by_key: int | None
) -> None:
    await _law(kind, None, selector, by_key)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["exact", "semantic"]), selector=selectors, by_key=st.none() | st.integers(0, 7))
async def test_law_purge_removes_exactly_what_the_selector_names_in_redis(
    redis_url: str, kind: str, selector: CacheSelector, by_key: int | None
) -> None:
    await _law(kind, redis_url, selector, by_key)


async def test_a_key_that_is_not_a_cache_key_purges_nothing() -> None:
    for cache in (ExactCache(), SemanticCache()):
        stack = Stack([cache], ScriptedProvider(default=Reply("an answer")))
        await (await stack(_request("alice", "m1", "hi"))).result()
        for key in ("*", "a.b", "*.*.*", "nope"):
            assert await cache.purge(CacheSelector(key=key)) == 0
        assert (await stack(_request("alice", "m1", "hi"))).cache == "hit"


async def test_refresh_skips_the_lookup_and_replaces_the_answer() -> None:
    for cache in (ExactCache(), SemanticCache()):
        provider = ScriptedProvider([Reply("stale"), Reply("fresh")])
        stack = Stack([cache], provider)
        assert await (await stack(_request("alice", "m1", "hi"))).result() is not None
        refreshed = await stack(_request("alice", "m1", "hi", refresh=True))
        assert (await refreshed.result()).content == "fresh" and refreshed.cache == "miss"
        again = await stack(_request("alice", "m1", "hi"))
        assert again.cache == "hit" and (await again.result()).content == "fresh"
        assert provider.calls == 2
