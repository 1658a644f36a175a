"""timeout: total, first-chunk and idle deadlines; the deadline on the context."""

from __future__ import annotations

import anyio
import pytest

from middlewares.resilience.retry import Retry
from middlewares.resilience.timeout import Deadline
from onion import CallNext, ConfigError, Message, Request, Response, Stack, Timeout
from onion.testing import FakeClock, Reply, ScriptedProvider


def _request(stream: bool = False) -> Request:
    return Request(model="m", messages=[Message("user", "hi")], stream=stream)


async def test_a_slow_complete_answer_times_out_with_phase_total() -> None:
    provider = ScriptedProvider([Reply("late", first_delay=5)])
    with pytest.raises(Timeout) as info:
        await Stack([Deadline(seconds=0.05)], provider)(_request())
    assert info.value.phase == "total"


async def test_a_fast_answer_passes_and_the_deadline_is_on_the_context() -> None:
    seen: list[float | None] = []

    async def spy(request: Request, call_next: CallNext) -> Response:
        seen.append(request.context.deadline)
        return await call_next(request)

    before = anyio.current_time()
    request = _request()
    response = await Stack([Deadline(seconds=2), spy], ScriptedProvider())(request)
    assert (await response.result()).content == "ok"
    assert seen[0] is not None and before + 2 <= seen[0] <= anyio.current_time() + 2
    # A complete answer puts the context back at once: no deadline, no phase limits left.
    assert request.context.deadline is None and request.context.phases is None


async def test_an_earlier_outer_deadline_wins() -> None:
    request = _request()
    request.context.deadline = anyio.current_time() + 0.5
    await Stack([Deadline(seconds=30)], ScriptedProvider())(request)
    assert request.context.deadline <= anyio.current_time() + 0.5


async def test_first_chunk_limit_on_a_stream() -> None:
    provider = ScriptedProvider([Reply("a b", first_delay=5)])
    stack = Stack([Deadline(seconds=10, first_token_seconds=0.05)], provider)
    with pytest.raises(Timeout) as info:
        await (await stack(_request(stream=True))).result()
    assert info.value.phase == "first_chunk"
    assert provider.streams[0].closed


async def test_idle_limit_between_chunks_and_the_stream_is_closed() -> None:
    provider = ScriptedProvider([Reply("a b c d", delay=5)])
    stack = Stack([Deadline(seconds=10, first_token_seconds=1, idle_seconds=0.05)], provider)
    received: list[str] = []
    with pytest.raises(Timeout) as info:
        async for chunk in await stack(_request(stream=True)):
            received.append(chunk.content)
    assert info.value.phase == "idle"
    assert received == ["a "]
    assert provider.streams[0].closed


async def test_total_limit_on_a_steady_stream() -> None:
    provider = ScriptedProvider([Reply(" ".join(["w"] * 50), delay=0.01)])
    stack = Stack([Deadline(seconds=0.1, first_token_seconds=None, idle_seconds=None)], provider)
    with pytest.raises(Timeout) as info:
        await (await stack(_request(stream=True))).result()
    assert info.value.phase == "total"


async def test_a_stalled_stream_is_resumed_by_retry_inside_the_timeout() -> None:
    stalled = Reply("one two three four", delay=0.0)
    # The first attempt stalls after two chunks; the second answers at once.
    calls = {"n": 0}

    def script(request: Request, index: int) -> Reply:
        calls["n"] += 1
        return (
            Reply("one two three four", chunks=("one ", "two ", "three ", "four"), delay=5) if index == 0 else stalled
        )

    provider = ScriptedProvider(script)
    stack = Stack([Deadline(seconds=5, first_token_seconds=1, idle_seconds=0.05), Retry(clock=FakeClock())], provider)
    result = await (await stack(_request(stream=True))).result()
    assert result.content == "one two three four"
    assert calls["n"] == 2
    assert all(s.closed for s in provider.streams)


def test_toml_parameters_and_validation() -> None:
    stack = Stack.from_config(
        [{"use": "timeout", "seconds": 3, "first_token_seconds": 1, "idle_seconds": 0.5}], ScriptedProvider()
    )
    layer = stack.layers[0]
    assert (layer.seconds, layer.first_token_seconds, layer.idle_seconds) == (3, 1, 0.5)
    with pytest.raises(ConfigError):
        Stack.from_config([{"use": "timeout", "seconds": -1}], ScriptedProvider())


def test_inside_retry_is_accepted_and_bounds_each_attempt() -> None:
    # Issue 17 changed this: a timeout inside retry is an attempt timeout, not an error.
    stack = Stack([Retry(), Deadline()], ScriptedProvider())
    assert stack.layers[1].position(frozenset({"retry"})) == "attempt"
    assert stack.layers[1].position(frozenset()) == "total"


async def test_with_retry_and_fallback_inside_the_total_deadline_still_ends_a_long_stream() -> None:
    from middlewares.resilience.fallback import Fallback

    provider = ScriptedProvider(default=Reply(" ".join(["w"] * 100), delay=0.01))
    stack = Stack(
        [Deadline(seconds=0.1, first_token_seconds=1, idle_seconds=1), Fallback(["m", "n"]), Retry(clock=FakeClock())],
        provider,
    )
    with pytest.raises(Timeout) as info:
        await (await stack(_request(stream=True))).result()
    assert info.value.phase == "total"
    assert provider.calls == 1  # out of time: neither a retry nor a fallback was started
    assert all(s.closed for s in provider.streams)


@pytest.mark.parametrize("where", ["first attempt", "resumed attempt", "mid-stream"])
async def test_the_total_deadline_holds_over_http_without_the_providers_own_scopes(where: str) -> None:
    # Under a timeout layer the provider leaves the deadline to the layers (no cancel
    # scope per read); every wait must still end at the deadline, including a resumed
    # attempt that opens outside any pull.
    import time

    from onion.providers import OpenAIProvider
    from onion.testing.upstream import FakeUpstream, Fault

    async with FakeUpstream() as upstream:
        if where == "first attempt":
            upstream.push(Fault(delay=5))
        elif where == "resumed attempt":
            upstream.push(Fault(cut_after=2))
            upstream.push(Fault(delay=5))
        else:
            upstream.push(Fault(stall_after=2, stall=5))
        provider = OpenAIProvider(base_url=upstream.base_url, read_timeout=60)
        stack = Stack([Deadline(seconds=0.6, first_token_seconds=None, idle_seconds=None), Retry()], provider)
        request = Request(model="m", messages=[Message("user", "a b c d e f")], stream=True)
        began = time.perf_counter()
        try:
            with pytest.raises(Timeout) as caught:
                await (await stack(request)).result()
        finally:
            await provider.aclose()
        assert time.perf_counter() - began < 2.0
        assert caught.value.phase == "total"
        assert request.context.deadline_guarded is not None  # the handler boundary held it
        assert request.context.deadline is None  # and the layer put the context back


async def test_a_layers_own_slow_stream_fails_at_the_first_chunk_past_the_deadline() -> None:
    # No attempt boundary bounds a stream a layer makes itself (a replay, a rewrite): the
    # timeout checks each chunk that reaches it; the context's deadline is put back when
    # the stream ends, and the layer's stream is closed.
    closed: list[bool] = []

    async def slow_chunks(response: Response) -> Response:
        async def chunks(source: object) -> object:
            try:
                async for chunk in source:  # type: ignore[attr-defined]
                    yield chunk
                    await anyio.sleep(0.2 if chunk.content == "b " else 0)
            finally:
                closed.append(True)
                await source.aclose()  # type: ignore[attr-defined]

        return response.wrap(chunks)  # type: ignore[arg-type]

    async def slow(request: Request, call_next: CallNext) -> Response:
        return await slow_chunks(await call_next(request))

    request = _request(stream=True)
    provider = ScriptedProvider([Reply("a b c d")])
    stack = Stack([Deadline(seconds=0.1, first_token_seconds=None, idle_seconds=None), slow], provider)
    received: list[str] = []
    response = await stack(request)
    assert request.context.deadline is not None  # kept while the stream runs
    with pytest.raises(Timeout) as info:
        async for chunk in response:
            received.append(chunk.content)
    assert info.value.phase == "total"
    assert received == ["a ", "b "]
    assert closed == [True]
    assert request.context.deadline is None and request.context.phases is None
