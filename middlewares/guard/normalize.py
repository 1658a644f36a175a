"""Text normalisation for guards: one canonical form so trivial evasions fail.

Used by the input guard (``middlewares.guard.input``) before any pattern is matched;
it never changes what is sent upstream, only what the rules look at.

``normalize(text)`` applies, in order:

1. removal of zero-width, bidi and other format characters (``Cf``) and control
   characters (``Cc``; tab, newline and carriage return count as whitespace);
2. Unicode NFKC, which folds full-width and half-width forms (``ＩＧＮＯＲＥ``,
   ``ｼｽﾃﾑ``) and compatibility ligatures to their plain characters;
3. case folding (stronger than ``lower``: ``ß`` becomes ``ss``);
4. the common Cyrillic and Greek homoglyphs of Latin letters mapped to Latin
   (``іgnоrе`` with Cyrillic ``і``/``о``/``е`` reads ``ignore``; capitals are mapped
   before step 3);
5. every run of whitespace collapsed to one ASCII space, ends stripped.
"""
# ruff: noqa: RUF001, RUF002, RUF003  (look-alike characters are this module's subject)

from __future__ import annotations

import re
import unicodedata

__all__ = ["HOMOGLYPHS", "normalize", "strip_control"]

# Characters that render as nothing (or move text around) and let "ig\u200bnore" slip
# past a plain regex. Built once from the Unicode database: every Cf and Cc character,
# except the whitespace controls, which step 5 turns into spaces.
# Unicode puts format and control characters in planes 0, 1 and 14 only (tags, U+E0001
# and up); scanning those three, not all seventeen, takes a sixth of the time at start
# (the full scan cost the gateway about half a second). A test compares it with the full
# scan on the running Python's Unicode database.
_INVISIBLE_PLANES = (0, 1, 14)
_INVISIBLE = {
    cp: None
    for plane in _INVISIBLE_PLANES
    for cp in range(plane << 16, (plane + 1) << 16)
    if unicodedata.category(chr(cp)) in ("Cf", "Cc") and chr(cp) not in "\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85"
}

HOMOGLYPHS: dict[str, str] = {
    # Cyrillic lowercase letters that look like Latin ones (uppercase ones are folded
    # to these by step 3).
    "а": "a",
    "в": "b",
    "с": "c",
    "ԁ": "d",
    "е": "e",
    "һ": "h",
    "і": "i",
    "ј": "j",
    "к": "k",
    "ӏ": "l",
    "м": "m",
    "н": "h",
    "о": "o",
    "р": "p",
    "ԛ": "q",
    "г": "r",
    "ѕ": "s",
    "т": "t",
    "у": "y",
    "ԝ": "w",
    "х": "x",
    "ё": "e",
    "ї": "i",
    # Greek lowercase letters with a Latin twin.
    "α": "a",
    "β": "b",
    "ε": "e",
    "η": "n",
    "ι": "i",
    "κ": "k",
    "ν": "v",
    "ο": "o",
    "ρ": "p",
    "τ": "t",
    "υ": "u",
    "χ": "x",
}
"""Homoglyphs mapped to the Latin letter they imitate (after case folding)."""

# Capitals are mapped before case folding: Greek "Ν" looks like "N", but its lowercase
# "ν" looks like "v", so folding first would lose what the reader saw.
_UPPER_HOMOGLYPHS = dict(zip("АВСЕНІЈКМОРЅТХУΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABCEHIJKMOPSTXYABEZHIKMNOPTYX", strict=True))

_HOMOGLYPH_TABLE = str.maketrans(HOMOGLYPHS)
_UPPER_TABLE = str.maketrans(_UPPER_HOMOGLYPHS)
# str.translate with a dict looks up every character in Python; a character class
# scans in C, so the tables only run on text that has something to change.


def _char_class(codepoints: list[int]) -> re.Pattern[str]:
    # Consecutive code points become ranges: the regex engine tests a handful of ranges
    # per character instead of hundreds of single characters.
    parts: list[str] = []
    ordered = sorted(codepoints)
    start = previous = ordered[0]
    for cp in [*ordered[1:], -1]:
        if cp == previous + 1:
            previous = cp
            continue
        parts.append(
            re.escape(chr(start)) if start == previous else f"{re.escape(chr(start))}-{re.escape(chr(previous))}"
        )
        start = previous = cp
    return re.compile("[" + "".join(parts) + "]")


_INVISIBLE_RE = _char_class(list(_INVISIBLE))
_HOMOGLYPH_RE = _char_class([ord(c) for c in {*HOMOGLYPHS, *_UPPER_HOMOGLYPHS}])


def normalize(text: str) -> str:
    """The canonical form of ``text`` that guard rules match against (see module doc)."""
    if text.isascii():
        # Fast path for the common case: no format characters, no width forms, no
        # homoglyphs; only ASCII controls, case and whitespace remain to fix.
        if not text.isprintable():
            text = _INVISIBLE_RE.sub("", text)
        return _squeeze(text.lower())
    text = unicodedata.normalize("NFKC", _INVISIBLE_RE.sub("", text))
    homoglyphs = _HOMOGLYPH_RE.search(text) is not None
    if homoglyphs:
        text = text.translate(_UPPER_TABLE)
    # NFKC can produce new format characters (rare) and casefold can produce forms
    # NFKC would change again ("ǰ"), so the cheap steps run once more on the result.
    text = _INVISIBLE_RE.sub("", unicodedata.normalize("NFKC", text.casefold()))
    if homoglyphs or _HOMOGLYPH_RE.search(text) is not None:
        text = text.translate(_HOMOGLYPH_TABLE)
    return _squeeze(text)


def _squeeze(text: str) -> str:
    # Every run of whitespace as one space, none at the ends: ``str.split`` splits on the
    # characters ``\s`` matches (``str.isspace``) at C speed, where a ``\s+`` substitution
    # made one replacement per space (most of ``normalize``'s time on prose).
    return " ".join(text.split())


def strip_control(text: str) -> str:
    """``text`` without zero-width, format and control characters (whitespace kept).

    This is the "sanitise" action of the input guard: it changes what goes upstream,
    so unlike ``normalize`` it keeps case, width and letters as the user wrote them.
    """
    if text.isascii() and text.isprintable():
        return text
    return _INVISIBLE_RE.sub("", text)
