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
)

from .normalize import normalize, strip_control

__all__ = ["INJECTION_PATTERNS", "InputGuard", "Outcome", "Rule", "RuleSpec"]

Outcome = Literal["block", "flag", "sanitise"]


_EN_OBJECT = r"(?:instructions?|prompts?|rules|directions|guidelines|context|messages?|commands?|constraints)"
_EN_BEFORE = (
    r"(?:previous|prior|above|earlier|preceding|foregoing|initial|original|system|all|any|the|your|those|these)"
)

# "don't ignore the previous instructions" asks for the opposite of an injection.
_EN_NOT = r"(?<!not )(?<!n't )(?<!never )"
_EN_WHAT = r"(?:typos?|mistakes?|errors?|lines?|sentences?|paragraphs?|parts?|sections?|comments?|notes?)"
# Japanese verb endings that negate or narrate ("do not ignore", "I forgot", "was
# ignored"): after them the phrase is not an instruction to the model.
_JA_NOT = "(?!(?:し|す|さ)?(?:ない|なかっ|ません|ず|るな|てしま|ていま|ました|た(?:$|[。、!?]|ので|けど|が|から)))"
_JA_VERB = "(?:無視|忘れ|わすれ|むし|取り消)"

INJECTION_PATTERNS: dict[str, str] = {
    # "ignore (all) previous instructions" and its many wordings.
    "ignore_previous": rf"{_EN_NOT}\b(?:ignore|disregard|forget|skip|override|bypass)\b(?: \w+){{0,3}}? {_EN_BEFORE}"
    rf"(?: \w+){{0,2}}? {_EN_OBJECT}\b",
    # "ignore the above and ...", "disregard everything above".
    "ignore_above": rf"{_EN_NOT}\b(?:ignore|disregard|forget)\b(?: (?:all|everything|anything))?(?: of)?"
    rf"(?: (?:the|what(?:'s| is| was)(?: written| said)?))? (?:above|preceding)\b(?! {_EN_WHAT}\b)",
    "new_instructions": r"\b(?:from now on|starting now),? (?:you are|you will|act as|ignore)\b",
    "reveal_system_prompt": r"\b(?:reveal|show|print|repeat|output|leak|tell me|display)\b(?: \w+){0,3}? "
    r"(?:system prompt|system message|initial instructions|hidden instructions|developer message)",
    "jailbreak_persona": r"\b(?:you are now|act as|pretend to be|roleplay as)\b(?: an?)? "
    r"(?:dan|jailbroken|unrestricted|unfiltered|developer mode)\b|\bdeveloper mode (?:enabled|on)\b",
    # Japanese: "ignore the system prompt", "ignore the previous instructions", "ignore
    # the rules", "forget the settings", written with or without particles. Matched
    # against the text with every space removed (see ``_COMPACT``).
    "ja_system_prompt": "(?:システム|system)(?:の|・)?(?:プロンプト|メッセージ|指示|設定|命令).{0,12}?"
    f"(?:無視|忘れ|わすれ|むし|教えて|表示|出力){_JA_NOT}",
    "ja_previous": "(?:以前|前回|前|これまで|今まで|上記|上|最初|元|先ほど|先程|さっき|先|すべて|全て|全部|あらゆる)"
    f"の?(?:指示|命令|指令|ルール|設定|制約|プロンプト).{{0,8}}?{_JA_VERB}{_JA_NOT}",
    # "ignore the instructions!" as an order, with no "previous": imperative endings only,
    # so "I ignored my boss's orders" is not caught.
    "ja_imperative": "(?:指示|命令|指令|プロンプト)(?:を|は)?(?:すべて|全て|全部)?(?:無視|忘れ)"
    "(?:しろ|して|せよ|しなさい|ろ|て|なさい)",
    "ja_rules": "(?:ルール|規則|制限|制約|ガイドライン|ポリシー).{0,4}?"
    f"(?:無視|忘れ|わすれ|むし|解除|破っ|やぶっ){_JA_NOT}",
}
"""Prompt-injection phrases (regex over normalised text) by name."""

# Japanese has no spaces between words, so a space an attacker puts inside a word
# survives normalisation; these phrases are matched against the text without spaces.
_COMPACT = frozenset({"ja_system_prompt", "ja_previous", "ja_imperative", "ja_rules"})

_JA_VERBS = ("無", "忘", "わ", "む", "教", "表", "出", "取", "解", "破", "や")
# Per phrase, groups of literal anchors: the phrase can only match if every group has a
# member in the text. ``in`` runs at C speed, so ordinary text skips the regexes (the
# Japanese ones, with optional spaces between characters, are the slow ones). Japanese
# anchors are single characters because a space may sit inside any word.
_ANCHORS: dict[str, tuple[tuple[str, ...], ...]] = {
    "ignore_previous": (("ignore", "disregard", "forget", "skip", "override", "bypass"),),
    "ignore_above": (("ignore", "disregard", "forget"), ("above", "preceding")),
    "new_instructions": (("from now on", "starting now"),),
    "reveal_system_prompt": (("system", "instructions", "developer message"),),
    "jailbreak_persona": (("you are now", "act as", "pretend", "roleplay", "developer mode"),),
    "ja_system_prompt": (("シ", "system"), ("プ", "メ", "指", "設"), _JA_VERBS),
    "ja_previous": (("指", "命", "ル", "設", "制", "プ"), _JA_VERBS),
    "ja_imperative": (("指", "命", "プ"), ("無", "忘")),
    "ja_rules": (("ル", "規", "制", "ガ", "ポ"), _JA_VERBS),
}


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
    ``injection`` enables the prompt-injection phrases (``True``/``"block"``,
    ``"flag"``, or ``False``); ``rules`` adds user rules (``Rule`` objects,
    ``{name, pattern|check, outcome}`` tables, or plain strings: a regex rule named
    after its pattern that blocks);
    ``check_tool_results`` also checks ``tool`` messages (text a tool fetched can carry
    an injection too); ``strip_control`` sanitises control and zero-width characters;
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
        self._injection = tuple(
            (name, _ANCHORS.get(name, ()), re.compile(pattern), name in _COMPACT)
            for name, pattern in INJECTION_PATTERNS.items()
        )
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
        if self.injection_outcome is None and not self.rules:
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
        """The pattern rules on one message; True if its verdict may be remembered."""
        norm = normalize(raw)
        if self.injection_outcome is not None:
            found = _injection(self._injection, norm)
            if found is not None:
                if self.injection_outcome == "block":
                    raise self._violation("injection", f"message {i}: injection phrase {found}")
                flags.append("injection")
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

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        with request.context.span("input_guard check", self._span_attributes) as span:
            checked, flags = self.check(request)
            if span is not None and flags:
                span.set_attribute("onion.guard.flags", list(dict.fromkeys(flags)))
        if flags:
            # Deduplicated but in order, so logs read like the rule list.
            record = request.context.guard_findings().flags
            record.extend(f for f in dict.fromkeys(flags) if f not in record)
        return await call_next(checked)


# Bounded by the characters kept (the texts are the keys), not by count: a few large
# pasted documents must not hold much memory. Cleared at once when full.
_VERDICT_CHARS_KEPT = 4_000_000

_Phrase = tuple[str, tuple[tuple[str, ...], ...], re.Pattern[str], bool]


def _injection(phrases: tuple[_Phrase, ...], norm: str) -> str | None:
    """The name of the first injection phrase in ``norm``, or ``None``."""
    compact = None
    for name, anchors, pattern, spaceless in phrases:
        if not all(any(a in norm for a in group) for group in anchors):
            continue
        if spaceless and compact is None:
            compact = norm.replace(" ", "")
        if pattern.search(compact if spaceless and compact is not None else norm) is not None:
            return name
    return None


def _text(message: Message) -> str:
    # Parts are joined with a newline, not glued ("look at this" + "ignore ..." must not
    # become "thisignore"), so a phrase in its own part is still a phrase.
    content = message.content
    if isinstance(content, str):
        return content
    parts = content or ()
    return "\n".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


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
