"""One Response interface for complete and streamed answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
import anyio.lowlevel
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import AnswerEnd, Chunk, Completion, ProviderError, Response, Usage
from onion.testing import FakeClock


async def _gen(pieces: list[str], log: list[str], fail_at: int | None = None):  # type: ignore[no-untyped-def]
    try:
        for index, piece in enumerate(pieces):
            if index == fail_at:
                raise ProviderError("cut", retryable=True)
            yield Chunk(content=piece)
        yield Chunk(finish_reason="stop", usage=Usage(3, len(pieces), 3 + len(pieces)))
    finally:
        log.append("closed")


@settings(max_examples=50, deadline=None)
@given(pieces=st.lists(st.text(max_size=5), max_size=8))
async def test_result_of_a_stream_joins_its_chunks(pieces: list[str]) -> None:
    log: list[str] = []
    response = Response.stream(_gen(pieces, log), model="m")
    completion = await response.result()
    assert completion.content == "".join(pieces)
    assert completion.usage == Usage(3, len(pieces), 3 + len(pieces))
    assert completion.model == "m" and completion.finish_reason == "stop"
    assert log == ["closed"]
    assert not response.is_stream and await response.result() is completion


@settings(max_examples=50, deadline=None)
@given(text=st.text(max_size=200), piece=st.integers(1, 20))
async def test_replay_streams_the_same_answer(text: str, piece: int) -> None:
    stored = Completion(content=text, model="m", usage=Usage(1, 2, 3))
    chunks = [chunk async for chunk in Response.replay(stored, piece_chars=piece)]
    assert "".join(c.content for c in chunks) == text
    assert chunks[-1].usage == Usage(1, 2, 3) and chunks[-1].finish_reason == "stop"
    assert await Response.replay(stored, piece_chars=piece).result() == Completion(
        content=text, model="m", usage=Usage(1, 2, 3)
    )


async def test_a_complete_answer_reads_as_one_chunk() -> None:
    response = Response.complete(Completion(content="hello", model="m"))
    chunks = [chunk async for chunk in response]
    assert [c.content for c in chunks] == ["hello"] and chunks[0].finish_reason == "stop"


@pytest.mark.parametrize("streamed", [True, False])
async def test_wrap_and_on_end_work_for_both_kinds(streamed: bool) -> None:
    log: list[str] = []
    make = (
        (lambda: Response.stream(_gen(["a", "b"], log), model="m"))
        if streamed
        else (lambda: Response.complete(Completion(content="ab", model="m")))
    )
    seen: list[str] = []
    ended: list[AnswerEnd] = []

    async def upper(source: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        async for chunk in source:
            seen.append(chunk.content)
            yield msgspec.structs.replace(chunk, content=chunk.content.upper())

    response = await make().wrap(upper).on_end(ended.append)
    completion = await response.result()
    assert completion.content == "AB"
    assert "".join(seen) == "ab"
    [end] = ended
    assert end.ok and end.outcome == "ok" and end.completion.content == "AB" and end.error is None
    assert end.chunks == (3 if streamed else 1) and end.first_chunk_at is not None
    assert end.first_chunk_at <= end.ended_at


async def test_a_complete_answer_ends_at_once_without_chunks() -> None:
    ended: list[AnswerEnd] = []
    answer = Completion(content="done", model="m")
    await Response.complete(answer).on_end(ended.append)
    [end] = ended
    assert end.ok and end.completion is answer and end.chunks == 0 and end.first_chunk_at is None


async def test_on_end_reports_failure_and_early_close() -> None:
    ended: list[AnswerEnd] = []
    log: list[str] = []
    response = await Response.stream(_gen(["a", "b", "c"], log, fail_at=2)).on_end(ended.append)
    with pytest.raises(ProviderError):
        await response.result()
    [failed] = ended
    assert not failed.ok and isinstance(failed.error, ProviderError) and failed.outcome == "error"
    assert failed.completion.content == "ab" and not failed.cancelled  # what had arrived

    ended.clear()
    response = await Response.stream(_gen(["a", "b", "c"], log)).on_end(ended.append)
    async with response:
        async for _ in response:
            break
    [stopped] = ended
    assert stopped.cancelled and stopped.error is None and stopped.outcome == "cancelled"
    assert stopped.completion.content == "a"
    assert log == ["closed", "closed"]


async def test_on_end_of_a_stream_closed_before_its_first_read_reports_cancelled() -> None:
    ended: list[AnswerEnd] = []
    log: list[str] = []
    response = await Response.stream(_gen(["a"], log)).on_end(ended.append)
    await response.aclose()
    [end] = ended
    assert end.cancelled and end.chunks == 0 and end.first_chunk_at is None


async def test_successive_on_end_calls_share_one_pass_and_all_run() -> None:
    ended: list[str] = []
    response = Response.stream(_gen(["a", "b"], []))

    def failing(end: AnswerEnd) -> None:
        ended.append("failing")
        raise RuntimeError("a callback's own bug")

    await response.on_end(lambda end: ended.append("inner"), chunk_times=True)
    watch = response._watch
    await response.on_end(failing)
    await response.on_end(lambda end: ended.append(f"outer {len(end.chunk_times or [])}"))
    assert response._watch is watch  # one wrapper serves all three
    with pytest.raises(RuntimeError, match="own bug"):
        await response.result()
    assert ended == ["inner", "failing", "outer 3"]


async def test_held_time_is_the_consumers_time_between_chunks() -> None:
    clock = FakeClock(start=0.0)
    ended: list[AnswerEnd] = []
    response = await Response.stream(_gen(["a", "b"], [])).on_end(ended.append, now=clock.now)
    async for _ in response:
        clock.advance(0.5)
    [end] = ended
    assert end.held == pytest.approx(1.5) and end.ended_at == pytest.approx(1.5)


async def test_async_on_end_callback_is_awaited() -> None:
    stored: list[str] = []

    async def store(end: AnswerEnd) -> None:
        await anyio.lowlevel.checkpoint()
        if end.ok:
            stored.append(end.completion.content)

    response = await Response.stream(_gen(["x", "y"], [])).on_end(store)
    assert [c.content async for c in response] == ["x", "y", ""]
    assert stored == ["xy"]


async def test_replace_completion_keeps_every_other_field() -> None:
    response = Response.complete(Completion(content="secret", model="m"), served_by="p")
    response.cache, response.provider, response.headers["x"] = "miss", "openai", "1"
    response.replace_completion(Completion(content="[REDACTED]", model="m"))
    assert (await response.result()).content == "[REDACTED]"
    assert (response.cache, response.provider, response.headers, response.served_by) == (
        "miss",
        "openai",
        {"x": "1"},
        "p",
    )
    streamed = Response.stream(_gen(["a"], []))
    with pytest.raises(RuntimeError, match="complete answer"):
        streamed.replace_completion(Completion())


async def test_tool_call_deltas_are_merged() -> None:
    async def gen():  # type: ignore[no-untyped-def]
        yield Chunk(
            tool_calls=[{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_", "arguments": ""}}]
        )
        yield Chunk(tool_calls=[{"index": 0, "function": {"name": "weather", "arguments": '{"city":'}}])
        yield Chunk(tool_calls=[{"index": 0, "function": {"arguments": '"Tokyo"}'}}])
        yield Chunk(finish_reason="tool_calls")

    completion = await Response.stream(gen()).result()
    assert completion.tool_calls == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Tokyo"}'}}
    ]
    assert completion.finish_reason == "tool_calls"


async def test_a_stream_can_be_read_only_once() -> None:
    response = Response.stream(_gen(["a"], []))
    [c async for c in response]
    with pytest.raises(RuntimeError, match="already been read"):
        await response.result()


def test_a_response_needs_exactly_one_body() -> None:
    with pytest.raises(ValueError):
        Response()


async def _passed(source: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    async for chunk in source:
        yield chunk


_chunk = st.builds(
    Chunk,
    content=st.text(max_size=4),
    finish_reason=st.sampled_from([None, None, "stop", "length"]),
    usage=st.sampled_from([None, Usage(1, 2, 3), Usage(4, 5, 9)]),
    model=st.sampled_from([None, "m1", "m2"]),
    index=st.sampled_from([0, 0, 0, 1]),
)


@settings(max_examples=60)
@given(chunks=st.lists(_chunk, max_size=8))
async def test_an_end_without_content_reports_what_the_whole_answer_reports(chunks: list[Chunk]) -> None:
    # The law behind ``on_end(content=False)``: the model, usage, finish reason, chunk
    # count and times are those a callback reading the whole answer gets.
    async def gen() -> AsyncIterator[Chunk]:
        for chunk in chunks:
            yield chunk

    light: list[AnswerEnd] = []
    full: list[AnswerEnd] = []
    response = Response.stream(gen(), model="asked")
    response = await response.on_end(light.append, content=False)
    response.wrap(_passed)  # something in between: the next watch is its own
    response = await response.on_end(full.append)
    assert [c.content async for c in response] == [c.content for c in chunks]
    (a,), (b,) = light, full
    assert (a.completion.model, a.completion.usage, a.completion.finish_reason, a.chunks) == (
        b.completion.model,
        b.completion.usage,
        b.completion.finish_reason,
        b.chunks,
    )
    assert a.completion.content == ""


async def test_a_watch_shared_by_a_callback_reading_content_gathers_it() -> None:
    seen: list[str] = []

    async def gen() -> AsyncIterator[Chunk]:
        yield Chunk(content="a")
        yield Chunk(content="b", finish_reason="stop")

    response = Response.stream(gen())
    await response.on_end(lambda end: seen.append("light:" + end.completion.content), content=False)
    await response.on_end(lambda end: seen.append("full:" + end.completion.content))
    assert (await response.result()).content == "ab"
    assert sorted(seen) == ["full:ab", "light:ab"]  # one pass, one answer for both


async def test_held_false_reads_no_held_time_unless_a_sharer_asks_for_it() -> None:
    clock = FakeClock(start=0.0)
    alone: list[AnswerEnd] = []
    response = await Response.stream(_gen(["a", "b"], [])).on_end(alone.append, now=clock.now, held=False)
    async for _ in response:
        clock.advance(0.5)
    assert alone[0].held == 0.0 and alone[0].first_chunk_at == 0.0 and alone[0].ended_at == pytest.approx(1.5)
    shared: list[AnswerEnd] = []
    response = Response.stream(_gen(["a", "b"], []))
    now = clock.now  # one clock object: the two calls share one pass
    await response.on_end(shared.append, now=now, held=False)
    watch = response._watch
    await response.on_end(shared.append, now=now)  # the same pass: now it measures
    assert response._watch is watch
    async for _ in response:
        clock.advance(0.5)
    assert [end.held for end in shared] == [pytest.approx(1.5)] * 2


@settings(max_examples=40, deadline=None)
@given(pieces=st.lists(st.text(max_size=3), max_size=6), fail_at=st.integers(0, 7), held=st.booleans())
async def test_a_check_that_raises_ends_the_stream_with_its_error_for_every_sharer(
    pieces: list[str], fail_at: int, held: bool
) -> None:
    # The law: a check sees each chunk before it passes on; what it raises at the k-th
    # chunk is what the consumer gets after the first k chunks, and what every callback
    # sharing the pass reports, with those k chunks; the producer is closed. A check that
    # never raises changes nothing.
    log: list[str] = []
    seen: list[Chunk] = []
    ended: list[AnswerEnd] = []

    def check(chunk: Chunk) -> None:
        seen.append(chunk)
        if len(seen) > fail_at:
            raise ProviderError("checked", retryable=False)

    response = Response.stream(_gen(pieces, log))
    await response.on_end(ended.append, content=False, held=held, check=check)
    await response.on_end(ended.append)
    received: list[Chunk] = []
    total = len(pieces) + 1
    if fail_at < total:
        with pytest.raises(ProviderError, match="checked"):
            async for chunk in response:
                received.append(chunk)
        assert len(received) == fail_at
        assert all(end.error is not None and str(end.error) == "checked" for end in ended)
        assert all(end.chunks == fail_at for end in ended)
        assert ended[1].completion.content == "".join(pieces[:fail_at])
    else:
        async for chunk in response:
            received.append(chunk)
        assert len(received) == total and all(end.ok for end in ended)
        assert ended[1].completion.content == "".join(pieces)
    assert len(ended) == 2 and log == ["closed"]
    assert seen[: len(received)] == received


@pytest.mark.parametrize("ending", ["read", "closed early", "failed"])
async def test_a_finished_stream_is_freed_without_the_garbage_collector(ending: str) -> None:
    # A layer's end callback that refers to its response (as most do) must not keep the
    # finished stream alive in a cycle: the watch drops its callbacks once they ran.
    import gc
    import weakref

    class Marker:
        pass

    async def chunks() -> AsyncIterator[Chunk]:
        for piece in ("a", "b", "c"):
            yield Chunk(content=piece)
        if ending == "failed":
            raise ProviderError("cut", retryable=True)

    seen: list[bool] = []

    def callback(response: Response, marker: Marker) -> Callable[[AnswerEnd], None]:
        return lambda end: seen.append(marker is not None and response.served_by == "test")

    marker = Marker()
    alive = weakref.ref(marker)  # held by the callback only (a Response takes no weak reference)
    response = Response.stream(chunks(), served_by="test")
    response = await response.on_end(callback(response, marker))
    del marker
    gc.disable()
    try:
        failed = False
        try:
            async with response:
                async for _ in response:
                    if ending == "closed early":
                        break
        except ProviderError:
            failed = True
        del response
        assert alive() is None, "the finished stream waits for the garbage collector"
    finally:
        gc.enable()
    assert seen == [True] and failed == (ending == "failed")


@pytest.mark.parametrize("cancelled", [False, True])
@pytest.mark.parametrize("error", [None, ProviderError("upstream down", retryable=True)])
def test_answer_end_failure_is_the_error_or_a_stopped_consumer(error: BaseException | None, cancelled: bool) -> None:
    # ``failure`` is set once, at construction: the error, else ``GeneratorExit`` for a
    # consumer that stopped, else ``None`` (what metrics and the log line read it for).
    end = AnswerEnd(Completion(), error, cancelled=cancelled)
    if error is not None:
        assert end.failure is error
    elif cancelled:
        assert type(end.failure) is GeneratorExit
        assert end.outcome == "cancelled" and not end.ok
    else:
        assert end.failure is None and end.ok
    assert AnswerEnd.failed(RuntimeError("x"), 1.0).failure.args == ("x",)  # type: ignore[union-attr]


async def test_a_complete_answers_end_ignores_chunk_times_and_is_shared() -> None:
    # Metrics asks for chunk times without asking whether the answer streams: a complete
    # answer has no chunks, and every layer on the same clock gets the one end.
    response = Response.complete(Completion(content="hi"))
    ends: list[AnswerEnd] = []
    now = FakeClock().now  # one bound method, as a layer keeps its clock
    await response.on_end(ends.append, now=now, chunk_times=True, content=False)
    await response.on_end(ends.append, now=now, held=False)
    assert ends[0] is ends[1]
    assert ends[0].chunk_times is None and ends[0].first_chunk_at is None and ends[0].chunks == 0
