"""Precision guards: units, currencies, opposites, comparatives, negated prefixes, and
Japanese numbers (kanji numerals too), units, negation and entities."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlewares.cache.precision import guards_pass, signature
from middlewares.cache.precision_ja import kanji_number

DIFFERENT = [
    ("How far is 5 km in miles?", "How far is 5 miles in km?"),
    ("Convert $100 to euros", "Convert €100 to euros"),
    ("How much is 20 dollars in yen?", "How much is 20 euros in yen?"),
    ("Is a 100 MB file big?", "Is a 100 Mb file big?"),
    ("Is it legal to park here?", "Is it illegal to park here?"),
    ("Is it safe to eat raw cookie dough?", "Is it unsafe to eat raw cookie dough?"),
    ("Is the movie available?", "Is the movie unavailable?"),
    ("Is Python faster than Java?", "Is Java faster than Python?"),
    ("Is Python faster than Java?", "Is Python slower than Java?"),
    ("What are the advantages of remote work?", "What are the disadvantages of remote work?"),
    ("5キロは何マイルですか?", "5マイルは何キロですか?"),
    ("1ドルは何円ですか", "1ユーロは何円ですか"),
    ("この水は飲めますか", "この水は飲めませんか"),
    ("東京の天気を教えてください", "大阪の天気を教えてください"),
    ("三人で行きます", "5人で行きます"),
    ("ここに駐車するのは合法ですか", "ここに駐車するのは違法ですか"),
    ("生卵を食べるのは安全ですか", "生卵を食べるのは危険ですか"),
    ("二十五歳の平均年収は?", "三十五歳の平均年収は?"),
    ("卵を生で食べるのは安全ですか?", "鶏肉を生で食べるのは安全ですか?"),
    # What the question asks about: a kanji word before a particle, anywhere in it.
    ("二十五歳の薬剤師の平均年収は?", "二十五歳の弁護士の平均年収は?"),
    ("スウェーデンの首都はどこですか?", "スウェーデンの人口は?"),
    ("十人分の豚汁の材料は?", "十人分のけんちん汁の材料は?"),
]
SAME = [
    ("How far is 5 km in miles?", "What is 5 kilometers in miles?"),
    ("Is it safe to eat raw cookie dough?", "Can I safely eat raw cookie dough?"),
    ("What is 100 °F in Celsius?", "Convert 100 degrees Fahrenheit to Celsius."),
    ("五人で行きます", "5人で行きます"),
    ("東京の天気を教えてください", "東京の天気は?"),
    ("２５歳の平均年収は?", "二十五歳の平均年収はいくら?"),
    ("卵を生で食べるのは安全ですか?", "卵は生で食べても大丈夫ですか?"),
    ("インドの首都はどこですか?", "インドの首都を教えてください"),
    ("45歳の保育士の平均年収は?", "四十五歳の保育士の年収の平均は?"),  # the same nouns reordered
]


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_guards_reject_texts_that_mean_something_else(a: str, b: str) -> None:
    assert not guards_pass(signature(a), signature(b))
    assert not guards_pass(signature(b), signature(a))


@pytest.mark.parametrize(("a", "b"), SAME)
def test_guards_let_paraphrases_through(a: str, b: str) -> None:
    assert guards_pass(signature(a), signature(b))


@pytest.mark.parametrize(
    ("numeral", "value"), [("五", 5), ("十", 10), ("二十五", 25), ("百", 100), ("三千五百", 3500), ("一万二千", 12000)]
)
def test_kanji_numerals_read_as_numbers(numeral: str, value: int) -> None:
    assert kanji_number(numeral) == value


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9999), st.integers(1, 9999), st.sampled_from(["キロ", "マイル", "円", "ドル", "人"]))
def test_law_a_different_japanese_number_never_passes(a: int, b: int, unit: str) -> None:
    same = guards_pass(signature(f"{a}{unit}は多いですか"), signature(f"{b}{unit}は多いですか"))
    assert same is (a == b)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["km", "miles", "kg", "pounds", "dollars", "euros", "MB", "Mb", "GB"]), st.integers(1, 999))
def test_law_another_unit_beside_the_same_number_never_passes(unit: str, n: int) -> None:
    for other in ("km", "miles", "kg", "lb", "dollars", "euros", "MB", "Mb", "GB"):
        if other != unit and not {unit, other} <= {"pounds", "lb"}:
            assert not guards_pass(signature(f"Is {n} {unit} a lot?"), signature(f"Is {n} {other} a lot?"))
