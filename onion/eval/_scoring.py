"""Scoring one answer against one case: each check that fails gives one reason.

A sample passes when the list of reasons is empty. Checks are independent, so every
failing check is reported (not only the first) and a report says why a case failed.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from ._cases import Case

__all__ = ["extract_json", "score_answer"]

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json(answer: str) -> Any:
    """The JSON value in ``answer``: the whole text, or the first fenced code block
    (models often wrap JSON in ```json fences). Raises ``ValueError`` if there is none."""
    text = answer.strip()
    try:
        return json.loads(text)
    except ValueError:
        fenced = _FENCE.search(text)
        if fenced is None:
            raise
        return json.loads(fenced.group(1))


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _validator(schema: dict[str, Any]) -> Any:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def _schema_reasons(case: Case, answer: str) -> list[str]:
    assert case.schema is not None
    try:
        value = extract_json(answer)
    except ValueError:
        return ["schema: the answer is not JSON"]
    error = next(iter(_validator(case.schema).iter_errors(value)), None)
    if error is None:
        return []
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return [f"schema: at {where}: {error.message}"]


def score_answer(case: Case, answer: str) -> list[str]:
    """Why ``answer`` fails ``case``: one reason per failed check; empty when it passes."""
    reasons: list[str] = []
    haystack = answer if case.case_sensitive else answer.casefold()
    for keyword in case.expect:
        needle = keyword if case.case_sensitive else keyword.casefold()
        if needle not in haystack:
            reasons.append(f"missing {keyword!r}")
    for keyword in case.forbid:
        needle = keyword if case.case_sensitive else keyword.casefold()
        if needle in haystack:
            reasons.append(f"forbidden {keyword!r}")
    for pattern in case.regex:
        if _compiled(pattern).search(answer) is None:
            reasons.append(f"no match for /{pattern}/")
    if case.schema is not None:
        reasons.extend(_schema_reasons(case, answer))
    return reasons
