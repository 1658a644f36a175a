"""The output guard: keeps personal data and secrets in answers from reaching the client.

It sits inside the caches (a cache stores only what the guard let through) and
outside the providers and reliability layers. Each detector (``middlewares.guard.pii``) has
a mode: ``redact`` replaces a match with its placeholder (``[CARD]``), ``block`` ends
the answer with ``GuardrailViolation(stage="output", rule=detector)`` (HTTP 400
``guardrail_violation``; in a stream the server turns it into an SSE error event, and
no part of the blocked match has been sent).

Streams are scanned incrementally with a bounded hold-back window. A match is a run of
its detector's characters (``Detector.chars``), so once a character outside that set
arrives, every match before it is final. The guard therefore holds back only the
trailing run that could still grow into (or be) a match, at most ``max_length``
characters of the longest detector; everything before it is decided and goes out at
once. With the default detectors that is usually the last word or number of the text
so far: added latency is at most one chunk for words, until the next non-digit for
numbers, never more than 345 characters.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, ClassVar, Literal

import msgspec

from onion import (
    CallNext,
    Chunk,
    Completion,
    ConfigError,
    GuardrailViolation,
    Layer,
    Order,
    Request,
    Response,
    resolve_import,
    run_aside,
)

from .pii import DETECTORS, Detector, PhoneDetector

__all__ = ["Mode", "OutputGuard", "Scanner"]

Mode = Literal["block", "redact"]
# Built once: an untraced request then allocates nothing for its span.
_SPAN_ATTRIBUTES = {"onion.layer": "output_guard"}
_STREAM_SPAN_ATTRIBUTES = {"onion.layer": "output_guard", "onion.stream": True}

_DEFAULT_DETECTORS = ("card", "email", "phone", "iban", "secret", "my_number")
_replace = msgspec.structs.replace  # per chunk: no attribute lookups


def _detector(spec: str | Detector, phone_regions: Sequence[str] | None = None) -> Detector:
    if not isinstance(spec, str):
        return spec
    if spec == "phone" and phone_regions is not None:
        return PhoneDetector(regions=tuple(phone_regions))
    cls = DETECTORS.get(spec)
    if cls is not None:
        return cls()
    if ":" in spec:
        try:
            found = resolve_import(spec)
        except ConfigError as error:
            raise ValueError(f"detector: {error}") from None
        return found() if isinstance(found, type) else found
    raise ValueError(f"unknown detector {spec!r}; built-in: {', '.join(DETECTORS)}; or 'package.module:Class'")


class _Plan:
    """The detectors with their modes, shared by every scan of one guard."""

    __slots__ = (
        "block",
        "calm_text",
        "detectors",
        "hints",
        "horizon",
        "longest",
        "mask",
        "outer",
        "shortest",
        "starts",
        "steps",
        "trails",
    )

    def __init__(self, detectors: Sequence[Detector], block: frozenset[str]) -> None:
        self.detectors = tuple(detectors)
        self.block = block
        # What the scan loop needs, looked up once, with detectors of the same character
        # set and bound sharing one pass over the runs: the set as a string (str.rstrip
        # takes it and runs at C speed), the bound, and each detector's bound ``find``.
        groups: dict[tuple[str, int], list[tuple[Detector, Any]]] = {}
        for d in detectors:
            groups.setdefault(("".join(sorted(d.chars)), d.max_length), []).append((d, d.find))
        self.steps = tuple(
            (chars, length, tuple(finders), _hint(d for d, _ in finders)) for (chars, length), finders in groups.items()
        )
        # For the fast path of a chunk (``Scanner.feed``): every step's hint in one
        # pattern, the shortest bound, and the steps whose character set no other step's
        # holds (the trailing run of a step whose set another's holds is a suffix of
        # that one's, so it never begins earlier: the cut is the earliest of the outer ones).
        self.hints = _any_hint([hint for _, _, _, hint in self.steps])
        self.starts = _first_characters(self.hints) if self.hints is not None else None
        self.shortest = min((length for _, length, _, _ in self.steps), default=0)
        sets = [frozenset(chars) for chars, _, _, _ in self.steps]
        self.outer = tuple(
            (chars, sets[i])
            for i, (chars, _, _, _) in enumerate(self.steps)
            if not any(sets[i] < other or (sets[i] == other and j < i) for j, other in enumerate(sets) if j != i)
        )
        # Per character, the outer sets that hold it (as ``rstrip``'s strings): a chunk's
        # last character names the trailing runs to look at with one dict lookup, not a
        # membership test per set. A character in none ends every run: all may go out.
        held: dict[str, tuple[str, ...]] = {}
        for chars, members in self.outer:
            for character in members:
                held[character] = (*held.get(character, ()), chars)
        # As (the first set, the others): one ``rstrip`` for most characters.
        self.trails = {character: (found[0], found[1:]) for character, found in held.items()}
        # Whether a text holds none of the hints' first characters (one ``isdisjoint``, in
        # C); without them the hints are searched instead (``Scanner.feed``).
        self.calm_text = self.starts.isdisjoint if self.starts is not None else _never
        # Context kept for look-behinds and for finding where a run began: a detector
        # may look ``lookbehind`` characters before a match ("Order #", "ISBN").
        self.longest = max((d.max_length for d in detectors), default=0)
        self.horizon = max((d.max_length + getattr(d, "lookbehind", 0) for d in detectors), default=0) + 1
        # What stands for an escape sequence in tool-call arguments: no detector's character.
        used = frozenset().union(*(d.chars for d in detectors))
        self.mask = next(chr(c) for c in range(1, 0x110000) if chr(c) not in used and not chr(c).isalnum())


def _never(_text: str) -> bool:
    return False


def _any_hint(hints: list[re.Pattern[str] | None]) -> re.Pattern[str] | None:
    """One pattern for every step's hint (``None`` if a step has none): where it does not
    occur, no detector can match. Alike hints are searched once (most are the digits)."""
    if not hints or any(h is None for h in hints):
        return None
    patterns: dict[str, None] = {}
    for hint in hints:
        assert hint is not None
        letters = "".join(letter for flag, letter in _FLAG_LETTERS if hint.flags & flag)
        patterns[f"(?{letters}:{hint.pattern})" if letters else f"(?:{hint.pattern})"] = None
    return re.compile("|".join(patterns))


_FLAG_LETTERS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"))
_MOST_STARTS = 4096  # a larger set of first characters is no cheaper to test than the pattern


def _first_characters(pattern: re.Pattern[str]) -> frozenset[str] | None:
    """Every character a match of ``pattern`` can begin with, when the pattern says so
    plainly (literals, character classes, alternations and groups of them, flags
    aside), else ``None``. A text with none of them holds no match: one ``isdisjoint``,
    in C, stands for most of a search (the hints alternate, so the regex engine tries
    each branch at each position)."""
    if pattern.flags & ~re.UNICODE:
        return None
    try:
        from re import _constants as c
        from re import _parser

        parsed = _parser.parse(pattern.pattern, pattern.flags)
    except Exception:  # another re layout, or a pattern it reads otherwise: no shortcut
        return None

    def starts(sequence: Any) -> set[str] | None:
        data = list(sequence)
        if not data:
            return None  # matches the empty text: any text holds a match
        op, av = data[0]
        if op is c.LITERAL:
            return {chr(av)}
        if op is c.IN:
            found: set[str] = set()
            for item, value in av:
                if item is c.LITERAL:
                    found.add(chr(value))
                elif item is c.RANGE and value[1] - value[0] < _MOST_STARTS:
                    found.update(chr(code) for code in range(value[0], value[1] + 1))
                else:
                    return None  # a negated class, a category (\d ...), a huge range
            return found
        if op is c.BRANCH:
            union: set[str] = set()
            for branch in av[1]:
                part = starts(branch)
                if part is None:
                    return None
                union |= part
            return union
        if op is c.SUBPATTERN:
            _group, add_flags, del_flags, inner = av
            return starts(inner) if not (add_flags or del_flags) else None
        if op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[0] >= 1:
            return starts(av[2])
        return None

    found = starts(parsed)
    return frozenset(found) if found is not None and len(found) <= _MOST_STARTS else None


# Trailing runs shorter than this are looked at with the window (see Scanner._find).
_SHORT_RUN = 8
# Pieces a scanner's short way sends before it folds them into its context.
_FOLD_AFTER = 32


def _hint(detectors: Any) -> re.Pattern[str] | None:
    """One pattern for the ``hint``s of detectors that all have one (a cheap pattern that
    occurs in every match: where it does not occur, none of them can match)."""
    hints = [getattr(d, "hint", None) for d in detectors]
    if not hints or any(h is None for h in hints):
        return None
    return re.compile("|".join(f"(?:{h.pattern})" for h in hints))


# The piece a long text is fed in (``Scanner.scan``): a few ms of regex work per call.
_PIECE = 16_384


class Scanner:
    """Scans one answer: ``feed(text)`` returns what may go out now, ``finish()`` the
    rest. Raises ``GuardrailViolation`` when a block-mode detector matches; redacts the
    others. ``found`` counts matches per detector (a dict shared by the scanners of one
    answer when given).

    The scan is amortised over the hold-back window: each detector is asked about a
    stretch of text once, when it has settled (a character outside the detector's set
    followed it), and its final matches are carried until the text around them goes
    out. A chunk that settles nothing new for a detector costs it one ``rstrip``; the
    run still growing at the end is never validated before it ends. A chunk after which
    the held text holds no step's hint (most prose) runs no detector at all
    (``feed``): one search for the hints and an ``rstrip`` per outer character set.
    """

    __slots__ = ("_base", "_calm", "_carried", "_context", "_done", "_pending", "_plan", "_sent", "found")

    def __init__(self, plan: _Plan, found: dict[str, int] | None = None) -> None:
        self._plan = plan
        self._context = ""  # the last emitted original text (never placeholders)
        # What went out since ``_context`` was last brought up to date (``_fold``): a
        # chunk's short way appends its text instead of copying the context each time.
        self._sent: list[str] = []
        self._pending = ""  # received, not yet emitted
        self._base = 0  # the position in the whole answer of the context's first character
        # Per step: up to where (a position in the whole answer) its final matches are
        # known; None after a run longer than the step's bound (then it looks again).
        self._done: list[int | None] = [0] * len(plan.steps)
        # Final matches not yet sent, as (begin, stop, detector) in whole-answer positions.
        self._carried: list[tuple[int, int, Detector]] = []
        # No step's hint missing, nothing carried, no step after a long run: a chunk may
        # take ``feed``'s short way (kept by ``_scan``, the only one to change them).
        self._calm = plan.hints is not None
        self.found: dict[str, int] = {} if found is None else found

    @property
    def held(self) -> int:
        """Characters currently held back."""
        return len(self._pending)

    def feed(self, text: str) -> str:
        """Add ``text``; return the part of the answer that is now safe to send.

        The usual chunk at a fraction of ``_scan``'s cost: every match not yet known
        begins inside the pending text (what went out is final for every step), so when
        no step's hint occurs there, no detector can find anything new: what goes out is
        what ``_scan`` would send, up to the earliest trailing run, and no detector runs.
        The steps' ``_done`` marks are left where they were: everything after them up to
        the cut is now known to hold no match, so a later ``_scan`` starting there only
        looks at more text. This is how the scan is amortised over the hold-back window:
        the detectors run only for a chunk after which the held text holds a hint (a
        digit, an ``@`` ...), over all that settled since they last ran. Applies while the
        pending text is within every step's bound (so no step's floor applies) and no
        ``_scan``-only state is held (``_calm``).
        """
        if not text:
            return ""
        pending = self._pending + text
        plan = self._plan
        if (
            not self._calm
            or len(pending) > plan.shortest
            or not (plan.calm_text(pending) or plan.hints.search(pending) is None)  # type: ignore[union-attr]
        ):
            self._pending = pending
            return self._scan(final=False)
        # The trailing runs are those of the outer sets that hold the last character; what
        # goes out is the text before the earliest (``rstrip`` gives it).
        trails = plan.trails.get(pending[-1])
        if trails is None:
            out = pending  # the last character ends every run
            self._pending = ""
        else:
            first, others = trails
            out = pending.rstrip(first)
            for chars in others:
                settled = pending.rstrip(chars)
                if len(settled) < len(out):
                    out = settled
            if not out:
                self._pending = pending
                return self._held_whole(pending)
            self._pending = pending[len(out) :]
        sent = self._sent
        sent.append(out)
        if len(sent) > _FOLD_AFTER:
            self._fold()  # the context stays within its horizon, whatever the answer's length
        return out

    def _held_whole(self, pending: str) -> str:
        """``feed`` when all the pending text is one trailing run: held, unless the run
        goes on into what was sent (then ``_scan`` decides where it began)."""
        sent = self._sent
        last = sent[-1][-1] if sent else self._context[-1:]
        trails = self._plan.trails.get(last)
        if trails is not None:
            first, others = trails
            for chars in (first, *others):
                if not pending.rstrip(chars):
                    return self._scan(final=False)
        return ""

    def finish(self) -> str:
        """The end of the answer: everything still held, checked as final."""
        pending = self._pending
        if not pending:
            return ""
        if self._quiet(pending):
            # Nothing new can match (see ``feed``): all of it goes out as it is (``_emit``
            # with no spans looks only at the count).
            out = self._emit(pending, 0, len(pending), None)
            self._pending = ""
            self._sent.append(pending)
            return out
        return self._scan(final=True)

    def scan(self, text: str) -> str:
        """A whole answer at once: what ``feed(text) + finish()`` returns, in one pass
        (every character is final, so nothing is held back to look at again); past
        ``_PIECE`` characters, fed in pieces (see below)."""
        if not text:
            return self.finish()
        if len(text) > _PIECE:
            # A long text is fed in pieces, as a stream is: each regex call then covers
            # one piece, not megabytes. A C call keeps the GIL to its end, so one over the
            # whole of a 9 MB answer held the event loop's thread for 0.25 s while the
            # scan ran "aside". The output is the same: a stream's pieces give what one
            # scan gives, at any boundary (the guard's stream law).
            out = "".join([self.feed(text[at : at + _PIECE]) for at in range(0, len(text), _PIECE)])
            return out + self.finish()
        self._pending += text
        return self._scan(final=True)

    def _quiet(self, pending: str) -> bool:
        """Whether no detector can find anything new in ``pending``: no step's hint in it.
        A carried match or a step after a long run lies in held text, so it holds a hint
        too; both are checked anyway (cheap), so a detector whose hint is not in its
        matches gets the full scan there rather than a wrong fast one."""
        if not self._calm:
            return False
        plan = self._plan
        return plan.calm_text(pending) or plan.hints.search(pending) is None  # type: ignore[union-attr]

    def _fold(self) -> str:
        """The context brought up to date with what went out (``_sent``): its last
        ``horizon`` characters."""
        context = self._context + "".join(self._sent)
        self._sent.clear()
        keep = len(context) - self._plan.horizon
        if keep > 0:
            context = context[keep:]
            self._base += keep
        self._context = context
        return context

    def _scan(self, *, final: bool) -> str:
        context = self._fold() if self._sent else self._context
        pending = self._pending
        offset = len(context)
        window = context + pending
        end = len(window)
        base = self._base
        cut = end
        carried = self._carried
        done = self._done
        for step, (chars, max_length, finders, hint) in enumerate(self._plan.steps):
            if final:
                settled = end
            else:
                # Where the trailing run, which may still grow, begins.
                floor = end - max_length
                if floor <= offset:  # the usual case: the pending text is shorter than the bound
                    settled = offset + len(pending.rstrip(chars))
                else:
                    settled = floor + len(window[floor:].rstrip(chars))
            if settled < cut:
                cut = settled
            known = done[step]
            if settled == end or settled == 0 or window[settled - 1] not in chars:
                # Everything before ``settled`` is final for this step, and no run crosses
                # the point up to which it looked last time: look only at what is new.
                if known is None:
                    carried = self._forget(carried, finders)
                    # Where the run holding the first pending character began (look-behinds
                    # and grouped numbers need the whole run).
                    begin_at = len(context.rstrip(chars)) if offset else 0
                elif known > base:
                    begin_at = known - base
                else:
                    # A mark ``feed`` left behind the kept context: all of that context
                    # is known to hold no match (and no hint), so looking from its start is
                    # looking at more text, never at less.
                    begin_at = 0
                if settled > begin_at:
                    # The hint tells at C speed when nothing new can match; a hint lies
                    # inside the match, so the settled stretch alone is searched.
                    if hint is None or hint.search(window, begin_at, settled) is not None:
                        # A match past ``settled`` lies in the trailing run, still growing:
                        # it is dropped, and looked for again once the run has ended. The
                        # detectors see the text cut at ``settled`` when that run is long
                        # (a long number is not validated at every chunk); a short one
                        # costs less to look at than a copy of the window.
                        text = window if end - settled < _SHORT_RUN else window[:settled]
                        for detector, find in finders:
                            for begin, stop in find(text, begin_at):
                                if offset < stop <= settled:
                                    carried.append(
                                        (base + (begin if begin > offset else offset), base + stop, detector)
                                    )
                    done[step] = base + settled
            else:
                # A run longer than the bound: look at the whole window, as final only
                # what ends before the run's last ``max_length`` characters.
                carried = self._forget(carried, finders)
                begin_at = len(context.rstrip(chars)) if offset else 0
                for _detector, find in finders:
                    for begin, stop in find(window, begin_at):
                        if stop <= offset:
                            continue
                        if begin < offset:
                            begin = offset
                        if stop > settled:
                            # Not final: it may grow or vanish; hold it whole.
                            if begin < cut:
                                cut = begin
                        else:
                            carried.append((base + begin, base + stop, _detector))
                done[step] = None
        if carried:
            carried.sort(key=_span_order)
            # A final match must not straddle the cut (another detector may hold text
            # from inside it): move the cut to its start, until nothing straddles.
            absolute = base + cut
            moved = True
            while moved:
                moved = False
                for begin, stop, _ in carried:
                    if begin < absolute < stop:
                        absolute = begin
                        moved = True
            cut = absolute - base
            ready = [(b - base, s - base, d) for b, s, d in carried if s <= absolute]
            self._carried = [span for span in carried if span[1] > absolute]
            out = self._emit(window, offset, cut, ready)
        else:
            self._carried = carried
            out = self._emit(window, offset, cut, None)
        self._pending = window[cut:]
        plan = self._plan
        keep = cut - plan.horizon
        if keep < 0:
            keep = 0
        self._context = window[keep:cut]
        self._base = base + keep
        self._calm = plan.hints is not None and not self._carried and None not in done
        return out

    @staticmethod
    def _forget(carried: list[tuple[int, int, Detector]], finders: tuple[Any, ...]) -> list[tuple[int, int, Detector]]:
        """``carried`` without one step's matches (that step is about to look again)."""
        mine = {id(detector) for detector, _ in finders}
        return [span for span in carried if id(span[2]) not in mine]

    def _emit(self, window: str, offset: int, cut: int, spans: list[tuple[int, int, Detector]] | None) -> str:
        """The text from ``offset`` to ``cut`` with ``spans`` redacted."""
        if not spans:
            return window[offset:cut]
        return self._redact(window, 0, offset, cut, spans)

    def _placeholder(self, detector: Detector, at: int) -> str:
        return detector.placeholder

    def _redact(self, source: str, shift: int, offset: int, cut: int, spans: list[tuple[int, int, Detector]]) -> str:
        """``source`` (window positions minus ``shift``) from ``offset`` to ``cut``, each
        span replaced by its detector's placeholder or raising for a block-mode one."""
        pieces: list[str] = []
        position = offset
        block = self._plan.block
        found = self.found
        for begin, stop, detector in spans:
            if stop <= position:
                continue  # inside an earlier, overlapping match
            found[detector.name] = found.get(detector.name, 0) + 1
            if detector.name in block:
                raise GuardrailViolation(f"a {detector.name} match in the answer", stage="output", rule=detector.name)
            if begin >= position:
                pieces.append(source[position - shift : begin - shift])
                pieces.append(self._placeholder(detector, begin - shift))
            # else it overlaps the previous match: that placeholder covers both.
            position = stop
        pieces.append(source[position - shift : cut - shift])
        return "".join(pieces)


def _span_order(span: tuple[int, int, Detector]) -> tuple[int, int]:
    return span[0], -span[1]


_STRING_STOP = re.compile(r'["\\]')


class _ArgumentScanner(Scanner):
    """Scans a tool call's arguments, a JSON text, keeping it valid JSON.

    The detectors see the arguments with every escape sequence (``\\n``, ``\\u00e9``)
    masked by a character no detector matches, so a match never starts inside an
    escape (``"Contact:\\nbob@example.com"`` becomes ``"Contact:\\n[EMAIL]"``, not the
    invalid ``\\[EMAIL]``); what goes out is the original text. A match inside a JSON
    string is replaced by its placeholder JSON-escaped; one outside a string (a card or
    phone number written as a JSON number) by the placeholder as a JSON string
    (``{"card": 4111111111111111}`` becomes ``{"card": "[CARD]"}``). Text that is not JSON
    is scanned the same way (text between double quotes counts as a string). Not
    caught: personal data spelled with escapes (``\\u0034111 ...``), and a detector
    whose characters include ``"`` or ``\\`` may break the JSON.
    """

    __slots__ = ("_escape", "_flags", "_raw", "_string")

    def __init__(self, plan: _Plan, found: dict[str, int] | None = None) -> None:
        super().__init__(plan, found)
        self._raw = ""  # the original text of what is pending
        self._flags = ""  # per pending character: "s" inside a JSON string, "o" outside
        self._string = False
        self._escape = 0  # characters of an escape still to come; -1: the one after "\\"

    def feed(self, text: str) -> str:
        """Add ``text`` (a fragment of the arguments); return what may go out now."""
        if not text:
            return ""
        view, flags = self._view(text)
        self._raw += text
        self._flags += flags
        self._pending += view
        return self._scan(final=False)

    def _view(self, text: str) -> tuple[str, str]:
        mask = self._plan.mask
        views: list[str] = []
        flags: list[str] = []
        i, n = 0, len(text)
        while i < n:
            if self._escape:
                self._escape = (4 if text[i] == "u" else 0) if self._escape < 0 else self._escape - 1
                views.append(mask)
                flags.append("s")
                i += 1
            elif self._string:
                found = _STRING_STOP.search(text, i)
                j = n if found is None else found.start()
                views.append(text[i:j])
                flags.append("s" * (j - i))
                if j < n:
                    if text[j] == '"':
                        views.append('"')
                        self._string = False
                    else:
                        views.append(mask)
                        self._escape = -1
                    flags.append("s")
                i = j + 1
            else:
                j = text.find('"', i)
                if j < 0:
                    j = n
                views.append(text[i:j])
                flags.append("o" * (j - i))
                if j < n:
                    views.append('"')
                    flags.append("o")
                    self._string = True
                i = j + 1
        return "".join(views), "".join(flags)

    def _emit(self, window: str, offset: int, cut: int, spans: list[tuple[int, int, Detector]] | None) -> str:
        count = cut - offset
        raw = self._raw
        out = self._redact(raw, offset, offset, cut, spans) if spans else raw[:count]
        self._raw = raw[count:]
        self._flags = self._flags[count:]
        return out

    def _placeholder(self, detector: Detector, at: int) -> str:
        quoted = msgspec.json.encode(detector.placeholder).decode()
        return quoted[1:-1] if self._flags[at] == "s" else quoted


class OutputGuard(Layer):
    """Redacts or blocks personal data and secrets in answers, complete or streamed.

    ``detectors`` are built-in names (``card``, ``email``, ``phone``, ``iban``,
    ``secret``, ``my_number``), import paths ``package.module:Class`` or ``Detector``
    objects; ``mode`` is the default action and ``modes`` overrides it per detector
    (``{card = "block"}``); ``phone_regions`` are the regions whose national numbers
    the phone detector knows (ISO codes; default US, GB, DE, FR, JP; international
    ``+`` numbers of every region are found anyway). The arguments of tool calls are scanned like the text
    (complete, or streamed fragment by fragment with one scanner per call). Counts of
    matches per detector are recorded in ``request.context.findings.redactions``.
    """

    name = "output_guard"
    provides = frozenset({"guard.output"})
    ordering = (Order("cache", "inside", "the cache must store only what the output guard let through"),)
    short_circuit: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        detectors: Sequence[Any] = _DEFAULT_DETECTORS,
        mode: Mode = "redact",
        modes: dict[str, Mode] | None = None,
        phone_regions: Sequence[str] | None = None,
    ) -> None:
        built = [_detector(d, phone_regions) for d in detectors]
        names = {d.name for d in built}
        unknown = set(modes or {}) - names
        if unknown:
            raise ValueError(f"modes name detectors that are not enabled: {sorted(unknown)}")
        block = frozenset(d.name for d in built if (modes or {}).get(d.name, mode) == "block")
        self._plan = _Plan(built, block)
        longest = self._plan.longest
        # An instance attribute: the bound depends on the detectors chosen.
        self.buffers = (
            f"at most {longest} characters of a stream (the trailing run that could still be "
            "a match; usually the last word or number), sent with the chunk that completes it"
        )

    @property
    def detectors(self) -> tuple[Detector, ...]:
        """The detectors in use."""
        return self._plan.detectors

    def scanner(self) -> Scanner:
        """A fresh scanner for one answer (what the layer uses per response)."""
        return Scanner(self._plan)

    def check_text(self, text: str) -> str:
        """``text`` with redactions applied; raises ``GuardrailViolation`` on a block."""
        return self.scanner().scan(text)

    def check_arguments(self, arguments: str) -> str:
        """A tool call's ``arguments`` (JSON) with redactions applied, still valid JSON
        where a match was inside a string; raises ``GuardrailViolation`` on a block."""
        scanner = _ArgumentScanner(self._plan)
        return scanner.feed(arguments) + scanner.finish()

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        completion = response.completion
        plan = self._plan
        if completion is None:
            return response.wrap(lambda source: _guard_stream(source, plan, request))
        found: dict[str, int] = {}
        with request.context.span("output_guard scan", _SPAN_ATTRIBUTES) as span:
            try:
                if _chars(completion) < _ASIDE_CHARS:
                    scanned = _scan_completion(completion, plan, found)
                else:  # a long answer's scan (0.5 s per MB) in a worker thread, not in the loop
                    scanned = await run_aside(_scan_completion, completion, plan, found)
            finally:
                _record(request, found)
                _annotate(span, found)
        return response if scanned is completion else response.replace_completion(scanned)


# Text from which a complete answer is scanned aside (onion.run_aside): about 30 ms of
# scanning, against the thread hop's 0.1 ms.
_ASIDE_CHARS = 65_536


def _chars(completion: Completion) -> int:
    others = completion.other_choices
    return len(completion.content or "") + (sum(len(c.content or "") for c in others) if others else 0)


def _scan_completion(completion: Completion, plan: _Plan, found: dict[str, int]) -> Completion:
    """``completion`` scanned, every choice and tool call (the same object if clean)."""
    if completion.other_choices is not None:
        return _scan_choices(completion, plan, found)
    content = _scan_text(completion.content, plan, found)  # one choice: no need to split it
    calls = _scan_calls(completion.tool_calls, plan, found)
    if content is completion.content and calls is completion.tool_calls:
        return completion
    return msgspec.structs.replace(completion, content=content, tool_calls=calls)


def _scan_text(text: str, plan: _Plan, found: dict[str, int]) -> str:
    """``text`` scanned (the same object when nothing changed)."""
    if not text:
        return text
    out = Scanner(plan, found).scan(text)
    return text if out == text else out


def _scan_choices(completion: Completion, plan: _Plan, found: dict[str, int]) -> Completion:
    """Every choice of an ``n > 1`` answer scanned on its own (the same answer if clean)."""
    choices = completion.all_choices()
    out = []
    for choice in choices:
        content = _scan_text(choice.content, plan, found) if choice.content else choice.content
        calls = _scan_calls(choice.tool_calls, plan, found)
        if content is not choice.content or calls is not choice.tool_calls:
            choice = msgspec.structs.replace(choice, content=content, tool_calls=calls)
        out.append(choice)
    if all(a is b for a, b in zip(out, choices, strict=True)):
        return completion
    return completion.with_choices(out)


def _scan_calls(calls: list[dict[str, Any]] | None, plan: _Plan, found: dict[str, int]) -> Any:
    """Tool calls with their arguments scanned as JSON (the same list if clean)."""
    if not calls:
        return calls
    out = []
    for call in calls:
        arguments = _arguments(call)
        if arguments:
            scanner = _ArgumentScanner(plan, found)
            scanned = scanner.feed(arguments) + scanner.finish()
            if scanned != arguments:
                call = _with_arguments(call, scanned)
        out.append(call)
    return calls if all(a is b for a, b in zip(out, calls, strict=True)) else out


def _arguments(call: Any) -> str:
    function = call.get("function") if isinstance(call, dict) else None
    arguments = function.get("arguments") if isinstance(function, dict) else None
    return arguments if isinstance(arguments, str) else ""


def _with_arguments(call: dict[str, Any], arguments: str) -> dict[str, Any]:
    return {**call, "function": {**call["function"], "arguments": arguments}}


class _ChoiceScan:
    """One choice of a stream: a scanner for its text and one per tool call, since
    OpenAI streams a call's arguments as fragments of one string
    (``tool_calls[i].function.arguments``, ``i`` the call's ``index``).

    The parts of a choice go out in the order they came: when the next part begins (a
    call after the text, another call), what the previous one holds back goes out first,
    checked as final. A client that builds items from the stream (the Responses API's
    output items, Anthropic's content blocks) would otherwise see the text reopen after
    a call began. So a part ends where the next one begins: exact as the complete scan
    for a choice whose text comes before its calls, one call after another (as OpenAI
    streams them); text that resumes after a call is scanned as text of its own."""

    __slots__ = ("calls", "found", "last_call", "plan", "text")

    def __init__(self, plan: _Plan, found: dict[str, int]) -> None:
        self.plan = plan
        self.found = found  # shared by every scanner of the answer
        self.text = Scanner(plan, found)
        self.calls: dict[Any, _ArgumentScanner] = {}
        self.last_call: Any = None  # the ``index`` of the call the last delta was part of

    def held_calls(self) -> bool:
        """Whether a call's arguments are held back (text coming next must wait for them)."""
        return any(scanner.held for scanner in self.calls.values())

    def feed_calls(self, deltas: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for delta in deltas:
            key = delta.get("index", 0)
            if key != self.last_call:
                previous = self.calls.get(self.last_call)
                rest = previous.finish() if previous is not None else ""
                if rest:
                    out.append({"index": self.last_call, "function": {"arguments": rest}})
                self.last_call = key
            arguments = _arguments(delta)
            if arguments:
                scanner = self.calls.get(key)
                if scanner is None:
                    scanner = self.calls[key] = _ArgumentScanner(self.plan, self.found)
                scanned = scanner.feed(arguments)
                if scanned != arguments:
                    delta = _with_arguments(delta, scanned)
            out.append(delta)
        return out

    def finish_calls(self, deltas: list[dict[str, Any]] | None) -> tuple[list[dict[str, Any]], Any]:
        """The held-back ends of every call's arguments: those of calls in ``deltas`` (a
        chunk's, already fed) appended to their last delta there, the others returned
        as deltas of their own, to send before that chunk."""
        before: list[dict[str, Any]] = []
        if not self.calls:
            return before, deltas
        last = {delta.get("index", 0): position for position, delta in enumerate(deltas or ())}
        merged = deltas
        for key, scanner in self.calls.items():
            rest = scanner.finish()
            if not rest:
                continue
            position = last.get(key)
            if merged is None or position is None:
                before.append({"index": key, "function": {"arguments": rest}})
            else:
                if merged is deltas:
                    merged = list(deltas)
                delta = merged[position]
                merged[position] = _with_arguments(delta, _arguments(delta) + rest)
        return before, merged


def _annotate(span: Any, found: dict[str, int]) -> None:
    if span is not None and found:
        span.set_attribute("onion.guard.found", sorted(found))


def _record(request: Request, found: dict[str, int]) -> None:
    if found:
        record = request.context.guard_findings().redactions
        for name, count in found.items():
            record[name] = record.get(name, 0) + count


async def _guard_stream(source: AsyncIterator[Chunk], plan: _Plan, request: Request) -> AsyncGenerator[Chunk, None]:
    # For a stream the span covers the whole answer the guard watched, chunk by chunk.
    span_context = request.context.span("output_guard scan", _STREAM_SPAN_ATTRIBUTES)
    span = span_context.__enter__()
    failure: BaseException | None = None
    found: dict[str, int] = {}
    # One hold-back window per choice (``Chunk.index``): the choices of an ``n > 1``
    # stream interleave, and each is its own text.
    choices: dict[int, _ChoiceScan] = {}
    # The choice of the previous chunk (usually this one's too), its text's ``feed`` and
    # its calls (a dict kept for the choice's life), looked up once per change of choice.
    last_index, choice, feed, calls = -1, None, None, None
    try:
        async for chunk in source:
            if chunk.index != last_index or choice is None:
                last_index = chunk.index
                choice = choices.get(last_index)
                if choice is None:
                    choice = choices[last_index] = _ChoiceScan(plan, found)
                feed = choice.text.feed
                calls = choice.calls
            deltas = chunk.tool_calls
            if deltas is None and chunk.finish_reason is None and not calls:
                # The usual chunk, text only (before any call: text after one waits for the
                # call's held end): its text scanned, the chunk re-made only if the text
                # changed (held back, or redacted).
                content = chunk.content
                text = feed(content)  # type: ignore[misc]
                if text != content:
                    chunk = _replace(chunk, content=text)
                if text or _carries_more_than_text(chunk):
                    yield chunk
                continue
            if deltas:
                if choice.text.held:
                    # The text ends where the calls begin: what it holds goes out first.
                    rest = choice.text.feed(chunk.content) + choice.text.finish()
                    if rest:
                        yield Chunk(content=rest, index=chunk.index)
                    if chunk.content:
                        chunk = _replace(chunk, content="")
                deltas = choice.feed_calls(deltas)
            elif chunk.content and choice.calls and choice.held_calls():
                # Text after a call: the call's held-back end goes out before it.
                before, _ = choice.finish_calls(None)
                choice.last_call = None
                if before:
                    yield Chunk(tool_calls=before, index=chunk.index)
            if chunk.finish_reason is not None:
                text = choice.text.feed(chunk.content) + choice.text.finish()
                before, deltas = choice.finish_calls(deltas)
                if before:
                    yield Chunk(tool_calls=before, index=chunk.index)
            else:
                text = choice.text.feed(chunk.content)
            if deltas is not chunk.tool_calls:
                chunk = _replace(chunk, content=text, tool_calls=deltas)
            elif text != chunk.content:
                chunk = _replace(chunk, content=text)
            if text or _carries_more_than_text(chunk):
                yield chunk
        for index, choice in choices.items():
            rest = choice.text.finish()
            if rest:
                yield Chunk(content=rest, index=index)
            before, _ = choice.finish_calls(None)
            if before:
                yield Chunk(tool_calls=before, index=index)
    except BaseException as error:
        failure = error
        raise
    finally:
        _record(request, found)
        _annotate(span, found)
        if failure is None:
            span_context.__exit__(None, None, None)
        else:
            span_context.__exit__(type(failure), failure, failure.__traceback__)
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


def _carries_more_than_text(chunk: Chunk) -> bool:
    """Whether a chunk whose text is (now) empty still carries something the caller needs:
    a role, tool calls, an end, usage, a refusal, logprobs, annotations, audio, unknown
    fields, or the name of the answer (its model, id and time ride on its first chunk)."""
    # ``is not None``: an empty list or object the upstream sent (``annotations: []``) is
    # passed on as sent.
    return (
        chunk.role is not None
        or chunk.tool_calls is not None
        or chunk.finish_reason is not None
        or chunk.usage is not None
        or chunk.refusal is not None
        or chunk.logprobs is not None
        or chunk.annotations is not None
        or chunk.audio is not None
        or chunk.system_fingerprint is not None
        or chunk.service_tier is not None
        or bool(chunk.extra)
        or bool(chunk.delta_extra)
        or bool(chunk.choice_extra)
        or chunk.model is not None
        or chunk.id is not None
        or chunk.prompt_usage is not None
    )
