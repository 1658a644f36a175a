"""What translating the Responses API costs, against the gateway's own per-request CPU.

In one run, rounds interleaved so machine noise hits every case alike:

- **gateway**: one chat-completions call as the server makes it, in-process: the
  ``openai_chat`` dialect decodes the body, ``DEFAULT_STACK`` (metrics, logging,
  timeout, input guard, exact cache, output guard, retry, circuit breaker) runs around a
  zero-latency simulated upstream, and the answer is encoded. Each call sends a new
  prompt (a cache miss: guards run, the answer is stored). Complete, and streamed (every
  chunk encoded as a ``chat.completion.chunk`` event).
- **responses, request in**: ``onion.wire.responses.decode`` of a Responses body with
  instructions, a function tool, a function-call round trip and ``text.format``.
- **responses, answer out**: ``encode_completion`` of a complete answer, and per chunk
  the ``ResponsesStreamEncoder`` (the stream's ``response.*`` events, the open and
  close events of its items and ``response.completed`` spread over its chunks).

The goal: request in + answer out under 10% of the gateway's per-request CPU. Every
gateway answer's ``served_by`` is checked. Writes ``benchmarks/results/translation_responses.json``.

    python benchmarks/translation_responses.py [--calls 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

import anyio
import msgspec
from _fullstack import _logs_to_devnull, print_table, write_results

from onion import Chunk, Completion, Context, SimulatedProvider, Stack, Usage, build_layer
from onion.config import DEFAULT_STACK
from onion.wire import openai_chat, responses

BODY = {
    "model": "sim-small",
    "instructions": "You are terse.",
    "input": [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21C"},
        {"role": "user", "content": [{"type": "input_text", "text": "And tomorrow? Answer as JSON."}]},
    ],
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ],
    "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
    "max_output_tokens": 200,
    "temperature": 0,
}
ANSWER = Completion(
    content="A sunny day, about 21 degrees, light wind from the west.", model="sim-small", usage=Usage(60, 24, 84)
)
CHUNKS = [Chunk(content=w + " ", role="assistant" if i == 0 else None) for i, w in enumerate(ANSWER.content.split())]
CHUNKS.append(Chunk(finish_reason="stop", usage=ANSWER.usage))


def _stack() -> Stack:
    _logs_to_devnull()
    layers = [build_layer(table, f"stack[{i}]") for i, table in enumerate(DEFAULT_STACK)]
    return Stack(layers, SimulatedProvider(ttft=0, tokens_per_second=0), name="default")


async def gateway_round(stack: Stack, calls: int, stream: bool, offset: int) -> float:
    """Seconds for ``calls`` chat calls through decode, the stack and encode."""
    bodies = [
        msgspec.json.encode(
            {
                "model": "sim-small",
                "stream": stream,
                "messages": [{"role": "user", "content": f"question {offset + i}"}],
            }
        )
        for i in range(calls)
    ]
    began = time.perf_counter()
    for body in bodies:
        request = openai_chat.decode(body, Context())
        response = await stack(request)
        assert response.served_by == "simulated", response.served_by
        if stream:
            encoder = openai_chat.encode_stream(request, "sim-small")
            async for chunk in response:
                encoder.event(chunk)
            encoder.end()
        else:
            openai_chat.encode_completion(await response.result(), request, "sim-small")
    return time.perf_counter() - began


def decode_round(calls: int) -> float:
    body = msgspec.json.encode(BODY)
    began = time.perf_counter()
    for _ in range(calls):
        responses.decode(body, Context())
    return time.perf_counter() - began


def encode_round(calls: int, stream: bool) -> float:
    request = responses.decode(msgspec.json.encode(BODY), Context())
    began = time.perf_counter()
    for _ in range(calls):
        if stream:
            encoder = responses.encode_stream(request, "sim-small")
            for chunk in CHUNKS:
                encoder.event(chunk)
            encoder.end()
        else:
            responses.encode_completion(ANSWER, request, "sim-small")
    return time.perf_counter() - began


async def main(calls: int, rounds: int) -> dict[str, Any]:
    stack = _stack()
    totals: dict[str, list[float]] = {k: [] for k in ("gw", "gw_stream", "decode", "encode", "encode_stream")}
    await gateway_round(stack, 200, False, -1_000_000)  # warm up
    gc.collect()
    for r in range(rounds):
        totals["gw"].append(await gateway_round(stack, calls, False, r * calls * 2))
        totals["decode"].append(decode_round(calls))
        totals["gw_stream"].append(await gateway_round(stack, calls, True, r * calls * 2 + calls))
        totals["encode"].append(encode_round(calls, False))
        totals["encode_stream"].append(encode_round(calls, True))
    us = {k: min(v) / calls * 1e6 for k, v in totals.items()}  # best round: least noise
    per_chunk = us["encode_stream"] / len(CHUNKS)
    rows = [
        ["gateway, complete (decode + stack + encode)", us["gw"], "", 1.0],
        ["gateway, streamed", us["gw_stream"], "", 1.0],
        ["responses request in (decode)", us["decode"], "", us["decode"] / us["gw"]],
        ["responses answer out, complete", us["encode"], "", us["encode"] / us["gw"]],
        ["responses answer out, streamed", us["encode_stream"], per_chunk, us["encode_stream"] / us["gw_stream"]],
        ["in + out, complete", us["decode"] + us["encode"], "", (us["decode"] + us["encode"]) / us["gw"]],
        [
            "in + out, streamed",
            us["decode"] + us["encode_stream"],
            "",
            (us["decode"] + us["encode_stream"]) / us["gw_stream"],
        ],
    ]
    print(f"{calls} calls x {rounds} interleaved rounds, best round; {len(CHUNKS)} chunks per stream")
    print_table(["case", "µs per request", "µs per chunk", "share of gateway"], rows)
    return {"calls": calls, "rounds": rounds, "chunks": len(CHUNKS), "us": us, "us_per_chunk": per_chunk}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = anyio.run(main, args.calls, args.rounds)
    print(f"wrote {write_results('translation_responses', result)}")
