"""One Response interface for complete and streamed answers."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import Chunk, Completion, ProviderError, Response, Usage


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
async def test_observe_map_and_on_end_work_for_both_kinds(streamed: bool) -> None:
    log: list[str] = []
    make = (
        (lambda: Response.stream(_gen(["a", "b"], log), model="m"))
        if streamed
        else (lambda: Response.complete(Completion(content="ab", model="m")))
    )
    seen: list[str] = []
    ended: list[tuple[Completion | None, BaseException | None]] = []
    response = make().observe(lambda chunk: seen.append(chunk.content))
    response = response.map(lambda chunk: Chunk(content=chunk.content.upper(), finish_reason=chunk.finish_reason))
    response = await response.on_end(lambda completion, error: ended.append((completion, error)))
    completion = await response.result()
    assert completion.content == "AB"
    assert "".join(seen) == "ab"
    assert len(ended) == 1 and ended[0][0] is not None and ended[0][0].content == "AB" and ended[0][1] is None


async def test_on_end_reports_failure_and_early_close() -> None:
    ended: list[tuple[Completion | None, BaseException | None]] = []
    log: list[str] = []
    response = await Response.stream(_gen(["a", "b", "c"], log, fail_at=2)).on_end(lambda c, e: ended.append((c, e)))
    with pytest.raises(ProviderError):
        await response.result()
    assert ended[0][0] is None and isinstance(ended[0][1], ProviderError)

    ended.clear()
    response = await Response.stream(_gen(["a", "b", "c"], log)).on_end(lambda c, e: ended.append((c, e)))
    async with response:
        async for _ in response:
            break
    assert ended == [(None, None)]
    assert log == ["closed", "closed"]


async def test_async_on_end_callback_is_awaited() -> None:
    stored: list[str] = []

    async def store(completion: Completion | None, error: BaseException | None) -> None:
        await anyio.lowlevel.checkpoint()
        if completion is not None:
            stored.append(completion.content)

    response = await Response.stream(_gen(["x", "y"], [])).on_end(store)
    assert [c.content async for c in response] == ["x", "y", ""]
    assert stored == ["xy"]


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
