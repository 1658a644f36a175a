"""``onion eval``: run case files against a stack or a gateway, print, save, compare, gate.

Exit status: 0 when every case meets its own ``min_pass_rate`` (or, with
``--min-pass-rate``, the run's pass rate meets that instead) and, with
``--fail-on-regression``, no case regressed; 1 when not, and the last line says why; 2
when a case file, report or option is invalid (nothing is sent then).
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from .._registry import resolve_layer
from ..errors import ConfigError
from ._cases import Case, load_cases
from ._progress import ProgressBar
from ._report import Comparison, Report, compare_reports, load_report, save_report
from ._runner import run_eval
from ._table import format_comparison, format_report
from ._targets import Ask, GatewayTarget, handler_target

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "onion eval") -> argparse.ArgumentParser:
    """The argument parser of ``onion eval`` (the main CLI mounts it as a subcommand)."""
    parser = argparse.ArgumentParser(prog=prog, description="Run quality eval cases against a stack or a gateway.")
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``onion eval``'s arguments to ``parser``."""
    parser.add_argument("cases", nargs="+", help="case files: .jsonl (one case per line) or .toml ([[case]] tables)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="an OpenAI-compatible gateway, e.g. http://127.0.0.1:8000/v1")
    target.add_argument("--handler", help="an onion Handler (or a zero-argument factory) as package.module:attr")
    target.add_argument("--config", help="an onion TOML config: its stack and providers are run in process")
    parser.add_argument("--model", help="model for cases that name none")
    parser.add_argument(
        "--api-key-env", default="ONION_EVAL_API_KEY", help="environment variable holding the gateway's API key"
    )
    parser.add_argument("--samples", type=int, default=5, help="samples per case with temperature > 0 (default 5)")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight at once (default 8)")
    parser.add_argument("--stream", action="store_true", help="ask for streamed answers")
    parser.add_argument(
        "--use-cache",
        action="store_true",
        help="let caches answer (by default every sample bypasses them: a cached answer hides a model change)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per answer (default 120)")
    parser.add_argument("--tag", action="append", default=[], help="run only cases with this tag (repeatable)")
    parser.add_argument("--report", help="write the JSON report here")
    parser.add_argument("--compare", help="a previous JSON report: list the cases that regressed")
    parser.add_argument("--tolerance", type=float, default=0.0, help="pass-rate drop that is not a regression")
    parser.add_argument(
        "--min-pass-rate",
        type=float,
        default=None,
        help="gate on the run's pass rate instead of on every case: exit 1 only when it is below this "
        "(0 reports without gating; default: exit 1 when any case is below its own min_pass_rate)",
    )
    parser.add_argument("--fail-on-regression", action="store_true", help="exit 1 when any case regressed")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="always draw it")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never draw the progress bar")


def _load_handler(path: str) -> Any:
    obj = resolve_layer(path if ":" in path else f"{path}:handler")
    if inspect.isclass(obj):
        return obj()
    try:
        required = [
            p
            for p in inspect.signature(obj).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return obj
    # A function with no required argument builds the handler; one taking a request is it.
    return obj() if not required and not inspect.iscoroutinefunction(obj) else obj


def _load_config_handler(path: str) -> Any:
    # The gateway's own loader: the same providers, router and stack `onion serve` runs.
    from ..config import build_gateway, load_config

    return build_gateway(load_config(path))


def _select(cases: list[Case], tags: Sequence[str]) -> list[Case]:
    if not tags:
        return cases
    wanted = set(tags)
    return [case for case in cases if wanted.intersection(case.tags)]


async def _run(args: argparse.Namespace, cases: list[Case]) -> Report:
    total = sum(case.sample_count(args.samples) for case in cases)
    progress = ProgressBar(total, enabled=args.progress)
    options: dict[str, Any] = {
        "model": args.model,
        "default_samples": args.samples,
        "concurrency": args.concurrency,
        "stream": args.stream,
        "use_cache": args.use_cache,
        "time_limit": args.timeout,
        "progress": progress,
    }
    if args.url:
        async with GatewayTarget(args.url, api_key=os.environ.get(args.api_key_env), timeout=args.timeout) as gateway:
            return await run_eval(cases, gateway, target="gateway", **options)
    if args.config:
        owner = _load_config_handler(args.config)
        handler = owner.stack
    else:
        owner = handler = _load_handler(args.handler)
    ask: Ask = handler_target(handler)
    try:
        return await run_eval(cases, ask, target=args.config or args.handler, **options)
    finally:
        # Providers hold connection pools; a gateway or handler that can close, is closed.
        close = getattr(owner, "aclose", None)
        if close is not None:
            await close()


def _check_options(args: argparse.Namespace) -> None:
    if args.samples < 1 or args.concurrency < 1:
        raise ConfigError("--samples and --concurrency must be at least 1")
    if args.min_pass_rate is not None and not 0.0 <= args.min_pass_rate <= 1.0:
        raise ConfigError("--min-pass-rate is a fraction between 0 and 1")
    if args.tolerance < 0:
        raise ConfigError("--tolerance must be >= 0")


def run(args: argparse.Namespace) -> int:
    """Run ``onion eval`` with parsed arguments; returns the exit status."""
    try:
        _check_options(args)
        cases = [case for path in args.cases for case in load_cases(path)]
        cases = _select(cases, args.tag)
        if not cases:
            raise ConfigError("no cases to run" + (f" with tags {args.tag}" if args.tag else ""))
        previous = load_report(args.compare) if args.compare else None
        if not args.model and any(case.model is None for case in cases):
            raise ConfigError("some cases name no model: pass --model")
        report = anyio.run(_run, args, cases)
    except ConfigError as error:
        print(f"onion eval: {error}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.report:
        save_report(report, args.report)
        print(f"report written to {args.report}")
    comparison = None
    if previous is not None:
        comparison = compare_reports(previous, report, tolerance=args.tolerance)
        print(format_comparison(comparison, previous=args.compare))
    failures = _failures(args, report, comparison)
    if failures:
        print("FAIL: " + "; ".join(failures), file=sys.stderr)
        return 1
    if args.min_pass_rate is None:
        print(f"PASS: all {report.totals.cases} cases met their min_pass_rate")
    else:
        print(f"PASS: pass rate {report.totals.pass_rate:.1%} meets the minimum {args.min_pass_rate:.1%}")
    return 0


def _failures(args: argparse.Namespace, report: Report, comparison: Comparison | None) -> list[str]:
    """Why the run fails its gate, one reason per gate it fails (none: it passes)."""
    reasons = []
    if args.min_pass_rate is None:
        failing = [case for case in report.cases if not case.passed]
        if failing:
            shown = ", ".join(
                f"{case.id} ({case.passed_samples}/{len(case.samples)} passed, needs {case.min_pass_rate:.0%})"
                for case in failing[:5]
            )
            more = f" and {len(failing) - 5} more" if len(failing) > 5 else ""
            noun = "case is below its" if len(failing) == 1 else "cases are below their"
            reasons.append(f"{len(failing)} {noun} min_pass_rate: {shown}{more}")
    elif report.totals.pass_rate < args.min_pass_rate:
        reasons.append(f"pass rate {report.totals.pass_rate:.1%} is below the minimum {args.min_pass_rate:.1%}")
    if comparison is not None and args.fail_on_regression and comparison.regressed:
        ids = ", ".join(change.id for change in comparison.regressed)
        reasons.append(f"{len(comparison.regressed)} regressed since {args.compare}: {ids}")
    return reasons


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``onion eval ARGS`` (also ``python -m onion.eval ARGS``)."""
    return run(build_parser().parse_args(argv))
