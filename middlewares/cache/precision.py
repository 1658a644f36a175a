"""Precision guards of the semantic cache: cheap checks that two similar texts do not
mean different things.

An embedding says two questions are close; it does not see that "2 eggs" is not
"3 eggs", "5 km in miles" is not "5 miles in km", "$1" is not "€1", "Paris" is not
"Rome", "legal" is not "illegal", "faster" is not "slower", or "is X safe" is not "is X
not safe"; nor, in Japanese, that 五 is 5, 「5キロは何マイル」 is not 「5マイルは何キロ」 or
飲めます is not 飲めません. Before a hit is served, the two texts' ``Signature``\\ s
must agree (``guards_pass``): the same numbers, each with the same unit or currency
after it, the same units and currencies, no axis of opposites on different poles, no
word negated by a prefix in one text alone (safe/unsafe, able/unable), the same count
of negations, and the same named entities, compared against the same thing ("A faster than B"
is not "B faster than A") on the same dimension ("bigger than B" is not "colder than B").
A verdict on an action is on one axis in both texts ("is it safe to X" is not "is it
legal to X") and of one sign ("may I X" is not "is X illegal"); in Japanese, what the
question asks for (why, when, where, who) is the same.
The word lists are in ``precision_lexicon``, the Japanese scan in ``precision_ja``.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import msgspec

from .precision_ja import canonical, frame, japanese_signature, roles_agree, swapped_word
from .precision_lexicon import (
    CURRENCIES,
    EXCLUSIVE_AXES,
    OPPOSITES,
    SYMBOL_CURRENCIES,
    UNITS,
    UNITS_CASED,
    VERDICT_AXIS,
)

__all__ = ["Signature", "guards_pass", "signature"]

# A number, the currency symbol before it and the word after it ("5 km", "$5", "5キロ").
_NUMBER = re.compile(
    r"([$€£¥₩₹₿]?)\s?(\d+(?:[.,]\d+)*)\s?(?:degrees?\s+|deg\s+)?(°?[A-Za-z%/\u30a0-\u30ff\u4e00-\u9fff]*)"
)
_APOSTROPHE = "\u2019"  # typographic apostrophe, as in "isn\u2019t"
_WORD = re.compile(r"[A-Za-z°][A-Za-z0-9'\u2019/-]*|[$€£¥₩₹₿%]")
_JAPANESE = re.compile("[\u3040-\u30ff\u4e00-\u9fff]")
_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
_UNITS += " seventeen eighteen nineteen twenty"
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(_UNITS.split())} | {
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "half": "0.5",
    "quarter": "0.25",
    "dozen": "12",
    "twice": "x2",
    "double": "x2",
    "triple": "x3",
    "first": "1",
    "second": "2",
    "third": "3",
    "fourth": "4",
    "fifth": "5",
}
_SENTENCE_ENDS = frozenset(".!?:;\n")
_NEGATION_WORDS = (
    "not no never none nobody nothing neither nor without cannot cant dont doesnt didnt isnt arent wasnt "
    "werent wont wouldnt shouldnt couldnt hasnt havent hadnt"
)
_NEGATIONS = frozenset(_NEGATION_WORDS.split())
_NEGATIVE_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non")
# What a comparison is made against: "A is faster than B", "compared with B, A …".
_COMPARED_WITH = re.compile(
    r"\b(?:than|versus|vs\.?|compared (?:with|to)|over)\s+(?:the\s+)?([\w.+#-]+)", re.IGNORECASE
)
# Capitalized words that start sentences or questions and name nothing.
_COMMON_WORDS = (
    "a an the i what which who whom whose how why when where is are was were do does did can could would "
    "should will shall may might must please tell give show explain describe list write summarize define "
    "compare find name make help let translate calculate convert suggest recommend in on at for of to and or "
    "but if my your our their his her its it this that these those there here hi hello hey thanks thank yes "
    "no not ok okay so also then now just"
)
_NOT_ENTITIES = frozenset(_COMMON_WORDS.split())
# Units that are ordinary words too ("what day", "a cup of tea"): only beside a number.
_COUNTED_ONLY = frozenset({"second", "minute", "hour", "day", "week", "month", "year", "cup", "percent", "inch"})


class Signature(msgspec.Struct, frozen=True):
    """What the precision guards compare: numbers with what follows them, units and
    currencies, poles of opposites, negations, entities and words."""

    numbers: tuple[str, ...]
    entities: frozenset[str]
    negations: int
    words: frozenset[str]
    quantities: tuple[tuple[str, str], ...] = ()
    units: frozenset[str] = frozenset()
    poles: frozenset[tuple[str, int]] = frozenset()
    negated_stems: frozenset[str] = frozenset()
    ordered: tuple[str, ...] = ()  # what the text compares against, if it compares
    text: str = ""  # the normalized text, for the nouns check
    nouns: frozenset[str] = frozenset()  # Japanese: each must occur in the other text
    content: frozenset[str] = frozenset()  # Japanese: each one's characters must occur in the other text
    focus: frozenset[str] = frozenset()  # Japanese: what the question asks for (why, when, where, who)
    frame: str = ""  # Japanese: the text as the swapped-word check reads it
    roles: frozenset[tuple[str, str]] = frozenset()  # Japanese: (word, "from" | "to") by its particle


def _unit_of(word: str) -> str | None:
    """The canonical unit or currency ``word`` names (case decides MB vs Mb)."""
    if word in UNITS_CASED:
        return UNITS_CASED[word]
    lower = word.lower()
    return UNITS.get(lower) or CURRENCIES.get(lower) or SYMBOL_CURRENCIES.get(word)


def _quantities(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Every number, and ``(number, unit)`` for those with a unit or currency beside it."""
    numbers: list[str] = []
    quantities: list[tuple[str, str]] = []
    for symbol, digits, after in _NUMBER.findall(text):
        number = digits.replace(",", "")
        numbers.append(number)
        unit = SYMBOL_CURRENCIES.get(symbol) if symbol else None
        if unit is None and after:
            unit = _unit_of(after) or _unit_of(after.lstrip("°")) or _japanese_unit(after)
        if unit is not None:
            quantities.append((number, unit))
    return numbers, quantities


def _japanese_unit(after: str) -> str | None:
    units = japanese_signature(after).units
    return min(units) if len(units) == 1 else None


@functools.lru_cache(maxsize=8192)  # the entries' texts recur at every lookup near them
def signature(text: str) -> Signature:
    """The guard signature of ``text``: a few regex scans and one pass over the words.

    A capitalized word names an entity unless it starts a sentence (where every word is
    capitalized) or is a common word; an all-caps or inner-capital word (``USD``,
    ``iPhone``) names one anywhere. Possessives are dropped (``France's`` -> ``france``).
    """
    text = unicodedata.normalize("NFKC", text)
    japanese = _JAPANESE.search(text) is not None  # where a Latin word is nearly always a name
    if japanese:
        text = canonical(text)  # 三人分 and 3人分, 1万円 and 一万円 read alike
    numbers, quantities = _quantities(text)
    entities: list[str] = []
    words: set[str] = set()
    units: set[str] = set()
    poles: set[tuple[str, int]] = set()
    negated: set[str] = set()
    negations = 0
    previous_end = 0
    for match in _WORD.finditer(text):
        raw = match.group()
        sentence_start = previous_end == 0 or any(c in _SENTENCE_ENDS for c in text[previous_end : match.start()])
        previous_end = match.end()
        lower = raw.lower().replace(_APOSTROPHE, "'")
        if lower.endswith("'s"):
            lower = lower[:-2]
        plain = lower.replace("'", "")
        words.add(plain)
        unit = _unit_of(raw)
        if unit is not None and (len(plain) > 2 or raw in SYMBOL_CURRENCIES) and unit not in _COUNTED_ONLY:
            units.add(unit)
        if plain in OPPOSITES:
            poles.add(OPPOSITES[plain])
        if len(plain) > 5 and plain.startswith(_NEGATIVE_PREFIXES):
            negated.add(plain[3:] if plain.startswith(("dis", "non")) else plain[2:])
        if plain in _NEGATIONS or lower.endswith("n't"):
            negations += 1
        elif plain in _NUMBER_WORDS:
            numbers.append(_NUMBER_WORDS[plain])
        elif (
            plain not in _NOT_ENTITIES
            and unit is None
            and (any(c.isupper() for c in raw[1:]) or (raw[0].isupper() and (not sentence_start or japanese)))
        ):
            entities.append(plain)
    units.update(unit for _, unit in quantities)
    nouns: frozenset[str] = frozenset()
    content: frozenset[str] = frozenset()
    focus: frozenset[str] = frozenset()
    compared = _COMPARED_WITH.search(text)
    ordered = (compared.group(1).lower(),) if compared else ()
    if japanese:
        ja = japanese_signature(text)
        numbers.extend(ja.numbers)
        units |= ja.units
        poles |= ja.poles
        negations += ja.negations
        entities.extend(sorted(ja.entities))
        words |= ja.entities
        if ja.compared_with:
            ordered = (ja.compared_with,)
        nouns = ja.nouns
        content = ja.content
        focus = ja.focus
    return Signature(
        tuple(sorted(numbers)),
        frozenset(entities),
        negations,
        frozenset(words),
        tuple(sorted(quantities)),
        frozenset(units),
        frozenset(poles),
        frozenset(negated),
        ordered,
        text if japanese else "",
        nouns,
        content,
        focus,
        frame(text) if japanese else "",
        ja.roles if japanese else frozenset(),
    )


def _said_in(nouns: frozenset[str], text: str) -> bool:
    """Every character of every noun occurs in ``text`` (in any order: 平均年収, 年収の平均)."""
    return all(c in text for noun in nouns for c in noun)


def _same_verdict(a: frozenset[tuple[str, int]], b: frozenset[tuple[str, int]]) -> bool:
    """Two verdicts on an action agree: on a shared axis ("is it safe to X" is not "is it
    legal to X"), and in sign ("may I X" is not "is X dangerous")."""
    axes_a = {axis for axis, _ in a if axis in EXCLUSIVE_AXES}
    axes_b = {axis for axis, _ in b if axis in EXCLUSIVE_AXES}
    if axes_a and axes_b and not axes_a & axes_b:
        return False
    signs_a = {pole for axis, pole in a if axis in EXCLUSIVE_AXES or axis == VERDICT_AXIS}
    signs_b = {pole for axis, pole in b if axis in EXCLUSIVE_AXES or axis == VERDICT_AXIS}
    return not (signs_a and signs_b) or signs_a == signs_b


def _same_focus(a: frozenset[str], b: frozenset[str]) -> bool:
    """A "why" question only matches a "why" question; when, where and who differ when
    both texts name one (a question that names none may ask it in other words)."""
    if ("why" in a) != ("why" in b):
        return False
    return not (a and b) or a == b


def guards_pass(a: Signature, b: Signature) -> bool:
    """True when nothing cheap says the two texts mean different things.

    An entity must appear in the other text too (in any case: a capitalized word at the
    start of one sentence may be lowercase in the other).
    """
    if a.numbers != b.numbers or a.negations != b.negations or a.quantities != b.quantities or a.units != b.units:
        return False
    if not (a.entities <= b.words and b.entities <= a.words) or a.ordered != b.ordered:
        return False
    if a.poles != b.poles and {axis for axis, _ in a.poles} & {axis for axis, _ in b.poles}:
        axes_a, axes_b = dict(a.poles), dict(b.poles)
        if len(axes_a) != len(a.poles) or len(axes_b) != len(b.poles):
            return False  # both poles of one axis in one text: compare exactly
        if any(axes_b.get(axis, pole) != pole for axis, pole in axes_a.items()):
            return False
    if not _same_verdict(a.poles, b.poles):
        return False
    if a.ordered and a.poles and b.poles and not {axis for axis, _ in a.poles} & {axis for axis, _ in b.poles}:
        return False  # compared on another dimension: "bigger than Osaka" is not "colder than Osaka"
    if not _same_focus(a.focus, b.focus):
        return False
    if a.roles and b.roles and not roles_agree(a.roles, b.roles):
        return False  # the same words, their roles swapped (東京から大阪へ / 大阪から東京へ)
    if a.frame and b.frame and swapped_word(a.frame, b.frame):
        return False  # one word of the question swapped for another (そば / うどん)
    if any(noun not in b.text for noun in a.nouns) or any(noun not in a.text for noun in b.nouns):
        return False
    if not (_said_in(a.content, b.text) and _said_in(b.content, a.text)):
        return False
    return not (a.negated_stems & (b.words - a.words) or b.negated_stems & (a.words - b.words))
