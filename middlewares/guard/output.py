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

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, ClassVar, Literal

import msgspec

from onion import CallNext, Chunk, ConfigError, GuardrailViolation, Layer, Order, Request, Response, resolve_import

from .pii import DETECTORS, Detector, PhoneDetector

__all__ = ["Mode", "OutputGuard", "Scanner"]

Mode = Literal["block", "redact"]
# Built once: an untraced request then allocates nothing for its span.
_SPAN_ATTRIBUTES = {"onion.layer": "output_guard"}
_STREAM_SPAN_ATTRIBUTES = {"onion.layer": "output_guard", "onion.stream": True}

_DEFAULT_DETECTORS = ("card", "email", "phone", "iban", "secret", "my_number")


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

    __slots__ = ("block", "detectors", "horizon", "longest", "steps")

    def __init__(self, detectors: Sequence[Detector], block: frozenset[str]) -> None:
        self.detectors = tuple(detectors)
        self.block = block
        # What the scan loop needs, looked up once, with detectors of the same character
        # set and bound sharing one pass over the runs: the set as a string (str.rstrip
        # takes it and runs at C speed), the bound, and each detector's bound ``find``.
        groups: dict[tuple[str, int], list[tuple[Detector, Any]]] = {}
        for d in detectors:
            groups.setdefault(("".join(sorted(d.chars)), d.max_length), []).append((d, d.find))
        self.steps = tuple((chars, length, tuple(finders)) for (chars, length), finders in groups.items())
        # Context kept for look-behinds and for finding where a run began: a detector
        # may look ``lookbehind`` characters before a match ("Order #", "ISBN").
        self.longest = max((d.max_length for d in detectors), default=0)
        self.horizon = max((d.max_length + getattr(d, "lookbehind", 0) for d in detectors), default=0) + 1


class Scanner:
    """Scans one answer: ``feed(text)`` returns what may go out now, ``finish()`` the
    rest. Raises ``GuardrailViolation`` when a block-mode detector matches; redacts the
    others. ``found`` counts matches per detector."""

    __slots__ = ("_context", "_pending", "_plan", "found")

    def __init__(self, plan: _Plan) -> None:
        self._plan = plan
        self._context = ""  # the last emitted original text (never placeholders)
        self._pending = ""  # received, not yet emitted
        self.found: dict[str, int] = {}

    @property
    def held(self) -> int:
        """Characters currently held back."""
        return len(self._pending)

    def feed(self, text: str) -> str:
        """Add ``text``; return the part of the answer that is now safe to send."""
        if not text:
            return ""
        self._pending += text
        return self._scan(final=False)

    def finish(self) -> str:
        """The end of the answer: everything still held, checked as final."""
        return self._scan(final=True) if self._pending else ""

    def _scan(self, *, final: bool) -> str:
        context = self._context
        offset = len(context)
        window = context + self._pending
        end = len(window)
        cut = end
        spans: list[tuple[int, int, Detector]] = []
        for chars, max_length, finders in self._plan.steps:
            # Where the run holding the first pending character began (look-behinds
            # and grouped numbers need the whole run).
            start = len(context.rstrip(chars)) if offset else 0
            # Where the trailing run, which may still grow, begins.
            if final:
                settled = end
            else:
                floor = end - max_length
                if floor < offset:
                    floor = offset
                settled = floor + len(window[floor:].rstrip(chars))
            for detector, find in finders:
                for begin, stop in find(window, start):
                    if stop <= offset:
                        continue
                    if begin < offset:
                        begin = offset
                    if stop > settled:
                        # Not final: it may grow or vanish; hold it whole.
                        if begin < cut:
                            cut = begin
                    else:
                        spans.append((begin, stop, detector))
            if settled < cut:
                cut = settled
        if spans:
            spans.sort(key=lambda s: (s[0], -s[1]))
            # A final match must not straddle the cut (another detector may hold text
            # from inside it): move the cut to its start, until nothing straddles.
            moved = True
            while moved:
                moved = False
                for begin, stop, _ in spans:
                    if begin < cut < stop:
                        cut = begin
                        moved = True
            out = self._redact(window, offset, cut, [s for s in spans if s[1] <= cut])
        else:
            out = window[offset:cut]
        self._pending = window[cut:]
        horizon = self._plan.horizon
        self._context = window[max(0, cut - horizon) : cut]
        return out

    def _redact(self, window: str, offset: int, cut: int, spans: list[tuple[int, int, Detector]]) -> str:
        pieces: list[str] = []
        position = offset
        block = self._plan.block
        for begin, stop, detector in spans:
            if stop <= position:
                continue  # inside an earlier, overlapping match
            found = self.found
            found[detector.name] = found.get(detector.name, 0) + 1
            if detector.name in block:
                raise GuardrailViolation(f"a {detector.name} match in the answer", stage="output", rule=detector.name)
            if begin >= position:
                pieces.append(window[position:begin])
                pieces.append(detector.placeholder)
            # else it overlaps the previous match: that placeholder covers both.
            position = stop
        pieces.append(window[position:cut])
        return "".join(pieces)


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
        scanner = self.scanner()
        return scanner.feed(text) + scanner.finish()

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        scanner = Scanner(self._plan)
        completion = response.completion
        if completion is None:
            return response.wrap(lambda source: _guard_stream(source, scanner, request))
        with request.context.span("output_guard scan", _SPAN_ATTRIBUTES) as span:
            try:
                content = scanner.feed(completion.content) + scanner.finish()
                calls = _scan_calls(completion.tool_calls, self._plan, scanner.found)
            finally:
                _record(request, scanner)
                _annotate(span, scanner)
        if content == completion.content and calls is completion.tool_calls:
            return response
        return response.replace_completion(msgspec.structs.replace(completion, content=content, tool_calls=calls))


def _scan_calls(calls: list[dict[str, Any]] | None, plan: _Plan, found: dict[str, int]) -> Any:
    """Tool calls with their arguments scanned like the answer (the same list if clean)."""
    if not calls:
        return calls
    out = []
    for call in calls:
        arguments = _arguments(call)
        if arguments:
            scanner = Scanner(plan)
            try:
                scanned = scanner.feed(arguments) + scanner.finish()
            finally:
                for name, count in scanner.found.items():
                    found[name] = found.get(name, 0) + count
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


class _CallScanners:
    """Streamed tool calls: one scanner per call index, since OpenAI streams a call's
    arguments as fragments of one string (``tool_calls[i].function.arguments``)."""

    __slots__ = ("_plan", "found", "scanners")

    def __init__(self, plan: _Plan, found: dict[str, int]) -> None:
        self._plan = plan
        self.found = found  # the answer's scanner's counts, shared
        self.scanners: dict[Any, Scanner] = {}

    def feed(self, deltas: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for delta in deltas:
            arguments = _arguments(delta)
            if arguments:
                key = delta.get("index", 0)
                scanner = self.scanners.get(key)
                if scanner is None:
                    scanner = self.scanners[key] = Scanner(self._plan)
                    scanner.found = self.found
                delta = _with_arguments(delta, scanner.feed(arguments))
            out.append(delta)
        return out

    def finish(self) -> list[dict[str, Any]]:
        """The held-back ends of every call's arguments, as deltas."""
        rests = [(key, scanner.finish()) for key, scanner in self.scanners.items()]
        return [{"index": key, "function": {"arguments": rest}} for key, rest in rests if rest]


def _annotate(span: Any, scanner: Scanner) -> None:
    if span is not None and scanner.found:
        span.set_attribute("onion.guard.found", sorted(scanner.found))


def _record(request: Request, scanner: Scanner) -> None:
    if scanner.found:
        record = request.context.guard_findings().redactions
        for name, count in scanner.found.items():
            record[name] = record.get(name, 0) + count


async def _guard_stream(
    source: AsyncIterator[Chunk], scanner: Scanner, request: Request
) -> AsyncGenerator[Chunk, None]:
    # For a stream the span covers the whole answer the guard watched, chunk by chunk.
    span_context = request.context.span("output_guard scan", _STREAM_SPAN_ATTRIBUTES)
    span = span_context.__enter__()
    failure: BaseException | None = None
    calls = _CallScanners(scanner._plan, scanner.found)
    try:
        async for chunk in source:
            if chunk.tool_calls:
                chunk = msgspec.structs.replace(chunk, tool_calls=calls.feed(chunk.tool_calls))
            if chunk.finish_reason is not None:
                text = scanner.feed(chunk.content) + scanner.finish()
                rests = calls.finish()
                if rests:
                    yield Chunk(tool_calls=rests)
            else:
                text = scanner.feed(chunk.content)
            if text != chunk.content:
                chunk = msgspec.structs.replace(chunk, content=text)
            if text or _carries_more_than_text(chunk):
                yield chunk
        rest = scanner.finish()
        if rest:
            yield Chunk(content=rest)
        rests = calls.finish()
        if rests:
            yield Chunk(tool_calls=rests)
    except BaseException as error:
        failure = error
        raise
    finally:
        _record(request, scanner)
        _annotate(span, scanner)
        if failure is None:
            span_context.__exit__(None, None, None)
        else:
            span_context.__exit__(type(failure), failure, failure.__traceback__)
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


def _carries_more_than_text(chunk: Chunk) -> bool:
    """Whether a chunk whose text is (now) empty still carries something the caller needs:
    a role, tool calls, an end, usage, a refusal, logprobs, annotations, audio, unknown fields."""
    return bool(
        chunk.role
        or chunk.tool_calls
        or chunk.finish_reason is not None
        or chunk.usage
        or chunk.refusal is not None
        or chunk.logprobs
        or chunk.annotations
        or chunk.audio
        or chunk.system_fingerprint
        or chunk.service_tier
        or chunk.extra
        or chunk.delta_extra
    )
