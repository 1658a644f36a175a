"""Quality evals for a stack or a gateway: ``onion eval``.

Cases (JSONL or TOML) say what to ask and what a good answer contains: keywords it must
and must not contain, patterns, a JSON Schema. A run sends each case (several samples
when the temperature is above zero) through an in-process handler or an
OpenAI-compatible gateway URL, scores every answer, and writes a report that a later
run is compared with, so a model or prompt change that breaks cases is caught in CI::

    onion eval cases.jsonl --url http://127.0.0.1:8000/v1 --model gpt-4o-mini \\
        --report eval.json --compare last.json --min-pass-rate 0.9

It sits outside the onion: it is a client of a stack, never a layer in one.
"""

from ._cases import Case, CaseFileError, CaseMessage, load_cases, parse_cases
from ._cli import add_arguments, build_parser, main, run
from ._progress import ProgressBar
from ._report import (
    CaseChange,
    CaseResult,
    Comparison,
    Report,
    SampleResult,
    Totals,
    compare_reports,
    load_report,
    save_report,
    summarize,
)
from ._runner import build_request, run_eval
from ._scoring import extract_json, score_answer
from ._table import format_comparison, format_report
from ._targets import Answer, Ask, GatewayError, GatewayTarget, handler_target

__all__ = [
    "Answer",
    "Ask",
    "Case",
    "CaseChange",
    "CaseFileError",
    "CaseMessage",
    "CaseResult",
    "Comparison",
    "GatewayError",
    "GatewayTarget",
    "ProgressBar",
    "Report",
    "SampleResult",
    "Totals",
    "add_arguments",
    "build_parser",
    "build_request",
    "compare_reports",
    "extract_json",
    "format_comparison",
    "format_report",
    "handler_target",
    "load_cases",
    "load_report",
    "main",
    "parse_cases",
    "run",
    "run_eval",
    "save_report",
    "score_answer",
    "summarize",
]
