"""A simulated model: the embedded default upstream and a test double without network.

It answers in-process with a deterministic text, streams it token by token with a
configurable time to first token and tokens per second, reports usage, and injects
faults at configured rates: upstream error statuses, timeouts (a long stall, then a
retryable error) and streams cut mid-way. ``ttft=0`` and ``tokens_per_second=0`` give a
zero-latency upstream for benchmarks of the gateway itself. A request with ``tools``
(and ``tool_choice`` not ``"none"``) whose last message is not a tool result is answered
with a call of the chosen (or first) tool, streamed as OpenAI streams tool calls: a first
delta with ``index``, ``id``, ``type`` and name, the arguments in pieces. An
embeddings request (``request.embedding``) is answered with deterministic unit vectors
(``embedding_dimensions`` long unless it asks for ``dimensions``): the same input
gives the same vector, different inputs far-apart ones.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import struct
import time
from array import array
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from .._clock import Clock, system_clock
from .._response import Response, tool_call_deltas
from .._tokens import input_tokens
from .._types import Chunk, Completion, EmbeddingInput, Request, Usage
from ..errors import ProviderError

__all__ = ["SimulatedProvider"]

_FILLER_TEXT = (
    "the onion answers this request with a simulated completion so that every layer "
    "of the stack can be exercised without a network or a real model behind it"
)
_FILLER = tuple(_FILLER_TEXT.split(" "))
MAX_DIMENSIONS = 4096
"""The largest embedding the simulated provider (and the fake upstream) make; past it a
400, as a real model's past its size (OpenAI's largest has 3072 dimensions)."""


class SimulatedProvider:
    """An in-process model that streams a made-up answer.

    - ``ttft``: seconds before the first token; ``tokens_per_second``: pace after it
      (``0`` means no delay at all).
    - ``answer_tokens``: length of the answer in words (capped by the request's
      ``max_tokens``).
    - ``error_rates``: ``{status: probability}``, e.g. ``{429: 0.05, 500: 0.01}``; a 429
      carries ``retry_after``.
    - ``timeout_rate``: probability of stalling ``stall_seconds`` then failing as a read
      timeout; ``cut_rate``: probability that a stream breaks half-way.
    - ``seed`` makes the faults reproducible.
    - ``embedding_dimensions``: the length of its embedding vectors when the request
      does not set ``dimensions``; ``dimensions`` above 4096 are a 400, as a real
      model's past its size.
    """

    kind = "simulated"

    def __init__(
        self,
        *,
        name: str = "simulated",
        models: Sequence[str] = (),
        ttft: float = 0.05,
        tokens_per_second: float = 100.0,
        answer_tokens: int = 24,
        error_rates: Mapping[int, float] | None = None,
        timeout_rate: float = 0.0,
        cut_rate: float = 0.0,
        stall_seconds: float = 30.0,
        retry_after: float = 1.0,
        seed: int | None = None,
        clock: Clock | None = None,
        embedding_dimensions: int = 256,
    ) -> None:
        self.name = name
        self.models = tuple(models)
        self.ttft = ttft
        self.interval = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
        self.answer_tokens = answer_tokens
        self.error_rates = dict(error_rates or {})
        self.timeout_rate = timeout_rate
        self.cut_rate = cut_rate
        self.stall_seconds = stall_seconds
        self.retry_after = retry_after
        self.clock = clock or system_clock
        self.embedding_dimensions = embedding_dimensions
        self._random = random.Random(seed)
        self._ids = itertools.count(1)
        self.calls = 0

    def __repr__(self) -> str:
        return f"<SimulatedProvider {self.name!r} models={list(self.models)}>"

    def _fault(self, request: Request) -> ProviderError | None:
        roll = self._random.random
        for status, rate in self.error_rates.items():
            if rate and roll() < rate:
                retryable = status in (408, 409, 429) or status >= 500
                return ProviderError(
                    f"{self.name}: simulated upstream status {status}",
                    upstream_status=status,
                    retryable=retryable,
                    retry_after=self.retry_after if status == 429 else None,
                    provider=self.name,
                    model=request.model,
                )
        return None

    def _tool_calls(self, request: Request) -> list[dict[str, Any]] | None:
        tools = request.tools
        if not tools or request.tool_choice == "none" or (request.messages and request.messages[-1].role == "tool"):
            return None
        choice = request.tool_choice
        name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        name = name or (tools[0].get("function") or {}).get("name") or "tool"
        said = request.messages[-1].text[:40] if request.messages else ""
        arguments = json.dumps({"input": said})
        return [
            {"id": f"call_sim{next(self._ids)}", "type": "function", "function": {"name": name, "arguments": arguments}}
        ]

    def _words(self, request: Request) -> list[str]:
        limit = request.answer_tokens_limit
        count = self.answer_tokens if limit is None else max(1, min(self.answer_tokens, limit))
        last = request.messages[-1].text if request.messages else ""
        head = f"Simulated answer to: {last[:40]}".split() if last else ["Simulated", "answer."]
        words = (head + list(_FILLER) * (1 + count // len(_FILLER)))[:count]
        return [w + " " for w in words[:-1]] + [words[-1] + "."]

    async def _wait(self, seconds: float, request: Request) -> None:
        if seconds > 0:
            began = time.perf_counter()
            await self.clock.sleep(seconds)
            request.context.upstream_seconds += time.perf_counter() - began

    async def _stall(self, request: Request) -> ProviderError:
        await self._wait(self.stall_seconds, request)
        return ProviderError(
            f"{self.name}: simulated read timeout", retryable=True, provider=self.name, model=request.model
        )

    async def __call__(self, request: Request) -> Response:
        self.calls += 1
        error = self._fault(request)
        if error is not None:
            await self._wait(self.ttft, request)
            raise error
        stall = self.timeout_rate > 0 and self._random.random() < self.timeout_rate
        if request.embedding is not None:
            if stall:
                raise await self._stall(request)
            return await self._embed(request, request.embedding)
        cut = request.stream and self.cut_rate > 0 and self._random.random() < self.cut_rate
        tool_calls = self._tool_calls(request)
        words = [] if tool_calls else self._words(request)
        prompt = sum(len(m.text.split()) + 3 for m in request.messages)
        answered = len(words) or 8
        usage = Usage(prompt, answered, prompt + answered)
        if not request.stream:
            if stall:
                raise await self._stall(request)
            await self._wait(self.ttft + self.interval * answered, request)
            completion = Completion(
                content="".join(words),
                model=request.model,
                tool_calls=tool_calls,
                finish_reason="tool_calls" if tool_calls else "stop",
                usage=usage,
                id=f"chatcmpl-sim{next(self._ids)}",
                created=int(time.time()),
                content_null=bool(tool_calls),
            )
            answer = Response.complete(completion, served_by=self.name)
        else:
            chunks = (
                self._stream_tool_calls(request, tool_calls, usage)
                if tool_calls
                else self._stream(request, words, usage, stall, cut)
            )
            answer = Response.stream(chunks, served_by=self.name, model=request.model)
        answer.provider = self.kind
        return answer

    async def _embed(self, request: Request, embedding: EmbeddingInput) -> Response:
        await self._wait(self.ttft, request)
        dimensions = embedding.dimensions or self.embedding_dimensions
        if dimensions > MAX_DIMENSIONS:
            # As a real model's: past its size a 400 naming the field (a huge value
            # would build a vector until memory runs out).
            message = f"'dimensions' must be at most {MAX_DIMENSIONS} for this model"
            raise ProviderError(
                f"{self.name}: {message}",
                upstream_status=400,
                provider=self.name,
                model=request.model,
                public_message=message,
                param="dimensions",
            )
        value = embedding.input
        single = isinstance(value, str) or isinstance(value[0], int)
        items: list[Any] = [value] if single else list(value)
        vectors: list[list[float] | str] = [_unit_vector(item, dimensions) for item in items]
        tokens = input_tokens(request)
        completion = Completion(
            model=request.model, usage=Usage(tokens, 0, tokens), finish_reason=None, embeddings=vectors
        )
        answer = Response.complete(completion, served_by=self.name)
        answer.provider = self.kind
        return answer

    async def _stream_tool_calls(
        self, request: Request, tool_calls: list[dict[str, Any]], usage: Usage
    ) -> AsyncGenerator[Chunk, None]:
        await self._wait(self.ttft, request)
        yield Chunk(role="assistant", model=request.model)
        for deltas in tool_call_deltas(tool_calls, 8):
            if self.interval:
                await self._wait(self.interval, request)
            yield Chunk(tool_calls=deltas)
        yield Chunk(finish_reason="tool_calls", usage=usage)

    async def _stream(
        self, request: Request, words: list[str], usage: Usage, stall: bool, cut: bool
    ) -> AsyncGenerator[Chunk, None]:
        await self._wait(self.ttft, request)
        cut_at = len(words) // 2 if cut else -1
        for index, word in enumerate(words):
            if index == cut_at or (stall and index == len(words) // 2):
                raise (
                    (await self._stall(request))
                    if stall
                    else ProviderError(
                        f"{self.name}: simulated stream cut mid-way",
                        retryable=True,
                        provider=self.name,
                        model=request.model,
                    )
                )
            if index and self.interval:
                await self._wait(self.interval, request)
            if index == 0:
                yield Chunk(content=word, role="assistant", model=request.model)
            else:
                yield Chunk(content=word)
        yield Chunk(finish_reason="stop", usage=usage)


def _unit_vector(item: str | list[int], dimensions: int) -> list[float]:
    """A deterministic unit vector for one input, its values exact in float32 (so the
    base64 and the float answers hold the same numbers)."""
    seed = item.encode() if isinstance(item, str) else b"ids:" + json.dumps(item).encode()
    raw = hashlib.shake_256(seed).digest(dimensions * 4)
    values = [(v / 2**31) - 1.0 for v in struct.unpack(f"<{dimensions}I", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return array("f", [v / norm for v in values]).tolist()
