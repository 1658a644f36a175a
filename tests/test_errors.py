"""Errors carry a safe public message apart from their internal detail."""

from __future__ import annotations

import pytest

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
    assert large.public_message == "the request body is larger than 4096 bytes (the gateway's max_body_bytes)"
    assert OnionError().param is None


def test_a_config_error_carries_every_problem_flat() -> None:
    single = ConfigError("gw.toml: server: field 'port': must be 1-65535", table="server", field="port")
    assert single.problems == (single,) and (single.table, single.field) == ("server", "port")
    stack = ConfigError(problems=[ConfigError("gw.toml: stack[0]: a", table="stack[0]"), ConfigError("gw.toml: b")])
    both = ConfigError(problems=[single, stack])
    assert [p.table for p in both.problems] == ["server", "stack[0]", None]  # nested errors are flattened
    assert str(both).splitlines() == [str(p) for p in both.problems]
    assert both.public_message == "the gateway is misconfigured" and "gw.toml" not in both.public_message


# -- scrub: what of an upstream's message may reach a caller ---------------------------

HOSTILE_BODIES = [
    "Incorrect API key provided: sk-proj-abcdEFGH1234****wxyz. You can find it at https://platform.openai.com/keys.",
    "upstream 10.0.0.7:8443 refused: api_key=hunter2-secret",
    "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl failed",
    "connect to redis://:pw@cache.internal:6379/0 timed out",
    "see llm-gw.prod.svc.cluster.local:8080/v1/chat or [fe80::1]:9000",
    "token=ghp_0123456789abcdefABCDEF0123456789abcd password: 'p@ss' mail ops@corp.example.com",
    "AKIAIOSFODNN7EXAMPLE AIzaSyD-0123456789abcdefghijklmnopqrst",
    "x" * 5000 + "\x00\x1b[31m",
]
SECRETS = [
    "sk-proj",
    "platform.openai.com",
    "10.0.0.7",
    "8443",
    "hunter2",
    "eyJhbGci",
    "c2lnbmF0dXJl",
    "redis://",
    "cache.internal",
    "svc.cluster.local",
    "fe80",
    "ghp_",
    "p@ss",
    "ops@corp",
    "AKIA",
    "AIza",
    "\x00",
    "\x1b",
]


@pytest.mark.parametrize("body", HOSTILE_BODIES)
def test_scrub_removes_urls_hosts_keys_and_credentials(body: str) -> None:
    from onion.errors import scrub

    clean = scrub(body)
    assert len(clean) <= 300
    for secret in SECRETS:
        assert secret not in clean, (secret, clean)


@pytest.mark.parametrize(
    "text",
    [
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
        "Invalid value for 'messages[2].role': expected one of system, user, assistant, tool.",
        "The model `gpt-4o-mini` does not exist or you do not have access to it.",
    ],
)
def test_scrub_keeps_an_honest_reason_whole(text: str) -> None:
    from onion.errors import scrub

    assert scrub(text) == text


def test_a_chain_where_every_model_refused_the_request_keeps_the_refusals_class() -> None:
    from onion import AllProvidersFailed, ProviderError

    def refused(model: str) -> ProviderError:
        return ProviderError(
            "ctx",
            upstream_status=400,
            upstream_code="context_length_exceeded",
            param="messages",
            public_message="too long",
        )

    failed = AllProvidersFailed([refused("a"), refused("b")], models=["a", "b"])
    assert (failed.status, failed.code, failed.param, failed.public_message) == (
        400,
        "context_length_exceeded",
        "messages",
        "too long",
    )
    assert not failed.should_retry
    outage = AllProvidersFailed([refused("a"), ProviderError("down", upstream_status=503, retryable=True)])
    assert (outage.status, outage.code) == (502, "upstream_error") and outage.should_retry
