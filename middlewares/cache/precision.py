"""Precision guards of the semantic cache: cheap checks that two similar texts do not
mean different things.

An embedding says two questions are close; it does not see that "2 eggs" is not
"3 eggs", "Paris" is not "Rome", or "is X safe" is not "is X not safe". Before a hit is
served, the two texts' ``Signature``\\ s (numbers, named entities, negations) must agree
(``guards_pass``).
"""

from __future__ import annotations

import re

import msgspec

__all__ = ["Signature", "guards_pass", "signature"]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_APOSTROPHE = "\u2019"  # typographic apostrophe, as in "isn\u2019t"
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'\u2019-]*")
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
# Capitalized words that start sentences or questions and name nothing.
_COMMON_WORDS = (
    "a an the i what which who whom whose how why when where is are was were do does did can could would "
    "should will shall may might must please tell give show explain describe list write summarize define "
    "compare find name make help let translate calculate convert suggest recommend in on at for of to and or "
    "but if my your our their his her its it this that these those there here hi hello hey thanks thank yes "
    "no not ok okay so also then now just"
)
_NOT_ENTITIES = frozenset(_COMMON_WORDS.split())


class Signature(msgspec.Struct, frozen=True):
    """What the precision guards compare: numbers, named entities, negation count, words."""

    numbers: tuple[str, ...]
    entities: frozenset[str]
    negations: int
    words: frozenset[str]


def signature(text: str) -> Signature:
    """The guard signature of ``text`` (cheap: two regex scans, one pass over the words).

    A capitalized word names an entity unless it starts a sentence (where every word is
    capitalized) or is a common word; an all-caps or inner-capital word (``USD``,
    ``iPhone``) names one anywhere. Possessives are dropped (``France's`` -> ``france``).
    """
    numbers = [n.replace(",", "") for n in _NUMBER.findall(text)]
    entities: set[str] = set()
    words: set[str] = set()
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
        if plain in _NEGATIONS or lower.endswith("n't"):
            negations += 1
        elif plain in _NUMBER_WORDS:
            numbers.append(_NUMBER_WORDS[plain])
        elif plain not in _NOT_ENTITIES and (
            any(c.isupper() for c in raw[1:]) or (raw[0].isupper() and not sentence_start)
        ):
            entities.add(plain)
    return Signature(tuple(sorted(numbers)), frozenset(entities), negations, frozenset(words))


def guards_pass(a: Signature, b: Signature) -> bool:
    """True when nothing cheap says the two texts mean different things.

    An entity must appear in the other text too (in any case: a capitalized word at the
    start of one sentence may be lowercase in the other).
    """
    return a.numbers == b.numbers and a.negations == b.negations and a.entities <= b.words and b.entities <= a.words
