"""Reliability layers: success-path overhead per layer and for the whole stack, next to
LiteLLM's ``Router`` with fallbacks, retries and cooldowns doing the same work.

Every call succeeds (that is the path that runs millions of times). The handler is an
in-process answer, so what is measured is the layers' own cost: each row is the time per
call through ``Stack([layer], handler)`` minus the time through ``Stack([], handler)``.
LiteLLM runs in the same process and event loop, offline (``mock_response``: no network;
the model cost map is read from its bundled copy): ``Router.acompletion`` with two
deployments, ``fallbacks``, ``num_retries``, ``timeout`` and ``allowed_fails`` /
``cooldown_time`` (its circuit breaker). With a mocked upstream nothing waits on the
network, so its whole call is gateway overhead; it is set against onion's
same-features stack, whole call (in-process answer included). ``litellm.acompletion``
with the same mock is shown too, to tell the router's part from the client's. Rounds
interleave every case, best of the rounds is kept.

    python benchmarks/reliability.py            # prints a table, writes results/reliability.json
    python benchmarks/reliability.py --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from middlewares.guard.mask_errors import MaskErrors
from middlewares.limit.rate_limit import RateLimit
from middlewares.resilience.circuit_breaker import CircuitBreaker
from middlewares.resilience.fallback import Fallback
from middlewares.resilience.retry import Retry
from middlewares.resilience.timeout import Deadline
from onion import Completion, Message, Request, Response, Stack, Usage

RESULTS = Path(__file__).resolve().parent / "results" / "reliability.json"
_ANSWER = Completion(content="ok", model="primary", usage=Usage(5, 1, 6))


async def handler(request: Request) -> Response:
    """The cheapest possible upstream: a finished answer."""
    return Response.complete(_ANSWER, served_by="bench")


def _layers() -> dict[str, list[Any]]:
    big = 10**12  # limits that never bite: the success path is what is measured
    return {
        "timeout": [Deadline(seconds=30)],
        "retry": [Retry()],
        "circuit_breaker": [CircuitBreaker()],
        "fallback": [Fallback(["primary", "backup"])],
        "rate_limit (rpm+tpm, memory)": [RateLimit(requests_per_minute=big, tokens_per_minute=big)],
        "mask_errors": [MaskErrors()],
        "same features as LiteLLM (timeout+fallback+retry+breaker)": [
            Deadline(seconds=30),
            Fallback(["primary", "backup"]),
            Retry(),
            CircuitBreaker(),
        ],
        "whole reliability stack (+rate_limit, mask_errors)": [
            MaskErrors(),
            RateLimit(requests_per_minute=big, tokens_per_minute=big),
            Deadline(seconds=30),
            Fallback(["primary", "backup"]),
            Retry(),
            CircuitBreaker(),
        ],
    }


async def _time(call: Any, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - start) / calls * 1e6


async def run_rounds(cases: dict[str, tuple[Any, int]], repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` microseconds per call for each case. Rounds interleave the
    cases, so a burst of load from elsewhere on the machine hits all of them alike."""
    for call, _ in cases.values():  # warm-up: imports, caches, first-call paths
        for _ in range(50):
            await call()
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeats):
        for label, (call, calls) in cases.items():
            best[label] = min(best[label], await _time(call, calls))
    return best


def onion_cases(calls: int, stream: bool) -> dict[str, tuple[Any, int]]:
    messages = [Message("user", "hello there")]

    def caller(stack: Stack):
        async def call() -> None:
            response = await stack(Request(model="primary", messages=messages, stream=stream))
            await response.result()

        return call

    kind = "stream" if stream else "complete"
    cases = {f"{kind}|(bare handler)": (caller(Stack([], handler)), calls)}
    for label, layers in _layers().items():
        cases[f"{kind}|{label}"] = (caller(Stack(layers, handler)), calls)
    return cases


def litellm_cases(calls: int) -> tuple[dict[str, tuple[Any, int]], str | None]:
    """The LiteLLM router and a bare mocked ``acompletion``, or why they cannot run."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of the cost map
    try:
        import litellm
        from litellm import Router
    except ImportError as error:
        return {}, f"litellm is not installed ({error}); pip install litellm"
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
    logging.getLogger("LiteLLM Router").setLevel(logging.CRITICAL)
    params = {"api_key": "sk-bench", "mock_response": "ok"}
    router = Router(
        model_list=[
            {"model_name": "primary", "litellm_params": {"model": "openai/gpt-4o", **params}},
            {"model_name": "backup", "litellm_params": {"model": "openai/gpt-4o-mini", **params}},
        ],
        fallbacks=[{"primary": ["backup"]}],
        num_retries=2,
        timeout=30,
        allowed_fails=5,
        cooldown_time=15,
    )
    messages = [{"role": "user", "content": "hello there"}]

    async def via_router() -> None:
        await router.acompletion(model="primary", messages=messages)

    async def direct() -> None:
        await litellm.acompletion(model="openai/gpt-4o", messages=messages, **params)

    return {"litellm|router": (via_router, calls), "litellm|acompletion": (direct, calls)}, None


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _quiet_logs() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    args = parser.parse_args()
    calls, repeats, litellm_calls = (2_000, 3, 200) if args.quick else (20_000, 5, 2_000)
    _quiet_logs()

    async def run() -> dict[str, Any]:
        cases = {**onion_cases(calls, stream=False), **onion_cases(calls // 2, stream=True)}
        lite_cases, skipped = litellm_cases(litellm_calls)
        best = await run_rounds({**cases, **lite_cases}, repeats)
        out: dict[str, Any] = {}
        for kind in ("complete", "stream"):
            bare = best[f"{kind}|(bare handler)"]
            rows = {
                label.split("|", 1)[1]: {"total_us": us, "overhead_us": max(0.0, us - bare)}
                for label, us in best.items()
                if label.startswith(kind + "|") and not label.endswith("(bare handler)")
            }
            out[kind] = {"baseline_us": bare, "rows": rows}
        if skipped:
            out["litellm"] = {"skipped": skipped}
        else:
            out["litellm"] = {
                "version": _version("litellm"),
                # With mock_response nothing waits on an upstream: the whole call is overhead.
                "router_total_us": best["litellm|router"],
                "acompletion_mock_us": best["litellm|acompletion"],
                "router_minus_acompletion_us": best["litellm|router"] - best["litellm|acompletion"],
            }
        return out

    result = anyio.run(run)
    same = result["complete"]["rows"]["same features as LiteLLM (timeout+fallback+retry+breaker)"]
    lite = result["litellm"]
    if "router_total_us" in lite:
        # The fair comparison: each whole call, mock upstream included, in the same run.
        result["ratio_total"] = lite["router_total_us"] / same["total_us"]
        result["ratio_overhead"] = lite["router_total_us"] / max(same["overhead_us"], 1e-9)
    print(f"{'layer (success path)':62} {'complete µs':>12} {'stream µs':>10}")
    bare = result["complete"]["baseline_us"], result["stream"]["baseline_us"]
    print(f"{'(bare handler, per call)':62} {bare[0]:12.2f} {bare[1]:10.2f}")
    for label, row in result["complete"]["rows"].items():
        streamed = result["stream"]["rows"][label]["overhead_us"]
        print(f"{label:62} {row['overhead_us']:12.2f} {streamed:10.2f}")
    if "router_total_us" in lite:
        print()
        print(f"{'whole call, mocked upstream (same run)':62} {'µs/call':>12}")
        print(f"{'onion: timeout+fallback+retry+breaker + in-process answer':62} {same['total_us']:12.2f}")
        print(f"{'LiteLLM Router (fallbacks, num_retries, timeout, cooldown)':62} {lite['router_total_us']:12.2f}")
        print(f"{'  of which litellm.acompletion(mock_response) alone':62} {lite['acompletion_mock_us']:12.2f}")
        print(
            f"LiteLLM / onion per call: x{result['ratio_total']:.0f}; "
            f"LiteLLM per call / onion's layer overhead: x{result['ratio_overhead']:.0f}"
        )
    else:
        print(f"LiteLLM: {lite['skipped']}")
    result.update(
        benchmark="reliability",
        python=platform.python_version(),
        machine=platform.machine(),
        calls=calls,
        repeats=repeats,
        litellm_calls=litellm_calls,
        note="best of interleaved repeats, microseconds per call",
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()
