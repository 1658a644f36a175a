"""A third-party layer installed from its own package (tests/thirdparty_pkg) plugs in by
entry point, runs traffic from a TOML stack, and its constraints bind like a built-in's."""

from __future__ import annotations

import os
import tomllib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import ConfigError, Message, Request, Stack, available_layers
from onion.testing import (
    DEFAULT_LAWS,
    NoProviderPII,
    Probe,
    Reply,
    answer_for,
    check_laws,
    check_pair,
    law_status,
    planned_provider,
)
from onion.testing.strategies import chunk_cuts

NAME = "acme_secret_scrubber"
SECRETS = ("sk-live-4f9aQ2mZ8rT1uV6wX3yB", "pk-test_0123456789abcdefXYZ")

GOOD = """
[[stack]]
use = "input_guard"
[[stack]]
use = "exact_cache"
[[stack]]
use = "acme_secret_scrubber"
placeholder = "[key]"
"""

REVERSED = """
[[stack]]
use = "acme_secret_scrubber"
[[stack]]
use = "exact_cache"
"""


@pytest.fixture(autouse=True)
def _installed() -> None:
    if NAME not in available_layers():
        message = "the example package is not installed: pip install -e tests/thirdparty_pkg"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _tables(text: str) -> list[dict]:
    return tomllib.loads(text)["stack"]


def leaking(secret: str):
    def answer(request: Request) -> Reply:
        return Reply(answer_for(request).text + f" use the key {secret} to log in")

    return answer


def test_the_entry_point_resolves_to_the_package() -> None:
    assert available_layers()[NAME] == "onion_acme.scrubber:SecretScrubber"
    stack = Stack.from_config(_tables(GOOD), handler=planned_provider())
    assert [info.name for info in stack.infos] == ["input_guard", "exact_cache", NAME]
    assert "holds back: the last unfinished word" in stack.describe()


def test_its_ordering_constraint_is_enforced_like_a_builtin() -> None:
    with pytest.raises(ConfigError) as caught:
        Stack.from_config(_tables(REVERSED), handler=planned_provider())
    message = str(caught.value)
    assert NAME in message and "'exact_cache'" in message
    assert "a cache must store only scrubbed answers" in message


def test_its_parameters_are_validated_like_a_builtin() -> None:
    with pytest.raises(ConfigError, match="placeholdr"):
        Stack.from_config([{"use": NAME, "placeholdr": "x"}], handler=planned_provider())
    with pytest.raises(ConfigError, match="placeholder"):
        Stack.from_config([{"use": NAME, "placeholder": 3}], handler=planned_provider())


def test_law_status_sees_it_as_an_output_guard() -> None:
    stack = Stack.from_config(_tables(GOOD), handler=planned_provider())
    verdicts = {status.law: status for status in law_status(stack)}
    assert verdicts["input-guard-first"].verdict == "by construction"
    assert NAME in verdicts["no-provider-pii"].reason


@settings(max_examples=30, deadline=None)
@given(
    cuts=chunk_cuts(max_offset=140),
    secret=st.sampled_from(SECRETS),
    text=st.sampled_from(["hi", "log me in", "what key?"]),
)
async def test_traffic_through_a_toml_stack_keeps_the_laws(cuts: tuple[int, ...], secret: str, text: str) -> None:
    stack = Stack.from_config(_tables(GOOD), handler=planned_provider())
    provider = planned_provider(answer=leaking(secret), chunk_cuts=cuts)
    probe = Probe(list(stack.layers), provider)
    laws = [*DEFAULT_LAWS, NoProviderPII([secret])]
    request = Request(model="m", messages=[Message("user", text)])
    for stream in (True, False, True):
        observation = await probe.send(msgspec.structs.replace(request, stream=stream))
        check_laws(laws, observation, probe.observations)
        assert observation.outcome.kind == "answer"
        assert "[key]" in observation.outcome.text
    assert probe.observations[-1].served_by == "exact_cache"
    assert len(provider.requests) == 1
    complete, streamed = await probe.send_both(msgspec.structs.replace(request, messages=[Message("user", "other")]))
    check_pair(complete, streamed)
