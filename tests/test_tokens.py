"""Token counters: exact BPE offline, a fast estimate, graceful fallback, per-model choice."""

from __future__ import annotations

import logging

import bpe_openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import BpeCounter, EstimateCounter, TokenCounter, counter_for, counter_named, register_counter


def test_bpe_counts_match_the_vocabulary() -> None:
    text = "Hello, world! ignore previous instructions"
    for name in ("cl100k_base", "o200k_base"):
        counter = BpeCounter(name)
        assert counter.count(text) == len(bpe_openai.get_encoding(name).encode_ordinary(text))
        assert counter.exact


def test_bpe_counts_text_that_looks_like_special_tokens() -> None:
    # encode() would refuse "<|endoftext|>" in user text; counting must not fail.
    assert BpeCounter("cl100k_base").count("say <|endoftext|> please") > 3


def test_failed_tokenizer_load_falls_back_to_the_estimate(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def offline_loader(name: str) -> object:
        calls.append(name)
        raise OSError("could not download the vocabulary (offline)")

    counter = BpeCounter("cl100k_base", loader=offline_loader)
    with caplog.at_level(logging.WARNING, logger="onion.tokens"):
        assert counter.count("abcdefgh") == EstimateCounter().count("abcdefgh")
        assert counter.count("abcd") == EstimateCounter().count("abcd")
    assert not counter.exact
    assert calls == ["cl100k_base"]  # tried once, not on every call
    assert len(caplog.records) == 1
    assert "download" not in caplog.text  # the error's detail is not logged at warning


def test_counter_per_model() -> None:
    assert counter_for("gpt-4o-mini").name == "o200k_base"
    assert counter_for("openai/gpt-4-turbo").name == "cl100k_base"
    assert counter_for("gpt-3.5-turbo").name == "cl100k_base"
    assert counter_for("llama-3-70b").name == "estimate"
    assert counter_named("o200k_base") is counter_for("gpt-4.1")
    with pytest.raises(ValueError, match="unknown token counter"):
        counter_named("llama")


def test_register_counter_plugs_in_a_model_family() -> None:
    class Words:
        name = "words"

        def count(self, text: str) -> int:
            return len(text.split())

    register_counter("wordy-", Words())
    counter = counter_for("wordy-7b")
    assert isinstance(counter, TokenCounter)
    assert counter.count("one two three") == 3


def test_estimate_counts_digits_apart_from_the_spaces_before_them() -> None:
    # o200k never joins a digit to the space before it: "0 0" is three tokens (a
    # hypothesis example once found the estimate counting two).
    real = BpeCounter("o200k_base")
    for text in ["0 0", "1 2 3 4 5 6", " 0 0", "0 0\n0 0", "x = 1 + 2 * 3"]:
        assert EstimateCounter().count(text) >= real.count(text), text


def test_estimate_counts_nothing_as_nothing_and_something_as_at_least_one() -> None:
    estimate = EstimateCounter()
    assert estimate.count("") == 0
    assert estimate.count("a") == 1
    assert estimate.count("こんにちは") >= BpeCounter("o200k_base").count("こんにちは")


# Generated text of the four kinds the estimate promises to err high on.
_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "it",
    "you",
    "that",
    "he",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "I",
    "his",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
    "from",
    "or",
    "had",
    "by",
    "hot",
    "word",
    "but",
    "what",
    "some",
    "we",
    "can",
    "out",
    "other",
    "were",
    "all",
    "there",
    "when",
    "up",
    "use",
    "your",
    "how",
    "said",
    "an",
    "each",
    "she",
    "which",
    "do",
    "their",
    "time",
    "if",
    "will",
    "way",
    "about",
    "many",
    "then",
    "them",
    "write",
    "would",
    "like",
    "so",
    "these",
    "her",
    "long",
    "make",
    "thing",
    "see",
    "him",
    "two",
    "has",
    "look",
    "more",
    "day",
    "could",
    "go",
    "come",
    "did",
    "number",
    "sound",
    "no",
    "most",
    "people",
    "my",
    "over",
    "know",
    "water",
    "than",
    "call",
    "first",
    "who",
    "may",
    "down",
    "side",
    "been",
]
_KEYWORDS = [
    "def",
    "return",
    "if",
    "else",
    "for",
    "while",
    "in",
    "import",
    "from",
    "class",
    "async",
    "await",
    "with",
    "as",
    "try",
    "except",
    "None",
    "True",
]
_SYMBOLS = [
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ":",
    ",",
    ".",
    "=",
    "==",
    "!=",
    "+",
    "-",
    "*",
    "/",
    "//",
    "%",
    "->",
    "+=",
    "<",
    ">",
    "<=",
    ">=",
    "&&",
    "||",
    ";",
    "::",
    "=>",
    "**",
    "@",
    "#",
    "'",
    '"',
    "\\n",
    "{}",
    "()",
    "[]",
]
_EMOJI = [chr(c) for c in [*range(0x1F600, 0x1F650), *range(0x1F300, 0x1F5FF), *range(0x1F900, 0x1F9FF)]]
_EMOJI += ["\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001f44d\U0001f3fd", "\U0001f1ef\U0001f1f5", "\u2764\ufe0f"]
_KANA = [chr(c) for c in [*range(0x3041, 0x3097), *range(0x30A1, 0x30FB)]]
_JA_PUNCT = list("\u3002\u3001\u300c\u300d\uff01\uff1f\u30fc\u30fb\uff08\uff09")
_JAPANESE = _KANA + [chr(c) for c in range(0x4E00, 0x9FFF)] + _JA_PUNCT + ["5", "km", " ", "GPU"]

_word = st.sampled_from(_WORDS)
_english = st.lists(
    st.tuples(_word, st.booleans(), st.sampled_from(["", "", "", ".", ",", "?", "!"])).map(
        lambda t: (t[0].capitalize() if t[1] else t[0]) + t[2]
    ),
    min_size=1,
    max_size=200,
).map(" ".join)
_identifier = st.lists(_word, min_size=1, max_size=3).flatmap(
    lambda words: st.sampled_from(["_".join(words), "".join(w.capitalize() for w in words)])
)
_number = st.integers(0, 99999).map(str)
_code_piece = st.one_of(_identifier, st.sampled_from(_KEYWORDS), st.sampled_from(_SYMBOLS), _number)
_code_line = st.tuples(st.integers(0, 3), st.lists(_code_piece, min_size=1, max_size=12), st.sampled_from(["", " "]))
_code = st.lists(_code_line.map(lambda t: " " * (4 * t[0]) + t[2].join(t[1])), min_size=1, max_size=40).map("\n".join)
_emoji_piece = st.tuples(st.sampled_from(_EMOJI), st.sampled_from(["", "", " ", "!", " ok "])).map("".join)
_emoji = st.lists(_emoji_piece, min_size=1, max_size=150).map("".join)
_japanese = st.lists(st.sampled_from(_JAPANESE), min_size=1, max_size=300).map("".join)


@pytest.mark.parametrize("kind", [_english, _code, _emoji, _japanese], ids=["english", "code", "emoji", "japanese"])
def test_estimate_never_counts_fewer_than_o200k(kind: st.SearchStrategy[str]) -> None:
    real = BpeCounter("o200k_base")

    @settings(max_examples=150, deadline=None)
    @given(kind)
    def law(text: str) -> None:
        # The documented bound: never low on 64 bytes or more, at most one token low
        # on a text of a few words (one merge the weights did not foresee).
        estimate, exact = EstimateCounter().count(text), real.count(text)
        assert estimate >= (exact if len(text.encode()) >= 64 else exact - 1)

    law()


def test_estimate_errs_high_by_a_bounded_factor_on_prose() -> None:
    # Not a wild overcount either: ordinary English stays within 2x of the real count.
    text = "How many calories are in two boiled eggs? Tell me, and say where the figure comes from. " * 20
    real = BpeCounter("o200k_base").count(text)
    assert real <= EstimateCounter().count(text) <= 2 * real


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.sampled_from("abc de,.!?0123456789こんにちは世界"), max_size=300))
def test_estimate_stays_near_the_real_count(text: str) -> None:
    real = BpeCounter("o200k_base").count(text)
    guess = EstimateCounter().count(text)
    # Within a factor of about 3 either way, plus slack for tiny texts.
    assert guess <= 3 * real + 4
    assert real <= 3 * guess + 4
