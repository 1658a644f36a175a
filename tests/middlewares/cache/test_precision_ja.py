# ruff: noqa: RUF001 (Japanese questions end with the full-width question mark, as they are written)
"""Laws of the Japanese precision guards: one spelling per number (kanji, digits, mixed),
and two questions that differ only in a number, a unit, a currency, a negation, a pole
of an antonym pair, a name or what they ask for never match; what only changes the
politeness or the spelling of a number always does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlewares.cache.precision import guards_pass, signature
from middlewares.cache.precision_ja import canonical, embedding_text, mixed_number

_DIGITS = "〇一二三四五六七八九"


def kanji(n: int) -> str:
    """``n`` in kanji numerals, as written (一万二千三百四十五; 十 not 一十)."""
    if n == 0:
        return "〇"
    out = ""
    for value, sign in ((100_000_000, "億"), (10_000, "万")):
        if n >= value:
            out += kanji(n // value) + sign
            n %= value
    for value, sign in ((1000, "千"), (100, "百"), (10, "十")):
        if n >= value:
            head = n // value
            out += ("" if head == 1 else _DIGITS[head]) + sign
            n %= value
    return out + (_DIGITS[n] if n else "")


def mixed(n: int) -> str:
    """``n`` as digits before 億 and 万 (3万4500, 1億2万)."""
    out = ""
    for value, sign in ((100_000_000, "億"), (10_000, "万")):
        if n >= value:
            out += str(n // value) + sign
            n %= value
    return out + (str(n) if n else "")


def same(a: str, b: str) -> bool:
    return guards_pass(signature(a), signature(b)) and guards_pass(signature(b), signature(a))


NUMBERS = st.integers(1, 999_999_999)
UNITS = ["キロ", "マイル", "メートル", "フィート", "キログラム", "ポンド", "リットル", "ガロン", "時間", "分"]
CURRENCIES = ["円", "ドル", "ユーロ", "ポンド", "ウォン", "人民元", "ルピー"]


@settings(max_examples=200, deadline=None)
@given(NUMBERS)
def test_law_every_spelling_of_a_number_has_its_value(n: int) -> None:
    assert mixed_number(kanji(n)) == n
    assert mixed_number(mixed(n)) == n
    assert canonical(f"{kanji(n)}円は高いですか") == f"{n}円は高いですか"


@settings(max_examples=100, deadline=None)
@given(NUMBERS, st.sampled_from(CURRENCIES + UNITS))
def test_law_one_number_spelled_two_ways_matches(n: int, unit: str) -> None:
    question = "{}" + unit + "は何ドルですか？"
    assert same(question.format(kanji(n)), question.format(n))
    assert same(question.format(mixed(n)), question.format(f"{n:,}"))


@settings(max_examples=150, deadline=None)
@given(NUMBERS, NUMBERS, st.sampled_from(CURRENCIES + UNITS), st.booleans())
def test_law_two_numbers_never_match(a: int, b: int, unit: str, as_kanji: bool) -> None:
    spell = kanji if as_kanji else str
    question = "{}" + unit + "はどれくらいですか？"
    assert same(question.format(spell(a)), question.format(b)) is (a == b)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 9999), st.sampled_from(UNITS), st.sampled_from(UNITS), st.booleans())
def test_law_two_units_never_match(n: int, unit: str, other: str, conversion: bool) -> None:
    """5キロは何マイル is not 5マイルは何キロ; 5キロ is not 5マイル."""
    if conversion:
        a, b = f"{n}{unit}は何{other}ですか？", f"{n}{other}は何{unit}ですか？"
    else:
        a, b = f"{n}{unit}は長いですか？", f"{n}{other}は長いですか？"
    assert same(a, b) is (unit == other)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 9999), st.sampled_from(CURRENCIES), st.sampled_from(CURRENCIES), st.sampled_from(CURRENCIES))
def test_law_two_currencies_never_match(n: int, unit: str, other: str, target: str) -> None:
    """1ドルは何円 is not 1ユーロは何円, asked in either of two forms."""
    a = f"{n}{unit}は{target}でいくらですか？"
    b = f"{n}{other}は何{target}ですか？"
    assert same(a, b) is (unit == other)


VERBS = [
    ("含まれています", "含まれていません"),
    ("飲めます", "飲めません"),
    ("できます", "できません"),
    ("ある", "ない"),
]
SUBJECTS = ["パン", "この水", "牛乳", "日曜日の郵便局", "ビール", "この薬"]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(SUBJECTS), st.sampled_from(VERBS), st.booleans())
def test_law_a_negated_question_never_matches(subject: str, verbs: tuple[str, str], polite: bool) -> None:
    end = "か？" if polite else "？"
    assert not same(f"{subject}は{verbs[0]}{end}", f"{subject}は{verbs[1]}{end}")


POLES = [("合法", "違法"), ("安全", "危険"), ("大丈夫", "危険"), ("許可されています", "禁止されています")]
POLES += [("問題ない", "危険"), ("法律で認められています", "違法")]
ACTIONS = ["ドローンを飛ばす", "生で食べる", "路上で演奏する", "花火をする", "キャンプする"]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(ACTIONS), st.sampled_from(POLES), st.sampled_from(["", "日本で", "カナダで"]))
def test_law_opposite_verdicts_never_match(action: str, poles: tuple[str, str], place: str) -> None:
    assert not same(f"{place}{action}のは{poles[0]}ですか？", f"{place}{action}のは{poles[1]}ですか？")
    # "May I X" is answered by neither "is X dangerous" nor "is X illegal".
    assert not same(f"{place}{action[:-1]}{_te(action)}もいいですか？", f"{place}{action}のは{poles[1]}ですか？")


def _te(action: str) -> str:
    """The te-form ending of the verb that ends ``action`` (飛ばす -> 飛ばして)."""
    return {"す": "して", "る": "て"}[action[-1]]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(ACTIONS))
def test_law_safe_is_not_legal(action: str) -> None:
    assert not same(f"{action}のは安全ですか？", f"{action}のは合法ですか？")


ANTONYMS = [("増やす", "減らす"), ("上げる", "下げる"), ("買う", "売る"), ("インストールする", "アンインストールする")]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["貯金", "筋肉量", "家賃", "アプリ", "株"]), st.sampled_from(ANTONYMS))
def test_law_an_antonym_never_matches(thing: str, verbs: tuple[str, str]) -> None:
    assert not same(f"{thing}を{verbs[0]}方法は？", f"{thing}を{verbs[1]}方法は？")


NAMES = ["カナダ", "ケニア", "ポルトガル", "スイス", "ペルー", "東京", "大阪", "那覇", "金沢", "北海道"]


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(NAMES),
    st.sampled_from(NAMES),
    st.sampled_from(["{}の首都はどこですか？", "{}、明日の天気はどう？"]),
)
def test_law_another_name_never_matches(a: str, b: str, frame: str) -> None:
    assert same(frame.format(a), frame.format(b)) is (a == b)


FOCI = ["なぜ{}のですか？", "{}のはいつですか？", "{}のはどこですか？", "{}のは誰ですか？"]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["桜が咲く", "空が青い", "ピラミッドを作った"]), st.sampled_from(FOCI), st.sampled_from(FOCI))
def test_law_another_question_focus_never_matches(clause: str, a: str, b: str) -> None:
    assert same(a.format(clause), b.format(clause)) is (a == b)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["桜が咲く", "空が青い", "豚肉を生で食べる"]))
def test_law_a_why_question_never_matches_a_yes_no_question(clause: str) -> None:
    assert not same(f"{clause}のはなぜですか？", f"{clause}のですか？")


ENDINGS = ["ですか？", "？", "を教えてください", "を教えて", "でしょうか？", "か。"]


@settings(max_examples=100, deadline=None)
@given(NUMBERS, st.sampled_from(CURRENCIES), st.sampled_from(ENDINGS), st.sampled_from(ENDINGS))
def test_law_politeness_and_spelling_change_nothing(n: int, unit: str, a: str, b: str) -> None:
    """Only the ending and the spelling of the number differ: the guards pass, and the
    embedder reads one text."""
    first, second = f"{kanji(n)}{unit}の価値{a}", f"{n}{unit}の価値{b}"
    assert same(first, second)
    assert embedding_text(first) == embedding_text(second)


@settings(max_examples=100, deadline=None)
@given(NUMBERS, st.sampled_from(CURRENCIES + UNITS), st.sampled_from(ENDINGS))
def test_law_the_embedding_text_keeps_every_number_and_unit(n: int, unit: str, end: str) -> None:
    text = f"{kanji(n)}{unit}は何ドル{end}"
    core = signature(embedding_text(text))
    full = signature(text)
    assert (core.numbers, core.quantities, core.units) == (full.numbers, full.quantities, full.units)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("482時間は何分ですか？", "482時間を分に換算すると？"),
        ("20ポンドは何円ですか？", "20ポンドは円でいくら？"),
        ("75華氏は何摂氏ですか？", "華氏75度は摂氏で何度？"),
        ("1万円は何ドルですか？", "一万円はドルでいくらですか？"),
        ("三人分の肉じゃがの材料は？", "3人前の肉じゃがの材料を教えて"),
        ("サーモンを生で食べるのは安全ですか？", "サーモンを生で食べても問題ない？"),
        ("カナダで雨水を集めるのは合法ですか？", "カナダで雨水を集めることは法律で認められていますか？"),
        ("パンにはグルテンが含まれていますか？", "パンにグルテンは入っていますか？"),
        ("筋肉量を増やす方法は？", "筋肉量を増やすコツは？"),
        ("航空券を買うのに良い時期はいつですか？", "航空券を買うならいつがおすすめ？"),
        ("このアプリは無料ですか？", "このアプリはタダで使えますか？"),
    ],
)
def test_paraphrases_the_guards_used_to_reject_pass(a: str, b: str) -> None:
    assert same(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("サーモンは生で食べても大丈夫ですか？", "サーモンを生で食べるのは危険ですか？"),
        ("ドイツでドローンを飛ばしてもいいですか？", "ドイツでドローンを飛ばすのは違法ですか？"),
        ("那覇、明日の天気はどう？", "金沢、明日の天気はどう？"),
        ("このアプリは無料ですか？", "このアプリは有料ですか？"),
        ("482時間は何分ですか？", "482分は何時間ですか？"),
        ("華氏30度は摂氏何度ですか？", "摂氏30度は華氏何度ですか？"),
        ("Is it illegal to fly a drone here?", "Is flying a drone here permitted?"),
        ("Is it safe to fly a drone here?", "Is it legal to fly a drone here?"),
    ],
)
def test_texts_that_used_to_pass_are_told_apart(a: str, b: str) -> None:
    assert not same(a, b)


DISHES = ["おでん", "すき焼き", "たこ焼き", "お好み焼き", "肉じゃが", "カレー", "そば", "うどん", "ちくわ", "味噌汁"]
DISH_FRAMES = ["{n}人分の{x}の材料は？", "{x}には{g}が含まれていますか？", "{x}を生で食べるのは安全ですか？"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(DISHES), st.sampled_from(DISHES), st.sampled_from(DISH_FRAMES), st.integers(1, 20))
def test_law_one_word_swapped_in_one_frame_never_matches(a: str, b: str, frame: str, n: int) -> None:
    """The word may be kana alone (そば / うどん), kanji and kana (肉じゃが) or katakana."""
    first, second = frame.format(n=n, x=a, g="グルテン"), frame.format(n=n, x=b, g="グルテン")
    assert same(first, second) is (a == b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("おこづかいを増やす方法は？", "ちょきんを増やす方法は？"),
        ("ひたちなか市の人口は？", "つくば市の人口は？"),
        ("3人分のすき焼きの材料は？", "3人分のたこ焼きの材料は？"),
    ],
)
def test_a_swapped_kana_word_is_told_apart(a: str, b: str) -> None:
    assert not same(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("豚肉を生で食べるのは安全ですか？", "豚肉を生で食べても安全ですか？"),  # a verb's ending
        ("ひらがなはカタカナより簡単ですか？", "ひらがなの方がカタカナより簡単ですか？"),  # particles in a word
        ("筋肉量を増やす方法は？", "筋肉量を増やすには？"),
        ("そばにはグルテンが含まれていますか？", "そばにグルテンは入っていますか？"),
        ("ドイツでドローンを飛ばすのは合法ですか？", "ドイツでドローンを飛ばしてもいいですか？"),
        ("赤ちゃんにはちみつを与えるのは安全ですか？", "赤ちゃんにはちみつをあげても大丈夫？"),
    ],
)
def test_a_reworded_frame_is_no_swap(a: str, b: str) -> None:
    assert same(a, b)


ADJECTIVES = ["大きい", "寒い", "暑い", "速い", "安い", "重い", "新しい", "長い"]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(ADJECTIVES), st.sampled_from(ADJECTIVES), st.sampled_from([("東京", "大阪"), ("バス", "電車")]))
def test_law_a_comparison_on_another_dimension_never_matches(a: str, b: str, pair: tuple[str, str]) -> None:
    """「東京は大阪より大きい」 is not 「東京は大阪より寒い」 (nor, in English, bigger / colder)."""
    x, y = pair
    assert same(f"{x}は{y}より{a}ですか？", f"{x}の方が{y}より{b}？") is (a == b)


@pytest.mark.parametrize("other", ["bigger", "colder", "cheaper", "older"])
def test_an_english_comparison_on_another_dimension_never_matches(other: str) -> None:
    assert not same("Is Tokyo faster than Osaka?", f"Is Tokyo {other} than Osaka?")


PLACES_AND_THINGS = ["東京", "大阪", "名古屋", "キロ", "マイル", "摂氏", "華氏", "英語", "日本語", "Windows", "Mac"]
PLACES_AND_THINGS += ["円", "ドル"]
ROLE_FRAMES = [
    "{a}から{b}への行き方は？",
    "{a}から{b}まで何時間かかりますか？",
    "{a}を{b}に変換する方法は？",
    "{a}を{b}に翻訳してください",
    "{a}から{b}にデータを移すには？",
]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(PLACES_AND_THINGS), st.sampled_from(PLACES_AND_THINGS), st.sampled_from(ROLE_FRAMES))
def test_law_the_same_words_with_their_roles_swapped_never_match(a: str, b: str, frame: str) -> None:
    # From a to b is not from b to a: the question's words are all the same, only the
    # particles after them (から, を / に, へ, まで) say which way it goes.
    assert same(frame.format(a=a, b=b), frame.format(a=b, b=a)) is (a == b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("東京から大阪まで新幹線で何時間？", "新幹線で東京から大阪まで何時間かかる？"),
        ("キロをマイルに変換する方法は？", "キロからマイルへ変換する方法は？"),
        ("英語を日本語に翻訳して", "日本語に英語を翻訳して"),
        ("12インチは何センチですか？", "12インチをセンチに換算すると？"),
    ],
)
def test_words_keeping_their_roles_still_match(a: str, b: str) -> None:
    assert same(a, b)


KANA_AND_NUMERAL_NAMES = ["さいたま", "つくば", "ひたちなか", "いわき", "千葉", "九州", "八王子", "東京"]


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(KANA_AND_NUMERAL_NAMES), st.sampled_from(KANA_AND_NUMERAL_NAMES))
def test_law_a_topic_name_is_compared_wherever_the_paraphrase_puts_it(a: str, b: str) -> None:
    # A name in hiragana alone, or one whose kanji look like numerals (千葉), moved to
    # another place in the question: the same name matches, another never does.
    assert same(f"{a}の明日の天気は？", f"明日の{b}の天気を教えて") is (a == b)


KANA_FOODS = ["うどん", "そば", "みそ", "せんべい", "しらす", "ほたて", "たまご", "かまぼこ"]
KANA_FRAMES = [
    ("{}にはグルテンが含まれていますか？", "{}にグルテンは入っていますか？"),
    ("{}を生で食べるのは安全ですか？", "生の{}を食べても安全？"),
    ("{}ってグルテンを含む？", "{}にはグルテンが含まれていますか？"),
]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(KANA_FOODS), st.sampled_from(KANA_FOODS), st.sampled_from(KANA_FRAMES))
def test_law_a_kana_noun_in_a_reworded_frame_is_compared(a: str, b: str, frames: tuple[str, str]) -> None:
    # The frame is reworded (so no one-word swap is seen): the noun written in hiragana
    # alone must still be the same one.
    assert same(frames[0].format(a), frames[1].format(b)) is (a == b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("うどんの方がそばより太いですか？", "うどんはそばより細いですか？"),
        ("画面を明るくする方法は？", "画面を暗くする方法は？"),
        ("一ヶ月で太る方法は？", "一ヶ月で痩せる方法は？"),
        ("風邪のときに食べるべきものは？", "風邪をひいたときに避けるべき食べ物は？"),
    ],
)
def test_more_opposites_are_told_apart(a: str, b: str) -> None:
    assert not same(a, b)


def test_the_hand_written_dev_pairs_are_told_apart() -> None:
    # benchmarks/data/adversarial_dev_pairs.jsonl: different questions, written by hand
    # (DEV.md). One rewords the question (違い / メリット) and is left to the threshold.
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "data" / "adversarial_dev_pairs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    passing = [(row["a"], row["b"]) for row in rows if same(row["a"], row["b"])]
    assert len(rows) == 80
    assert passing == [("前払いと後払いの違いは？", "前払いのメリットは？")]
