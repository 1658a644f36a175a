"""mask_errors: every error leaves as a safe one; the details go to the log only."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from middlewares.guard.mask_errors import MaskErrors
from onion import (
    AllProvidersFailed,
    BadRequest,
    CircuitOpen,
    GuardrailViolation,
    Message,
    OnionError,
    ProviderError,
    RateLimited,
    Request,
    Stack,
    Timeout,
)
from onion.testing import Fail, Reply, ScriptedProvider

SECRET = "sk-live-THISISASECRETKEY1234567890"
URL = "https://internal.example:8443/v1/chat?api_key=" + SECRET


def _request(stream: bool = False) -> Request:
    return Request(model="m", messages=[Message("user", "hi")], stream=stream)


def _leaky_errors() -> list[BaseException]:
    detail = f"upstream {URL} said 401 for key {SECRET}"
    return [
        ProviderError(detail, upstream_status=401, retryable=False, provider=URL),
        CircuitOpen(detail, model="m", retry_after=3.0),
        AllProvidersFailed([ProviderError(detail)], models=["a"]),
        Timeout(detail, phase="idle"),
        GuardrailViolation(detail, stage="input", rule="pii"),
        RateLimited(detail, retry_after=2.2),
        KeyError(detail),
        RuntimeError(detail),
    ]


@pytest.mark.parametrize("error", _leaky_errors(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("stream", [False, True])
async def test_no_secret_leaves_and_the_details_are_logged(error: BaseException, stream: bool) -> None:
    after = 1 if stream else None
    provider = ScriptedProvider([Fail(error, after_chunks=after, reply=Reply("a b c"))])
    request = _request(stream)
    with capture_logs() as logs, pytest.raises(OnionError) as info:
        await (await Stack([MaskErrors()], provider)(request)).result()
    masked = info.value
    for text in (str(masked), masked.public_message, repr(masked.__dict__)):
        assert SECRET not in text and "internal.example" not in text
    assert masked.__cause__ is None and masked.__suppress_context__
    assert any(SECRET in str(entry) for entry in logs), "the details must reach the log"
    if isinstance(error, OnionError):
        assert type(masked) is type(error) and masked.status == error.status
    else:
        assert type(masked) is OnionError
    if isinstance(error, RateLimited):
        assert masked.public_message == "too many requests, retry after 3 s" and masked.retry_after == 2.2
    else:
        assert request.context.request_id in masked.public_message
    if isinstance(error, Timeout):
        assert masked.phase == "idle"
    if isinstance(error, AllProvidersFailed):
        assert masked.causes == []
    if stream:
        assert provider.streams[0].closed


@settings(max_examples=40, deadline=None)
@given(detail=st.text(min_size=1, max_size=60))
async def test_law_an_unknown_error_never_shows_its_message(detail: str) -> None:
    marker = f"{detail}<<internal>>"
    provider = ScriptedProvider([Fail(ValueError(marker))])
    with capture_logs(), pytest.raises(OnionError) as info:
        await Stack([MaskErrors()], provider)(_request())
    assert "<<internal>>" not in str(info.value) and "<<internal>>" not in info.value.public_message


async def test_a_bad_request_keeps_its_explanation_for_the_caller() -> None:
    provider = ScriptedProvider([Fail(BadRequest("max_tokens must be positive", param="max_tokens"))])
    with capture_logs(), pytest.raises(BadRequest) as info:
        await Stack([MaskErrors()], provider)(_request())
    assert info.value.public_message.startswith("max_tokens must be positive")
    assert info.value.param == "max_tokens"


async def test_success_passes_untouched() -> None:
    response = await Stack([MaskErrors()], ScriptedProvider([Reply("fine answer")]))(_request(stream=True))
    assert (await response.result()).content == "fine answer"


async def test_a_masked_upstream_refusal_keeps_its_class_and_reason() -> None:
    refusal = ProviderError(
        "upstream answered 400: too long, see https://internal.example/logs",
        upstream_status=400,
        upstream_type="invalid_request_error",
        upstream_code="context_length_exceeded",
        param="messages",
    )
    stack = Stack([MaskErrors()], ScriptedProvider(default=Fail(refusal)))
    with pytest.raises(ProviderError) as caught:
        await stack(_request())
    masked = caught.value
    assert (masked.status, masked.code, masked.param) == (400, "context_length_exceeded", "messages")
    assert masked.upstream_code == "context_length_exceeded" and not masked.retryable
    assert "internal.example" not in masked.public_message
