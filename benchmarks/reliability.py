"""Reliability layers: success-path overhead per layer and for the whole stack, next to
LiteLLM's ``Router`` with fallbacks, retries and cooldowns doing the same work.

Every call succeeds (that is the path that runs millions of times). The handler is an
in-process answer, so what is measured is the layers' own cost: each row is the time per
call through ``Stack([layer], handler)`` minus the time through ``Stack([], handler)``.
LiteLLM runs in the same process and event loop, offline (``mock_response``: no network;
the model cost map is read from its bundled copy): its figure is ``Router.acompletion``
with two deployments, ``fallbacks``, ``num_retries``, ``timeout`` and ``allowed_fails`` /
``cooldown_time`` (its circuit breaker), minus ``litellm.acompletion`` with the same mock
(the router's own overhead), and the total per call as well.

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

from middlewares.circuit_breaker import CircuitBreaker
from middlewares.fallback import Fallback
from middlewares.mask_errors import MaskErrors
from middlewares.rate_limit import RateLimit
from middlewares.retry import Retry
from middlewares.timeout import Deadline
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


async def _per_call(call: Any, calls: int, repeats: int) -> float:
    """Best-of-``repeats`` microseconds per call (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            await call()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


async def measure_onion(calls: int, repeats: int, stream: bool) -> dict[str, Any]:
    messages = [Message("user", "hello there")]

    def caller(stack: Stack):
        async def call() -> None:
            response = await stack(Request(model="primary", messages=messages, stream=stream))
            await response.result()

        return call

    baseline = await _per_call(caller(Stack([], handler)), calls, repeats)
    rows = {}
    for label, layers in _layers().items():
        total = await _per_call(caller(Stack(layers, handler)), calls, repeats)
        rows[label] = {"total_us": total, "overhead_us": max(0.0, total - baseline)}
    return {"baseline_us": baseline, "rows": rows}


async def measure_litellm(calls: int, repeats: int) -> dict[str, Any]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of the cost map
    try:
        import litellm
        from litellm import Router
    except ImportError as error:
        return {"skipped": f"litellm is not installed ({error}); pip install litellm"}
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

    for _ in range(50):  # warm-up: imports, caches
        await via_router()
        await direct()
    router_total = await _per_call(via_router, calls, repeats)
    direct_total = await _per_call(direct, calls, repeats)
    return {
        "version": getattr(litellm, "__version__", None) or _version("litellm"),
        "router_total_us": router_total,
        "acompletion_mock_us": direct_total,
        "router_overhead_us": max(0.0, router_total - direct_total),
    }


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
        complete = await measure_onion(calls, repeats, stream=False)
        streamed = await measure_onion(calls // 2, repeats, stream=True)
        litellm = await measure_litellm(litellm_calls, repeats)
        return {"complete": complete, "stream": streamed, "litellm": litellm}

    result = anyio.run(run)
    same = result["complete"]["rows"]["same features as LiteLLM (timeout+fallback+retry+breaker)"]
    lite = result["litellm"]
    if "router_total_us" in lite:
        result["ratio_overhead"] = lite["router_overhead_us"] / max(same["overhead_us"], 1e-9)
        result["ratio_total"] = lite["router_total_us"] / same["total_us"]
    print(f"{'layer (success path)':62} {'complete µs':>12} {'stream µs':>10}")
    bare = result["complete"]["baseline_us"], result["stream"]["baseline_us"]
    print(f"{'(bare handler, per call)':62} {bare[0]:12.2f} {bare[1]:10.2f}")
    for label, row in result["complete"]["rows"].items():
        streamed = result["stream"]["rows"][label]["overhead_us"]
        print(f"{label:62} {row['overhead_us']:12.2f} {streamed:10.2f}")
    if "router_total_us" in lite:
        print(f"{'LiteLLM Router (fallbacks, retries, cooldown) overhead':62} {lite['router_overhead_us']:12.2f}")
        print(f"{'LiteLLM Router total per call (mock_response)':62} {lite['router_total_us']:12.2f}")
        print(f"{'onion same-features stack total per call':62} {same['total_us']:12.2f}")
        print(f"LiteLLM/onion: overhead x{result['ratio_overhead']:.0f}, total per call x{result['ratio_total']:.0f}")
    else:
        print(f"LiteLLM: {lite['skipped']}")
    result.update(
        benchmark="reliability",
        python=platform.python_version(),
        machine=platform.machine(),
        calls=calls,
        repeats=repeats,
        litellm_calls=litellm_calls,
        median_note="best of repeats, microseconds per call",
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()
