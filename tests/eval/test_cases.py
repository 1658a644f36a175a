"""Case files: JSONL and TOML parse into cases; a bad case names its line and field."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion.eval import Case, CaseFileError, CaseMessage, load_cases, parse_cases

GOOD_JSONL = """\
{"id": "greet", "input": "Say hello", "expect": ["hello"], "tags": ["smoke"]}

# comments and blank lines are skipped
{"messages": [{"role": "system", "content": "Answer in JSON"}, {"role": "user", "content": "x"}], "schema": {"type": "object", "required": ["a"]}, "temperature": 0.7}
"""  # noqa: E501


def test_jsonl_cases_parse_with_defaults() -> None:
    first, second = parse_cases(GOOD_JSONL, name="c.jsonl")
    assert first.id == "greet"
    assert first.all_messages() == [CaseMessage("user", "Say hello")]
    assert first.tags == ["smoke"]
    # An unnamed case is named after its line, so reports stay comparable.
    assert second.id == "line4"
    assert [m.role for m in second.all_messages()] == ["system", "user"]


def test_sample_count_follows_temperature() -> None:
    first, second = parse_cases(GOOD_JSONL)
    assert first.sample_count(5) == 1
    assert second.sample_count(5) == 5
    assert msgspec.structs.replace(second, samples=2).sample_count(5) == 2


def test_toml_cases_parse(tmp_path) -> None:
    path = tmp_path / "cases.toml"
    path.write_text(
        '[[case]]\nid = "a"\ninput = "hi"\nexpect = ["hi"]\n\n[[case]]\ninput = "two"\nregex = ["\\\\d+"]\n'
    )
    cases = load_cases(path)
    assert [c.id for c in cases] == ["a", "case2"]
    assert cases[1].regex == ["\\d+"]


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"input": "x", "expect": "hello"}', "'expect'"),
        ('{"messages": [{"role": "user", "content": 3}]}', "'messages[0].content'"),
        ('{"input": "x", "expcet": ["a"]}', "'expcet'"),
        ('{"messages": [{"content": "x"}]}', "'messages[0].role'"),
        ('{"input": "x", "samples": 0}', "'samples'"),
        ('{"input": "x", "min_pass_rate": 1.5}', "'min_pass_rate'"),
        ('{"expect": ["a"]}', "'messages'"),
        ('{"input": "x", "regex": ["ok", "(unclosed"]}', "'regex[1]'"),
        ('{"input": "x", "schema": {"type": "objekt"}}', "'schema"),
    ],
)
def test_bad_case_names_line_and_field(line: str, field: str) -> None:
    text = '{"input": "fine"}\n\n' + line + "\n"
    with pytest.raises(CaseFileError) as info:
        parse_cases(text, name="cases.jsonl")
    message = str(info.value)
    assert message.startswith("cases.jsonl:3: ")
    assert f"field {field}" in message


def test_schema_case_without_the_eval_extra_names_line_field_and_extra(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "jsonschema", None)  # as if the `eval` extra were absent
    text = '{"input": "a"}\n{"input": "b", "schema": {"type": "object"}}\n'
    with pytest.raises(CaseFileError) as info:
        parse_cases(text, name="c.jsonl")
    assert str(info.value).startswith("c.jsonl:2: field 'schema': needs pip install 'onion-llm[eval]'")
    assert parse_cases('{"input": "no schema, no jsonschema needed"}')[0].id == "line1"


def test_invalid_json_names_the_line() -> None:
    with pytest.raises(CaseFileError, match=r"^c.jsonl:2: not valid JSON"):
        parse_cases('{"input": "a"}\n{"input": \n', name="c.jsonl")


def test_toml_error_names_the_case_line(tmp_path) -> None:
    path = tmp_path / "cases.toml"
    path.write_text('[[case]]\ninput = "ok"\n\n# second\n[[case]]\ninput = "x"\ntags = "smoke"\n')
    with pytest.raises(CaseFileError, match=r"cases.toml:5: field 'tags'"):
        load_cases(path)


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(CaseFileError, match="'same' appears twice"):
        parse_cases('{"id": "same", "input": "a"}\n{"id": "same", "input": "b"}\n')


def test_missing_file_is_a_case_file_error(tmp_path) -> None:
    with pytest.raises(CaseFileError, match="no such file"):
        load_cases(tmp_path / "absent.jsonl")


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
_cases = st.builds(
    Case,
    id=st.text("abcdefgh-_0123456789", min_size=1, max_size=12),
    messages=st.lists(st.builds(CaseMessage, st.sampled_from(["system", "user", "assistant"]), _text), max_size=3),
    input=_text,
    temperature=st.none() | st.floats(0, 2),
    expect=st.lists(_text, max_size=3),
    forbid=st.lists(_text, max_size=3),
    tags=st.lists(st.text("abcxyz", min_size=1, max_size=5), max_size=3),
    samples=st.none() | st.integers(1, 20),
    min_pass_rate=st.floats(0, 1),
)


@settings(max_examples=60)
@given(st.lists(_cases, max_size=5, unique_by=lambda c: c.id))
def test_jsonl_round_trip(cases: list[Case]) -> None:
    """Law: a case written as one JSON line reads back equal."""
    text = "\n".join(msgspec.json.encode(c).decode() for c in cases)
    assert parse_cases(text) == cases


def test_the_example_case_files_load() -> None:
    from pathlib import Path

    folder = Path(__file__).parent / "cases"
    jsonl, toml = load_cases(folder / "example.jsonl"), load_cases(folder / "example.toml")
    assert [c.id for c in jsonl] == ["capital", "json-city", "haiku"]
    assert jsonl[2].sample_count(1) == 5
    assert [c.id for c in toml] == ["capital", "no-secrets"]
