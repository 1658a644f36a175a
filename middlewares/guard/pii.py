"""Detectors of personal data and secrets in model answers, for the output guard.

A detector finds spans of text that must not reach the client. ``OutputGuard``
(``middlewares.guard.output``) runs them over complete answers and, incrementally, over
streams. To let a stream flow while staying safe, every detector declares two facts:

- ``chars``: the characters a match can consist of. A match is a contiguous run of
  them, so text after a character outside the set can never join an earlier match.
- ``max_length``: the longest match it can report, in characters. It bounds how much a
  stream ever holds back for this detector.

``find(text, start)`` returns the validated matches that begin at or after ``start``
(the text before ``start`` is context for look-behinds only). Users add detectors by
writing a class with these four members (the ``Detector`` protocol) or by subclassing
``PatternDetector``; ``DETECTORS`` maps the built-in names to their classes.
"""
# ruff: noqa: RUF001  (look-alike characters are this module's subject)

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate
from typing import ClassVar, Protocol, runtime_checkable

__all__ = [
    "DETECTORS",
    "CardDetector",
    "Detector",
    "EmailDetector",
    "IbanDetector",
    "MyNumberDetector",
    "PatternDetector",
    "PhoneDetector",
    "SecretDetector",
    "iban_valid",
    "luhn_valid",
    "my_number_valid",
]


@runtime_checkable
class Detector(Protocol):
    """What the output guard needs from a detector."""

    name: str
    """Short name, used in configuration, violations and metrics (``"card"``)."""
    placeholder: str
    """What replaces a match in redact mode (``"[CARD]"``)."""
    chars: frozenset[str]
    """Every character a match can contain."""
    max_length: int
    """The longest match, in characters."""

    def find(self, text: str, start: int = 0) -> list[tuple[int, int]]:
        """Spans ``(begin, end)`` of validated matches beginning at or after ``start``."""
        ...


_ASCII_DIGITS = "0123456789"
_WIDE_DIGITS = "０１２３４５６７８９"
_DIGITS = _ASCII_DIGITS + _WIDE_DIGITS
_D = "[0-9０-９]"  # the same set as a regex class; never \d, which matches every script's digits


def _digits(text: str) -> list[int]:
    # int() reads full-width digits too.
    return [int(c) for c in text if c in _DIGITS]


def luhn_valid(number: str) -> bool:
    """The Luhn (mod 10) check of payment-card numbers; separators are ignored."""
    digits = _digits(number)
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return bool(digits) and total % 10 == 0


def my_number_valid(number: str) -> bool:
    """The check digit of a Japanese individual number (マイナンバー, 12 digits)."""
    digits = _digits(number)
    if len(digits) != 12:
        return False
    body, check = digits[:11], digits[11]
    # Weights per the Ministry of Internal Affairs ordinance: P_n is the n-th digit from
    # the right of the 11-digit body, Q_n = n + 1 for n <= 6, n - 5 above.
    total = sum(p * (n + 1 if n <= 6 else n - 5) for n, p in enumerate(reversed(body), start=1))
    remainder = total % 11
    return check == (0 if remainder <= 1 else 11 - remainder)


# Lengths of IBANs by country (ISO 13616 registry, most used countries). A candidate's
# length must agree, which lets the detector stop an IBAN before a following word.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CY": 28, "CZ": 24,
    "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GI": 23, "GR": 27, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26,
    "UA": 29, "VG": 24,
}  # fmt: skip


def iban_valid(iban: str) -> bool:
    """The ISO 13616 mod-97 check of an IBAN, in either case; spaces and dashes are ignored."""
    compact = iban.replace(" ", "").replace("-", "").upper()
    if len(compact) < 15 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
    except ValueError:
        return False


class PatternDetector:
    """A detector from a regex plus an optional ``validate(match_text)`` check.

    Subclasses set ``name``, ``placeholder``, ``chars``, ``max_length`` and ``pattern``;
    the pattern must only match characters of ``chars`` and no longer than
    ``max_length`` (the output guard's streaming safety rests on both).
    """

    name: ClassVar[str] = "pattern"
    placeholder: ClassVar[str] = "[REDACTED]"
    chars: ClassVar[frozenset[str]] = frozenset()
    max_length: ClassVar[int] = 0
    pattern: ClassVar[re.Pattern[str]]

    hint: ClassVar[re.Pattern[str] | None] = None
    """A cheap pattern (a literal or a character class, which the regex engine scans
    for at C speed) that occurs in every match: text without it skips ``pattern``,
    whose look-arounds make it try every position."""

    def validate(self, match: str) -> bool:
        """Whether a regex match is a real one (checksums live here)."""
        return True

    def find(self, text: str, start: int = 0) -> list[tuple[int, int]]:
        """Spans of validated matches beginning at or after ``start``."""
        hint = self.hint
        if hint is not None and hint.search(text, start) is None:
            return []
        validate = self.validate
        return [m.span() for m in self.pattern.finditer(text, start) if validate(m.group())]


def _cards_in_runs(text: str, start: int, runs: re.Pattern[str]) -> list[tuple[int, int]]:
    """Card numbers written as digit groups with spaces or dashes between them.

    A candidate is a whole run of groups. If the run as a whole fails, every sub-run
    that starts and ends at a group boundary and has 13 to 19 digits is tried, longest
    first (so "order 12345 4111 1111 1111 1111" still shows the card). The Luhn sum of
    any sub-run comes from prefix sums in O(1), and the possible ends from a binary
    search, so even a 100 KB run of "1 1 1 ..." costs a few checks per group.
    """
    spans: list[tuple[int, int]] = []
    for run in runs.finditer(text, start):
        groups = [g.span() for g in _GROUP.finditer(text, *run.span())]
        if len(groups) == 1:
            # One block of digits: a card only if it is one as a whole.
            if 13 <= run.end() - run.start() <= 19 and luhn_valid(run.group()):
                spans.append(run.span())
            continue
        digits = list(map(int, "".join(text[b:e] for b, e in groups)))  # int() reads full-width digits
        counts = list(accumulate((e - b for b, e in groups), initial=0))
        # plain[p][k], doubled[p][k]: sums over digit indices < k of parity p (built
        # with slice assignment and accumulate, which run in C).
        twice = list(map(_LUHN_DOUBLE.__getitem__, digits))
        plain, doubled = [], []
        for parity in (0, 1):
            for source, out in ((digits, plain), (twice, doubled)):
                masked = source[:]
                masked[1 - parity :: 2] = [0] * len(masked[1 - parity :: 2])
                out.append(list(accumulate(masked, initial=0)))
        i = 0
        while i < len(groups):
            found = None
            first = counts[i]
            j = bisect_right(counts, first + 19) - 2
            while j >= i and counts[j + 1] - first >= 13:
                last = counts[j + 1]
                # The rightmost digit is not doubled; every second one to its left is.
                keep = (last - 1) & 1
                total = plain[keep][last] - plain[keep][first] + doubled[1 - keep][last] - doubled[1 - keep][first]
                if total % 10 == 0:
                    found = j
                    break
                j -= 1
            if found is None:
                i += 1
            else:
                spans.append((groups[i][0], groups[found][1]))
                i = found + 1
    return spans


_GROUP = re.compile(_D + "+")
_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


# Between the digit groups of a card: one or two spaces (ordinary, no-break U+00A0 or
# narrow no-break U+202F, as word processors and locales write them) or one dash.
_CARD_SPACES = " \u00a0\u202f"
_CARD_SEP = f"(?:[{_CARD_SPACES}]{{1,2}}|-)"


def _runs_of(at_least: int) -> re.Pattern[str]:
    # A run of digit groups with at least ``at_least`` digits. The look-ahead rejects
    # the many short numbers of ordinary text inside the regex engine, not in Python.
    # The pattern starts with the digit class (look-behinds after it) so that the regex
    # engine's first-character scan skips non-digits without trying the look-behinds,
    # which keep a run from starting inside a longer one.
    return re.compile(
        rf"{_D}(?<![0-9０-９]{_D})(?<![0-9０-９][-{_CARD_SPACES}]{_D})(?<![0-9０-９][{_CARD_SPACES}]{{2}}{_D})"
        rf"(?=(?:{_CARD_SEP}?{_D}){{{at_least - 1}}}){_D}*(?:{_CARD_SEP}{_D}+)*"
    )


class CardDetector(PatternDetector):
    """Payment-card numbers: 13 to 19 digits, Luhn-checked, written as one block or in
    groups separated by a dash or by one or two spaces (ordinary, U+00A0 or U+202F)."""

    name = "card"
    placeholder = "[CARD]"
    chars = frozenset(_DIGITS + "-" + _CARD_SPACES)
    max_length = 19 + 18 * 2
    pattern = _runs_of(13)

    def find(self, text: str, start: int = 0) -> list[tuple[int, int]]:
        """Luhn-valid card numbers, also inside longer runs of digit groups."""
        return _cards_in_runs(text, start, self.pattern)


class MyNumberDetector(PatternDetector):
    """Japanese individual numbers (マイナンバー): 12 digits, as 4-4-4 groups or one
    block, with a valid check digit."""

    name = "my_number"
    placeholder = "[MY_NUMBER]"
    chars = frozenset(_DIGITS + " -")
    max_length = 14
    pattern = re.compile(rf"{_D}(?<![0-9０-９]{_D}){_D}{{3}}[ -]?{_D}{{4}}[ -]?{_D}{{4}}(?![0-9０-９])")

    def validate(self, match: str) -> bool:
        """The check digit."""
        return my_number_valid(match)


class EmailDetector(PatternDetector):
    """E-mail addresses (the practical subset of RFC 5322 that appears in prose)."""

    name = "email"
    placeholder = "[EMAIL]"
    chars = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-@")
    max_length = 64 + 1 + 4 * 64 + 24
    hint = re.compile("@")
    pattern = re.compile(
        r"(?<![A-Za-z0-9._%+@-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,4}[A-Za-z]{2,24}(?![A-Za-z0-9-])"
    )


# What separates the groups of a phone number: spaces (ordinary, no-break U+00A0,
# narrow no-break U+202F, ideographic U+3000: NFKC makes each a space) and hyphens:
# ASCII, full-width U+FF0D (NFKC: ASCII), U+2010 and U+2011 (NFKC: U+2010), and what
# Japanese text writes in their place (figure dash, en dash, minus sign, the long-vowel
# mark ー and its half-width form, which NFKC maps to ー).
_PHONE_SPACES = " \u00a0\u202f\u3000"
_PHONE_HYPHENS = "\u2010\u2011\u2012\u2013\u2212\uff0d\u30fc\uff70-"  # "-" last: literal in a class
_PHONE_SEP = f"[{_PHONE_SPACES}{_PHONE_HYPHENS}]"
_OPEN = "[(（]"
_CLOSE = "[)）]"


class PhoneDetector(PatternDetector):
    """Telephone numbers: international (``+44 20 7946 0958``, 8 to 15 digits) and
    Japanese domestic numbers of 10 or 11 digits starting with ``0``: in groups
    (``03-1234-5678``, ``045 123 4567``, ``0466-12-3456``, ``080 1234 5678``,
    ``(03) 1234-5678``; the separators are spaces or hyphens, full-width and look-alike
    ones included) or as one block (``0312345678``, ``09012345678``). Bare digit strings
    without a leading ``+`` or ``0`` are not phones, nor are groups that continue a
    longer run of digit groups: that keeps dates, prices and order ids out."""

    name = "phone"
    placeholder = "[PHONE]"
    chars = frozenset(_DIGITS + ".()+（）" + _PHONE_SPACES + _PHONE_HYPHENS)
    # "+", at most 15 digits, and per group (at most 6) a separator and two parentheses.
    max_length = 1 + 15 + 6 * 3
    hint = re.compile("[+0０]")
    pattern = re.compile(
        # Every form starts with "+", "(" or "0": the look-ahead drops all other positions fast.
        r"(?=[+(（0０])(?:"
        # International: + country code, then 2-6 groups.
        rf"(?<![0-9０-９+])\+[1-9]{_D}{{0,2}}(?:[.{_PHONE_SPACES}{_PHONE_HYPHENS}]?\(?{_D}{{1,4}}\)?){{2,6}}"
        # Japanese domestic: not a digit, nor the next group of a run of digit groups.
        rf"|(?<![0-9０-９+])(?<![0-9０-９]{_PHONE_SEP})(?:"
        # 0 + area code, exchange, subscriber: separated by spaces or hyphens, or the
        # first two run together and a hyphen before the subscriber number.
        rf"{_OPEN}?[0０]{_D}{{1,4}}{_CLOSE}?{_PHONE_SEP}{_D}{{1,4}}{_PHONE_SEP}{_D}{{3,4}}"
        rf"|{_OPEN}?[0０]{_D}{{1,4}}{_CLOSE}?{_D}{{1,4}}[{_PHONE_HYPHENS}]{_D}{{3,4}}"
        # The area code in parentheses: the separators are optional.
        rf"|{_OPEN}[0０]{_D}{{1,4}}{_CLOSE}{_PHONE_SEP}?{_D}{{1,4}}{_PHONE_SEP}?{_D}{{3,4}}"
        # One block: a landline (10 digits, no "00": that is the international prefix),
        # a mobile or IP phone (070, 080, 090, 050: 11 digits).
        rf"|[0０][1-9１-９]{_D}{{8}}|[0０][5789５７８９][0０]{_D}{{8}}"
        r"))(?![0-9０-９])"
    )

    def validate(self, match: str) -> bool:
        """Digit counts: 8-15 for international numbers, 10-11 for Japanese ones."""
        count = len(_digits(match))
        if match.startswith("+"):
            return 8 <= count <= 15
        return 10 <= count <= 11


class IbanDetector(PatternDetector):
    """International bank account numbers, compact or in groups of four separated by a
    space or a dash, with the country's length and the mod-97 checksum verified.

    Upper case only, as IBANs are written: with lower-case letters among the characters an
    IBAN may contain, every lower-case word of a streamed answer could start one, and the
    output guard would hold prose back until punctuation (16.5 characters on average
    instead of 4.3, measured with ``benchmarks/guards.py``).
    """

    name = "iban"
    placeholder = "[IBAN]"
    chars = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -")
    # The longest IBAN of a known country, and a separator after each whole group of four.
    max_length = max(_IBAN_LENGTHS.values()) + (max(_IBAN_LENGTHS.values()) - 1) // 4
    # From the check digits (a digit: the regex engine scans for it at C speed) the
    # look-behind sees the two letters of the country code, which must start a word;
    # then the groups: a separator may only follow a whole group of four (so a match
    # stays within ``max_length``).
    pattern = re.compile(
        r"[0-9](?<=(?<![A-Za-z0-9])[A-Z]{2}[0-9])[0-9](?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,3})?"
    )

    def find(self, text: str, start: int = 0) -> list[tuple[int, int]]:
        """Candidates cut to their country's length, then checksummed."""
        spans = []
        search = self.pattern.search
        position = start  # where the next candidate may begin
        while (m := search(text, position + 2)) is not None:
            begin, end = m.start() - 2, m.end()
            position = begin + 1  # a failed candidate may hide the start of another
            length = _IBAN_LENGTHS.get(text[begin : begin + 2].upper())
            if length is None:
                continue
            # Walk to the end of the length-th significant character.
            seen = 0
            cut = begin
            while cut < end and seen < length:
                if text[cut] not in " -":
                    seen += 1
                cut += 1
            if seen != length or (cut < len(text) and text[cut].isascii() and text[cut].isalnum()):
                continue
            if iban_valid(text[begin:cut]):
                spans.append((begin, cut))
                position = cut
        return spans


class SecretDetector(PatternDetector):
    """API keys and tokens with a well-known provider prefix: OpenAI (``sk-``,
    ``sk-proj-``), Anthropic (``sk-ant-``), GitHub (``ghp_`` …, ``github_pat_``), Slack
    (``xoxb-`` …), AWS access key ids (``AKIA``), Google (``AIza``), GitLab
    (``glpat-``), Stripe (``sk_live_`` …), Hugging Face (``hf_``)."""

    name = "secret"
    placeholder = "[SECRET]"
    chars = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    max_length = 11 + 255
    hint = re.compile(r"[-_]|AKIA|AIza")
    # The first character is matched by a plain class (which the regex engine scans for
    # at C speed); each alternative then checks, looking back, which letter it was.
    pattern = re.compile(
        r"[sgxAprh](?<![A-Za-z0-9_-].)(?:"
        r"(?<=s)k-(?:proj-|ant-(?:api03-)?)?[A-Za-z0-9_-]{20,200}"
        r"|(?<=g)h[pousr]_[A-Za-z0-9]{36,251}"
        r"|(?<=g)ithub_pat_[A-Za-z0-9_]{22,255}"
        r"|(?<=x)ox[abposr]-[A-Za-z0-9-]{10,200}"
        r"|(?<=A)KIA[0-9A-Z]{16}"
        r"|(?<=A)Iza[0-9A-Za-z_-]{35}"
        r"|(?<=g)lpat-[A-Za-z0-9_-]{20,50}"
        r"|(?<=[rsp])k_(?:live|test)_[A-Za-z0-9]{16,200}"
        r"|(?<=h)f_[A-Za-z0-9]{30,40}"
        r")(?![A-Za-z0-9_-])"
    )


DETECTORS: dict[str, type[PatternDetector]] = {
    cls.name: cls
    for cls in (CardDetector, EmailDetector, PhoneDetector, IbanDetector, SecretDetector, MyNumberDetector)
}
"""The built-in detectors by configuration name."""
