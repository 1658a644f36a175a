"""Errors carry a safe public message apart from their internal detail."""

from __future__ import annotations

from onion import AllProvidersFailed, GuardrailViolation, ModelNotFound, ProviderError, RateLimited, Timeout


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
