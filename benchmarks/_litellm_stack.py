"""LiteLLM's side of ``stack_overhead.py``, run by an interpreter that has LiteLLM.

It is a child process rather than an import because LiteLLM's SDK cache-hit path imports
modules of its proxy server (fastapi, soundfile, ...), so only an interpreter with
``litellm[proxy]``'s requirements can serve a hit (see ``_litellm_proxy.py`` for that
virtualenv). The parent sends one JSON command per line on stdin and reads one JSON line
back, so its rounds interleave with onion's in one run:

    {"path": "miss" | "hit", "stream": bool, "calls": int}  ->  {"us": [per-call µs, ...]}

The work asked of LiteLLM is as close to onion's default stack as its SDK offers:
``Router.acompletion`` with ``num_retries``, ``timeout``, ``allowed_fails`` /
``cooldown_time`` (its circuit breaker) and its in-memory response cache, in front of
``mock_response`` (no network). It has no input or output guard and no metrics here, so
it does less than onion's stack does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from importlib.metadata import version

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of the cost map
os.environ.setdefault("LITELLM_LOG", "ERROR")

import litellm  # after the environment above is set: LiteLLM reads it at import
from litellm import Router
from litellm.caching.caching import Cache

TEXT = "The quick brown fox jumps over the lazy dog."


def build_router() -> Router:
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    litellm.cache = Cache(type="local")
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    params = {"model": "openai/gpt-4o", "api_key": "sk-bench", "mock_response": TEXT}
    return Router(
        model_list=[{"model_name": "gpt-4o", "litellm_params": params}],
        num_retries=2,
        timeout=120,
        allowed_fails=5,
        cooldown_time=15,
        cache_responses=True,
    )


async def serve() -> None:
    router = build_router()
    counter = 0

    async def call(content: str, stream: bool) -> None:
        messages = [{"role": "user", "content": content}]
        response = await router.acompletion(model="gpt-4o", messages=messages, stream=stream, caching=True)
        if stream:
            async for _ in response:
                pass

    # The cache writes in the background: a few calls and a pause make the hit prompt a hit.
    for stream in (False, True):
        for _ in range(3):
            await call("hello hit", stream)
            await asyncio.sleep(0.05)
    print(json.dumps({"ready": True, "version": version("litellm")}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        samples = []
        for _ in range(command["calls"]):
            counter += 1
            content = "hello hit" if command["path"] == "hit" else f"hello {counter}"
            began = time.perf_counter_ns()
            await call(content, command["stream"])
            samples.append((time.perf_counter_ns() - began) / 1e3)
        print(json.dumps({"us": samples}), flush=True)


if __name__ == "__main__":
    asyncio.run(serve())
