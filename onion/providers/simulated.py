"""A simulated model: the embedded default upstream and a test double without network.

It answers in-process with a deterministic text, streams it token by token with a
configurable time to first token and tokens per second, reports usage, and injects
faults at configured rates: upstream error statuses, timeouts (a long stall, then a
retryable error) and streams cut mid-way. ``ttft=0`` and ``tokens_per_second=0`` give a
zero-latency upstream for benchmarks of the gateway itself.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import AsyncGenerator, Mapping, Sequence

from .._clock import Clock, system_clock
from .._response import Response
from .._types import Chunk, Completion, Request, Usage
from ..errors import ProviderError

__all__ = ["SimulatedProvider"]

_FILLER_TEXT = (
    "the onion answers this request with a simulated completion so that every layer "
    "of the stack can be exercised without a network or a real model behind it"
)
_FILLER = tuple(_FILLER_TEXT.split(" "))


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
        cut = request.stream and self.cut_rate > 0 and self._random.random() < self.cut_rate
        words = self._words(request)
        prompt = sum(len(m.text.split()) + 3 for m in request.messages)
        usage = Usage(prompt, len(words), prompt + len(words))
        if not request.stream:
            if stall:
                raise await self._stall(request)
            await self._wait(self.ttft + self.interval * len(words), request)
            completion = Completion(
                content="".join(words),
                model=request.model,
                usage=usage,
                id=f"chatcmpl-sim{next(self._ids)}",
                created=int(time.time()),
            )
            answer = Response.complete(completion, served_by=self.name)
        else:
            answer = Response.stream(
                self._stream(request, words, usage, stall, cut), served_by=self.name, model=request.model
            )
        answer.provider = self.kind
        return answer

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
