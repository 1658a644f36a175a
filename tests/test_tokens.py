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
        assert counter.count("abcd") == 1
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


def test_estimate_counts_japanese_per_character() -> None:
    estimate = EstimateCounter()
    assert estimate.count("") == 0
    assert estimate.count("abcd" * 10) == 10
    assert estimate.count("こんにちは") == 5


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.sampled_from("abc de,.!?0123456789こんにちは世界"), max_size=300))
def test_estimate_stays_near_the_real_count(text: str) -> None:
    real = BpeCounter("o200k_base").count(text)
    guess = EstimateCounter().count(text)
    # An estimate, not a bound: within a factor of about 3 either way, plus slack for tiny texts.
    assert guess <= 3 * real + 4
    assert real <= 3 * guess + 4
