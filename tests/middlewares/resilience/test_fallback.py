"""fallback: order of models, what is fallback-worthy, all failed, the model that answered."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlewares.resilience.fallback import Fallback
from middlewares.resilience.retry import Retry
from onion import (
    AllProvidersFailed,
    BadRequest,
    CircuitOpen,
    ConfigError,
    GuardrailViolation,
    Message,
    ProviderError,
    Request,
    Stack,
    Timeout,
)
from onion.testing import Fail, Reply, ScriptedProvider


def _request(model: str = "a", stream: bool = False) -> Request:
    return Request(model=model, messages=[Message("user", "hi")], stream=stream)


def _failing(*models: str) -> ScriptedProvider:
    def script(request: Request, index: int) -> Reply | Fail:
        if request.model in models:
            return Fail(ProviderError(f"{request.model} down", upstream_status=500, retryable=True))
        return Reply(f"from {request.model}")

    return ScriptedProvider(script)


@settings(max_examples=50, deadline=None)
@given(outcomes=st.lists(st.booleans(), min_size=1, max_size=6), stream=st.booleans())
async def test_law_tries_models_in_order_and_stops_at_the_first_success(outcomes: list[bool], stream: bool) -> None:
    models = [f"m{i}" for i in range(len(outcomes))]
    provider = _failing(*(m for m, ok in zip(models, outcomes, strict=True) if not ok))
    stack = Stack([Fallback(models)], provider)
    if any(outcomes):
        winner = models[outcomes.index(True)]
        response = await stack(_request(models[0], stream))
        assert (await response.result()).content == f"from {winner}"
        assert response.model == winner
        assert [r.model for r in provider.requests] == models[: outcomes.index(True) + 1]
    else:
        with pytest.raises(AllProvidersFailed) as info:
            await (await stack(_request(models[0], stream))).result()
        assert info.value.models == models
        assert len(info.value.causes) == len(models)
        assert [r.model for r in provider.requests] == models


@pytest.mark.parametrize(
    "error",
    [
        ProviderError("x", upstream_status=500),
        CircuitOpen("open", model="a"),
        Timeout("slow", phase="first_chunk"),
    ],
)
async def test_fallback_worthy_errors_move_on(error: Exception) -> None:
    provider = ScriptedProvider([Fail(error), Reply("b answered")])
    response = await Stack([Fallback(["a", "b"])], provider)(_request())
    assert (await response.result()).content == "b answered"
    assert response.fallback == "b"


@pytest.mark.parametrize("error", [BadRequest("bad"), GuardrailViolation(stage="input", rule="pii")])
async def test_the_callers_own_errors_do_not_fall_back(error: Exception) -> None:
    provider = ScriptedProvider([Fail(error), Reply("never")])
    with pytest.raises(type(error)):
        await Stack([Fallback(["a", "b"])], provider)(_request())
    assert provider.calls == 1


async def test_a_request_for_a_model_outside_the_chain_starts_with_that_model() -> None:
    provider = _failing("z")
    response = await Stack([Fallback(["a", "b"])], provider)(_request("z"))
    assert response.model == "a"
    assert Fallback(["a", "b", "c"]).chain("b") == ["b", "c"]


async def test_a_stream_falls_back_before_its_first_chunk() -> None:
    provider = ScriptedProvider([Fail(ProviderError("down"), after_chunks=0), Reply("b streams")])
    response = await Stack([Fallback(["a", "b"])], provider)(_request(stream=True))
    assert "".join([c.content async for c in response]) == "b streams"
    assert all(s.closed for s in provider.streams)


def test_toml_and_ordering() -> None:
    stack = Stack.from_config([{"use": "fallback", "models": ["a", "b"]}], ScriptedProvider())
    assert stack.layers[0].models == ["a", "b"]
    with pytest.raises(ConfigError):
        Stack.from_config([{"use": "fallback", "models": []}], ScriptedProvider())
    with pytest.raises(ConfigError, match="outside"):
        Stack([Retry(), Fallback(["a"])], ScriptedProvider())


async def test_the_warning_names_the_model_it_fell_back_to() -> None:
    from structlog.testing import capture_logs

    provider = _failing("a")
    with capture_logs() as logs:
        await Stack([Fallback(["a", "b"])], provider)(_request())
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["failed_model"], e["fallback_model"]) for e in warnings] == [("a", "b")]


@pytest.mark.parametrize("stream", [False, True])
async def test_no_model_is_tried_once_the_deadline_has_passed(stream: bool) -> None:
    down = ProviderError("a down", upstream_status=500, retryable=True)
    # "a" would fail only after the request's deadline passed; "b" would answer at once.
    # The handler boundary enforces the deadline on the attempt: "a" times out, and no
    # model is tried after it.
    provider = ScriptedProvider(
        lambda request, index: (
            Fail(down, delay=0.1, after_chunks=0 if stream else None) if request.model == "a" else Reply("b answered")
        )
    )
    request = _request(stream=stream)
    request.context.deadline = anyio.current_time() + 0.02
    with pytest.raises(Timeout):
        await (await Stack([Fallback(["a", "b"])], provider)(request)).result()
    assert [r.model for r in provider.requests] == ["a"]
