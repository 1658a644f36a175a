"""The injection detection pipeline the input guard runs on each message text.

In order, stopping at the first finding:

1. ``normalize`` the text (width, case, invisible characters, homoglyphs) and match
   the grammar of attack intents (``injection``);
2. every decoded reading of the raw text (``decoders``: base64, hex, URL escapes,
   spaced or interleaved letters, leetspeak, reversed text, ROT13), normalised and
   matched the same way;
3. the local classifier (``classifier``) over the normalised text and the payload of
   each reading (what the decoding revealed, without the clear words around it).

A finding is named for what caught it: the phrase (``ignore_previous``), the phrase and
the decoding (``ignore_previous via base64``), or ``classifier`` (with its reading).
Verdicts are remembered per text (bounded by characters), since chat clients resend
the whole history each turn.
"""

from __future__ import annotations

from pathlib import Path

from .classifier import InjectionClassifier
from .decoders import readings as decoded_readings
from .injection import INJECTION_PATTERNS, compile_phrases, find_injection
from .normalize import normalize

__all__ = ["InjectionDetector"]

_KEPT_CHARS = 4_000_000
_UNSEEN = object()  # ``None`` is a verdict (nothing found): one dict look-up tells both


class InjectionDetector:
    """``find(text)`` names the injection in ``text`` or returns ``None``.

    ``classifier`` is ``True`` (the shipped weights), a path to other weights, an
    ``InjectionClassifier``, or ``False`` (phrases and decoders only); ``decoders``
    turns the decoding step off when ``False``; ``patterns`` replaces the phrases.
    """

    __slots__ = ("_chars", "_phrases", "_verdicts", "classifier", "decoders")

    def __init__(
        self,
        *,
        classifier: bool | str | Path | InjectionClassifier = True,
        decoders: bool = True,
        patterns: dict[str, str] = INJECTION_PATTERNS,
    ) -> None:
        if classifier is True:
            classifier = InjectionClassifier()
        elif isinstance(classifier, str | Path):
            classifier = InjectionClassifier(classifier)
        self.classifier: InjectionClassifier | None = classifier or None
        self.decoders = decoders
        self._phrases = compile_phrases(patterns)
        self._verdicts: dict[str, str | None] = {}
        self._chars = 0

    def find(self, text: str) -> str | None:
        """What caught an injection in ``text`` (see module doc), or ``None``."""
        verdicts = self._verdicts
        found = verdicts.get(text, _UNSEEN)
        if found is not _UNSEEN:
            return found  # type: ignore[return-value]
        found = self._find(text)
        self._chars += len(text)
        if self._chars > _KEPT_CHARS:
            verdicts.clear()
            self._chars = len(text)
        verdicts[text] = found
        return found

    def _find(self, text: str) -> str | None:
        phrases = self._phrases
        norm = normalize(text)
        found = find_injection(phrases, norm)
        if found is not None:
            return found
        readings = (
            [(name, normalize(decoded), payload) for name, decoded, payload in decoded_readings(text)]
            if self.decoders
            else []
        )
        for name, reading, _ in readings:
            found = find_injection(phrases, reading)
            if found is not None:
                return f"{found} via {name}"
        classifier = self.classifier
        if classifier is not None:
            if classifier.flags(norm):
                return "classifier"
            # The classifier sees what a decoding revealed, alone: the same evidence a
            # plain message needs (the words around an encoded run are read in ``norm``).
            for name, _, payload in readings:
                if classifier.flags(normalize(payload)):
                    return f"classifier via {name}"
        return None
