"""Running cases: every sample of every case through an ``Ask``, a few at a time.

Samples run concurrently under an ``anyio.CapacityLimiter``; results are put back in
case order, so a report does not depend on which answer came first. A failing call
(rate limited, provider down, timeout) is a failed sample with its error, not a crash
of the run.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence

import anyio
import httpx

from .._context import Context, RequestOptions
from .._types import Message, Request
from ..errors import OnionError
from ._cases import Case
from ._progress import ProgressBar
from ._report import CaseResult, Report, SampleResult, summarize
from ._scoring import score_answer
from ._targets import Ask

__all__ = ["build_request", "run_eval"]

# Answers are kept in the report to show what failed, cut to this size.
ANSWER_CHARS = 2000


def build_request(case: Case, *, model: str | None, stream: bool = False, use_cache: bool = False) -> Request:
    """The request for one sample of ``case`` (a new request, so a new context, per sample).

    Unless ``use_cache``, the request asks every cache to stand aside
    (``context.options.cache = False``; over HTTP, ``Cache-Control: no-cache``): a
    cached answer would hide a model or prompt change, and would make every sample of a
    case the same answer.
    """
    chosen = case.model or model
    if not chosen:
        raise ValueError(f"case {case.id!r} names no model and no default model was given")
    return Request(
        model=chosen,
        messages=[Message(m.role, m.content) for m in case.all_messages()],
        temperature=case.temperature,
        max_tokens=case.max_tokens,
        stream=stream,
        context=Context(options=RequestOptions(cache=use_cache)),
    )


def _error_text(error: Exception) -> str:
    # Safe texts only: an onion error's public message, else the error's type (a
    # transport error's text can hold URLs).
    if isinstance(error, OnionError):
        return f"{type(error).__name__}: {error.public_message}"
    if isinstance(error, TimeoutError):
        return "Timeout: no answer in time"
    if isinstance(error, httpx.HTTPError):
        return f"{type(error).__name__}: the gateway could not be reached"
    return type(error).__name__


async def _sample(case: Case, ask: Ask, request: Request, time_limit: float | None) -> SampleResult:
    started = time.perf_counter()
    try:
        with anyio.fail_after(time_limit):
            answer = await ask(request)
    except Exception as error:
        return SampleResult(passed=False, error=_error_text(error), seconds=time.perf_counter() - started)
    seconds = time.perf_counter() - started
    reasons = score_answer(case, answer.text)
    return SampleResult(
        passed=not reasons,
        reasons=reasons,
        answer=answer.text[:ANSWER_CHARS],
        seconds=seconds,
        served_by=answer.served_by,
    )


async def run_eval(
    cases: Sequence[Case],
    ask: Ask,
    *,
    model: str | None = None,
    default_samples: int = 5,
    concurrency: int = 8,
    stream: bool = False,
    use_cache: bool = False,
    time_limit: float | None = 120.0,
    target: str = "handler",
    progress: ProgressBar | None = None,
) -> Report:
    """Run every sample of every case through ``ask`` and build the report.

    ``model`` is used for cases that name none. ``default_samples`` applies to cases with
    ``temperature > 0`` and no ``samples``. Caches are bypassed unless ``use_cache``.
    At most ``concurrency`` calls are in flight;
    each answer gets ``time_limit`` seconds.
    """
    plan = [(case, case.sample_count(default_samples)) for case in cases]
    requests = [
        [build_request(case, model=model, stream=stream, use_cache=use_cache) for _ in range(n)] for case, n in plan
    ]
    results: list[list[SampleResult | None]] = [[None] * n for _, n in plan]
    limiter = anyio.CapacityLimiter(max(1, concurrency))
    started = time.perf_counter()

    async def one(case_index: int, sample_index: int) -> None:
        case = plan[case_index][0]
        async with limiter:
            result = await _sample(case, ask, requests[case_index][sample_index], time_limit)
        results[case_index][sample_index] = result
        if progress is not None:
            progress.advance(result.passed)

    try:
        async with anyio.create_task_group() as group:
            for case_index, (_, n) in enumerate(plan):
                for sample_index in range(n):
                    group.start_soon(one, case_index, sample_index)
    finally:
        if progress is not None:
            progress.close()
    case_results = [
        CaseResult(
            id=case.id,
            samples=[s for s in samples if s is not None],
            min_pass_rate=case.min_pass_rate,
            tags=list(case.tags),
        )
        for (case, _), samples in zip(plan, results, strict=True)
    ]
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return summarize(case_results, target=target, seconds=time.perf_counter() - started, created=created)
