"""A long body does not hold the gateway: over real sockets, other calls are answered
while it is read. The JSON check and decoding of a body of 256 KiB or more, and the input
guard's check of a prompt of 64 Ki characters or more, run aside (``onion.run_aside``)."""

from __future__ import annotations

import contextlib
import itertools
import random
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    # "ok", or 9 MB of numbers with an e-mail address in it for the prompt "long".
    asked = body["messages"][-1]["content"]
    text = _LONG_ANSWER + " write to jane@example.com" if asked == "long" else "ok"
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _prose(chars: int) -> str:
    rng = random.Random(7)
    words = ("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(chars // 5))
    return " ".join(words)[:chars]


# An answer of 9 MB full of numbers (what the output guard's detectors look at).
_LONG_ANSWER = " ".join(
    f"item {i} costs ${i % 997}.{i % 100:02d}, due {i % 28 + 1:02d}/{i % 12 + 1:02d}." for i in range(125_000)
)


# The fake upstream runs in its own process: in a thread of this one, its encoding of the
# 9 MB answer held this process's GIL, and the small calls' client waited with it (a wait
# the gateway did not cause, a quarter of the call on a fast machine).
_UPSTREAM = (
    "import sys\n"
    f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
    "from test_long_bodies import _answer\n"
    "from onion.testing import FakeUpstream\n"
    "up = FakeUpstream()\n"
    "up.completion_for = _answer\n"
    "up.start()\n"
    "print(up.base_url, flush=True)\n"
    "sys.stdin.read()\n"
)


@contextlib.contextmanager
def _upstream_process() -> Iterator[str]:
    """The fake upstream answering with ``_answer``, in a child process: its base URL."""
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
    child = subprocess.Popen([sys.executable, "-c", _UPSTREAM], text=True, **pipes)  # type: ignore[call-overload]
    try:
        assert child.stdout is not None
        base_url = child.stdout.readline().strip()
        assert base_url.startswith("http://"), "the fake upstream did not start"
        yield base_url
    finally:
        child.kill()
        child.wait(timeout=10)


def _long_prompt() -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": _prose(5_000_000)}]}


def _long_answer() -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "long"}]}


def _long_history() -> dict[str, Any]:
    turns = [
        {"role": ("user", "assistant")[i % 2], "content": [{"type": "text", "text": f"m{i}"}]} for i in range(100_001)
    ]
    return {"model": "m", "messages": turns}


def _long_anthropic_history() -> dict[str, Any]:
    # The same history in Anthropic's dialect (POST /v1/messages), which decodes it itself.
    return {**_long_history(), "max_tokens": 16, "path": "/v1/messages"}


@pytest.mark.parametrize(
    "body",
    [_long_prompt, _long_history, _long_anthropic_history, _long_answer],
    ids=["5 MB prompt", "100,001 messages", "100,001 messages, Anthropic's dialect", "9 MB answer"],
)
def test_other_calls_are_answered_while_a_long_body_is_read(
    body: Any, tmp_path: Path, gateway: Callable[..., Any]
) -> None:
    # Before: the 5 MB prompt's scan (0.5 s per MB) held the event loop of `onion serve`,
    # and a small call sent meanwhile waited for all of it; so did the history's JSON
    # check and decoding (2 s), and the output guard's scan of the 9 MB answer. Now a
    # small call waits at most for the few C calls that keep the GIL.
    big = body()
    path = big.pop("path", "/v1/chat/completions")
    stack = '[[stack]]\nuse = "input_guard"\n\n[[stack]]\nuse = "output_guard"\n'
    with _upstream_process() as base_url:
        config = tmp_path / "gateway.toml"
        config.write_text(f'[[providers]]\nname = "p"\nkind = "openai"\nbase_url = "{base_url}"\n\n{stack}')
        served = gateway(config)
        span: dict[str, Any] = {}

        def send_big() -> None:
            span["start"] = time.monotonic()
            answer = httpx.post(served.url + path, json=big, timeout=120)
            span["end"] = time.monotonic()
            span["status"], span["text"] = answer.status_code, answer.text

        sender = threading.Thread(target=send_big)
        sender.start()
        done: list[float] = []
        with httpx.Client(base_url=served.url, timeout=120) as http:
            while sender.is_alive():
                small = {"model": "m", "messages": [{"role": "user", "content": f"hi {len(done)}"}]}
                assert http.post("/v1/chat/completions", json=small).status_code == 200
                done.append(time.monotonic())
        sender.join()
    assert span["status"] == 200 and "jane@example.com" not in span["text"]
    took = span["end"] - span["start"]
    times = [span["start"], *[t for t in done if t < span["end"]], span["end"]]
    gap = max(b - a for a, b in itertools.pairwise(times))
    # Long enough that a loop held for the whole call shows against the scheduling noise of
    # small calls (a third of it); the 9 MB answer takes 0.7-2 s with the machine's load.
    assert took > 0.5, took
    assert gap < took / 3, f"the big call took {took:.2f} s; a small call waited {gap:.2f} s ({len(done)} answered)"
