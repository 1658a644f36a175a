"""Laws of the exact cache: hits return exactly what was stored, any answer-changing
difference misses, nothing blocked or failed is stored, streams and scopes behave."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from cache_toys import BadWordGuard, ForbiddenWordGuard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from middlewares.cache.exact import CachePolicy, ExactCache, request_key
from onion import (
    Chunk,
    ConfigError,
    Context,
    GuardrailViolation,
    Message,
    ProviderError,
    Request,
    RequestOptions,
    Response,
    Stack,
    Usage,
)
from onion.testing import Fail, FakeClock, Reply, ScriptedProvider

HEALTH = [HealthCheck.function_scoped_fixture]


def req(text: str = "What is 2+2?", *, stream: bool = False, caller: str | None = "alice", **fields: Any) -> Request:
    return Request(model="m", messages=[Message("user", text)], stream=stream, context=Context(caller=caller), **fields)


def fresh(request: Request) -> Request:
    """The same request with a new context (as a new HTTP call would have)."""
    return msgspec.structs.replace(request, context=Context(caller=request.context.caller))


async def read(response: Response) -> tuple[list[Chunk], str]:
    chunks = [chunk async for chunk in response]
    return chunks, "".join(c.content for c in chunks)


async def test_complete_miss_then_hit_returns_the_stored_answer() -> None:
    provider = ScriptedProvider([Reply("four", usage=Usage(3, 1, 4))])
    cache = ExactCache()
    stack = Stack([cache], provider)
    first = await stack(req())
    assert first.cache == "miss"
    stored = await first.result()
    second = await stack(req())
    assert second.served_by == "exact_cache"
    assert second.cache == "hit"
    assert await second.result() == stored
    assert provider.calls == 1
    assert (cache.stats.hits, cache.stats.misses, cache.stats.stores) == (1, 1, 1)


async def test_stream_miss_passes_chunks_then_replays_to_streaming_and_complete_callers() -> None:
    provider = ScriptedProvider([Reply("one two three four")])
    stack = Stack([ExactCache()], provider)
    chunks, text = await read(await stack(req(stream=True)))
    assert [c.content for c in chunks[:-1]] == ["one ", "two ", "three ", "four"]
    assert text == "one two three four"
    hit = await stack(req(stream=True))
    assert hit.is_stream and hit.served_by == "exact_cache"
    _, replayed = await read(hit)
    assert replayed == text
    complete = await stack(req(stream=False))
    assert not complete.is_stream
    assert (await complete.result()).content == text
    assert provider.calls == 1


async def test_stream_is_stored_only_after_its_last_chunk() -> None:
    provider = ScriptedProvider([Reply("a b c"), Reply("second")])
    stack = Stack([ExactCache()], provider)
    response = await stack(req(stream=True))
    iterator = response.__aiter__()
    await iterator.__anext__()
    # Mid-stream, an identical request is not answered from a half-finished entry.
    other = await stack(req())
    assert (await other.result()).content == "second"
    await response.aclose()


async def test_cut_stream_is_not_stored() -> None:
    provider = ScriptedProvider([Fail(ProviderError("cut"), after_chunks=2), Reply("whole")])
    stack = Stack([ExactCache()], provider)
    with pytest.raises(ProviderError):
        await read(await stack(req(stream=True)))
    assert (await (await stack(req(stream=True))).result()).content == "whole"
    assert provider.calls == 2


async def test_stream_closed_early_is_not_stored() -> None:
    provider = ScriptedProvider([Reply("a b c d"), Reply("again")])
    stack = Stack([ExactCache()], provider)
    response = await stack(req(stream=True))
    async for _chunk in response:
        break
    await response.aclose()
    assert provider.streams[0].closed
    assert (await (await stack(req())).result()).content == "again"


async def test_output_guard_violation_mid_stream_is_not_stored() -> None:
    provider = ScriptedProvider([Reply("fine then bad words"), Reply("clean")])
    stack = Stack([ExactCache(), BadWordGuard()], provider)
    with pytest.raises(GuardrailViolation):
        await read(await stack(req(stream=True)))
    assert provider.streams[0].closed
    assert (await (await stack(req())).result()).content == "clean"
    assert provider.calls == 2


async def test_blocked_input_is_never_looked_up_or_stored() -> None:
    provider = ScriptedProvider()
    cache = ExactCache()
    stack = Stack([ForbiddenWordGuard(), cache], provider)
    for _ in range(2):
        with pytest.raises(GuardrailViolation):
            await stack(req("forbidden thing"))
    assert cache.stats.hits + cache.stats.misses == 0
    assert len(cache.store) == 0


def test_cache_must_sit_inside_the_input_guard_and_outside_the_output_guard() -> None:
    with pytest.raises(ConfigError, match=r"guard\.input"):
        Stack([ExactCache(), ForbiddenWordGuard()], ScriptedProvider())
    with pytest.raises(ConfigError, match=r"guard\.output"):
        Stack([BadWordGuard(), ExactCache()], ScriptedProvider())


async def test_opt_out_option_skips_lookup_and_store() -> None:
    provider = ScriptedProvider()
    cache = ExactCache()
    stack = Stack([cache], provider)
    await (await stack(req())).result()
    opted = req()
    opted.context.options = RequestOptions(cache=False)
    response = await stack(opted)
    assert response.served_by == "scripted"
    assert provider.calls == 2 and cache.stats.bypassed == 1


async def test_nondeterministic_requests_are_not_cached_unless_the_policy_allows() -> None:
    provider = ScriptedProvider()
    stack = Stack([ExactCache()], provider)
    for _ in range(2):
        await (await stack(req(temperature=0.7))).result()
        await (await stack(req(n=3))).result()
    assert provider.calls == 4
    relaxed = Stack([ExactCache(policy=CachePolicy(max_temperature=1.0, allow_n=True))], provider)
    for _ in range(2):
        await (await relaxed(req(temperature=0.7))).result()
    assert provider.calls == 5


async def test_scope_keeps_callers_apart_unless_shared() -> None:
    provider = ScriptedProvider()
    stack = Stack([ExactCache()], provider)
    await (await stack(req(caller="alice"))).result()
    assert (await stack(req(caller="bob"))).served_by == "scripted"
    assert (await stack(req(caller=None, user="alice"))).served_by == "exact_cache"
    shared = Stack([ExactCache(scope="shared")], provider)
    await (await shared(req(caller="alice"))).result()
    assert (await shared(req(caller="bob"))).served_by == "exact_cache"


async def test_entries_expire_after_ttl_on_the_clock() -> None:
    clock = FakeClock()
    provider = ScriptedProvider()
    stack = Stack([ExactCache(ttl_seconds=10, clock=clock)], provider)
    await (await stack(req())).result()
    clock.advance(9.9)
    assert (await stack(req())).served_by == "exact_cache"
    clock.advance(0.2)
    assert (await stack(req())).served_by == "scripted"


async def test_failed_and_filtered_answers_are_not_stored() -> None:
    provider = ScriptedProvider(
        [Fail(ProviderError("down")), Reply("x", finish_reason="content_filter"), Reply(""), Reply("ok")]
    )
    stack = Stack([ExactCache()], provider)
    with pytest.raises(ProviderError):
        await stack(req())
    for _ in range(3):
        await (await stack(req())).result()
    assert (await stack(req())).served_by == "exact_cache"
    assert provider.calls == 4


def test_from_config_validates_parameters() -> None:
    stack = Stack.from_config([{"use": "exact_cache", "ttl_seconds": 5, "max_bytes": 1000}], ScriptedProvider())
    assert stack.layers[0].store.max_bytes == 1000
    with pytest.raises(ConfigError, match="max_bytes"):
        Stack.from_config([{"use": "exact_cache", "max_bytes": "big"}], ScriptedProvider())
    with pytest.raises(ConfigError, match="redis_url"):
        Stack.from_config([{"use": "exact_cache", "backend": "redis"}], ScriptedProvider())


def test_key_ignores_transport_fields_and_key_order() -> None:
    base = req(extra={"a": 1, "b": {"x": 1, "y": 2}})
    same = req(stream=True, stream_options={"include_usage": True}, extra={"b": {"y": 2, "x": 1}, "a": 1})
    assert request_key(base, "s") == request_key(same, "s")
    assert request_key(base, "s") != request_key(base, "t")


# --- property tests -----------------------------------------------------------------

texts = st.text(min_size=0, max_size=40)
# Each entry changes one answer-changing field of the base request to a different value.
MUTATIONS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from(["m2", "M", "m "]),
    "messages": texts.map(lambda t: [Message("user", "What is 2+2?" + t + "!")]),
    "max_tokens": st.integers(1, 10_000),
    "max_completion_tokens": st.integers(1, 10_000),
    "temperature": st.just(0.0),
    "top_p": st.floats(0, 1, allow_nan=False),
    "stop": st.one_of(texts, st.lists(texts, min_size=1, max_size=3)),
    "seed": st.integers(-(2**31), 2**31),
    "presence_penalty": st.floats(-2, 2, allow_nan=False),
    "frequency_penalty": st.floats(-2, 2, allow_nan=False),
    "logit_bias": st.dictionaries(st.text(max_size=5), st.floats(-100, 100, allow_nan=False), min_size=1),
    "tools": st.lists(st.fixed_dictionaries({"type": st.just("function"), "name": texts}), min_size=1, max_size=2),
    "tool_choice": st.sampled_from(["auto", "none", "required"]),
    "parallel_tool_calls": st.booleans(),
    "response_format": st.sampled_from([{"type": "json_object"}, {"type": "text"}]),
    "extra": st.dictionaries(st.text(min_size=1, max_size=8), st.integers(), min_size=1, max_size=2),
}


@settings(max_examples=60, deadline=None, suppress_health_check=HEALTH)
@given(field=st.sampled_from(sorted(MUTATIONS)), data=st.data())
async def test_law_any_answer_changing_difference_never_hits(field: str, data: st.DataObject) -> None:
    provider = ScriptedProvider()
    stack = Stack([ExactCache()], provider)
    base = req()
    await (await stack(base)).result()
    changed = msgspec.structs.replace(req(), **{field: data.draw(MUTATIONS[field])})
    response = await stack(changed)
    assert response.served_by == "scripted"
    assert provider.calls == 2


@settings(max_examples=80, deadline=None)
@given(
    field=st.sampled_from(sorted(MUTATIONS)),
    scope=st.sampled_from(["", "alice", "team/ü", "a" * 300]),
    data=st.data(),
)
def test_law_the_key_is_the_hash_of_version_scope_and_fields(field: str, scope: str, data: st.DataObject) -> None:
    # The key is computed from a hash state kept per scope (``_scope_digest``); it must
    # be the plain hash of the whole, as it always was, so that entries stored in Redis
    # before stay reachable and every process computes the same key.
    import hashlib

    from middlewares.cache import exact

    request = msgspec.structs.replace(req(), **{field: data.draw(MUTATIONS[field])})
    for _ in range(2):  # fresh, then from the kept state
        payload = msgspec.json.Encoder(order="sorted").encode(tuple(getattr(request, f) for f in exact._KEY_FIELDS))
        whole = hashlib.blake2b(b"onion-exact-v1\0" + scope.encode() + b"\0" + payload, digest_size=20)
        assert request_key(request, scope) == whole.hexdigest()
        tags = hashlib.blake2b(scope.encode(), digest_size=6).hexdigest()
        model = hashlib.blake2b(request.model.encode(), digest_size=6).hexdigest()
        assert exact.entry_key(request, scope) == f"{tags}.{model}.{whole.hexdigest()}"


def test_the_kept_keys_stay_bounded_and_equal_the_hash() -> None:
    # Keys of short requests are kept (a repeat skips the hash); past the bound every
    # scope's are dropped at once, long requests are never kept, and a key given from
    # the kept ones is the key computed anew.
    import hashlib

    from middlewares.cache import exact

    def plain(request: Request, scope: str) -> str:
        payload = msgspec.json.Encoder(order="sorted").encode(tuple(getattr(request, f) for f in exact._KEY_FIELDS))
        whole = hashlib.blake2b(b"onion-exact-v1\0" + scope.encode() + b"\0" + payload, digest_size=20)
        tags = hashlib.blake2b(scope.encode(), digest_size=6).hexdigest()
        model = hashlib.blake2b(request.model.encode(), digest_size=6).hexdigest()
        return f"{tags}.{model}.{whole.hexdigest()}"

    requests = [req(f"prompt {i}") for i in range(exact._KEPT_KEYS + 50)]
    for round_ in range(2):
        for i, request in enumerate(requests):
            scope = f"caller {i % 3}"
            assert exact.entry_key(request, scope) == plain(request, scope), (round_, i)
            assert sum(len(exact._scope(f"caller {j}").keys) for j in range(3)) <= exact._KEPT_KEYS
    long = req("x" * exact._KEPT_PAYLOAD)
    for _ in range(2):
        assert exact.entry_key(long, "") == plain(long, "")
    assert all(len(payload) <= exact._KEPT_PAYLOAD for payload in exact._scope("").keys)


@settings(max_examples=50, deadline=None, suppress_health_check=HEALTH)
@given(
    text=st.text(min_size=1, max_size=200),
    usage=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)).map(lambda t: Usage(t[0], t[1], t[0] + t[1] + 1)),
    stream_first=st.booleans(),
    finish=st.sampled_from(["stop", "length"]),
)
async def test_law_hit_returns_exactly_the_stored_answer(
    text: str, usage: Usage, stream_first: bool, finish: str
) -> None:
    provider = ScriptedProvider([Reply(text, chunks=(text[:3], text[3:]), usage=usage, finish_reason=finish)])
    stack = Stack([ExactCache()], provider)
    first = await (await stack(req(stream=stream_first))).result()
    assert first.content == text
    hit = await stack(req())
    assert hit.served_by == "exact_cache"
    stored = await hit.result()
    assert (stored.content, stored.usage, stored.finish_reason, stored.model) == (text, usage, finish, "m")
    replayed = await (await stack(req(stream=True))).result()
    assert (replayed.content, replayed.usage, replayed.finish_reason) == (text, usage, finish)


@settings(max_examples=40, deadline=None, suppress_health_check=HEALTH)
@given(
    texts=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=4),
    hits=st.integers(2, 4),
    refresh_first=st.booleans(),
)
async def test_law_every_hit_gets_the_stored_answer_whatever_an_earlier_caller_did_to_its_own(
    texts: list[str], hits: int, refresh_first: bool
) -> None:
    # Each hit is the stored answer as its own object, down to its nested lists and
    # dicts, even when an earlier caller changed the answer it got (fields set, a tool
    # call's arguments changed in place); an entry stored again (a refresh) is served as
    # stored again.
    def call(text: str) -> list[dict[str, Any]]:
        return [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": text}}]

    provider = ScriptedProvider([Reply(text, usage=Usage(1, 2, 3), tool_calls=call(text)) for text in texts])
    stack = Stack([ExactCache()], provider)
    for round_, text in enumerate(texts):
        refresh = round_ > 0 or refresh_first
        asked = req()
        asked.context.options = RequestOptions(refresh=refresh)
        stored = await (await stack(asked)).result()
        assert stored.content == text
        seen: list[Any] = []
        for _ in range(hits):
            hit = await stack(req())
            assert hit.served_by == "exact_cache"
            answer = await hit.result()
            assert answer == stored and all(answer is not earlier for earlier in seen)
            assert answer.tool_calls == call(text)
            seen.append(answer)
            answer.content, answer.model = "tampered", "other"  # a careless layer outside
            answer.tool_calls[0]["function"]["arguments"] = "tampered"  # type: ignore[index]


OUTCOMES = st.sampled_from(["ok", "fail", "cut", "guard", "filtered", "close_early"])


@settings(max_examples=50, deadline=None, suppress_health_check=HEALTH)
@given(outcomes=st.lists(st.tuples(OUTCOMES, st.booleans(), st.integers(0, 2)), min_size=1, max_size=8))
async def test_law_nothing_blocked_or_failed_is_ever_stored(outcomes: list[tuple[str, bool, int]]) -> None:
    step_for = {
        "ok": Reply("good answer here"),
        "fail": Fail(ProviderError("down")),
        "cut": Fail(ProviderError("cut"), after_chunks=1, reply=Reply("one two three")),
        "guard": Reply("this is bad output"),
        "filtered": Reply("hidden", finish_reason="content_filter"),
        "close_early": Reply("one two three"),
    }
    cache = ExactCache()
    stored: set[int] = set()
    for outcome, stream, prompt in outcomes:
        provider = ScriptedProvider([step_for[outcome]])
        stack = Stack([cache, BadWordGuard()], provider)
        hit_expected = prompt in stored
        try:
            response = await stack(req(f"question {prompt}", stream=stream))
            if outcome == "close_early" and stream and not hit_expected:
                async for _ in response:
                    break
                await response.aclose()
            else:
                await response.result()
        except (ProviderError, GuardrailViolation):
            assert outcome in ("fail", "cut", "guard")
        assert provider.calls == (0 if hit_expected else 1)
        if outcome == "ok" or (outcome == "close_early" and not stream):
            stored.add(prompt)
    for prompt in range(3):
        response = await Stack([cache], ScriptedProvider([Reply("probe")]))(req(f"question {prompt}"))
        assert (response.served_by == "exact_cache") == (prompt in stored)


async def test_redis_backend_is_shared_between_instances(redis_url: str) -> None:
    provider = ScriptedProvider([Reply("from upstream", usage=Usage(1, 2, 3))])
    prefix = "test:" + Context().request_id + ":"
    one = ExactCache(backend="redis", redis_url=redis_url, prefix=prefix)
    two = ExactCache(backend="redis", redis_url=redis_url, prefix=prefix)
    try:
        first = await (await Stack([one], provider)(req(stream=True))).result()
        hit = await Stack([two], provider)(req())
        assert hit.served_by == "exact_cache"
        assert await hit.result() == first
        assert provider.calls == 1
        assert (await Stack([two], provider)(req(caller="bob"))).served_by == "scripted"
    finally:
        await one.aclose()
        await two.aclose()


async def test_allow_n_and_the_policy_are_set_from_toml() -> None:
    import tomllib

    provider = ScriptedProvider()
    for toml in ('use = "exact_cache"\nallow_n = true', 'use = "exact_cache"\npolicy = {allow_n = true}'):
        stack = Stack.from_config([tomllib.loads(toml)], provider)
        assert stack.layers[0].policy.allow_n
        await (await stack(req(n=2))).result()
        assert (await stack(req(n=2))).served_by == "exact_cache"
    assert not Stack.from_config([{"use": "exact_cache"}], provider).layers[0].policy.allow_n
    with pytest.raises(ConfigError, match="allow_n"):
        Stack.from_config([{"use": "exact_cache", "allow_n": "yes"}], provider)
    with pytest.raises(ConfigError, match=r"policy\.allow_n"):
        Stack.from_config([{"use": "semantic_cache", "policy": {"allow_n": 2}}], provider)
    with pytest.raises(ConfigError, match="not both"):
        Stack.from_config([{"use": "exact_cache", "allow_n": True, "policy": {"max_temperature": 1.0}}], provider)
    assert Stack.from_config([{"use": "semantic_cache", "allow_n": True}], provider).layers[0].policy.allow_n
