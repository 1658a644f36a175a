"""Errors carry a safe public message apart from their internal detail."""

from __future__ import annotations

from onion import (
    AllProvidersFailed,
    BadRequest,
    ConfigError,
    GuardrailViolation,
    ModelNotFound,
    OnionError,
    ProviderError,
    RateLimited,
    RequestTooLarge,
    Timeout,
    Unauthorized,
)


def test_public_messages_hide_details() -> None:
    error = ProviderError("POST https://api.example/v1 key=sk-secret returned 500: trace...", upstream_status=500)
    assert "sk-secret" not in error.public_message and "https" not in error.public_message
    assert "sk-secret" in error.detail
    assert error.status == 502


def test_rate_limited_rounds_retry_after_up() -> None:
    error = RateLimited("caller alice over 60 rpm", retry_after=2.1)
    assert error.public_message == "too many requests, retry after 3 s"
    assert error.status == 429 and error.retry_after == 2.1


def test_all_providers_failed_keeps_every_cause() -> None:
    causes = [ProviderError("a"), Timeout(phase="first_chunk")]
    error = AllProvidersFailed(causes, models=["gpt-4o", "gpt-4o-mini"])
    assert error.causes == causes
    assert "gpt-4o-mini" in error.detail and "gpt-4o" not in error.public_message


def test_guardrail_and_model_errors_say_what_is_wrong() -> None:
    violation = GuardrailViolation(stage="input", rule="injection.en")
    assert violation.code == "guardrail_violation" and "injection.en" in violation.public_message
    missing = ModelNotFound("gpt-9")
    assert missing.status == 404 and "gpt-9" in missing.public_message


def test_a_bad_request_may_name_its_case_and_keeps_the_class_default() -> None:
    named = BadRequest("n > 1 is not supported", param="n", code="unsupported_value")
    assert (named.status, named.code, named.param) == (400, "unsupported_value", "n")
    assert named.public_message == "n > 1 is not supported"  # the caller's own input: safe to show
    plain = BadRequest("'model' must name a model", param="model")
    assert plain.code == BadRequest.code == "invalid_request_error"


def test_refusals_before_the_stack_are_typed_errors() -> None:
    key = Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    assert isinstance(key, OnionError) and not isinstance(key, BadRequest)
    assert (key.status, key.code, key.param) == (401, "invalid_api_key", None)
    assert key.public_message == key.detail
    assert Unauthorized().public_message == "incorrect API key provided"
    large = RequestTooLarge(4096)
    assert isinstance(large, BadRequest)
    assert (large.status, large.code, large.param, large.limit) == (413, "request_too_large", None, 4096)
    assert large.public_message == "the request body is larger than 4096 bytes"
    assert OnionError().param is None


def test_a_config_error_carries_every_problem_flat() -> None:
    single = ConfigError("gw.toml: server: field 'port': must be 1-65535", table="server", field="port")
    assert single.problems == (single,) and (single.table, single.field) == ("server", "port")
    stack = ConfigError(problems=[ConfigError("gw.toml: stack[0]: a", table="stack[0]"), ConfigError("gw.toml: b")])
    both = ConfigError(problems=[single, stack])
    assert [p.table for p in both.problems] == ["server", "stack[0]", None]  # nested errors are flattened
    assert str(both).splitlines() == [str(p) for p in both.problems]
    assert both.public_message == "the gateway is misconfigured" and "gw.toml" not in both.public_message
