"""Stream resumption after commit: exact continuation, divergence, auto, continue and off modes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlewares.cache.exact import ExactCache
from middlewares.resilience.fallback import Fallback
from middlewares.resilience.retry import Retry
from middlewares.resilience.timeout import Deadline
from onion import AllProvidersFailed, Message, ProviderError, Request, RequestOptions, Stack
from onion.providers import AnthropicProvider, OpenAIProvider
from onion.testing import Fail, FakeClock, Reply, ScriptedProvider
from onion.testing.upstream import FakeUpstream, Fault


def _request(**options: Any) -> Request:
    request = Request(model="m", messages=[Message("user", "hi")], stream=True)
    request.context.options = RequestOptions(**options)
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
    assert response.model == "a" and response.fallback is None
    pieces = [c.content async for c in response]
    assert "".join(pieces) == text
    assert [r.model for r in provider.requests] == ["a", "a", "b"]
    assert all(s.closed for s in provider.streams)
    # The caller's response names the model that finished the answer.
    assert response.model == "b" and response.fallback == "b"


async def test_when_every_model_cuts_the_stream_the_caller_gets_an_error_not_a_truncation() -> None:
    provider = ScriptedProvider(default=Fail(_cut(), after_chunks=1, reply=Reply("x y z")))
    stack = Stack([Fallback(["a", "b"])], provider)
    with pytest.raises(AllProvidersFailed):
        await (await stack(Request(model="a", messages=[Message("user", "hi")], stream=True))).result()


# -- auto mode over real HTTP: continuation where the provider can, re-issue elsewhere ---

ANSWER = "the quick brown fox jumps over the lazy dog"


def _continuing(body: dict) -> str:
    """A fake model that continues a final assistant message (as Anthropic and vLLM do)."""
    last = body["messages"][-1]
    if last["role"] == "assistant":
        assert ANSWER.startswith(last["content"])
        return ANSWER[len(last["content"]) :]
    return ANSWER


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(api_key="k", reply=_continuing) as fake:
        yield fake


def _provider(kind: str, upstream: FakeUpstream) -> AnthropicProvider | OpenAIProvider:
    if kind == "anthropic":
        return AnthropicProvider(base_url=upstream.base_url, api_key="k")
    return OpenAIProvider(base_url=upstream.base_url, api_key="k", continue_final_message=kind == "vllm")


def _layers(path: str) -> list[Any]:
    # A stall counts as a cut once the idle limit passes (enforced by the innermost retry).
    deadline = Deadline(seconds=20, first_token_seconds=5, idle_seconds=0.5)
    if path == "retry":
        return [deadline, Retry(clock=FakeClock())]
    return [deadline, Fallback(["a", "b"]), Retry(attempts=1, clock=FakeClock())]  # the cut moves the chain to "b"


FAULTS = {
    "dropped": Fault(cut_after=2),
    "ended": Fault(cut_after=2, cut_mode="end"),
    "stalled": Fault(stall_after=2, stall=30),
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("path", ["retry", "fallback"])
@pytest.mark.parametrize("kind", ["anthropic", "vllm", "openai"])
async def test_auto_resumes_by_continuation_where_the_upstream_can_else_by_reissue(
    upstream: FakeUpstream, kind: str, path: str, fault: str
) -> None:
    upstream.push(FAULTS[fault])  # "the quick " reaches the caller, then the stream is cut or stalls
    provider = _provider(kind, upstream)
    try:
        request = Request(model="a", messages=[Message("user", "hi")], stream=True)
        response = await Stack(_layers(path), provider)(request)
        pieces = [chunk.content async for chunk in response]
    finally:
        await provider.aclose()
    assert "".join(pieces) == ANSWER  # the whole text, exactly once
    assert len(upstream.requests) == 2
    first, second = (body for _, _, body in upstream.requests)
    assert first["messages"] == [{"role": "user", "content": "hi"}]
    if kind == "openai":  # no prefix support: the same request again, spliced after "the quick "
        assert second["messages"] == first["messages"] and "continue_final_message" not in second
        assert response.resumed == "reissue"
    else:  # the sent text, without its trailing space, as the assistant prefix
        assert second["messages"] == [*first["messages"], {"role": "assistant", "content": "the quick"}]
        assert response.resumed == "continue"
        if kind == "vllm":
            assert second["continue_final_message"] is True and second["add_generation_prompt"] is False
        else:
            assert "continue_final_message" not in second
    assert second["model"] == ("b" if path == "fallback" else "a")
    # The marker lived only while the recovery attempt opened.
    assert "resume.prefix" not in request.context.state
    stats = await upstream.wait_settled()
    assert stats.open_streams == 0


@pytest.mark.parametrize("mode", ["reissue", "off", "continue"])
async def test_explicit_modes_still_win_over_auto_with_a_prefix_capable_provider(
    upstream: FakeUpstream, mode: str
) -> None:
    upstream.push(Fault(cut_after=2))
    provider = AnthropicProvider(base_url=upstream.base_url, api_key="k")
    try:
        stack = Stack([Retry(clock=FakeClock())], provider)
        response = await stack(_request(resume=mode))
        if mode == "off":
            with pytest.raises(ProviderError):
                await response.result()
            assert len(upstream.requests) == 1
            return
        assert (await response.result()).content == ANSWER
    finally:
        await provider.aclose()
    second = upstream.requests[1][2]
    if mode == "reissue":
        assert second["messages"] == [{"role": "user", "content": "hi"}]
    else:
        assert second["messages"][-1] == {"role": "assistant", "content": "the quick"}
    assert response.resumed == mode


async def test_a_continued_stream_is_cached_as_the_whole_answer_under_the_plain_key(upstream: FakeUpstream) -> None:
    """A cache inside retry sees the prefix replayed: it never pins a bare continuation."""
    upstream.push(Fault(cut_after=2))
    provider = AnthropicProvider(base_url=upstream.base_url, api_key="k")
    cache = ExactCache()
    try:
        stack = Stack([Retry(clock=FakeClock()), cache], provider)
        assert (await (await stack(_request())).result()).content == ANSWER
        assert upstream.requests[1][2]["messages"][-1]["role"] == "assistant"
        again = await stack(_request())
        assert (await again.result()).content == ANSWER
        assert again.cache == "hit" and len(upstream.requests) == 2
    finally:
        await provider.aclose()


async def test_auto_with_a_provider_that_cannot_continue_reissues_and_fails_explicitly_on_divergence() -> None:
    provider = ScriptedProvider(
        [Fail(_cut(), after_chunks=2, reply=Reply("the cat sat down")), Reply("sat down", chunks=("sat ", "down"))]
    )
    received: list[str] = []
    with pytest.raises(ProviderError):
        async for chunk in await Stack([Retry(clock=FakeClock())], provider)(_request()):
            received.append(chunk.content)
    assert "".join(received) == "the cat "
    # ScriptedProvider cannot continue a prefix: the recovery request is the plain one.
    assert provider.requests[1].messages == [Message("user", "hi")]


def test_auto_is_the_default_resume_mode() -> None:
    assert Retry().resume == "auto" and Fallback(["a"]).resume == "auto"


async def test_an_upstream_that_refuses_the_prefix_gets_one_plain_reissue(upstream: FakeUpstream) -> None:
    # The cut moves the stream to a retry; the prefix-capable provider sends "the quick" as
    # an assistant prefix, the upstream refuses it with a 400 (prefilled), and the same
    # request goes again without one, spliced after the text already sent.
    upstream.push(Fault(cut_after=2), Fault(reject_prefill=True))
    provider = OpenAIProvider(base_url=upstream.base_url, api_key="k", continue_final_message=True)
    try:
        response = await Stack([Retry(attempts=2, clock=FakeClock())], provider)(_request())
        pieces = [chunk.content async for chunk in response]
    finally:
        await provider.aclose()
    assert "".join(pieces) == ANSWER
    bodies = [body for _, _, body in upstream.requests]
    assert len(bodies) == 3
    assert bodies[1]["messages"][-1] == {"role": "assistant", "content": "the quick"}
    assert bodies[2]["messages"] == bodies[0]["messages"]
    assert response.resumed == "reissue"


async def test_a_400_to_a_request_sent_without_a_prefix_is_not_taken_for_a_refused_prefix(
    upstream: FakeUpstream,
) -> None:
    # A provider that cannot prefill recovers by re-issuing the plain request; a 400 to it
    # is the upstream's answer to the request itself: no second call behind the retry's back.
    upstream.push(Fault(cut_after=2), Fault(status=400, error_type="invalid_request_error"))
    provider = OpenAIProvider(base_url=upstream.base_url, api_key="k")
    try:
        response = await Stack([Retry(attempts=2, clock=FakeClock())], provider)(_request())
        with pytest.raises(ProviderError) as caught:
            async for _ in response:
                pass
    finally:
        await provider.aclose()
    assert caught.value.upstream_status == 400 and not caught.value.prefilled
    assert len(upstream.requests) == 2
