"""Scoring: each failed check gives one reason; laws for keywords, patterns and schemas."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion.eval import Case, extract_json, score_answer

_words = st.text("abcdefghijklmnop", min_size=1, max_size=8)


def test_every_failed_check_is_reported() -> None:
    case = Case(input="x", expect=["paris", "france"], forbid=["london"], regex=[r"\d{4}"])
    reasons = score_answer(case, "London is nice")
    assert reasons == ["missing 'paris'", "missing 'france'", "forbidden 'london'", "no match for /\\d{4}/"]
    assert score_answer(case, "PARIS, France, since 1789") == []


def test_case_sensitive_keywords() -> None:
    case = Case(input="x", expect=["Paris"], case_sensitive=True)
    assert score_answer(case, "paris") == ["missing 'Paris'"]
    assert score_answer(case, "Paris") == []


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["city", "year"],
}


@pytest.mark.parametrize(
    ("answer", "reasons"),
    [
        ('{"city": "Paris", "year": 1789}', []),
        ('Here you go:\n```json\n{"city": "Paris", "year": 1789}\n```', []),
        ('{"city": "Paris", "year": "1789"}', ["schema: at year: '1789' is not of type 'integer'"]),
        ('{"city": "Paris"}', ["schema: at (root): 'year' is a required property"]),
        ("Paris, 1789", ["schema: the answer is not JSON"]),
    ],
)
def test_schema_check(answer: str, reasons: list[str]) -> None:
    assert score_answer(Case(input="x", schema=SCHEMA), answer) == reasons


def test_extract_json_raises_without_json() -> None:
    with pytest.raises(ValueError):
        extract_json("no json here")


@settings(max_examples=60)
@given(st.lists(_words, max_size=5), st.text(max_size=30))
def test_an_answer_containing_every_keyword_passes_expect(keywords: list[str], filler: str) -> None:
    """Law: expect passes exactly when each keyword occurs (any case, any surroundings)."""
    answer = filler + " ".join(k.upper() for k in keywords) + filler
    assert score_answer(Case(input="x", expect=keywords), answer) == []


@settings(max_examples=60)
@given(_words, st.text(max_size=30), st.text(max_size=30))
def test_a_forbidden_keyword_anywhere_fails(keyword: str, before: str, after: str) -> None:
    """Law: a forbidden keyword fails the answer wherever it appears."""
    assert score_answer(Case(input="x", forbid=[keyword]), before + keyword + after) == [f"forbidden {keyword!r}"]


@settings(max_examples=60)
@given(st.lists(_words, max_size=4), st.lists(_words, max_size=4), st.text(max_size=40))
def test_reasons_count_the_failed_checks(expect: list[str], forbid: list[str], answer: str) -> None:
    """Law: one reason per failed keyword check, and no reason for a passing one."""
    folded = answer.casefold()
    expected = sum(k.casefold() not in folded for k in expect) + sum(k.casefold() in folded for k in forbid)
    assert len(score_answer(Case(input="x", expect=expect, forbid=forbid), answer)) == expected


@settings(max_examples=40)
@given(st.text(max_size=20))
def test_an_escaped_literal_pattern_matches_its_text(text: str) -> None:
    """Law: re.escape(t) as a pattern matches any answer containing t."""
    assert score_answer(Case(input="x", regex=[re.escape(text)]), "<" + text + ">") == []
