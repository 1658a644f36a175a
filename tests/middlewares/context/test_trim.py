"""TrimContext: budget kept, system and last user message kept, tool calls never split."""

from __future__ import annotations

import bpe_openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlewares.context.trim import TrimContext, message_units
from onion import BadRequest, BpeCounter, ConfigError, Message, Request, Stack
from onion.testing import Reply, ScriptedProvider


class Words:
    """A deterministic counter for the laws: one token per word."""

    name = "words"

    def count(self, text: str) -> int:
        return len(text.split())


def call(call_id: str) -> dict[str, object]:
    return {"id": call_id, "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    """System prompts, user/assistant turns, tool-call units; ends with a user message
    (sometimes followed by an agent's tool call in progress)."""
    words = st.integers(0, 30).map(lambda n: " ".join(["word"] * n))
    messages = [Message("system", draw(words))] if draw(st.booleans()) else []
    ids = iter(range(10_000))
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["user", "assistant", "tools", "system"]))
        if kind == "tools":
            calls = [call(f"c{next(ids)}") for _ in range(draw(st.integers(1, 3)))]
            messages.append(Message("assistant", draw(words) or None, tool_calls=calls))
            messages += [Message("tool", draw(words), tool_call_id=c["id"]) for c in calls]
        else:
            messages.append(Message(kind, draw(words)))
    messages.append(Message("user", draw(words)))
    if draw(st.booleans()):
        c = call(f"c{next(ids)}")
        messages += [Message("assistant", None, tool_calls=[c]), Message("tool", draw(words), tool_call_id=c["id"])]
    return messages


def prompt_tokens(guard: TrimContext, messages: list[Message]) -> int:
    return sum(guard.message_tokens(m, Words()) for m in messages) + 3


@settings(max_examples=100, deadline=None)
@given(conversations(), st.floats(-0.2, 1.1))
def test_trimming_laws(messages: list[Message], where: float) -> None:
    # The budget lands anywhere from below the minimal conversation to above the whole.
    probe = TrimContext(max_tokens=1, counter=Words())
    last_user = max(i for i, m in enumerate(messages) if m.role == "user")
    pinned = [m for i, m in enumerate(messages) if m.role == "system" or i >= last_user]
    low, high = prompt_tokens(probe, pinned), prompt_tokens(probe, messages)
    budget = max(1, round(low + where * (high - low)))
    trim = TrimContext(max_tokens=budget, counter=Words())
    request = Request(model="any", messages=messages)
    if prompt_tokens(trim, pinned) > budget:
        with pytest.raises(BadRequest) as caught:
            trim.trim(request)
        assert str(budget) in str(caught.value) and caught.value.param == "messages"
        return
    trimmed, dropped, tokens = trim.trim(request)
    kept = trimmed.messages
    # Never over budget, and the count it reports is the real one.
    assert tokens == prompt_tokens(trim, kept) <= budget
    assert len(kept) + dropped == len(messages)
    # Order kept; every system message and the last user message (and what follows) kept.
    positions = [next(i for i, m in enumerate(messages) if m is k) for k in kept]
    assert positions == sorted(positions)
    assert all(any(k is m for k in kept) for m in pinned)
    # A tool call and its results stay together.
    kept_calls = {c["id"] for m in kept if m.tool_calls for c in m.tool_calls}
    kept_results = {m.tool_call_id for m in kept if m.role == "tool"}
    assert kept_calls == kept_results
    # Oldest first: what was dropped is a prefix of the droppable units, and nothing was
    # dropped that did not need to be, but for assistant turns left first by the trim.
    units = message_units(messages, last_user)
    gone = [all(all(k is not messages[i] for k in kept) for i in unit) for unit in units]
    assert gone == sorted(gone, reverse=True)
    if dropped:
        first_unpinned = next(k for k in kept if k.role not in ("system", "developer"))
        assert first_unpinned.role != "assistant" or first_unpinned is messages[last_user]
    cut = gone.count(True)
    needed = [j for j in range(cut) if messages[units[j][0]].role != "assistant"]
    if needed:
        restored = sorted(set(positions) | {i for unit in units[needed[-1] : cut] for i in unit})
        assert prompt_tokens(trim, [messages[i] for i in restored]) > budget


def test_fits_already_passes_the_same_request() -> None:
    request = Request(model="gpt-4o", messages=[Message("user", "hi")])
    trimmed, dropped, _ = TrimContext(max_tokens=100).trim(request)
    assert trimmed is request and dropped == 0


def test_budget_from_the_model_window_minus_the_answer() -> None:
    trim = TrimContext()
    assert trim.budget(Request(model="gpt-4o-mini", messages=[], max_tokens=1000)) == 127_000
    assert trim.budget(Request(model="openai/gpt-4", messages=[], max_completion_tokens=192)) == 8000
    assert trim.budget(Request(model="gpt-4o", messages=[])) == 128_000 - 1024
    assert trim.budget(Request(model="my-local-llama", messages=[])) is None
    assert TrimContext(context_windows={"my-local": 4096}).budget(Request(model="my-local-llama", messages=[])) == 3072


def test_unknown_model_without_budget_passes_untouched() -> None:
    request = Request(model="mystery", messages=[Message("user", "x " * 10_000)])
    assert TrimContext().trim(request)[0] is request


def test_exact_counts_for_openai_models() -> None:
    trim = TrimContext(max_tokens=10_000)
    text = "The quick brown fox jumps over the lazy dog. 日本語のテキストも数えます。"
    exact = len(bpe_openai.get_encoding("o200k_base").encode_ordinary(text))
    assert trim.counter("gpt-4o").name == "o200k_base"
    assert trim.message_tokens(Message("user", text), trim.counter("gpt-4o")) == exact + 3


def test_counter_per_model_prefix_and_unknown_names() -> None:
    trim = TrimContext(counter="estimate", counters={"gpt-4": "cl100k_base"})
    assert trim.counter("gpt-4-turbo").name == "cl100k_base"
    assert trim.counter("llama-3").name == "estimate"
    with pytest.raises(ValueError, match="unknown token counter"):
        TrimContext(counter="sentencepiece")


def test_offline_tokenizer_failure_still_trims() -> None:
    def offline(name: str) -> object:
        raise ConnectionError("tiktoken could not download cl100k_base")

    trim = TrimContext(max_tokens=30, counter=BpeCounter("cl100k_base", loader=offline))
    messages = [Message("user", "old " * 40), Message("assistant", "ok"), Message("user", "new question")]
    trimmed, dropped, tokens = trim.trim(Request(model="gpt-4", messages=messages))
    # The old question goes, and so does the answer it left first.
    assert dropped == 2
    assert [m.text for m in trimmed.messages] == ["new question"] and tokens <= 30


def test_the_minimal_conversation_must_fit() -> None:
    trim = TrimContext(max_tokens=20, counter=Words())
    messages = [Message("system", "rule " * 30), Message("user", "hi")]
    with pytest.raises(BadRequest, match="does not fit") as caught:
        trim.trim(Request(model="m", messages=messages))
    assert caught.value.status == 400


@pytest.mark.parametrize("stream", [False, True])
async def test_in_a_stack_the_provider_gets_the_trimmed_request(stream: bool) -> None:
    provider = ScriptedProvider([Reply("short answer here")])
    messages = [Message("system", "be brief")]
    for turn in range(200):
        messages += [Message("user", f"question {turn} " * 5), Message("assistant", f"answer {turn} " * 5)]
    messages.append(Message("user", "last question"))
    request = Request(model="gpt-4o", messages=messages, stream=stream)
    response = await Stack([TrimContext(max_tokens=300)], provider)(request)
    assert "".join([c.content async for c in response]) == "short answer here"
    sent = provider.requests[0].messages
    assert sent[0].text == "be brief" and sent[-1].text == "last question"
    assert 2 < len(sent) < len(messages)
    report = request.context.trimmed
    assert report is not None and report.dropped == len(messages) - len(sent) and report.prompt_tokens <= 300


def test_from_config_with_toml_names() -> None:
    stack = Stack.from_config(
        [{"use": "trim_context", "max_tokens": 4000, "counter": "o200k_base"}], ScriptedProvider()
    )
    trim = stack.layers[0]
    assert trim.max_tokens == 4000 and trim.counter("anything").name == "o200k_base"
    with pytest.raises(ConfigError, match="counter"):
        Stack.from_config([{"use": "trim_context", "counter": "nope"}], ScriptedProvider())
