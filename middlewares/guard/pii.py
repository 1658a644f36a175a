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
import unicodedata
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
    "card_valid",
    "iban_valid",
    "labelled",
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


# A number right after one of these labels is an order, tracking or invoice number, an
# ISBN, a reference: not a phone or a card, whatever its digits.
LABEL_LOOKBEHIND = 28
_LABEL = re.compile(
    r"(?<![^\W\d_])(?:order|tracking|invoice|isbn(?:-1[03])?|issn|sku|serial|ref\.?|reference|confirmation|booking"
    r"|bestellnummer|bestellung|rechnung(?:snummer)?|sendungsnummer|auftragsnummer|kundennummer|commande|facture"
    r"|suivi|référence|注文番号|伝票番号|追跡番号|お問い合わせ番号|注文|伝票|請求書番号)"
    r"[ \t]*(?:(?:no|nr|n°|number|num|id|code|de suivi)\.?)?[ \t]*[#:：№]?[ \t]*$",
    re.IGNORECASE,
)


def labelled(text: str, begin: int) -> bool:
    """Whether the number at ``begin`` follows a label such as "Order #" or "ISBN"."""
    return _LABEL.search(text, max(0, begin - LABEL_LOOKBEHIND), begin) is not None


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


# The issuer prefixes (IIN ranges) of the card networks and the lengths each issues:
# Visa 4 (13, 16, 19), Mastercard 51-55 and 2221-2720 (16), American Express 34, 37
# (15), Discover 6011, 644-649, 65 (16-19), JCB 35 (16-19; 3528-3589 assigned, the
# rest of 35 kept for safety) and 2131, 1800 (15), Diners 300-305, 36,
# 38, 39 (14-19), UnionPay 62 (16-19), Maestro 50, 56-69 (12-19), Mir 2200-2204
# (16-19), RuPay 60, 81, 82 (16), Troy 9792 (16). A Luhn-valid number outside them is
# an order id, an ISBN-13 (978, 979) or a tracking number, not a card.
_NETWORKS: tuple[tuple[int, int, frozenset[int]], ...] = (
    (4, 4, frozenset({13, 16, 19})),
    (51, 55, frozenset({16})),
    (2221, 2720, frozenset({16})),
    (34, 34, frozenset({15})),
    (37, 37, frozenset({15})),
    (6011, 6011, frozenset(range(16, 20))),
    (644, 649, frozenset(range(16, 20))),
    (65, 65, frozenset(range(16, 20))),
    (35, 35, frozenset(range(16, 20))),
    (2131, 2131, frozenset({15})),
    (1800, 1800, frozenset({15})),
    (300, 305, frozenset(range(14, 20))),
    (36, 36, frozenset(range(14, 20))),
    (38, 39, frozenset(range(14, 20))),
    (62, 62, frozenset(range(16, 20))),
    (50, 50, frozenset(range(12, 20))),
    (56, 69, frozenset(range(12, 20))),
    (2200, 2204, frozenset(range(16, 20))),
    (81, 82, frozenset({16})),
    (9792, 9792, frozenset({16})),
)


def _issued(digits: list[int]) -> bool:
    """Whether a network issues card numbers of this prefix and length."""
    length = len(digits)
    if length == 12 and my_number_valid("".join(map(str, digits))):
        return False  # both would redact it; the Japanese check digit names it better
    head = "".join(map(str, digits[:4]))
    for low, high, lengths in _NETWORKS:
        width = len(str(low))
        if length in lengths and low <= int(head[:width]) <= high:
            return True
    return False


def card_valid(number: str) -> bool:
    """A payment-card number: an issued prefix and length (12 to 19 digits) and the
    Luhn check; separators are ignored."""
    digits = _digits(number)
    return 12 <= len(digits) <= 19 and _issued(digits) and luhn_valid(number)


def _cards_in_runs(text: str, start: int, runs: re.Pattern[str]) -> list[tuple[int, int]]:
    """Card numbers written as digit groups with spaces or dashes between them.

    A candidate is a whole run of groups. If the run as a whole fails, every sub-run
    that starts and ends at a group boundary and has 12 to 19 digits is tried, longest
    first (so "ref 12345 4111 1111 1111 1111" still shows the card). A number after a
    label ("Order #", "ISBN", "tracking") is not a card. The Luhn sum of
    any sub-run comes from prefix sums in O(1), and the possible ends from a binary
    search, so even a 100 KB run of "1 1 1 ..." costs a few checks per group.
    """
    spans: list[tuple[int, int]] = []
    for run in runs.finditer(text, start):
        groups = [g.span() for g in _GROUP.finditer(text, *run.span())]
        if len(groups) == 1:
            # One block of digits: a card only if it is one as a whole.
            if card_valid(run.group()) and not labelled(text, run.start()):
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
            while j >= i and counts[j + 1] - first >= 12:
                last = counts[j + 1]
                # The rightmost digit is not doubled; every second one to its left is.
                keep = (last - 1) & 1
                total = plain[keep][last] - plain[keep][first] + doubled[1 - keep][last] - doubled[1 - keep][first]
                if total % 10 == 0 and _issued(digits[first:last]) and not labelled(text, groups[i][0]):
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
    """Payment-card numbers: 12 to 19 digits with an issued prefix and length (see
    ``card_valid``), Luhn-checked, written as one block or in groups separated by a dash
    or by one or two spaces (ordinary, U+00A0 or U+202F); not after a label such as
    "Order #" or "ISBN"."""

    name = "card"
    placeholder = "[CARD]"
    chars = frozenset(_DIGITS + "-" + _CARD_SPACES)
    max_length = 19 + 18 * 2
    lookbehind = LABEL_LOOKBEHIND
    hint = re.compile(_D)
    pattern = _runs_of(12)

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
    hint = re.compile(_D)
    pattern = re.compile(rf"{_D}(?<![0-9０-９]{_D}){_D}{{3}}[ -]?{_D}{{4}}[ -]?{_D}{{4}}(?![0-9０-９])")

    lookbehind = LABEL_LOOKBEHIND

    def find(self, text: str, start: int = 0) -> list[tuple[int, int]]:
        """Numbers with a valid check digit, not after a label ("注文番号", "Order #")."""
        found = self.pattern.finditer(text, start)
        return [m.span() for m in found if self.validate(m.group()) and not labelled(text, m.start())]

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
# narrow no-break U+202F, ideographic U+3000), dots, slashes and hyphens: ASCII,
# full-width U+FF0D, U+2010 and U+2011, and what Japanese text writes in their place
# (figure dash, en dash, minus sign, the long-vowel mark ー and its half-width form).
_PHONE_SPACES = " \u00a0\u202f\u3000"
_PHONE_HYPHENS = "\u2010\u2011\u2012\u2013\u2212\uff0d\u30fc\uff70-"  # "-" last: literal in a class
_PHONE_SEP = f"[{_PHONE_SPACES}./{_PHONE_HYPHENS}]"
# A run of digit groups that may be a phone number: an optional "+" or "(", groups of
# digits, each optionally in parentheses ("+49 (0) 30 …", "(212) 555-0123"), one or two
# separators between them. It must not continue a word or a longer number.
_PHONE_RUN = re.compile(
    rf"(?<![0-9A-Za-z０-９+＋:.,])[+＋(（]?{_D}(?:{_D}|[)）]?{_PHONE_SEP}{{0,2}}[(（]?{_D}|[)）](?=[{_PHONE_SPACES}]|{_D}))*[)）]?"
)
# Dates and version strings are the digit groups most often mistaken for phones.
_NOT_A_PHONE = re.compile(
    rf"{_D}{{4}}[-/. ]{_D}{{1,2}}[-/. ]{_D}{{1,2}}|{_D}{{1,2}}[-/. ]{_D}{{1,2}}[-/. ]{_D}{{2,4}}"
    rf"|{_D}{{1,2}}\.{_D}{{1,3}}\.{_D}{{1,4}}"
)
# A run that starts with an ISO date ("2024-05-12 22:58") is a timestamp.
_DATED = re.compile(rf"{_D}{{4}}-{_D}{{1,2}}-{_D}{{1,2}}(?![0-9０-９])")


class PhoneDetector(PatternDetector):
    """Telephone numbers, recognised by libphonenumber (``phonenumbers``).

    International numbers (``+`` or ``00`` then a country code) are checked for every
    region libphonenumber knows; national numbers (``030 1234567``, ``(212) 555-0123``,
    ``06 12 34 56 78``, ``090-1234-5678``) for the ``regions`` given (ISO codes; default
    ``US GB DE FR JP``): a number must be a possible one for the region (its lengths),
    start with the region's trunk prefix where it has one (``0`` in most of Europe and
    Japan) and be a valid, allocated number. Dates, version strings, numbers after a
    label ("Order #", "ISBN", "tracking") and groups inside a longer run of numbers
    are not phones.
    """

    name = "phone"
    placeholder = "[PHONE]"
    chars = frozenset(_DIGITS + "()+（）＋" + _PHONE_SPACES + "./" + _PHONE_HYPHENS)
    # "+", at most 17 digits ("00" + 15), and per group (at most 8) two separators and
    # two parentheses.
    max_length = 1 + 17 + 8 * 4
    lookbehind = LABEL_LOOKBEHIND
    hint = re.compile(_D)
    pattern = _PHONE_RUN

    def __init__(self, regions: tuple[str, ...] | list[str] = ("US", "GB", "DE", "FR", "JP")) -> None:
        import phonenumbers  # a dependency of the output guard only

        self._phonenumbers = phonenumbers
        self.regions = tuple(r.upper() for r in regions)
        unknown = [r for r in self.regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"phone regions unknown to libphonenumber: {unknown}")
        self._prefixes = {
            r: phonenumbers.PhoneMetadata.metadata_for_region(r).national_prefix or "" for r in self.regions
        }

    def find(self, text: str, start: int = 0) -> list[tuple[int, int]]:
        """Phone numbers: whole runs of digit groups at or after ``start`` (a group that
        continues a longer run of numbers is not a phone on its own)."""
        spans: list[tuple[int, int]] = []
        for run in self.pattern.finditer(text, start):
            begin, end = run.span()
            if text[end - 1] in "(（":
                end -= 1
            if end - begin >= 7 and self.valid(text, begin, end):
                spans.append((begin, end))
        return spans

    def valid(self, text: str, begin: int, end: int) -> bool:
        """Whether ``text[begin:end]`` is a phone number (see the class doc)."""
        candidate = unicodedata.normalize("NFKC", text[begin:end]).translate(_DASHES)
        if _NOT_A_PHONE.fullmatch(candidate) or _DATED.match(candidate) or labelled(text, begin):
            return False
        digits = "".join(c for c in candidate if c.isdigit())
        if len(digits) == 12 and _MY_NUMBER_SHAPE.fullmatch(candidate) and my_number_valid(digits):
            return False  # a My Number (Japanese phones have 10 or 11 digits)
        if candidate.startswith("+") or digits.startswith("00"):
            return self._possible("+" + digits.removeprefix("00"), None)
        for region in self.regions:
            prefix = self._prefixes[region]
            if prefix == "1":  # NANP: ten digits, area code and exchange start with 2-9
                national = digits[1:] if len(digits) == 11 and digits[0] == "1" else digits
                if len(national) != 10 or national[0] in "01" or national[3] in "01":
                    continue
            elif prefix and not digits.startswith(prefix):
                continue
            if self._possible(digits, region, valid=True):
                return True
        return False

    def _possible(self, number: str, region: str | None, *, valid: bool = False) -> bool:
        phonenumbers = self._phonenumbers
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            return False
        if valid:
            return phonenumbers.is_valid_number(parsed)
        return phonenumbers.is_possible_number(parsed)


_MY_NUMBER_SHAPE = re.compile(r"[0-9]{4}[ -]?[0-9]{4}[ -]?[0-9]{4}")
# What NFKC leaves of the look-alike hyphens, mapped to "-" for libphonenumber.
_DASHES = str.maketrans(dict.fromkeys("\u2010\u2011\u2012\u2013\u2212\u30fc", "-"))


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
    hint = re.compile("[0-9]")
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
