"""The log scrubber's shortcuts lose nothing: short strings cannot hold a key, names memoised."""

from __future__ import annotations

import re._parser as sre_parse  # the pattern's minimum width, computed by the re module itself

from hypothesis import given
from hypothesis import strategies as st

from onion.telemetry import _logging
from onion.telemetry._logging import _SECRET_VALUE, _SHORTEST_SECRET, scrub_secrets


def test_no_string_shorter_than_the_bound_can_match_the_secret_pattern() -> None:
    assert sre_parse.parse(_SECRET_VALUE.pattern).getwidth()[0] == _SHORTEST_SECRET


@given(st.text(alphabet="sk-proj_ABCDEFabcdef0123456789 Bearerx", max_size=80), st.sampled_from(["detail", "api_key"]))
def test_law_the_processor_masks_as_the_full_scrub_would(value: str, key: str) -> None:
    event = scrub_secrets(None, "info", {key: value, "event": "request"})
    expected = "[REDACTED]" if key == "api_key" else _SECRET_VALUE.sub("[REDACTED]", value)
    assert event[key] == expected


def test_secret_field_names_are_found_also_once_memoised() -> None:
    for _ in range(2):
        event = scrub_secrets(None, "info", {"Authorization": "x", "openai_api_key": "y", "model": "gpt-4o"})
        assert event == {"Authorization": "[REDACTED]", "openai_api_key": "[REDACTED]", "model": "gpt-4o"}
    assert _logging._SECRET_FIELD_MEMO["Authorization"] is True


def test_a_key_nested_in_a_field_is_still_masked() -> None:
    key = "sk-proj-" + "a" * 24
    event = scrub_secrets(None, "warning", {"detail": {"headers": [f"Bearer {key}"]}, "short": "sk-abc"})
    assert key not in str(event) and event["short"] == "sk-abc"
