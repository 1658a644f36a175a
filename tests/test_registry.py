"""Layers are found by short name, entry point or import path and built from TOML tables."""

from __future__ import annotations

import textwrap
import tomllib

import pytest

from onion import CallNext, ConfigError, Layer, Request, Response, Stack, build_layer, resolve_layer
from onion.testing import ScriptedProvider


class Tagged(Layer):
    """A configurable test layer."""

    def __init__(self, tag: str, times: int = 1, ratio: float = 0.5, names: list[str] | None = None) -> None:
        if times < 0:
            raise ValueError("times must be >= 0")
        self.tag = tag
        self.times = times
        self.ratio = ratio
        self.names = names or []

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        response.headers["x-tag"] = self.tag * self.times
        return response


async def plain(request: Request, call_next: CallNext) -> Response:
    """A plain function layer."""
    return await call_next(request)


HERE = __name__


def _tables(text: str) -> list[dict[str, object]]:
    return tomllib.loads(textwrap.dedent(text))["stack"]


async def test_a_stack_builds_from_toml_by_import_path() -> None:
    tables = _tables(f"""
        [[stack]]
        use = "{HERE}:plain"
        [[stack]]
        use = "{HERE}:Tagged"
        tag = "ab"
        times = 2
        ratio = 1
        """)
    stack = Stack.from_config(tables, ScriptedProvider())
    assert [info.name for info in stack.infos] == ["plain", "tagged"]
    from onion import Message

    response = await stack(Request(model="m", messages=[Message("user", "x")]))
    assert response.headers["x-tag"] == "abab"


@pytest.mark.parametrize(
    ("table", "fragments"),
    [
        ({"use": f"{HERE}:Tagged", "tag": 3}, ["stack[0]", "Tagged", "field 'tag'", "Expected `str`"]),
        ({"use": f"{HERE}:Tagged", "tag": "a", "tims": 2}, ["stack[0]", "field 'tims'", "no such parameter"]),
        ({"use": f"{HERE}:Tagged"}, ["field 'tag'", "required"]),
        ({"use": f"{HERE}:Tagged", "tag": "a", "times": -1}, ["times must be >= 0"]),
        ({"use": f"{HERE}:Tagged", "tag": "a", "names": [1]}, ["field 'names[0]'"]),
        ({"use": f"{HERE}:plain", "x": 1}, ["takes no parameters"]),
        ({"use": "no_such_layer"}, ["unknown layer 'no_such_layer'", "known layers"]),
        ({"use": "no.such.module:Thing"}, ["cannot import"]),
        ({"tag": "a"}, ["field 'use' is required"]),
    ],
)
def test_bad_tables_name_the_table_and_field(table: dict[str, object], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        build_layer(table, "stack[0]")
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_the_second_table_is_named() -> None:
    with pytest.raises(ConfigError, match=r"stack\[1\]"):
        Stack.from_config([{"use": f"{HERE}:plain"}, {"use": f"{HERE}:Tagged", "tag": 1}], ScriptedProvider())


def test_resolve_by_import_path_returns_the_object() -> None:
    assert resolve_layer(f"{HERE}:Tagged") is Tagged
