"""The Japanese half of the semantic cache's precision guards: numbers (Arabic,
full-width and kanji numerals), units and currencies, negation, entities, and the
nouns a question is about (a kanji word before a particle: 卵を is not 鶏肉を).

Japanese writes no spaces, so everything here is a substring scan over NFKC-normalized
text (full-width digits and letters become ASCII first): one regex per concern.
"""

from __future__ import annotations

import re

from .precision_lexicon import JA_OPPOSITES, JA_UNITS, alternation

__all__ = ["JapaneseSignature", "japanese_signature"]

_KANJI_DIGITS = {"\u3007": 0, "零": 0, "一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_KANJI_SMALL = {"十": 10, "百": 100, "千": 1000}
_KANJI_LARGE = {"万": 10_000, "億": 100_000_000, "兆": 1_000_000_000_000}
_KANJI_NUMBER = re.compile("[\u3007零一二三四五六七八九十百千万億兆]+")
# Words that are written with numerals but are not numbers.
_NOT_NUMBERS = re.compile("一緒|一般|一番|一部|一応|一度も|十分|一つ一つ|唯一|統一|万一|一方|同一|一致|一体")
# Single-character units count only after a number or 何 (分 alone is in 分かる, 日 in 日本).
_SHORT_UNITS = frozenset(form for form in JA_UNITS if len(form) == 1)
_LONG_UNITS = alternation([form for form in JA_UNITS if len(form) > 1])
_COUNTED_UNIT = re.compile("(?:[0-9]|何)(" + "|".join(re.escape(f) for f in _SHORT_UNITS) + ")")
_OPPOSITE = alternation(list(JA_OPPOSITES))
# ない after a verb or adjective stem, ません, ず, 不/非/無/未 before a kanji; not 少ない
# or 危ない, whose ない is part of the word.
_NEGATION = re.compile(
    "(?<![少危])ない|なかっ|なく(?!て)|ません|ませんでし|ず(?:に|、|。|$)|[不非無未](?=[\u4e00-\u9fff])"
)
_KATAKANA_WORD = re.compile("[\u30a1-\u30fa\u30fc]{2,}")
_PLACE = re.compile("[\u4e00-\u9fff]{1,4}?(?:都|道|府|県|市|区|町|村|駅|国|島|州|語|大学|銀行)")
_NAMES = "日本 中国 韓国 米国 英国 台湾 東京 大阪 京都 北海道 沖縄 名古屋 福岡 横浜 神戸 札幌 仙台 広島 奈良 富士山 "
_NAMES += "アメリカ フランス ドイツ イタリア スペイン カナダ インド ロシア ブラジル"
# Kanji words that end like a place name but name none.
_NOT_PLACES = frozenset(("首都", "都市", "外国", "母国", "全国", "各国", "国語", "言語", "単語", "市区町村"))
# What a comparison is made against: 「AはBより」「AのほうがBより」「Bと比べてA」.
_COMPARED_WITH = re.compile("(?:[はが]|^)([^はがをにで、。?]+?)(?:より|と比べ|に比べ)")
# The kanji nouns a question is about: its object or subject (卵を, 鶏肉が) and the
# word it opens with (豚肉は, 東京の); the other text must say them too. Numbers are
# the number guard's, katakana words the entities'.
_NOUN = re.compile("([\u4e00-\u9fff]+)(?=[をが])|^([\u4e00-\u9fff]+)(?=[はの])")
# And every kanji word a particle follows (保育士の, 首都は, 人口って): what the question
# asks about (the capital or the population, a nurse's or a lawyer's pay). Compared by
# its characters, so that a reordering (平均年収, 年収の平均) still matches.
_CONTENT_NOUN = re.compile("([\u4e00-\u9fff]+)(?=[のはがをにへとも]|で(?!す|し|は)|って|より)")
_FORMAL_NOUNS = frozenset("方事物時所為様")
# Kanji words of the question's frame, said in other words by a paraphrase (方法 / コツ,
# 必要 / いる): not what it is about.
_GRAMMAR_NOUNS = frozenset(("方法", "必要", "何", "誰"))  # grammar, not topics (の方が: "rather than")
_KNOWN_NAMES = alternation(_NAMES.split(" "))


class JapaneseSignature:
    """Numbers, units, poles (opposites), negations and entities found in Japanese text."""

    __slots__ = ("compared_with", "content", "entities", "negations", "nouns", "numbers", "poles", "units")

    def __init__(
        self, numbers: list[str], units: set[str], poles: set[tuple[str, int]], negations: int, entities: set[str]
    ) -> None:
        self.numbers = numbers
        self.units = units
        self.poles = poles
        self.negations = negations
        self.entities = entities
        self.compared_with = ""
        self.nouns: frozenset[str] = frozenset()
        self.content: frozenset[str] = frozenset()


def kanji_number(text: str) -> int | None:
    """The value of a kanji numeral (二十五 -> 25, 三千五百 -> 3500, 一万二千 -> 12000)."""
    total = section = digit = 0
    seen = False
    for char in text:
        if char in _KANJI_DIGITS:
            digit = digit * 10 + _KANJI_DIGITS[char]
            seen = True
        elif char in _KANJI_SMALL:
            section += (digit or 1) * _KANJI_SMALL[char]
            digit = 0
            seen = True
        elif char in _KANJI_LARGE:
            total += (section + digit or 1) * _KANJI_LARGE[char]
            section = digit = 0
            seen = True
    return total + section + digit if seen else None


def japanese_signature(text: str) -> JapaneseSignature:
    """The Japanese signature of NFKC-normalized ``text`` (ASCII numbers are the caller's)."""
    plain = _NOT_NUMBERS.sub("", text)
    numbers = [str(v) for m in _KANJI_NUMBER.findall(plain) if (v := kanji_number(m)) is not None]
    units = {JA_UNITS[m] for m in _LONG_UNITS.findall(text)}
    units.update(JA_UNITS[m] for m in _COUNTED_UNIT.findall(text))
    poles = {JA_OPPOSITES[m] for m in _OPPOSITE.findall(text)}
    entities = set(_KATAKANA_WORD.findall(text)) - set(JA_UNITS) - {w for w in JA_OPPOSITES}
    entities.update(place for place in _PLACE.findall(text) if place not in _NOT_PLACES)
    entities.update(_KNOWN_NAMES.findall(text))
    found = JapaneseSignature(numbers, units, poles, len(_NEGATION.findall(text)), entities)
    compared = _COMPARED_WITH.search(text)
    found.compared_with = compared.group(1).strip().lower() if compared else ""
    found.nouns = frozenset(
        noun
        for pair in _NOUN.findall(text)
        for noun in pair
        if noun and noun not in _FORMAL_NOUNS and not _KANJI_NUMBER.search(noun)
    )
    found.content = frozenset(
        noun
        for noun in _CONTENT_NOUN.findall(text)
        if noun not in _FORMAL_NOUNS and not _KANJI_NUMBER.search(noun) and noun not in _GRAMMAR_NOUNS
    )
    return found
