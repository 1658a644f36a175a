"""normalize(): the canonical form guard rules match against."""
# ruff: noqa: RUF001, RUF003  (look-alike characters are this module's subject)

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from middlewares.guard.normalize import HOMOGLYPHS, normalize, strip_control


def test_full_width_and_half_width_forms_fold() -> None:
    assert normalize("ＩＧＮＯＲＥ") == "ignore"
    assert normalize("ｼｽﾃﾑﾌﾟﾛﾝﾌﾟﾄ") == "システムプロンプト"


def test_zero_width_and_control_characters_vanish() -> None:
    assert normalize("ig\u200bno\u200dre\u2060 pre\x00vi\ufeffous") == "ignore previous"
    assert normalize("a\u202eb") == "ab"  # bidi override


def test_whitespace_runs_collapse_to_one_space() -> None:
    assert normalize("  a \t\n b\u3000\u00a0c  ") == "a b c"


def test_case_folding_is_stronger_than_lower() -> None:
    assert normalize("STRASSE") == normalize("straße")


def test_cyrillic_and_greek_homoglyphs_read_as_latin() -> None:
    assert normalize("іgnоrе") == "ignore"  # Cyrillic і, о, е
    assert normalize("ΙGΝΟRΕ") == "ignore"  # Greek capitals fold, then map
    assert normalize("РАУРАL") == "paypal"  # Cyrillic capitals


def test_strip_control_keeps_case_width_and_letters() -> None:
    assert strip_control("Ｈｅｌｌｏ\u200b Wörld\x07\n") == "Ｈｅｌｌｏ Wörld\n"
    assert strip_control("plain text") == "plain text"


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_normal_form_has_no_invisible_characters_or_space_runs(text: str) -> None:
    out = normalize(text)
    assert "  " not in out
    assert out == out.strip()
    assert not any(unicodedata.category(c) in ("Cf", "Cc") for c in out)
    assert not set(out) & set(HOMOGLYPHS)


def test_the_invisible_table_holds_every_format_and_control_character_of_this_unicode() -> None:
    # The table scans three planes only (start-up time); the full scan must agree.
    import sys

    from middlewares.guard.normalize import _INVISIBLE

    kept = "\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85"
    full = {
        cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) in ("Cf", "Cc") and chr(cp) not in kept
    }
    assert set(_INVISIBLE) == full
