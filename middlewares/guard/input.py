"""The input guard: checks every user-controlled message before anything else sees it.

It sits outside the caches (a blocked request is never looked up or stored) and
usually just inside error masking and rate limiting. Rules run in order; each names
itself in the violation and has an outcome:

- ``block``: raise ``GuardrailViolation(stage="input", rule=name)`` (HTTP 400,
  ``guardrail_violation``) with a safe message; nothing is sent upstream;
- ``flag``: let the request pass and record the rule's name in
  ``request.context.findings.flags`` for metrics and logs;
- ``sanitise``: rewrite the message (for example strip control characters) and pass
  the cleaned request inward.

Built-in rules, in this order: ``control_chars`` (sanitise), ``max_chars``,
``max_tokens`` (estimated), ``injection`` (English and Japanese prompt-injection
phrases), then the user's rules. Patterns are matched against ``normalize``\\ d text
(NFKC, case folding, no zero-width characters, homoglyphs mapped, whitespace runs
collapsed), so ``ＩＧＮＯＲＥ  prev\\u200bious instructions`` is caught.
"""
# ruff: noqa: RUF002  (look-alike characters are this module's subject)

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import msgspec

from onion import (
    CallNext,
    ConfigError,
    EstimateCounter,
    GuardrailViolation,
    Layer,
    Message,
    Order,
    Request,
    Response,
    TokenCounter,
    counter_named,
    resolve_import,
    run_aside,
)

from .classifier import InjectionClassifier
from .detect import InjectionDetector
from .injection import INJECTION_PATTERNS
from .normalize import normalize, strip_control
from .remote import RemoteClassifier

__all__ = ["DEFAULT_ROLES", "INJECTION_PATTERNS", "InputGuard", "Outcome", "RoleOutcome", "Rule", "RuleSpec"]

Outcome = Literal["block", "flag", "sanitise"]


RoleOutcome = Literal["block", "flag", "off"]

DEFAULT_ROLES: dict[str, RoleOutcome] = {
    "user": "block",
    "tool": "block",
    "function": "block",
    "prefill": "block",
    "assistant": "flag",
    "system": "flag",
    "developer": "flag",
    "*": "block",
}
"""What the injection check does per role: ``prefill`` is an assistant message that ends
the request (text the model is made to continue), ``assistant`` every earlier one,
``*`` any role not named (an unknown role reaches the model too). System and developer
messages are the operator's: they are flagged, not blocked, by default."""


class RuleSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A user rule from configuration: a ``pattern`` (regex over normalised text) or a
    ``check`` (import path ``package.module:function``; the function takes the raw text
    and returns True when the rule is broken, or for sanitise the cleaned text)."""

    name: str
    pattern: str | None = None
    check: str | None = None
    outcome: Outcome = "block"
    replacement: str = ""


class Rule:
    """One rule: ``matches(raw, normalised)`` says whether a message breaks it.

    For ``sanitise`` rules ``clean(raw)`` returns the rewritten text.
    """

    __slots__ = ("clean", "matches", "name", "outcome")

    def __init__(
        self,
        name: str,
        matches: Callable[[str, str], bool],
        outcome: Outcome = "block",
        clean: Callable[[str], str] | None = None,
    ) -> None:
        if outcome == "sanitise" and clean is None:
            raise ValueError(f"rule {name!r}: a sanitise rule needs a clean function")
        self.name = name
        self.matches = matches
        self.outcome: Outcome = outcome
        self.clean = clean

    @classmethod
    def regex(cls, name: str, pattern: str, outcome: Outcome = "block", replacement: str = "") -> Rule:
        """A rule broken when ``pattern`` matches the normalised text. Sanitising
        replaces matches in the raw text (case-insensitive) with ``replacement``."""
        try:
            compiled = re.compile(pattern, re.IGNORECASE)
        except re.error as error:
            raise ValueError(f"rule {name!r}: invalid pattern: {error}") from None
        search = compiled.search
        return cls(
            name,
            lambda raw, norm: search(norm) is not None,
            outcome,
            (lambda raw: compiled.sub(replacement, raw)) if outcome == "sanitise" else None,
        )

    @classmethod
    def function(cls, name: str, fn: Callable[[str], bool | str], outcome: Outcome = "block") -> Rule:
        """A rule from a function of the raw text: True means broken; for sanitise it
        returns the cleaned text and the rule counts as broken when it changed it."""
        if outcome == "sanitise":
            return cls(name, lambda raw, norm: fn(raw) != raw, outcome, lambda raw: str(fn(raw)))
        return cls(name, lambda raw, norm: bool(fn(raw)), outcome)


def _rule_from_spec(spec: RuleSpec) -> Rule:
    if (spec.pattern is None) == (spec.check is None):
        raise ValueError(f"rule {spec.name!r}: give exactly one of 'pattern' or 'check'")
    if spec.pattern is not None:
        return Rule.regex(spec.name, spec.pattern, spec.outcome, spec.replacement)
    try:
        fn = resolve_import(spec.check or "")
    except ConfigError as error:
        raise ValueError(f"rule {spec.name!r}: {error}") from None
    return Rule.function(spec.name, fn, spec.outcome)


class InputGuard(Layer):
    """Checks every user-controlled message against ordered rules (see module doc).

    ``max_chars`` and ``max_tokens`` limit the total size of the checked messages
    (tokens estimated with ``counter``; ``size_outcome = "flag"`` only records it);
    ``injection`` enables the prompt-injection check (``middlewares.guard.detect``:
    phrases, decoders, classifier; ``True``/``"block"``, ``"flag"`` to only record it,
    or ``False``); ``rules`` adds user rules (``Rule`` objects,
    ``{name, pattern|check, outcome}`` tables, or plain strings: a regex rule named
    after its pattern that blocks);
    ``roles`` sets what the injection check does per role (``DEFAULT_ROLES``: block in
    user, tool and function messages, an assistant prefill and unknown roles; flag in
    system, developer and earlier assistant messages; a message's ``name`` is checked
    with its text); entries given replace the defaults, ``"off"`` skips a role;
    ``classifier`` is the local classifier (``True``: the shipped weights; a path;
    an ``InjectionClassifier``; ``False``: phrases and decoders only); ``remote`` adds a
    ``RemoteClassifier`` (a guard model behind any handler, with a deadline and a
    fail-open or fail-closed choice), asked once per request when nothing local fired;
    ``check_tool_results`` also applies the size limits and user rules to ``tool``
    messages; ``strip_control`` sanitises control and zero-width characters;
    ``counter`` counts tokens for ``max_tokens`` (a tokenizer name or a
    ``TokenCounter``; default: the fast estimate).
    """

    name = "input_guard"
    provides = frozenset({"guard.input"})
    ordering = (Order("cache", "outside", "a blocked request must never be looked up in or stored by a cache"),)
    short_circuit: ClassVar[str | None] = "blocks a request that breaks a rule (GuardrailViolation, stage input)"

    def __init__(
        self,
        *,
        max_chars: int | None = None,
        max_tokens: int | None = None,
        size_outcome: Literal["block", "flag"] = "block",
        injection: bool | Literal["block", "flag"] = True,
        rules: Sequence[Any] = (),
        check_tool_results: bool = False,
        strip_control: bool = True,
        counter: str | TokenCounter | None = None,
        roles: Mapping[str, RoleOutcome] | None = None,
        classifier: bool | str | InjectionClassifier = True,
        remote: RemoteClassifier | None = None,
    ) -> None:
        self.max_chars = max_chars
        self.max_tokens = max_tokens
        self.size_outcome = size_outcome
        self.counter: TokenCounter = (
            counter_named(counter) if isinstance(counter, str) else counter or EstimateCounter()
        )
        self.roles = frozenset({"user", "tool", "function"} if check_tool_results else {"user"})
        self.strip_control = strip_control
        injection_outcome: Outcome | None = "block" if injection is True else (injection or None)
        self.injection_outcome = injection_outcome
        self.role_outcomes: dict[str, RoleOutcome] = {**DEFAULT_ROLES, **(roles or {})}
        bad = {r: o for r, o in self.role_outcomes.items() if o not in ("block", "flag", "off")}
        if bad:
            raise ConfigError(f"input_guard roles: outcomes must be block, flag or off, got {bad}")
        self.detector = InjectionDetector(classifier=classifier) if injection_outcome is not None else None
        self.remote = remote if injection_outcome is not None else None
        self.rules: tuple[Rule, ...] = tuple(self._user_rule(r, i) for i, r in enumerate(rules))
        # Chat clients resend the whole history with every turn: the pattern rules'
        # verdict on a message text that passed is remembered (bounded), so each turn
        # pays for its new messages only. Rule functions must therefore be pure.
        self._verdicts: dict[str, tuple[str, ...]] = {}
        self._verdict_chars = 0
        self._span_attributes = {"onion.layer": self.name}

    @staticmethod
    def _user_rule(rule: Any, index: int) -> Rule:
        """A user rule from a ``Rule``, a ``{name, pattern|check, outcome}`` table or a
        plain string (a regex rule named after its pattern, outcome block). Errors name
        the entry (``rules[2]``, the rule's name) and the field."""
        where = f"input_guard rules[{index}]"
        if isinstance(rule, Rule):
            return rule
        if isinstance(rule, str):
            try:
                return Rule.regex(rule, rule)
            except ValueError as error:
                raise ConfigError(f"{where} (a pattern string): {error}") from None
        if isinstance(rule, Mapping):
            name = rule.get("name")
            if isinstance(name, str):
                where += f" (name = {name!r})"
            try:
                rule = msgspec.convert(rule, RuleSpec)
            except msgspec.ValidationError as error:
                raise ConfigError(f"{where}: {error}") from None
        if isinstance(rule, RuleSpec):
            try:
                return _rule_from_spec(rule)
            except ValueError as error:
                raise ConfigError(f"{where}: {error}") from None
        raise ConfigError(
            f"{where}: expected a pattern string or a {{name, pattern|check}} table, got {type(rule).__name__}"
        )

    def _violation(self, rule: str, detail: str) -> GuardrailViolation:
        return GuardrailViolation(detail, stage="input", rule=rule)

    def check(self, request: Request) -> tuple[Request, list[str]]:
        """Apply the rules: return the (possibly sanitised) request and the flagged rule
        names, or raise ``GuardrailViolation`` for the first blocking rule broken."""
        if self.max_chars is None and self.max_tokens is None and not self.rules:
            return self._check_plain(request)
        return self._check_general(request)

    def _check_plain(self, request: Request) -> tuple[Request, list[str]]:
        """``_check_general`` for a guard with no size limits and no user rules (the
        default): one pass over the messages, each sanitised, then checked for injection.
        The same verdicts, flags in the same order and the same errors (sanitising never
        raises, so doing it message by message changes nothing that is seen)."""
        messages = request.messages
        detector = self.detector
        roles = self.roles
        strip = self.strip_control
        outcomes = self.role_outcomes
        otherwise = outcomes["*"]
        block = self.injection_outcome == "block"
        last = len(messages) - 1
        changed: dict[int, Message] = {}
        injection = False
        for i, message in enumerate(messages):
            role = message.role
            content = message.content
            # Plain printable ASCII text (most messages) has nothing to strip: no calls.
            plain = type(content) is str and content.isascii() and content.isprintable()
            if strip and content is not None and role in roles and not plain:
                cleaned = _map_text(message, strip_control)
                if cleaned is not message:
                    changed[i] = cleaned
                    message = cleaned
            if detector is None:
                continue
            outcome = outcomes.get("prefill" if i == last and role == "assistant" else role, otherwise)
            if outcome == "off":
                continue
            text = content if plain and not message.name else _scanned(message)
            if not text:
                continue
            found = detector.find(text)
            if found is None:
                continue
            if outcome == "block" and block:
                raise self._violation("injection", f"message {i} ({role}): {found}")
            injection = True
        if not changed:  # the usual case: the request as it came, no call to rebuild it
            return request, ["injection"] if injection else []
        flags = ["control_chars"]
        if injection:
            flags.append("injection")
        return _replace(request, changed), flags

    def _check_general(self, request: Request) -> tuple[Request, list[str]]:
        messages = request.messages
        checked = [i for i, m in enumerate(messages) if m.role in self.roles and m.content is not None]
        flags: list[str] = []
        changed: dict[int, Message] = {}
        if self.strip_control:
            for i in checked:
                cleaned = _map_text(messages[i], strip_control)
                if cleaned is not messages[i]:
                    changed[i] = cleaned
            if changed:
                flags.append("control_chars")
        texts = [_text(changed.get(i) or messages[i]) for i in checked]
        if self.max_chars is not None:
            total = sum(map(len, texts))
            if total > self.max_chars:
                if self.size_outcome == "block":
                    raise self._violation("max_chars", f"{total} characters in user messages, limit {self.max_chars}")
                flags.append("max_chars")
        if self.max_tokens is not None:
            total = sum(map(self.counter.count, texts))
            if total > self.max_tokens:
                if self.size_outcome == "block":
                    raise self._violation(
                        "max_tokens", f"about {total} tokens in user messages, limit {self.max_tokens}"
                    )
                flags.append("max_tokens")
        if self.detector is not None:
            self._check_injection(messages, changed, flags)
        if not self.rules:
            return _replace(request, changed), flags
        verdicts = self._verdicts
        for position, i in enumerate(checked):
            raw = texts[position]
            known = verdicts.get(raw)
            if known is not None:
                flags.extend(known)
                continue
            before = len(flags)
            if self._check_message(i, raw, messages, changed, flags):
                self._verdict_chars += len(raw)
                if self._verdict_chars > _VERDICT_CHARS_KEPT:
                    verdicts.clear()
                    self._verdict_chars = len(raw)
                verdicts[raw] = tuple(flags[before:])
        return _replace(request, changed), flags

    def _check_message(
        self, i: int, raw: str, messages: list[Message], changed: dict[int, Message], flags: list[str]
    ) -> bool:
        """The user rules on one message; True if its verdict may be remembered."""
        norm = normalize(raw)
        remember = True
        for rule in self.rules:
            if not rule.matches(raw, norm):
                continue
            if rule.outcome == "block":
                raise self._violation(rule.name, f"message {i} broke rule {rule.name!r}")
            flags.append(rule.name)
            if rule.outcome == "sanitise" and rule.clean is not None:
                changed[i] = _map_text(changed.get(i) or messages[i], rule.clean)
                raw = _text(changed[i])
                norm = normalize(raw)
                remember = False  # the rewrite must happen again next time
        return remember

    async def _ask_remote(self, request: Request, flags: list[str]) -> None:
        """The remote classifier on the messages whose role blocks, joined, in one call."""
        remote = self.remote
        assert remote is not None
        outcomes = self.role_outcomes
        last = len(request.messages) - 1
        texts = [
            _text(m)
            for i, m in enumerate(request.messages)
            if outcomes.get("prefill" if i == last and m.role == "assistant" else m.role, outcomes["*"]) == "block"
        ]
        text = "\n\n".join(t for t in texts if t)
        if not text:
            return
        verdict = await remote.verdict(text)
        if verdict == "unsafe":
            if self.injection_outcome == "block":
                raise self._violation("injection", f"remote classifier {remote.model}: unsafe")
            flags.append("injection")
        elif verdict == "unavailable":
            if remote.fail == "closed":
                raise self._violation("injection_remote_unavailable", f"remote classifier {remote.model} unavailable")
            flags.append("injection_remote_unavailable")

    def _check_injection(self, messages: list[Message], changed: dict[int, Message], flags: list[str]) -> None:
        """Every message that reaches the model, each with its role's outcome."""
        detector = self.detector
        assert detector is not None
        outcomes = self.role_outcomes
        last = len(messages) - 1
        for i, message in enumerate(messages):
            role = "prefill" if i == last and message.role == "assistant" else message.role
            outcome = outcomes.get(role, outcomes["*"])
            if outcome == "off":
                continue
            text = _scanned(changed.get(i) or message)
            if not text:
                continue
            found = detector.find(text)
            if found is None:
                continue
            if outcome == "block" and self.injection_outcome == "block":
                raise self._violation("injection", f"message {i} ({message.role}): {found}")
            if "injection" not in flags:
                flags.append("injection")

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        if _chars(request.messages) >= _ASIDE_CHARS:
            checked, flags = await self._check_aside(request)
        elif request.context.tracer is None:
            checked, flags = self.check(request)  # nothing to trace: no span to enter
        else:
            with request.context.span("input_guard check", self._span_attributes) as span:
                checked, flags = self.check(request)
                if span is not None and flags:
                    span.set_attribute("onion.guard.flags", list(dict.fromkeys(flags)))
        if self.remote is not None and "injection" not in flags:
            await self._ask_remote(checked, flags)
        if flags:
            # Deduplicated but in order, so logs read like the rule list.
            record = request.context.guard_findings().flags
            record.extend(f for f in dict.fromkeys(flags) if f not in record)
        return await call_next(checked)

    async def _check_aside(self, request: Request) -> tuple[Request, list[str]]:
        # A long prompt (0.5 s of scanning per MB) would hold the event loop, and every
        # other call with it, for seconds: its check runs in a worker thread.
        with request.context.span("input_guard check", self._span_attributes) as span:
            checked, flags = await run_aside(self.check, request)
            if span is not None and flags:
                span.set_attribute("onion.guard.flags", list(dict.fromkeys(flags)))
        return checked, flags


# Text from which the check runs aside: about 30 ms of scanning, against the thread
# hop's 0.1 ms; below it the scan is quicker than the hop's wake-ups.
_ASIDE_CHARS = 65_536


def _chars(messages: Sequence[Message]) -> int:
    """About how many characters of text ``messages`` hold (text parts and documents)."""
    total = 0
    for message in messages:
        content = message.content
        if type(content) is str:
            total += len(content)
        elif content:
            total += sum(len(_part_text(part)) for part in content)
    return total


# Bounded by the characters kept (the texts are the keys), not by count: a few large
# pasted documents must not hold much memory. Cleared at once when full.
_VERDICT_CHARS_KEPT = 4_000_000


def _text(message: Message) -> str:
    # Parts are joined with a newline, not glued ("look at this" + "ignore ..." must not
    # become "thisignore"), so a phrase in its own part is still a phrase.
    content = message.content
    if isinstance(content, str):
        return content
    parts = content or ()
    return "\n".join(text for p in parts if (text := _part_text(p)))


def _part_text(part: object) -> str:
    """The text of one content part that reaches the model: a text part's, and the text
    of a document, a search result or a plain-text file (where indirect injection
    lives), with their titles and context. A PDF's or an image's bytes are not read."""
    if not isinstance(part, dict):
        return ""
    text = part.get("text")
    if isinstance(text, str):
        return text
    kind = part.get("type")
    if kind == "document":
        source = part.get("source")
        body: object = None
        if isinstance(source, dict):  # a text source's data, or a content source's blocks
            body = source.get("data") if source.get("type") == "text" else source.get("content")
        return _joined(part.get("title"), part.get("context"), body)
    if kind == "search_result":
        return _joined(part.get("title"), part.get("content"))
    if kind == "file":
        return _plain_file(part.get("file"))
    return ""


def _joined(*pieces: object) -> str:
    """The strings among ``pieces``, and the texts of those that are lists of blocks."""
    texts = [p if isinstance(p, str) else _text(Message("user", p)) if isinstance(p, list) else "" for p in pieces]
    return "\n".join(t for t in texts if t)


def _plain_file(file: object) -> str:
    """A file part's text when it is plain text inline (``data:text/plain;base64,...``)."""
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data.startswith("data:text/"):
        return ""
    header, _, encoded = data.partition(",")
    try:
        return base64.b64decode(encoded).decode("utf-8", "replace") if ";base64" in header else encoded
    except (binascii.Error, ValueError):
        return ""


def _scanned(message: Message) -> str:
    """What the injection check reads of a message: its ``name`` (a place instructions
    hide too) on a line before its text."""
    text = _text(message)
    return f"{message.name}\n{text}" if message.name else text


def _map_text(message: Message, fn: Callable[[str], str]) -> Message:
    content = message.content
    if isinstance(content, str):
        new = fn(content)
        return message if new == content else msgspec.structs.replace(message, content=new)
    if not content:
        return message
    parts = []
    dirty = False
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
            new = fn(part["text"])
            if new != part["text"]:
                part = {**part, "text": new}
                dirty = True
        parts.append(part)
    return msgspec.structs.replace(message, content=parts) if dirty else message


def _replace(request: Request, changed: dict[int, Message]) -> Request:
    if not changed:
        return request
    messages = [changed.get(i, m) for i, m in enumerate(request.messages)]
    return msgspec.structs.replace(request, messages=messages)
