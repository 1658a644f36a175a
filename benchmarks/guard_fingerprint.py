"""A digest of every injection verdict and decoder reading over the data sets, to show
that a change to the input guard's speed changed none of its answers.

Reads every string field (longer than 3 characters) of ``benchmarks/data/*.jsonl`` and,
for the first 3,000, six obfuscations of it (base64, spaced and dotted letters,
reversed, ROT13 with its name, leetspeak); for each text it takes
``InjectionDetector()._find`` (phrases, decoders, classifier; no memo) and
``decoders.readings``, and prints how many texts, a SHA-256 of all the answers and how
many were flagged. The code judged is the one ``PYTHONPATH`` names (the data is this
file's), so one copy compares two trees::

    PYTHONPATH=$PWD python benchmarks/guard_fingerprint.py
    PYTHONPATH=/path/to/other/tree python benchmarks/guard_fingerprint.py
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
from pathlib import Path

from middlewares.guard.decoders import readings
from middlewares.guard.detect import InjectionDetector

DATA = Path(__file__).resolve().parent / "data"


def texts() -> list[str]:
    found: list[str] = []
    for path in sorted(DATA.glob("*.jsonl")):
        with path.open(encoding="utf-8") as lines:  # rows end at "\n" only (texts hold U+2028)
            for line in lines:
                row = json.loads(line)
                found.extend(v for v in row.values() if isinstance(v, str) and len(v) > 3)
    obfuscated = []
    for text in found[:3000]:
        obfuscated += [
            base64.b64encode(text.encode()).decode(),
            " ".join(text),
            text[::-1],
            codecs.encode(text, "rot13") + " rot13",
            text.replace("o", "0").replace("e", "3").replace("i", "1"),
            ".".join(text),
        ]
    return found + obfuscated


def main() -> None:
    detector = InjectionDetector()
    digest = hashlib.sha256()
    flagged = 0
    every = texts()
    for text in every:
        verdict = detector._find(text)
        flagged += verdict is not None
        digest.update(repr((text, verdict, readings(text), ())).encode())
    print(f"{len(every)} texts, {flagged} flagged, sha256 {digest.hexdigest()}")


if __name__ == "__main__":
    main()
