"""Eval cases: what to ask, and what a good answer contains.

A case file is JSON Lines (one case per line) or TOML (an array of ``[[case]]`` tables).
Each case is decoded with msgspec into ``Case``; a wrong field fails with
``CaseFileError`` naming the file, the line and the field path, before anything is sent.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

import msgspec

from ..errors import ConfigError

__all__ = ["Case", "CaseFileError", "CaseMessage", "load_cases", "parse_cases"]


class CaseFileError(ConfigError):
    """A case file is unreadable or a case in it is invalid; the message names where."""


class CaseMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One input message of a case (``role`` and text ``content``)."""

    role: str
    content: str


class Case(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """One eval case.

    - ``id``: stable name used to compare reports (default: ``line<N>`` / ``case<N>``).
    - ``messages`` (or ``input``, a single user message): what is sent.
    - ``expect``: keywords that must all appear in the answer (case-insensitive unless
      ``case_sensitive``); ``forbid``: keywords that must not appear.
    - ``regex``: patterns that must each match somewhere in the answer.
    - ``schema``: a JSON Schema the answer, parsed as JSON, must satisfy.
    - ``tags``: free labels; the report gives a pass rate per tag.
    - ``samples``: answers drawn for this case; when unset, cases with
      ``temperature > 0`` take the run's default, others one. The case's score is the
      fraction of samples that pass, never one lucky sample.
    - ``min_pass_rate``: the fraction of samples that must pass for the case to pass.
    """

    id: str = ""
    messages: list[CaseMessage] = []
    input: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    expect: list[str] = []
    forbid: list[str] = []
    regex: list[str] = []
    schema: dict[str, Any] | None = None
    case_sensitive: bool = False
    tags: list[str] = []
    samples: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    min_pass_rate: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 1.0

    def all_messages(self) -> list[CaseMessage]:
        """The messages to send: ``messages`` followed by ``input`` as a user message."""
        if self.input is None:
            return list(self.messages)
        return [*self.messages, CaseMessage("user", self.input)]

    def sample_count(self, default_samples: int) -> int:
        """How many answers to draw: explicit ``samples``, else ``default_samples`` when
        sampling is random (temperature > 0), else one."""
        if self.samples is not None:
            return self.samples
        return default_samples if (self.temperature or 0) > 0 else 1


_PATH = re.compile(r" - at `\$\.?([^`]*)`")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")


def _explain(error: msgspec.ValidationError | msgspec.DecodeError) -> str:
    """msgspec's message turned into ``field 'x.y': what is wrong``."""
    text = str(error)
    match = _PATH.search(text)
    prefix = match.group(1) if match else ""
    # A missing or unknown key is reported at its parent object; name the key itself.
    for pattern, what in ((_UNKNOWN, "unknown field"), (_MISSING, "required")):
        found = pattern.search(text)
        if found:
            path = f"{prefix}.{found.group(1)}" if prefix else found.group(1)
            return f"field {path!r}: {what}"
    if match:
        return f"field {prefix or '(case)'!r}: {text[: match.start()]}"
    return text


def _check_semantics(case: Case) -> str | None:
    """Checks msgspec's types cannot express; returns ``field 'x': problem`` or None."""
    if not case.messages and case.input is None:
        return "field 'messages': a case needs 'messages' or 'input'"
    for index, pattern in enumerate(case.regex):
        try:
            re.compile(pattern)
        except re.error as error:
            return f"field 'regex[{index}]': not a valid regular expression: {error}"
    if case.schema is not None:
        try:
            import jsonschema
        except ImportError:
            # jsonschema is the `eval` extra; without it the case cannot be checked.
            return "field 'schema': needs pip install 'onion-llm[eval]' (jsonschema)"
        try:
            jsonschema.validators.validator_for(case.schema).check_schema(case.schema)
        except jsonschema.SchemaError as error:
            where = ".".join(str(p) for p in error.path)
            return f"field 'schema{'.' + where if where else ''}': not a valid JSON Schema: {error.message}"
    return None


def _finish(raw: Any, where: str, default_id: str) -> Case:
    try:
        case = msgspec.convert(raw, Case)
    except msgspec.ValidationError as error:
        raise CaseFileError(f"{where}: {_explain(error)}") from None
    problem = _check_semantics(case)
    if problem:
        raise CaseFileError(f"{where}: {problem}")
    if not case.id:
        case = msgspec.structs.replace(case, id=default_id)
    return case


def _parse_jsonl(text: str, name: str) -> list[Case]:
    cases = []
    # Only "\n" ends a JSON line: splitlines() would also split on U+2028 and friends,
    # which JSON allows raw inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("//"):
            continue
        try:
            raw = msgspec.json.decode(stripped)
        except msgspec.DecodeError as error:
            raise CaseFileError(f"{name}:{number}: not valid JSON: {error}") from None
        if not isinstance(raw, dict):
            raise CaseFileError(f"{name}:{number}: expected a JSON object, got {type(raw).__name__}")
        cases.append(_finish(raw, f"{name}:{number}", f"line{number}"))
    return cases


_CASE_HEADER = re.compile(r"^\s*\[\[\s*case\s*\]\]", re.MULTILINE)


def _parse_toml(text: str, name: str) -> list[Case]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CaseFileError(f"{name}: not valid TOML: {error}") from None
    unknown = set(data) - {"case"}
    if unknown:
        raise CaseFileError(f"{name}: unknown top-level key {sorted(unknown)[0]!r}; cases go in [[case]] tables")
    tables = data.get("case", [])
    if not isinstance(tables, list):
        raise CaseFileError(f"{name}: 'case' must be an array of tables ([[case]])")
    # tomllib keeps no positions; the n-th [[case]] header is where the n-th case starts.
    lines = [text.count("\n", 0, m.start()) + 1 for m in _CASE_HEADER.finditer(text)]
    cases = []
    for index, raw in enumerate(tables):
        line = lines[index] if index < len(lines) else None
        where = f"{name}:{line}" if line else f"{name}: case {index + 1}"
        cases.append(_finish(raw, where, f"case{index + 1}"))
    return cases


def parse_cases(text: str, *, name: str = "<cases>", format: str = "jsonl") -> list[Case]:
    """Parse cases from ``text`` (``format`` is ``"jsonl"`` or ``"toml"``).

    Raises ``CaseFileError`` naming the line and field of the first invalid case, or a
    duplicated id.
    """
    cases = _parse_toml(text, name) if format == "toml" else _parse_jsonl(text, name)
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise CaseFileError(f"{name}: case id {case.id!r} appears twice; ids must be unique to compare reports")
        seen.add(case.id)
    return cases


def load_cases(path: str | Path) -> list[Case]:
    """Load cases from a ``.jsonl`` / ``.json`` or ``.toml`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CaseFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CaseFileError(f"{path}: cannot read: {error}") from None
    return parse_cases(text, name=str(path), format="toml" if path.suffix == ".toml" else "jsonl")
