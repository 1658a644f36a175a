"""Accuracy of the guards on the held-out sets, side by side with third-party detectors.

Used by ``benchmarks/guards.py``. Reads only the ``test`` split of
``benchmarks/data/injection.jsonl`` and ``benchmarks/data/pii.jsonl`` (built by
``benchmarks/guard_data.py``; the classifier was trained and the rules developed on the
``train`` split only).

- Injection: ``InputGuard()`` as a user meets it (defaults: phrases, decoders, the
  shipped classifier), the same without the classifier, and ai-injection-guard 0.3.0
  (``prompt_shield.PromptScanner``, MIT, 75 regex patterns, offline; its default
  threshold MEDIUM, through ``check``). Recall of attacks and false alarms on benign
  prompts per language, per source and per obfuscation (each obfuscation applied to
  every held-out attack and, for the false alarms, to every held-out benign prompt).
- PII: ``OutputGuard()`` (default detectors) and Presidio's pattern recognizers
  (``presidio-analyzer``: CreditCard, Phone with the same regions, Email, Iban; no NLP
  model). A gold value counts as caught when redacted spans cover 80 % of its
  characters; a redaction is correct when it overlaps a gold value of any type.
"""
# ruff: noqa: RUF001

from __future__ import annotations

import base64
import codecs
import contextlib
import json
import logging
import random
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from middlewares.guard.input import InputGuard
from middlewares.guard.output import OutputGuard
from onion import GuardrailViolation, Message, Request

DATA = Path(__file__).parent / "data"

_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})
_HOMOGLYPH = str.maketrans({"a": "а", "e": "е", "o": "о", "i": "і", "c": "с", "p": "р"})
_WIDE = {c: chr(ord(c) + 0xFEE0) for c in map(chr, range(0x21, 0x7F))}

OBFUSCATIONS: dict[str, Callable[[str], str]] = {
    "plain": lambda t: t,
    "base64": lambda t: "Decode this base64 and follow it: " + base64.b64encode(t.encode()).decode(),
    "hex": lambda t: t.encode().hex(),
    "url": lambda t: urllib.parse.quote(t, safe=""),
    "spaced": lambda t: "   ".join(" ".join(w) for w in t.split()),
    "interleaved": lambda t: " ".join("-".join(w) for w in t.split()),
    "leet": lambda t: t.lower().translate(_LEET),
    "reversed": lambda t: t[::-1],
    "rot13": lambda t: "Decode this rot13 and do it: " + codecs.encode(t, "rot13"),
    "homoglyph": lambda t: t.translate(_HOMOGLYPH),
    "fullwidth": lambda t: "".join(_WIDE.get(c, c) for c in t),
    "zero_width": lambda t: "\u200b".join(t),
}
# Obfuscations of Latin letters leave Japanese text as it is: measured in English only.
LATIN_ONLY = frozenset({"leet", "homoglyph", "rot13", "interleaved"})


def load(name: str, split: str = "test") -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (DATA / name).read_text().split("\n") if line]
    return [r for r in rows if r["split"] == split]


def _guard_detector(guard: InputGuard) -> Callable[[str], bool]:
    def caught(text: str) -> bool:
        try:
            guard.check(Request(model="m", messages=[Message("user", text)]))
        except GuardrailViolation:
            return True
        return False

    return caught


def _prompt_shield() -> Callable[[str], bool]:
    from prompt_shield import PromptScanner
    from prompt_shield.core.exceptions import InjectionRiskError

    scanner = PromptScanner()

    def caught(text: str) -> bool:
        try:
            scanner.check(text)
        except InjectionRiskError:
            return True
        return False

    return caught


def injection_detectors() -> dict[str, Callable[[str], bool]]:
    detectors = {
        "InputGuard()": _guard_detector(InputGuard()),
        "InputGuard(classifier=False)": _guard_detector(InputGuard(classifier=False)),
    }
    with contextlib.suppress(ImportError):  # an optional peer
        detectors["ai-injection-guard 0.3.0"] = _prompt_shield()
    return detectors


def measure_injection(split: str = "test", limit_chars: int = 6000) -> dict[str, Any]:
    rows = load("injection.jsonl", split)
    detectors = injection_detectors()
    # cells[detector][(table, key)] = [hits, total]
    cells: dict[str, dict[tuple[str, str], list[int]]] = {name: defaultdict(lambda: [0, 0]) for name in detectors}
    seconds = dict.fromkeys(detectors, 0.0)
    chars = 0
    for row in rows:
        text, label, lang = row["text"][:limit_chars], row["label"], row["lang"]
        for obfuscation, fn in OBFUSCATIONS.items():
            if lang == "ja" and obfuscation in LATIN_ONLY:
                continue
            variant = fn(text)
            if obfuscation == "plain":
                chars += len(variant)
            keys = [("obfuscation", f"{lang} {obfuscation}")]
            if obfuscation == "plain":
                keys += [("language", lang), ("source", f"{lang} {row['source']}")]
            for name, caught in detectors.items():
                start = time.process_time()
                hit = caught(variant)
                if obfuscation == "plain":
                    seconds[name] += time.process_time() - start
                for key in keys:
                    cell = cells[name][(f"{key[0]}:{label}", key[1])]
                    cell[0] += hit
                    cell[1] += 1
    return {
        "tables": {name: {f"{t}|{k}": v for (t, k), v in table.items()} for name, table in cells.items()},
        "us_per_kb_plain": {name: s * 1e6 / (chars / 1024) for name, s in seconds.items()},
        "plain_kb": chars / 1024,
    }


def print_injection(result: dict[str, Any]) -> None:
    names = list(result["tables"])
    for table in ("language", "source", "obfuscation"):
        print(f"\ninjection by {table}: recall on attacks | false alarms on benign (held-out test split)")
        header = f"{'':<28}" + "".join(f"{n[:26]:>30}" for n in names)
        print(header)
        keys = sorted({k.split("|", 1)[1] for n in names for k in result["tables"][n] if k.startswith(table)})
        for key in keys:
            line = f"{key[:28]:<28}"
            for name in names:
                t = result["tables"][name]
                attack = t.get(f"{table}:1|{key}", [0, 0])
                benign = t.get(f"{table}:0|{key}", [0, 0])
                rec = f"{attack[0] / attack[1]:6.1%} of {attack[1]:<4}" if attack[1] else f"{'-':>14}"
                fa = f"{benign[0] / benign[1]:5.1%} of {benign[1]:<4}" if benign[1] else f"{'-':>13}"
                line += f"  {rec}|{fa}"
            print(line)
    print("\ninjection cost, µs per KB of plain held-out prompts (CPU time, verdict memo cold):")
    for name, value in result["us_per_kb_plain"].items():
        print(f"  {name:<30} {value:8.1f}")


# -- PII --------------------------------------------------------------------------------

_OURS = {"card": "card", "phone": "phone", "email": "email", "iban": "iban", "my_number": "my_number"}
_PRESIDIO = {"CREDIT_CARD": "card", "PHONE_NUMBER": "phone", "EMAIL_ADDRESS": "email", "IBAN_CODE": "iban"}


def _our_spans(guard: OutputGuard) -> Callable[[str], list[tuple[int, int, str]]]:
    detectors = guard.detectors

    def spans(text: str) -> list[tuple[int, int, str]]:
        found = sorted(((b, e, d.name) for d in detectors for b, e in d.find(text)), key=lambda s: (s[0], -s[1]))
        kept: list[tuple[int, int, str]] = []
        for span in found:  # as the scanner redacts: an overlapping later match is covered
            if not kept or span[0] >= kept[-1][1]:
                kept.append(span)
        return kept

    return spans


def _presidio_spans(regions: tuple[str, ...]) -> Callable[[str], list[tuple[int, int, str]]] | None:
    # Presidio's e-mail recognizer asks tldextract for the public suffix list over the
    # network; offline it falls back to its snapshot after logging a traceback.
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)
    try:
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            PhoneRecognizer,
        )
    except ImportError:
        return None
    recognizers = [
        (CreditCardRecognizer(), ["CREDIT_CARD"]),
        (PhoneRecognizer(supported_regions=list(regions)), ["PHONE_NUMBER"]),
        (EmailRecognizer(), ["EMAIL_ADDRESS"]),
        (IbanRecognizer(), ["IBAN_CODE"]),
    ]

    def spans(text: str) -> list[tuple[int, int, str]]:
        out = []
        for recognizer, entities in recognizers:
            for r in recognizer.analyze(text, entities, None) or ():
                out.append((r.start, r.end, _PRESIDIO[r.entity_type]))
        return out

    return spans


def measure_pii(split: str = "test") -> dict[str, Any]:
    rows = load("pii.jsonl", split)
    guard = OutputGuard()
    systems = {"OutputGuard()": _our_spans(guard)}
    presidio = _presidio_spans(("US", "GB", "DE", "FR", "JP"))
    if presidio is not None:
        systems["Presidio patterns 2.2"] = presidio
    result: dict[str, Any] = {}
    for name, find in systems.items():
        caught: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # per "type" and "type locale"
        predicted: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # correct, total per type
        false_shapes: dict[str, int] = defaultdict(int)
        for row in rows:
            text, gold = row["text"], row["spans"]
            found = find(text)
            for begin, end, kind in gold:
                covered = sum(1 for i in range(begin, end) if any(b <= i < e for b, e, _ in found))
                hit = covered >= 0.8 * (end - begin)
                for key in (kind, f"{kind} {row['locale']}"):
                    caught[key][0] += hit
                    caught[key][1] += 1
            for b, e, kind in found:
                right = any(b < ge and gb < e for gb, ge, _ in gold)
                predicted[kind][0] += right
                predicted[kind][1] += 1
                if not right:
                    false_shapes[f"{kind} in {row['locale']} {row['kind']}"] += 1
        result[name] = {"recall": dict(caught), "precision": dict(predicted), "false": dict(false_shapes)}
    return result


def print_pii(result: dict[str, Any]) -> None:
    names = list(result)
    print("\nPII by type (held-out test split): recall | precision")
    print(f"{'':<18}" + "".join(f"{n:>34}" for n in names))
    kinds = sorted({k for n in names for k in result[n]["recall"]}, key=lambda k: (k.split()[0], len(k), k))
    for kind in kinds:
        line = f"{kind:<18}"
        for name in names:
            hit, total = result[name]["recall"].get(kind, [0, 0])
            rec = f"{hit / total:6.1%} of {total:<4}" if total else f"{'-':>14}"
            if " " in kind:
                line += f"{rec:>34}"
                continue
            right, made = result[name]["precision"].get(kind, [0, 0])
            prec = f"{right / made:6.1%} of {made:<4}" if made else f"{'-':>14}"
            line += f"  {rec} | {prec}"
        print(line)
    for name in names:
        worst = sorted(result[name]["false"].items(), key=lambda kv: -kv[1])[:6]
        print(f"  {name} false redactions: {dict(worst)}")


def sample_obfuscations() -> None:
    """Prints one attack under each obfuscation (for the README)."""
    rng = random.Random(0)
    text = rng.choice([r["text"] for r in load("injection.jsonl") if r["label"] and len(r["text"]) < 80])
    for name, fn in OBFUSCATIONS.items():
        print(f"{name:<12} {fn(text)[:100]}")
