"""The cost of the Anthropic translation, per request and per chunk, both directions,
against the gateway's own per-request CPU.

- translation rows: decode an Anthropic body into a ``Request`` (ingress), encode a
  ``Request`` as an Anthropic body (provider), decode an Anthropic ``message`` into a
  ``Completion`` (provider) and encode a ``Completion`` as one (ingress); per chunk: the
  provider's stream decoder on a ``content_block_delta`` and the dialect's event encoder.
- the reference: one complete call through the in-process ASGI app
  (``GatewayApp`` over ``Stack([], handler)``, ``/v1/chat/completions``), the gateway's
  own CPU per request without sockets; each answer's ``x-onion-served-by`` is checked.

Rounds are interleaved (every row measured once per round, the median kept), so a
machine shared with other work loads every row alike.

Run: ``python benchmarks/translation.py [--rounds 7]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fullstack import CompleteHandler

from onion import Chunk, Completion, Context, Request, Stack, Usage
from onion.providers.anthropic import AnthropicProvider
from onion.server import GatewayApp
from onion.wire import anthropic_messages
from onion.wire._anthropic_shapes import completion_from_message

_BODY = msgspec.json.encode(
    {
        "model": "claude-x",
        "max_tokens": 256,
        "system": "You are terse.",
        "tools": [{"name": "lookup", "description": "Look up.", "input_schema": {"type": "object", "properties": {}}}],
        "messages": [
            {"role": "user", "content": "What is an onion? " * 8},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "onion"}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a bulb"}]},
        ],
    }
)
_MESSAGE = msgspec.json.encode(
    {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "The quick brown fox jumps over the lazy dog."}],
        "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 10},
    }
)  # fmt: skip
_DELTA = b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"fox "}}'
_CHAT = msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "What is an onion? " * 8}]})


def _per_call(fn: Callable[[], Any], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


async def _asgi_call(app: GatewayApp, body: bytes) -> None:
    sent: list[dict[str, Any]] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            await asyncio.sleep(3600)
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}
    await app(scope, receive, send)
    start = sent[0]
    assert start["status"] == 200, sent
    assert (b"x-onion-served-by", b"bench") in start["headers"], start["headers"]


def _gateway_row(n: int) -> float:
    app = GatewayApp(Stack([], CompleteHandler()))

    async def run() -> float:
        begin = time.process_time()
        for _ in range(n):
            await _asgi_call(app, _CHAT)
        return (time.process_time() - begin) / n * 1e6

    return asyncio.run(run())


def _rows() -> dict[str, Callable[[int], float]]:
    provider = AnthropicProvider(base_url="http://127.0.0.1:9/v1")
    request = anthropic_messages.decode(_BODY, Context())
    completion = Completion(
        content="The quick brown fox jumps over the lazy dog.", model="claude-x", usage=Usage(10, 10, 20)
    )
    plain = Request(model="claude-x", messages=request.messages[:1])
    decoder = provider.stream_decoder(plain)
    encoder = anthropic_messages.encode_stream(plain, "claude-x")
    encoder.event(Chunk(role="assistant"))
    chunk = Chunk(content="fox ")
    return {
        "request: Anthropic body -> Request (ingress)": lambda n: _per_call(
            lambda: anthropic_messages.decode(_BODY, Context()), n
        ),
        "request: Request -> Anthropic body (provider)": lambda n: _per_call(lambda: provider.encode(request), n),
        "answer: Anthropic message -> Completion (provider)": lambda n: _per_call(
            lambda: completion_from_message(msgspec.json.decode(_MESSAGE), plain), n
        ),
        "answer: Completion -> Anthropic message (ingress)": lambda n: _per_call(
            lambda: anthropic_messages.encode_completion(completion, plain, "claude-x"), n
        ),
        "chunk: content_block_delta -> Chunk (provider)": lambda n: _per_call(lambda: decoder.decode(None, _DELTA), n),
        "chunk: Chunk -> content_block_delta (ingress)": lambda n: _per_call(lambda: encoder.event(chunk), n),
        "reference: gateway CPU per request (ASGI, /v1/chat/completions)": _gateway_row,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    rows = _rows()
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, row in rows.items():  # interleaved: each round measures every row
            samples[name].append(row(args.n))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    reference = medians.pop("reference: gateway CPU per request (ASGI, /v1/chat/completions)")
    print(f"gateway CPU per request (reference): {reference:8.1f} us")
    for name, value in medians.items():
        print(f"{name:55s} {value:8.2f} us  {100 * value / reference:5.1f}% of the reference")
    ingress = (
        medians["request: Anthropic body -> Request (ingress)"]
        + medians["answer: Completion -> Anthropic message (ingress)"]
    )
    provider = (
        medians["request: Request -> Anthropic body (provider)"]
        + medians["answer: Anthropic message -> Completion (provider)"]
    )
    print(f"per request, ingress both ways:  {ingress:6.2f} us = {100 * ingress / reference:4.1f}% (target < 10%)")
    print(f"per request, provider both ways: {provider:6.2f} us = {100 * provider / reference:4.1f}% (target < 10%)")


if __name__ == "__main__":
    main()
