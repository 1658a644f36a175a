"""The log scrubber's shortcuts lose nothing: short strings cannot hold a key, names memoised,
and the request log's JSON short cut renders the line structlog's chain renders."""

from __future__ import annotations

import datetime
import io
import json
import re
import re._parser as sre_parse  # the pattern's minimum width, computed by the re module itself
from typing import Any

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from onion.telemetry import _logging, configure_logging, json_line_writer, reset_logging
from onion.telemetry._logging import _SECRET_VALUE, _SHORTEST_SECRET, _may_hold_secret, scrub_secrets


def test_no_string_shorter_than_the_bound_can_match_the_secret_pattern() -> None:
    assert sre_parse.parse(_SECRET_VALUE.pattern).getwidth()[0] == _SHORTEST_SECRET


@settings(max_examples=300)
@given(st.from_regex(_SECRET_VALUE), st.text(max_size=20), st.text(max_size=20))
def test_law_every_string_the_pattern_matches_passes_the_prefilter(secret: str, before: str, after: str) -> None:
    text = before + secret + after
    assert _SECRET_VALUE.search(text) is not None
    assert _may_hold_secret(text)


@given(st.sampled_from(["sk-", "rk_live_", "ghp_", "github_pat_", "xoxb-", "AKIA", "AIza", "hf_", "BeArEr "]))
def test_each_kind_of_key_passes_the_prefilter(prefix: str) -> None:
    text = prefix + "AB12" * 10
    assert _SECRET_VALUE.search(text) is not None and _may_hold_secret(text)


def test_an_onion_request_id_skips_the_pattern() -> None:
    from onion import Context

    assert not _may_hold_secret(Context().request_id)


@settings(max_examples=300)
@given(st.text(max_size=8), st.sampled_from(["", "sk-", "Bearer ", "AKIA", "hf_", "b", "be", "bea"]))
def test_law_an_id_of_onions_shape_holds_no_secret_and_others_are_masked(tail: str, before: str) -> None:
    from onion._context import _ID_PREFIX
    from onion.telemetry import mask_request_id, mask_secrets

    shaped = _ID_PREFIX + tail.ljust(8, "0")
    # Whatever the 8 characters after the prefix, the pattern finds nothing: let through.
    assert _SECRET_VALUE.search(shaped) is None and mask_request_id(shaped) == shaped
    # Every other id is masked exactly as any field is.
    other = before + "AB12cd34" * 4 + tail
    assert mask_request_id(other) == mask_secrets(other)
    assert mask_request_id(_ID_PREFIX + other) == mask_secrets(_ID_PREFIX + other)


@settings(max_examples=500)
@given(
    st.text(alphabet="0123456789abcdef", min_size=12, max_size=12),
    st.text(alphabet="earbBk_-sSpx AKIzaf0123456789", min_size=8, max_size=8) | st.text(min_size=8, max_size=8),
)
def test_law_no_secret_fits_in_any_id_of_onions_shape(digits: str, tail: str) -> None:
    from onion._context import _ID_PREFIX

    # Any process's prefix (req_ and 12 hex digits), any 8 characters after it.
    assert len(_ID_PREFIX) == 16 and _ID_PREFIX.startswith("req_")
    assert _SECRET_VALUE.search("req_" + digits + tail) is None


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


def _both_lines(fields: dict[str, Any], level: str = "info") -> tuple[dict[str, Any], dict[str, Any]]:
    """The line structlog's chain renders and the one ``json_line_writer`` renders."""
    out = io.StringIO()
    configure_logging(json=True, stream=out, cache=False, stdlib=False, level="debug")
    try:
        log = structlog.get_logger("onion.request").bind()
        write = json_line_writer(log)
        assert write is not None
        getattr(log, level)("request", **dict(fields))
        write(level, "request", dict(fields))
    finally:
        reset_logging()
    slow, fast = (json.loads(line) for line in out.getvalue().splitlines())
    # Rendered microseconds apart: the timestamps differ, their shape does not.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", fast.pop("timestamp"))
    slow.pop("timestamp")
    return slow, fast


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(alphabet="sk-proj_ABCDEFabcdef0123456789 Bearerx", max_size=60),
    st.lists(st.text(alphabet="sk-proj_ABCabc0123456789", max_size=40), max_size=3),
    st.dictionaries(st.sampled_from(["pii", "secret", "api_key"]), st.integers(), max_size=2),
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["request_id", "model", "detail", "caller", "stream", "redacted"]), _values))
def test_law_the_short_cut_renders_the_line_structlog_renders(fields: dict[str, Any]) -> None:
    slow, fast = _both_lines(fields)
    assert list(fast) == list(slow) and fast == slow


def test_the_short_cut_keeps_context_local_fields_and_scrubs_them() -> None:
    key = "sk-proj-" + "b" * 24
    structlog.contextvars.bind_contextvars(tenant="acme", api_key="x", note=f"Bearer {key}")
    try:
        slow, fast = _both_lines({"model": "gpt-4o"}, "warning")
    finally:
        structlog.contextvars.clear_contextvars()
    assert fast == slow and list(fast) == list(slow)
    assert fast["api_key"] == "[REDACTED]" and key not in json.dumps(fast) and fast["level"] == "warning"


def test_no_short_cut_for_another_chain_or_a_bound_context() -> None:
    out = io.StringIO()
    configure_logging(json=False, stream=out, cache=False, stdlib=False)
    try:
        assert json_line_writer(structlog.get_logger().bind()) is None  # console rendering
    finally:
        reset_logging()
    configure_logging(json=True, stream=out, cache=False, stdlib=False)
    try:
        assert json_line_writer(structlog.get_logger().bind()) is not None
        assert json_line_writer(structlog.get_logger().bind(user="u")) is None
        assert json_line_writer(structlog.wrap_logger(None, processors=[]).bind()) is None
    finally:
        reset_logging()


@given(ns=st.integers(0, 4_102_444_800 * 10**9))  # to 2100
def test_the_short_cut_timestamp_is_structlogs_iso_format(ns: int) -> None:
    from onion.telemetry._logging import _utc_iso_now

    expected = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(microseconds=ns // 1000)
    assert _utc_iso_now(ns) == expected.isoformat().replace("+00:00", "Z")
