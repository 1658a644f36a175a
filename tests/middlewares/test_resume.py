"""Stream resumption after commit: exact continuation, divergence, continue mode, off."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlewares.fallback import Fallback
from middlewares.retry import Retry
from onion import AllProvidersFailed, Message, ProviderError, Request, Stack
from onion.testing import Fail, FakeClock, Reply, ScriptedProvider


def _request(**options: object) -> Request:
    request = Request(model="m", messages=[Message("user", "hi")], stream=True)
    request.context.options.update(options)
    return request


def _cut() -> ProviderError:
    return ProviderError("connection reset mid-stream", retryable=True)


@settings(max_examples=50, deadline=None)
@given(
    words=st.lists(st.text("abc xyz", min_size=1, max_size=5), min_size=1, max_size=12),
    cut=st.integers(0, 12),
    rechunk=st.integers(1, 7),
)
async def test_law_a_resumed_stream_delivers_the_answer_exactly_once(words: list[str], cut: int, rechunk: int) -> None:
    text = "".join(words)
    first = Reply(text, chunks=tuple(words))
    # The re-issued stream is chunked differently: resumption matches text, not chunks.
    again = Reply(text, chunks=tuple(text[i : i + rechunk] for i in range(0, len(text), rechunk)))
    provider = ScriptedProvider([Fail(_cut(), after_chunks=min(cut, len(words)), reply=first), again])
    pieces = [c.content async for c in await Stack([Retry(clock=FakeClock())], provider)(_request())]
    assert "".join(pieces) == text
    assert all(s.closed for s in provider.streams)


async def test_a_diverging_reissue_fails_explicitly_instead_of_splicing() -> None:
    provider = ScriptedProvider([Fail(_cut(), after_chunks=2, reply=Reply("the cat sat down")), Reply("a dog ran off")])
    received: list[str] = []
    with pytest.raises(ProviderError) as info:
        async for chunk in await Stack([Retry(clock=FakeClock())], provider)(_request()):
            received.append(chunk.content)
    assert "".join(received) == "the cat "
    assert "resumed" in info.value.public_message or "could not be resumed" in info.value.public_message


async def test_continue_mode_sends_the_sent_text_as_an_assistant_prefix() -> None:
    provider = ScriptedProvider(
        [Fail(_cut(), after_chunks=2, reply=Reply("the cat sat down")), Reply("sat down", chunks=("sat ", "down"))]
    )
    response = await Stack([Retry(clock=FakeClock())], provider)(_request(resume="continue"))
    assert (await response.result()).content == "the cat sat down"
    resumed = provider.requests[1]
    # No trailing whitespace in the prefix (Anthropic rejects it).
    assert resumed.messages[-1] == Message("assistant", "the cat")
    assert resumed.extra["continue_final_message"] is True


@pytest.mark.parametrize("continuation", [(" sat ", "down"), ("sat ", "down"), (" ", "sat down")])
async def test_continue_mode_does_not_repeat_the_whitespace_already_sent(continuation: tuple[str, ...]) -> None:
    provider = ScriptedProvider(
        [
            Fail(_cut(), after_chunks=2, reply=Reply("the cat sat down")),
            Reply("".join(continuation), chunks=continuation),
        ]
    )
    response = await Stack([Retry(clock=FakeClock())], provider)(_request(resume="continue"))
    assert (await response.result()).content == "the cat sat down"


async def test_resume_off_fails_a_cut_stream_after_commit() -> None:
    provider = ScriptedProvider([Fail(_cut(), after_chunks=1, reply=Reply("a b c")), Reply("a b c")])
    with pytest.raises(ProviderError):
        await (await Stack([Retry(clock=FakeClock())], provider)(_request(resume="off"))).result()
    assert provider.calls == 1


async def test_fallback_resumes_on_the_next_model_after_retries_are_spent() -> None:
    text = "same answer from both"

    def script(request: Request, index: int) -> Reply | Fail:
        if request.model == "a":
            return Fail(_cut(), after_chunks=2, reply=Reply(text))
        return Reply(text)

    provider = ScriptedProvider(script)
    stack = Stack([Fallback(["a", "b"]), Retry(attempts=2, clock=FakeClock())], provider)
    request = Request(model="a", messages=[Message("user", "hi")], stream=True)
    response = await stack(request)
    assert response.model == "a" and "fallback" not in response.attrs
    pieces = [c.content async for c in response]
    assert "".join(pieces) == text
    assert [r.model for r in provider.requests] == ["a", "a", "b"]
    assert all(s.closed for s in provider.streams)
    # The caller's response names the model that finished the answer.
    assert response.model == "b" and response.attrs["fallback"] == "b"


async def test_when_every_model_cuts_the_stream_the_caller_gets_an_error_not_a_truncation() -> None:
    provider = ScriptedProvider(default=Fail(_cut(), after_chunks=1, reply=Reply("x y z")))
    stack = Stack([Fallback(["a", "b"])], provider)
    with pytest.raises(AllProvidersFailed):
        await (await stack(Request(model="a", messages=[Message("user", "hi")], stream=True))).result()
