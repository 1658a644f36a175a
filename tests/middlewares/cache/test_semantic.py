"""Laws of the semantic cache: paraphrases hit within one scope, precision guards reject
different numbers, entities and negations, ineligible requests skip, the embedder is
called once per request and never stalls one, streams and Redis peers behave."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import anyio
import msgspec
import numpy as np
import pytest
import structlog
from cache_toys import BadWordGuard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from middlewares.cache.embedders import HashedEmbedder, OpenAIEmbedder
from middlewares.cache.exact import ExactCache
from middlewares.cache.precision import guards_pass, signature
from middlewares.cache.semantic import SemanticCache
from middlewares.cache.semantic_entries import MemoryEntries
from onion import (
    ConfigError,
    Context,
    GuardrailViolation,
    Message,
    ProviderError,
    Request,
    RequestOptions,
    Stack,
)
from onion.testing import Fail, FakeClock, Reply, ScriptedProvider
from onion.testing.upstream import FakeUpstream, Fault

HEALTH = [HealthCheck.function_scoped_fixture]


class CountingEmbedder:
    """The hashed embedder, counting calls; ``fail``/``delay`` make it misbehave."""

    name = "counting"
    default_threshold = 0.75

    def __init__(self, *, fail: bool = False, delay: float = 0.0) -> None:
        self.inner = HashedEmbedder()
        self.calls = 0
        self.fail = fail
        self.delay = delay

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.delay:
            await anyio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("embedding endpoint down")
        return await self.inner.embed(texts)


def req(
    text: str, *, stream: bool = False, caller: str | None = "alice", system: str | None = None, **fields: Any
) -> Request:
    messages = ([Message("system", system)] if system else []) + [Message("user", text)]
    return Request(model="m", messages=messages, stream=stream, context=Context(caller=caller), **fields)


def cache(**params: Any) -> SemanticCache:
    params.setdefault("threshold", 0.7)
    return SemanticCache(**params)


async def test_paraphrase_hits_complete_and_streamed() -> None:
    provider = ScriptedProvider([Reply("Paris is the capital of France.")])
    semantic = cache()
    stack = Stack([semantic], provider)
    first = await stack(req("What is the capital of France?"))
    assert first.cache == "miss"
    stored = await first.result()
    hit = await stack(req("what's the capital of france"))
    assert hit.served_by == "semantic_cache" and hit.cache == "hit"
    assert await hit.result() == stored
    streamed = await stack(req("Please tell me: what is the capital of France", stream=True))
    assert streamed.is_stream and (await streamed.result()).content == stored.content
    assert provider.calls == 1 and semantic.stats.hits == 2


async def test_unrelated_question_misses() -> None:
    provider = ScriptedProvider()
    stack = Stack([cache()], provider)
    await (await stack(req("What is the capital of France?"))).result()
    assert (await stack(req("How do I bake sourdough bread?"))).served_by == "scripted"


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("How many calories are in 2 eggs?", "How many calories are in 3 eggs?"),
        ("How many calories are in two eggs?", "How many calories are in 20 eggs?"),
        ("What is the population of Germany?", "What is the population of Austria?"),
        ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"),
        ("Why is the sky blue?", "Why isn't the sky blue?"),
    ],
)
async def test_precision_guards_reject_near_duplicates_that_mean_something_else(stored: str, asked: str) -> None:
    provider = ScriptedProvider()
    # A threshold so low the similarity alone would hit: only the guards stop it.
    semantic = cache(threshold=0.3)
    stack = Stack([semantic], provider)
    await (await stack(req(stored))).result()
    assert (await stack(req(asked))).served_by == "scripted"
    assert semantic.stats.guard_rejections == 1


SCOPE_CHANGES: list[dict[str, Any]] = [
    {"model": "other-model"},
    {"system": "You are a pirate."},
    {"temperature": 0.0},
    {"max_tokens": 5},
    {"top_p": 0.5},
    {"stop": ["\n"]},
    {"seed": 3},
    {"response_format": {"type": "json_object"}},
    {"caller": "bob"},
    {"extra": {"reasoning_effort": "high"}},
]


@pytest.mark.parametrize("change", SCOPE_CHANGES)
async def test_a_hit_never_crosses_scope(change: dict[str, Any]) -> None:
    provider = ScriptedProvider()
    stack = Stack([cache()], provider)
    await (await stack(req("What is the capital of France?"))).result()
    change = dict(change)
    model = change.pop("model", "m")
    asked = msgspec.structs.replace(req("What is the capital of France?", **change), model=model)
    assert (await stack(asked)).served_by == "scripted"


async def test_shared_scope_crosses_callers() -> None:
    provider = ScriptedProvider()
    stack = Stack([cache(scope="shared")], provider)
    await (await stack(req("What is the capital of France?", caller="alice"))).result()
    assert (await stack(req("what is the capital of France", caller="bob"))).served_by == "semantic_cache"


async def test_ineligible_requests_skip_the_cache_without_embedding() -> None:
    embedder = CountingEmbedder()
    semantic = cache(embedder=embedder, max_turns=3)
    stack = Stack([semantic], ScriptedProvider())
    tool = {"type": "function", "function": {"name": "f"}}
    long_chat = [Message("user", "hi"), Message("assistant", "hello"), Message("user", "a"), Message("assistant", "b")]
    opted = req("What is the capital of France?")
    opted.context.options = RequestOptions(cache=False)
    requests = [
        req("What is the capital of France?", tools=[tool]),
        Request(model="m", messages=[Message("user", "q"), Message("tool", "42", tool_call_id="1")]),
        Request(model="m", messages=[*long_chat, Message("user", "What is the capital of France?")]),
        Request(model="m", messages=[Message("user", [{"type": "image_url", "image_url": {"url": "x"}}])]),
        req("What is the capital of France?", temperature=0.9),
        opted,
    ]
    for request in requests:
        for _ in range(2):
            assert (await stack(request)).served_by == "scripted"
    assert embedder.calls == 0
    assert semantic.stats.ineligible + semantic.stats.bypassed == 12


async def test_embedding_is_computed_once_per_request() -> None:
    embedder = CountingEmbedder()
    stack = Stack([cache(embedder=embedder)], ScriptedProvider())
    await (await stack(req("What is the capital of France?", stream=True))).result()
    assert embedder.calls == 1
    await (await stack(req("what is the capital of France"))).result()
    assert embedder.calls == 2


async def test_failing_embedder_bypasses_the_cache_logs_counts_and_backs_off() -> None:
    clock = FakeClock()
    embedder = CountingEmbedder(fail=True)
    semantic = cache(embedder=embedder, clock=clock, failure_backoff_seconds=10)
    stack = Stack([semantic], ScriptedProvider())
    with structlog.testing.capture_logs() as logs:
        assert (await (await stack(req("What is the capital of France?"))).result()).content == "ok"
    assert logs[0]["event"] == "semantic_cache.embedder_failed" and logs[0]["error"] == "ConnectionError"
    assert "endpoint down" not in str(logs)
    await stack(req("What is the capital of France?"))
    assert embedder.calls == 1 and semantic.stats.embed_failures == 1 and semantic.stats.bypassed == 1
    clock.advance(11)
    embedder.fail = False
    await (await stack(req("What is the capital of France?"))).result()
    assert (await stack(req("What is the capital of France?"))).served_by == "semantic_cache"


async def test_slow_embedder_never_stalls_the_request() -> None:
    embedder = CountingEmbedder(delay=60)
    semantic = cache(embedder=embedder, embed_timeout_seconds=0.05)
    stack = Stack([semantic], ScriptedProvider())
    with anyio.fail_after(10):
        response = await stack(req("What is the capital of France?"))
    assert response.served_by == "scripted" and semantic.stats.embed_failures == 1


async def test_dead_embedding_endpoint_over_http_is_bypassed() -> None:
    async with FakeUpstream() as upstream:
        upstream.push(Fault(delay=8), Fault(status=500))
        embedder = OpenAIEmbedder(base_url=upstream.base_url, timeout_seconds=2)
        clock = FakeClock()
        semantic = cache(embedder=embedder, embed_timeout_seconds=1.0, clock=clock)
        stack = Stack([semantic], ScriptedProvider())
        with anyio.fail_after(10):
            assert (await stack(req("What is the capital of France?"))).served_by == "scripted"
            clock.advance(10)
            assert (await stack(req("What is the capital of France?"))).served_by == "scripted"
            clock.advance(10)
            await (await stack(req("What is the capital of France?"))).result()
            assert (await stack(req("What is the capital of France?"))).served_by == "semantic_cache"
        assert semantic.stats.embed_failures == 2
        await semantic.aclose()


async def test_streams_are_stored_only_when_they_end_cleanly() -> None:
    provider = ScriptedProvider(
        [Fail(ProviderError("cut"), after_chunks=1, reply=Reply("one two")), Reply("a bad answer"), Reply("a b c")]
    )
    stack = Stack([cache(), BadWordGuard()], provider)
    with pytest.raises(ProviderError):
        await (await stack(req("What is the capital of France?", stream=True))).result()
    with pytest.raises(GuardrailViolation):
        await (await stack(req("What is the capital of France?", stream=True))).result()
    response = await stack(req("What is the capital of France?", stream=True))
    async for _ in response:
        break
    await response.aclose()
    assert all(record.closed for record in provider.streams)
    assert (await stack(req("What is the capital of France?"))).served_by == "scripted"
    assert (await stack(req("What is the capital of France?"))).served_by == "semantic_cache"


async def test_entries_expire_on_the_clock() -> None:
    clock = FakeClock()
    stack = Stack([cache(ttl_seconds=60, clock=clock)], ScriptedProvider())
    await (await stack(req("What is the capital of France?"))).result()
    clock.advance(59)
    assert (await stack(req("what is the capital of France"))).served_by == "semantic_cache"
    clock.advance(2)
    assert (await stack(req("what is the capital of France"))).served_by == "scripted"


async def test_last_user_mode_requires_earlier_turns_to_match_exactly() -> None:
    stack = Stack([cache(embed="last_user")], ScriptedProvider())

    def chat(first: str, last: str) -> Request:
        messages = [Message("user", first), Message("assistant", "ok"), Message("user", last)]
        return Request(model="m", messages=messages, context=Context(caller="a"))

    await (await stack(chat("We talk about France.", "What is its capital?"))).result()
    assert (await stack(chat("We talk about France.", "what is its capital"))).served_by == "semantic_cache"
    assert (await stack(chat("We talk about Spain.", "What is its capital?"))).served_by == "scripted"


async def test_default_mode_embeds_the_whole_conversation_not_only_the_last_question() -> None:
    semantic = cache()
    assert semantic.embed_mode == "conversation"  # the default
    stack = Stack([semantic], ScriptedProvider())

    def chat(first: str, last: str) -> Request:
        messages = [Message("user", first), Message("assistant", "ok"), Message("user", last)]
        return Request(model="m", messages=messages, context=Context(caller="a"))

    # No numbers or named entities in the earlier turns, so the precision guards cannot
    # tell the conversations apart: only the embedding of the earlier turns can.
    wine = "let us discuss the european country known for wine and cheese"
    sushi = "switching topics to the asian island nation famous for sushi and cherry blossoms"
    await (await stack(chat(wine, "What is its capital?"))).result()
    assert (await stack(chat(wine, "what is its capital"))).served_by == "semantic_cache"
    assert (await stack(chat(sushi, "What is its capital?"))).served_by == "scripted"
    assert semantic.stats.below_threshold == 1 and semantic.stats.guard_rejections == 0


async def test_semantic_sits_inside_the_exact_cache_which_does_not_pin_its_hits() -> None:
    with pytest.raises(ConfigError, match=r"cache\.exact"):
        Stack([cache(), ExactCache()], ScriptedProvider())
    provider = ScriptedProvider()
    exact = ExactCache()
    stack = Stack([exact, cache()], provider)
    await (await stack(req("What is the capital of France?"))).result()
    assert (await stack(req("What is the capital of France?"))).served_by == "exact_cache"
    assert (await stack(req("what is the capital of france"))).served_by == "semantic_cache"
    assert exact.stats.stores == 1


def test_from_config_with_an_embedder_table() -> None:
    stack = Stack.from_config(
        [
            {
                "use": "semantic_cache",
                "threshold": 0.9,
                "embedder": {"use": "hashed", "dim": 256},
                "max_entries": 50,
                "ttl_seconds": 30,
            },
            {
                "use": "semantic_cache",
                "embedder": "hashed",
                "embedder_params": {"dim": 128},
                "script_thresholds": {"cjk": 0.85},
            },
        ],
        ScriptedProvider(),
    )
    first, second = stack.layers
    assert first.threshold == 0.9 and first.embedder.dim == 256 and first.max_entries == 50
    assert second.embedder.dim == 128 and second.threshold == HashedEmbedder.default_threshold
    assert first.script_thresholds == {} and second.script_thresholds == {"cjk": 0.85}
    with pytest.raises(ConfigError, match="script_thresholds"):
        Stack.from_config([{"use": "semantic_cache", "script_thresholds": {"cjk": 2}}], ScriptedProvider())
    with pytest.raises(ConfigError, match="unknown embedder"):
        Stack.from_config([{"use": "semantic_cache", "embedder": "nope"}], ScriptedProvider())
    with pytest.raises(ConfigError, match="redis_url"):
        Stack.from_config([{"use": "semantic_cache", "backend": "redis"}], ScriptedProvider())


# --- property tests -----------------------------------------------------------------

TEMPLATES = [
    "How many calories are in {n} eggs?",
    "What is {n} times 7?",
    "Convert {n} miles to kilometers",
    "Is a {n} year old allowed to drive?",
]


@settings(max_examples=50, deadline=None, suppress_health_check=HEALTH)
@given(template=st.sampled_from(TEMPLATES), a=st.integers(0, 10_000), b=st.integers(0, 10_000))
async def test_law_a_different_number_never_hits(template: str, a: int, b: int) -> None:
    provider = ScriptedProvider()
    stack = Stack([cache(threshold=0.0)], provider)
    await (await stack(req(template.format(n=a)))).result()
    response = await stack(req(template.format(n=b)))
    assert (response.served_by == "semantic_cache") == (a == b)


NAMES = ["France", "Spain", "Japan", "Kenya", "Peru", "Norway"]
CLAUSES = ["What is the capital of {x}?", "Tell me about the history of {x}", "How big is {x}?"]


@settings(max_examples=50, deadline=None)
@given(clause=st.sampled_from(CLAUSES), x=st.sampled_from(NAMES), y=st.sampled_from(NAMES), neg=st.booleans())
def test_law_guards_reject_other_entities_and_added_negations(clause: str, x: str, y: str, neg: bool) -> None:
    first = clause.format(x=x)
    second = clause.format(x=y)
    if neg:
        second = second.replace("What is", "What is not").replace("Tell me", "Do not tell me")
        second = second.replace("How big is", "How big is not")
    assert guards_pass(signature(first), signature(second)) == (x == y and not neg)


@settings(max_examples=40, deadline=None, suppress_health_check=HEALTH)
@given(
    max_entries=st.integers(1, 6),
    prompts=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 2)), min_size=1, max_size=25),
)
async def test_law_capacity_bound_holds(max_entries: int, prompts: list[tuple[int, int]]) -> None:
    clock = FakeClock()
    semantic = cache(max_entries=max_entries, ttl_seconds=5, clock=clock)
    stack = Stack([semantic], ScriptedProvider())
    for topic, wait in prompts:
        await (await stack(req(f"Tell me a fact about topic {topic}"))).result()
        clock.advance(wait)
        assert isinstance(semantic.entries, MemoryEntries) and len(semantic.entries) <= max_entries
        assert semantic.entries.keys() == set(semantic._index._rows)


# --- Redis: entries shared between processes ------------------------------------------


def redis_pair(redis_url: str, **params: Any) -> tuple[SemanticCache, SemanticCache]:
    prefix = "test:" + Context().request_id + ":"
    return (
        cache(backend="redis", redis_url=redis_url, prefix=prefix, **params),
        cache(backend="redis", redis_url=redis_url, prefix=prefix, **params),
    )


async def test_redis_peers_share_entries_and_sync_their_indexes(redis_url: str) -> None:
    one, two = redis_pair(redis_url)
    provider = ScriptedProvider([Reply("Madrid."), Reply("Paris.")])
    try:
        await (await Stack([two], provider)(req("What is the capital of Spain?"))).result()  # two syncs empty
        await (await Stack([one], provider)(req("What is the capital of France?", stream=True))).result()
        hit = await Stack([two], provider)(req("what's the capital of france"))
        assert hit.served_by == "semantic_cache"
        assert (await hit.result()).content == "Paris."
        assert (await Stack([two], provider)(req("what's the capital of france", caller="eve"))).served_by == (
            "scripted"
        )
        assert len(two._index) == 3 and two.stats.resyncs == 1
    finally:
        await one.aclose()
        await two.aclose()


async def test_redis_entry_gone_means_miss_and_local_drop(redis_url: str) -> None:
    one, two = redis_pair(redis_url)
    provider = ScriptedProvider()
    try:
        await (await Stack([one], provider)(req("What is the capital of France?"))).result()
        assert (await Stack([two], provider)(req("what is the capital of France"))).served_by == "semantic_cache"
        (old,) = list(two._index._rows)
        one.entries.redis.sync.delete(one.entries.prefix + "e:" + old)
        assert (await Stack([two], provider)(req("what is the capital of France"))).served_by == "scripted"
        assert old not in two._index and len(two._index) == 1  # the new answer replaced it
    finally:
        await one.aclose()
        await two.aclose()


async def test_redis_peer_reloads_after_a_gap_in_the_log(redis_url: str) -> None:
    one, two = redis_pair(redis_url)
    provider = ScriptedProvider()
    try:
        await Stack([two], provider)(req("Warm up the index of process two"))
        for topic in ("France", "Japan", "Kenya"):
            await (await Stack([one], provider)(req(f"What is the capital of {topic}?"))).result()
        one.entries.redis.sync.xtrim(one.entries.prefix + "log", maxlen=1, approximate=False)
        calls = provider.calls
        for topic in ("France", "Japan", "Kenya"):
            hit = await Stack([two], provider)(req(f"what is the capital of {topic}"))
            assert hit.served_by == "semantic_cache"
        assert provider.calls == calls and two.stats.resyncs == 2
    finally:
        await one.aclose()
        await two.aclose()


async def test_redis_down_bypasses_instead_of_failing(redis_url: str) -> None:
    semantic = cache(backend="redis", redis_url="redis://127.0.0.1:9/0")
    stack = Stack([semantic], ScriptedProvider())
    assert (await (await stack(req("What is the capital of France?"))).result()).content == "ok"
    assert semantic.stats.errors >= 1


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("What is the capital of France?", "Tell me France's capital city.", True),
        ("Sorting a list in Python, how?", "How do I sort a list in Python?", True),
        ("What year did World War 2 end?", "When did the Second World War end?", True),
        ("How many cups are in a gallon?", "How many cups are in half a gallon?", False),
        ("Paris is lovely in spring?", "Is Rome lovely in spring?", False),
        ("What is the exchange rate from USD to EUR?", "What is the USD to GBP rate?", False),
        ("Why is the sky blue?", "Why isn\u2019t the sky blue?", False),
        ("How many calories are in two eggs?", "How many calories are in 2 eggs?", True),
    ],
)
def test_guard_signature_cases(a: str, b: str, same: bool) -> None:
    assert guards_pass(signature(a), signature(b)) is same


async def test_usearch_index_behind_the_same_layer() -> None:
    pytest.importorskip("usearch")
    provider = ScriptedProvider()
    semantic = cache(index="usearch", max_entries=3)
    stack = Stack([semantic], provider)
    for topic in ("France", "Japan", "Kenya", "Peru"):
        await (await stack(req(f"What is the capital of {topic}?"))).result()
    assert len(semantic._index) == 3 and len(semantic.entries) == 3  # France evicted, first in
    assert (await stack(req("what is the capital of Japan"))).served_by == "semantic_cache"
    assert (await stack(req("what is the capital of France"))).served_by == "scripted"


async def test_redis_sync_interval_batches_reads_of_the_peers_log(redis_url: str) -> None:
    clock = FakeClock()
    one, two = redis_pair(redis_url, clock=clock, sync_interval_seconds=1.0)
    provider = ScriptedProvider()
    try:
        await Stack([two], provider)(req("Warm up the index of process two"))
        await (await Stack([one], provider)(req("What is the capital of France?"))).result()
        # Within the interval process two does not read the log yet: a miss.
        assert (await Stack([two], provider)(req("what is the capital of France?"))).served_by == "scripted"
        clock.advance(1.0)
        assert (await Stack([two], provider)(req("What is the capital of France"))).served_by == "semantic_cache"
    finally:
        await one.aclose()
        await two.aclose()


class ShiftingEmbedder(CountingEmbedder):
    """Answers in 512 dimensions, then (the endpoint's model changed) in 256."""

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = await super().embed(texts)
        return vectors if self.calls == 1 else vectors[:, :256]


async def test_an_embedding_of_another_size_bypasses_instead_of_failing() -> None:
    semantic = cache(embedder=ShiftingEmbedder())
    stack = Stack([semantic], ScriptedProvider())
    await (await stack(req("What is the capital of France?"))).result()
    assert (await (await stack(req("What is the capital of France?"))).result()).content == "ok"
    assert semantic.stats.embed_failures == 1


class RecordingEmbedder(CountingEmbedder):
    """The hashed embedder, keeping the texts it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return await super().embed(texts)


async def test_a_lookup_passes_over_a_nearer_entry_the_guards_reject() -> None:
    """The nearest stored question differs in its number; the next one is the paraphrase."""
    provider = ScriptedProvider([Reply("three eggs"), Reply("two eggs")])
    semantic = cache(threshold=0.3)
    stack = Stack([semantic], provider)
    await (await stack(req("How many calories are in 3 eggs boiled?"))).result()
    await (await stack(req("Calories in 2 eggs?"))).result()
    hit = await stack(req("How many calories are in 2 eggs boiled?"))
    assert hit.served_by == "semantic_cache" and (await hit.result()).content == "two eggs"
    assert provider.calls == 2


async def test_a_japanese_question_is_embedded_in_its_canonical_form() -> None:
    """Kanji numerals as digits and no polite ending: 三人分…教えてください and 3人前…は?
    are one text to the embedder; the key and the guards still see the question as asked."""
    embedder = RecordingEmbedder()
    provider = ScriptedProvider([Reply("材料")])
    stack = Stack([cache(embedder=embedder, threshold=0.99)], provider)
    await (await stack(req("三人分の肉じゃがの材料を教えてください"))).result()
    hit = await stack(req("3人前の肉じゃがの材料は?"))
    assert embedder.texts == ["3人分の肉じゃがの材料", "3人分の肉じゃがの材料"]
    assert hit.served_by == "semantic_cache" and provider.calls == 1
    assert (await stack(req("4人分の肉じゃがの材料は?"))).served_by == "scripted"
    assert embedder.texts[-1] == "4人分の肉じゃがの材料"
    english = "What is the capital of France?"
    await (await stack(req(english))).result()
    assert embedder.texts[-1] == english  # other scripts are embedded as they are


async def test_a_script_threshold_applies_to_its_script_only() -> None:
    """A low CJK threshold lets a Japanese rewording hit; English keeps the global one."""
    provider = ScriptedProvider()
    semantic = cache(threshold=0.99, script_thresholds={"cjk": 0.3})
    stack = Stack([semantic], provider)
    await (await stack(req("インドの首都はどこですか?"))).result()
    assert (await stack(req("インドの首都ってどこ?"))).served_by == "semantic_cache"
    await (await stack(req("What is the capital of India?"))).result()
    assert (await stack(req("capital of India, please"))).served_by == "scripted"
    assert semantic.script_thresholds == {"cjk": 0.3}


def test_script_thresholds_come_from_the_embedder_unless_a_threshold_is_set() -> None:
    class Measured(CountingEmbedder):
        script_thresholds: ClassVar[dict[str, float]] = {"cjk": 0.5}

    assert SemanticCache(embedder=Measured()).script_thresholds == {"cjk": 0.5}
    assert SemanticCache(embedder=Measured(), threshold=0.8).script_thresholds == {}


@pytest.mark.parametrize("bad", [{"kanji": 0.8}, {"cjk": 1.5}, {"cjk": "high"}])
def test_a_bad_script_threshold_is_a_config_error_naming_the_field(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="script_thresholds"):
        SemanticCache(script_thresholds=bad)
