"""A long body does not hold the gateway: over real sockets, other calls are answered
while it is read. The JSON check and decoding of a body of 256 KiB or more, and the input
guard's check of a prompt of 64 Ki characters or more, run aside (``onion.run_aside``)."""

from __future__ import annotations

import itertools
import random
import string
import threading
import time
from typing import Any

import httpx
import pytest

from middlewares.guard.input import InputGuard
from onion import Stack
from onion.providers.openai import OpenAIProvider
from onion.server import GatewayApp
from onion.testing import FakeUpstream, ThreadedServer


def _short(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _long_prompt() -> dict[str, Any]:
    rng = random.Random(7)
    words = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(900_000))
    return {"model": "m", "messages": [{"role": "user", "content": words[:5_000_000]}]}


def _long_history() -> dict[str, Any]:
    turns = [
        {"role": ("user", "assistant")[i % 2], "content": [{"type": "text", "text": f"m{i}"}]} for i in range(100_001)
    ]
    return {"model": "m", "messages": turns}


@pytest.mark.parametrize("body", [_long_prompt, _long_history], ids=["5 MB prompt", "100,001 messages"])
def test_other_calls_are_answered_while_a_long_body_is_read(body: Any) -> None:
    # Before: the 5 MB prompt's scan (0.5 s per MB) held the event loop, and the small
    # call sent meanwhile waited for all of it (2.8 s of 3.5); the history's JSON check and
    # decoding (2 s) did the same. Now a small call waits at most for one C call that
    # keeps the GIL (0.34 s of 3.4 for the prompt's scan; 0.5 s of 3.8 for the history,
    # the fake upstream's json.loads of it, in this process).
    big = body()
    with FakeUpstream() as upstream:
        upstream.completion_for = _short
        app = GatewayApp(Stack([InputGuard()], OpenAIProvider(base_url=upstream.base_url, api_key="k")))
        with ThreadedServer(app) as server:
            span: dict[str, float] = {}

            def send_big() -> None:
                span["start"] = time.monotonic()
                answer = httpx.post(server.url + "/v1/chat/completions", json=big, timeout=120)
                span["end"] = time.monotonic()
                span["status"] = answer.status_code

            sender = threading.Thread(target=send_big)
            sender.start()
            done: list[float] = []
            with httpx.Client(base_url=server.url, timeout=120) as http:
                while sender.is_alive():
                    small = {"model": "m", "messages": [{"role": "user", "content": f"hi {len(done)}"}]}
                    assert http.post("/v1/chat/completions", json=small).status_code == 200
                    done.append(time.monotonic())
            sender.join()
    assert span["status"] == 200
    took = span["end"] - span["start"]
    times = [span["start"], *[t for t in done if t < span["end"]], span["end"]]
    gap = max(b - a for a, b in itertools.pairwise(times))
    assert took > 1.0, took
    assert gap < took / 4, f"the big call took {took:.2f} s; a small call waited {gap:.2f} s ({len(done)} answered)"
