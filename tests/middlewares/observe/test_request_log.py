"""The logging layer: one JSON line per request, redaction, secrets, level filtering."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from middlewares.observe.request_log import RequestLog, pii_redactor
from onion import CallNext, GuardFindings, GuardrailViolation, Message, ProviderError, Request, Response, Stack, Usage
from onion.telemetry import configure_logging, reset_logging
from onion.testing import Fail, FakeClock, Reply, ScriptedProvider

KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0" * 2


class Lines:
    """Captured log output, one parsed JSON object per line."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def __call__(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.buffer.getvalue().splitlines() if line]

    @property
    def text(self) -> str:
        return self.buffer.getvalue()


@contextlib.contextmanager
def captured(level: str = "info", as_json: bool = True) -> Iterator[Lines]:
    lines = Lines()
    configure_logging(json=as_json, level=level, stream=lines.buffer, cache=False)
    try:
        yield lines
    finally:
        reset_logging()


def ask(model: str = "gpt-4o", stream: bool = False, text: str = "hello") -> Request:
    request = Request(model=model, messages=[Message("user", text)], stream=stream)
    request.context.caller = "team-a"
    return request


class TickingProvider:
    """Advances a fake clock by ``seconds`` per call, so latency is exact."""

    name = "ticking"

    def __init__(self, clock: FakeClock, seconds: float, inner: ScriptedProvider) -> None:
        self.clock, self.seconds, self.inner = clock, seconds, inner

    async def __call__(self, request: Request) -> Response:
        self.clock.advance(self.seconds)
        return await self.inner(request)


async def test_one_line_per_complete_request_with_exact_fields() -> None:
    clock = FakeClock()
    upstream = TickingProvider(clock, 0.25, ScriptedProvider([Reply("hi", usage=Usage(1000, 200, 1200))]))
    with captured() as lines:
        request = ask()
        await Stack([RequestLog(clock=clock)], upstream)(request)
    [line] = lines()
    assert line.pop("timestamp")
    assert line == {
        "event": "request",
        "level": "info",
        "request_id": request.context.request_id,
        "caller": "team-a",
        "model": "gpt-4o",
        "served_by": "scripted",
        "stream": False,
        "outcome": "ok",
        "latency_ms": 250.0,
        "prompt_tokens": 1000,
        "completion_tokens": 200,
        "cost_usd": pytest.approx((1000 * 2.5 + 200 * 10) / 1e6, rel=1e-12),
    }


async def test_stream_logs_once_at_its_end_with_time_to_first_chunk() -> None:
    with captured() as lines:
        response = await Stack([RequestLog()], ScriptedProvider([Reply("a b c", usage=Usage(5, 3, 8))]))(
            ask("local-model", stream=True)
        )
        assert lines() == []
        assert [chunk.content async for chunk in response] == ["a ", "b ", "c", ""]
    [line] = lines()
    assert line["outcome"] == "ok"
    assert line["stream"] is True
    assert line["ttfc_ms"] >= 0
    assert (line["prompt_tokens"], line["completion_tokens"]) == (5, 3)
    assert line["cost_usd"] is None  # unknown model: unknown cost, not zero


async def test_failures_are_warnings_with_masked_detail() -> None:
    error = ProviderError(f"upstream 401: invalid key {KEY}", upstream_status=401)
    with captured() as lines, pytest.raises(ProviderError):
        await Stack([RequestLog()], ScriptedProvider([Fail(error)]))(ask())
    [line] = lines()
    assert line["level"] == "warning"
    assert line["event"] == "request failed"
    assert line["error_type"] == "401"
    assert line["outcome"] == "error"
    assert "invalid key [REDACTED]" in line["detail"]
    assert KEY not in lines.text


@pytest.mark.parametrize("stream", [False, True])
async def test_a_key_in_any_text_field_of_the_line_is_masked(stream: bool) -> None:
    # The fields callers, upstreams and configuration fill; a redactor that leaves keys.
    request = ask(model=f"gpt-4o {KEY}", stream=stream, text=f"use {KEY}")
    request.context.caller, request.context.team = f"caller {KEY}", f"team {KEY}"
    request.context.request_id = f"req {KEY}"
    # Rule and detector names come from configuration, a fallback model from the chain.
    request.context.findings = GuardFindings(flags=[f"rule {KEY}"], redactions={f"detector {KEY}": 1})

    async def fell_back(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        response.fallback = f"fallback {KEY}"
        return response

    with captured() as lines:
        layer = RequestLog(log_content=True, redactor=lambda text: text)
        reply = Reply(f"the key is {KEY}", model=f"answered-by {KEY}")
        response = await Stack([layer, fell_back], ScriptedProvider([reply]))(request)
        await response.result()
    [line] = lines()
    for field in ("model", "caller", "team", "request_id", "response_model", "fallback", "prompt", "answer"):
        assert "[REDACTED]" in line[field], field
    assert line["guard_flags"] == ["rule [REDACTED]"]
    assert line["redacted"] == {"detector [REDACTED]": 1}
    assert KEY not in lines.text


async def test_names_masked_once_are_masked_on_every_line_also_past_the_memo() -> None:
    """Caller, team and model names are masked once per distinct value (a bounded memo):
    a key-named caller is masked on its later lines, and on lines after the memo filled."""
    from middlewares.observe import request_log

    with captured() as lines:
        layer = RequestLog()
        stack = Stack([layer], ScriptedProvider(default=Reply("ok")))
        callers = [f"caller {KEY}", f"caller {KEY}"]
        callers += [f"c{index}" for index in range(request_log._NAMES_MEMO)] + [f"late {KEY}"]
        for caller in callers:
            request = ask()
            request.context.caller, request.context.team = caller, f"team {KEY}"
            await (await stack(request)).result()
    found = lines()
    assert len(layer._names) == request_log._NAMES_MEMO
    assert [line["caller"] for line in found[:2]] == ["caller [REDACTED]"] * 2
    assert found[-1]["caller"] == "late [REDACTED]"
    assert {line["team"] for line in found} == {"team [REDACTED]"}
    assert KEY not in lines.text


async def test_blocked_requests_are_info_without_detail() -> None:
    with captured() as lines, pytest.raises(GuardrailViolation):
        await Stack(
            [RequestLog()], ScriptedProvider([Fail(GuardrailViolation("matched rule x", stage="input", rule="pii"))])
        )(ask())
    [line] = lines()
    assert (line["level"], line["outcome"], line["error_type"]) == ("info", "blocked", "guardrail_violation")
    assert "detail" not in line


async def test_stream_closed_early_logs_cancelled_once() -> None:
    with captured() as lines:
        async with await Stack([RequestLog()], ScriptedProvider([Reply("a b c")]))(ask(stream=True)) as response:
            async for _ in response:
                break
    [line] = lines()
    assert line["outcome"] == "cancelled"


class SpyLogger:
    """A logger whose level filters everything out; records any call made anyway."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def is_enabled_for(self, level: int) -> bool:
        return False

    def log(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(args)

    def warning(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(args)


async def test_filtered_level_does_no_work_and_leaves_streams_untouched() -> None:
    spy = SpyLogger()
    scripted = ScriptedProvider([Reply("a b")])
    stream = await scripted(ask(stream=True))
    original = stream._chunks

    async def provider(request: Request) -> Response:
        return stream

    response = await Stack([RequestLog(logger=spy)], provider)(ask(stream=True))
    assert response._chunks is original  # not wrapped: no per-chunk work at all
    await response.result()
    assert spy.calls == []


async def test_filtered_by_configured_level() -> None:
    with captured(level="warning") as lines:
        await Stack([RequestLog()], ScriptedProvider())(ask())
        with pytest.raises(ProviderError):
            await Stack([RequestLog()], ScriptedProvider([Fail(ProviderError("x"))]))(ask())
    # Answered requests are info lines, filtered out; the failure is a warning and stays.
    assert [(line["event"], line["level"]) for line in lines()] == [("request failed", "warning")]


async def test_content_is_not_logged_unless_configured() -> None:
    with captured() as lines:
        await Stack([RequestLog()], ScriptedProvider([Reply("the answer")]))(ask(text="my question"))
    assert "my question" not in lines.text and "the answer" not in lines.text
    assert "prompt" not in lines()[0]


async def test_content_is_redacted_by_the_given_redactor() -> None:
    with captured() as lines:
        layer = RequestLog(log_content=True, redactor=lambda text: text.replace("secret", "[X]"))
        await Stack([layer], ScriptedProvider([Reply("a secret answer")]))(ask(text="my secret question"))
        await (await Stack([layer], ScriptedProvider([Reply("a secret stream")]))(ask(stream=True))).result()
    first, second = lines()
    assert (first["prompt"], first["answer"]) == ("my [X] question", "a [X] answer")
    assert second["answer"] == "a [X] stream"


async def test_content_is_redacted_by_the_output_guard_detectors() -> None:
    pytest.importorskip("middlewares.guard.pii")
    assert pii_redactor() is not None
    with captured() as lines:
        layer = RequestLog(log_content=True)
        await Stack([layer], ScriptedProvider([Reply("write to alice@example.com")]))(
            ask(text=f"card 4111 1111 1111 1111 key {KEY}")
        )
    [line] = lines()
    assert "alice@example.com" not in lines.text
    assert "4111 1111 1111 1111" not in lines.text
    assert KEY not in lines.text
    assert line["answer"].startswith("write to ")


def test_other_layers_warnings_pass_through_the_same_configuration_without_secrets() -> None:
    with captured() as lines:
        structlog.get_logger("onion.fallback").warning(
            "falling back to the next model",
            failed_model="gpt-4o",
            fallback_model="claude-3-5-haiku",
            api_key=KEY,
            headers={"Authorization": f"Bearer {KEY}", "x-trace": "1"},
            note=f"retrying with {KEY}",
        )
        structlog.get_logger("onion.retry").debug("not emitted", api_key=KEY)
    [line] = lines()
    assert line["level"] == "warning"
    assert line["api_key"] == "[REDACTED]"
    assert line["headers"] == {"Authorization": "[REDACTED]", "x-trace": "1"}
    assert line["note"] == "retrying with [REDACTED]"
    assert KEY not in lines.text


def test_pretty_output_in_a_terminal_style() -> None:
    with captured(as_json=False) as lines:
        structlog.get_logger("onion.request").info("request", model="gpt-4o", api_key=KEY)
    assert "request" in lines.text and "gpt-4o" in lines.text
    assert KEY not in lines.text
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines.text.splitlines()[0])


def test_stack_traces_only_at_error_level() -> None:
    with captured() as lines:
        log = structlog.get_logger("onion")
        try:
            raise ValueError("inner detail")
        except ValueError:
            log.warning("warned", exc_info=True)
            log.error("failed", exc_info=True)
    warned, failed = lines()
    assert "exception" not in warned and "exc_info" not in warned
    assert "Traceback" in failed["exception"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["ok", "stream", "fail", "cut", "close"]), max_size=8))
async def test_law_exactly_one_line_per_request(kinds: list[str]) -> None:
    def script(request: Request, index: int) -> Reply | Fail:
        kind = kinds[index]
        if kind in ("fail", "cut"):
            return Fail(ProviderError("x", upstream_status=500), after_chunks=1 if kind == "cut" else None)
        return Reply("one two three")

    with captured() as lines:
        stack = Stack([RequestLog()], ScriptedProvider(script))
        for kind in kinds:
            with contextlib.suppress(ProviderError):
                response = await stack(ask(stream=kind in ("stream", "cut", "close")))
                if kind == "close":
                    async with response:
                        async for _ in response:
                            break
                else:
                    await response.result()
    expected = {"ok": "ok", "stream": "ok", "fail": "error", "cut": "error", "close": "cancelled"}
    assert [line["outcome"] for line in lines()] == [expected[kind] for kind in kinds]


async def test_fallback_warning_and_request_line_name_the_model_that_answered() -> None:
    from middlewares.resilience.fallback import Fallback

    scripted = ScriptedProvider([Fail(ProviderError("down", upstream_status=503)), Reply("ok")])
    with captured() as lines:
        await Stack([RequestLog(), Fallback(["gpt-4o", "gpt-4o-mini"])], scripted)(ask("gpt-4o"))
    warning, request = lines()
    assert (warning["level"], warning["fallback_model"]) == ("warning", "gpt-4o-mini")
    assert request["event"] == "request"
    assert request["fallback"] == request["response_model"] == "gpt-4o-mini"


def test_standard_library_records_are_rendered_and_scrubbed_the_same_way() -> None:
    import logging

    with captured() as lines:
        logging.getLogger("onion.server").warning("listing upstream models failed: %s", f"key {KEY}")
        logging.getLogger("onion.server").info("hidden below? no: info is on")
        logging.getLogger("noisy").debug("below the level")
    first, second = lines()
    assert first["event"] == "listing upstream models failed: key [REDACTED]"
    assert (first["level"], first["logger"]) == ("warning", "onion.server")
    assert second["level"] == "info"
    assert KEY not in lines.text
    root = logging.getLogger()
    assert not [h for h in root.handlers if type(h).__name__ == "_OnionHandler"]  # reset removed it


async def test_the_line_carries_team_cost_and_budget_headroom() -> None:
    from middlewares.limit.budget import Budget

    budget = Budget(keys={"team-a": 1.0}, teams={"red": 2.0})
    stack = Stack([RequestLog(), budget], ScriptedProvider([Reply("hi", usage=Usage(1000, 200, 1200))] * 2))
    with captured() as lines:
        for stream in (False, True):
            request = ask(stream=stream)
            request.context.team = "red"
            response = await stack(request)
            await response.result()
    for line in lines():
        assert line["team"] == "red"
        assert line["cost_usd"] == pytest.approx((1000 * 2.5 + 200 * 10) / 1e6, rel=1e-12)
        assert 0 < line["budget_remaining_usd"] < 1.0  # the key's budget is the tighter one
    assert len(lines()) == 2


@pytest.mark.parametrize("line_buffering", ["no", "yes", "reconfigured off"])
async def test_each_line_reaches_the_file_at_once_buffered_or_not(line_buffering: str) -> None:
    # No line may wait in a buffer (a crash or an exit would lose it): a line-buffered file
    # flushes on the newline, any other is flushed after each line, also one reconfigured
    # after the writer was built.
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", line_buffering=line_buffering != "no")
    configure_logging(json=True, stream=stream, cache=False)
    try:
        layer = RequestLog()
        await Stack([layer], ScriptedProvider([Reply("warm")]))(ask())  # the writer is built
        if line_buffering == "reconfigured off":
            stream.reconfigure(line_buffering=False)
        raw.seek(0)
        raw.truncate()
        await Stack([layer], ScriptedProvider([Reply("hi")]))(ask())
        await (await Stack([layer], ScriptedProvider([Reply("a b")]))(ask(stream=True))).result()
        written = raw.getvalue().decode().splitlines()  # read without flushing the wrapper
        assert [json.loads(line)["stream"] for line in written] == [False, True]
    finally:
        reset_logging()


@settings(max_examples=1000)
@given(
    st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(0, 100)
    | st.integers(0, 10**9).map(lambda n: n / 1e9)
    | st.integers(0, 10**9).map(lambda n: (n + 0.5) / 1e6)  # ties in milliseconds
)
def test_law_milliseconds_is_round_to_three_places(seconds: float) -> None:
    from middlewares.observe.request_log import _milliseconds

    # repr: the same float, signed zeros and nan included, as the log line writes it.
    assert repr(_milliseconds(seconds)) == repr(round(seconds * 1000, 3))
