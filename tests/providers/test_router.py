"""The router: model names to providers, explicit prefixes, unknown models."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import ConfigError, Message, ModelNotFound, Request
from onion.providers import Router
from onion.testing import Reply, ScriptedProvider


def scripted(name: str, *models: str) -> ScriptedProvider:
    provider = ScriptedProvider(default=Reply(f"from {name}"), name=name)
    provider.models = tuple(models)  # type: ignore[attr-defined]
    return provider


def ask(model: str) -> Request:
    return Request(model=model, messages=[Message("user", "hi")])


async def test_routes_by_listed_model_and_by_explicit_prefix() -> None:
    a, b = scripted("a", "m1", "shared"), scripted("b", "m2", "shared")
    router = Router([a, b])
    assert (await (await router(ask("m1"))).result()).content == "from a"
    assert (await (await router(ask("m2"))).result()).content == "from b"
    # a model two providers list is balanced between them (tests/providers/test_balance.py)
    assert (await (await router(ask("shared"))).result()).content in ("from a", "from b")
    assert (await (await router(ask("b/shared"))).result()).content == "from b"
    assert b.requests[-1].model == "shared"  # the prefix is not sent upstream
    assert router.models() == [("m1", "a"), ("shared", "a"), ("m2", "b")]


async def test_unknown_model_names_the_model() -> None:
    router = Router([scripted("a", "m1")])
    with pytest.raises(ModelNotFound) as caught:
        await router(ask("gpt-9"))
    assert "gpt-9" in caught.value.public_message and caught.value.status == 404
    with pytest.raises(ModelNotFound):
        await router(ask("a/not-listed"))
    with pytest.raises(ModelNotFound):
        await router(ask("nobody/m1"))


async def test_a_provider_without_models_catches_the_rest() -> None:
    catch_all = scripted("any")
    router = Router([scripted("a", "m1"), catch_all])
    assert (await (await router(ask("whatever/model-7"))).result()).content == "from any"
    assert catch_all.requests[-1].model == "whatever/model-7"
    assert (await (await router(ask("any/x"))).result()).content == "from any"
    assert catch_all.requests[-1].model == "x"


async def test_globs_serve_the_names_no_provider_lists() -> None:
    # Names first, then the first glob that matches (in order), then the catch-all.
    named, gpt, wide, rest = (
        scripted("named", "gpt-4o"),
        scripted("gpt", "gpt-*", "o[1-9]*"),
        scripted("wide", "*"),
        scripted("rest"),
    )
    router = Router([gpt, named, wide, rest])
    assert router.route("gpt-4o") == (named, "gpt-4o")  # a name beats a glob listed before it
    assert router.route("gpt-4.1") == (gpt, "gpt-4.1")
    assert router.route("o3-mini") == (gpt, "o3-mini")
    assert router.route("claude-x") == (wide, "claude-x")
    assert router.route("gpt/gpt-5") == (gpt, "gpt-5")  # an explicit prefix honours globs
    assert router.route("rest/anything") == (rest, "anything")
    assert router.deployments("gpt-4.1") == [gpt]  # a glob is one deployment, not balanced
    assert router.models() == [("gpt-4o", "named")] and router.patterns()[0] == ("gpt-*", "gpt")
    assert (await (await router(ask("o1"))).result()).content == "from gpt"
    assert gpt.requests[-1].model == "o1"
    with pytest.raises(ModelNotFound):
        Router([gpt]).route("claude-x")
    with pytest.raises(ModelNotFound):
        Router([gpt]).route("gpt/claude-x")


globs = st.sampled_from(["a*", "*b", "a?", "[ab]*", "*", "c*d"])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(st.one_of(st.text("abcd", min_size=1, max_size=3), globs), max_size=3), min_size=1, max_size=4),
    st.lists(st.text("abcd", min_size=1, max_size=4), min_size=1, max_size=10),
)
def test_a_name_routes_by_name_then_first_glob_then_catch_all(tables: list[list[str]], asked: list[str]) -> None:
    import fnmatch

    providers = [scripted(f"p{i}", *dict.fromkeys(models)) for i, models in enumerate(tables)]
    router = Router(providers)
    for model in asked * 2:  # twice: a remembered verdict is the same verdict
        named = [p for p in providers if model in p.models]  # type: ignore[attr-defined]
        matched = [p for p in providers if any(fnmatch.fnmatchcase(model, g) for g in p.models if set(g) & set("*?["))]  # type: ignore[attr-defined]
        catch_all = [p for p in providers if not p.models]  # type: ignore[attr-defined]
        expected = (named or matched or catch_all or [None])[0]
        if expected is None:
            with pytest.raises(ModelNotFound):
                router.route(model)
        else:
            assert router.route(model) == (expected, model)


def test_duplicate_names_and_empty_router_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        Router([scripted("a", "m"), scripted("a", "n")])
    with pytest.raises(ConfigError):
        Router([])


names = st.text("abcdefgh-", min_size=1, max_size=6)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(names, st.lists(names, max_size=4, unique=True), min_size=1, max_size=4))
def test_every_listed_model_routes_to_the_first_provider_listing_it(table: dict[str, list[str]]) -> None:
    providers = [scripted(name, *models) for name, models in table.items()]
    router = Router(providers)
    for provider in providers:
        for model in provider.models:  # type: ignore[attr-defined]
            chosen, sent = router.route(model)
            first = next(p for p in providers if model in p.models)  # type: ignore[attr-defined]
            assert chosen is first and sent == model
            explicit, sent = router.route(f"{provider.name}/{model}")
            if f"{provider.name}/{model}" not in router._by_model:
                assert explicit is provider and sent == model


def test_deployments_lists_every_provider_of_a_model_in_order() -> None:
    a, b, c = scripted("a", "m1", "shared"), scripted("b", "shared"), scripted("c")
    router = Router([a, b, c])
    assert router.deployments("shared") == [a, b]
    assert router.deployments("m1") == [a]
    assert router.deployments("b/shared") == [b]
    assert router.deployments("anything") == [c]  # the catch-all
    assert router.healthy_deployments("shared") == [a, b]  # nothing is ejected
    with pytest.raises(ModelNotFound):
        Router([a]).deployments("gpt-9")
