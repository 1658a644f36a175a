"""The upstream's rate-limit, timing and request-id headers reach the client
(``[server] upstream_headers``), read by the official ``openai`` and ``anthropic``
clients' ``with_raw_response`` over real HTTP, through ``onion serve``'s app in front of
the fake upstreams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onion import ConfigError
from onion._upstream_headers import _NEVER, _NEVER_PREFIXES, REQUEST_ID, HeaderAllowlist, refusal
from onion.config import DEFAULT_STACK, build_gateway, parse_config
from onion.server import create_app
from onion.testing.anthropic_upstream import AnthropicUpstream
from onion.testing.upstream import FakeUpstream, Fault, ThreadedServer

HELLO: Any = [{"role": "user", "content": "hello"}]
OPENAI_FORWARDED = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "openai-processing-ms",
)
# What the fake upstream sends and no config forwards (or the default does not).
WITHHELD = ("set-cookie", "openai-organization", "openai-project", "openai-version", "anthropic-organization-id")


def _config(base_url: str, *, kind: str = "openai", stack: list[dict[str, Any]] | None = None, **server: Any) -> Any:
    providers: list[dict[str, Any]] = [
        {"name": "primary", "kind": kind, "base_url": base_url, "models": ["gpt-4o", "claude-x"]}
    ]
    tables = stack if stack is not None else [dict(t) for t in DEFAULT_STACK]
    return parse_config({"server": server, "providers": providers, "stack": tables}, env={})


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


async def _serve(config: Any) -> ThreadedServer:
    return await ThreadedServer(create_app(build_gateway(config)), lifespan="on").__aenter__()


def _client(server: ThreadedServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def _expected(sent: dict[str, str], names: tuple[str, ...], request_id: str) -> dict[str, str]:
    return {**{name: sent[name] for name in names}, "x-upstream-request-id": sent[request_id]}


def _upstream_part(headers: httpx.Headers, sent: dict[str, str]) -> dict[str, str]:
    # Those of the answer's headers that are the upstream's (by name), plus the renamed id;
    # x-request-id is onion's own name (checked apart).
    names = [name for name in sent if name != "x-request-id"] + ["x-upstream-request-id"]
    return {name: headers[name] for name in names if name in headers}


@pytest.mark.parametrize("stream", [False, True])
async def test_the_allowlisted_headers_reach_the_openai_client_unchanged(upstream: FakeUpstream, stream: bool) -> None:
    server = await _serve(_config(upstream.base_url))
    try:
        client = _client(server)
        if stream:
            raw = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO, stream=True)
            async for _ in raw.parse():
                pass
        else:
            raw = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
            assert raw.parse().choices[0].message.content
        await client.close()
    finally:
        await server.__aexit__(None, None, None)
    [sent] = upstream.sent_headers
    assert _upstream_part(raw.headers, sent) == _expected(sent, OPENAI_FORWARDED, "x-request-id")
    # onion's own request id stays onion's; the withheld ones never come through.
    assert raw.headers["x-request-id"].startswith("req_") and raw.headers["x-request-id"] != sent["x-request-id"]
    for name in WITHHELD:
        assert name not in raw.headers


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_ratelimit_headers_reach_the_client(stream: bool) -> None:
    async with AnthropicUpstream() as upstream:
        server = await _serve(_config(upstream.base_url, kind="anthropic", stack=[]))
        try:
            client = anthropic.AsyncAnthropic(base_url=server.url, api_key="unused", max_retries=0)
            messages: Any = [{"role": "user", "content": "hi"}]
            if stream:
                raw = await client.messages.with_raw_response.create(
                    model="claude-x", max_tokens=16, messages=messages, stream=True
                )
                async for _ in await raw.parse():
                    pass
            else:
                raw = await client.messages.with_raw_response.create(model="claude-x", max_tokens=16, messages=messages)
                assert (await raw.parse()).content
            await client.close()
        finally:
            await server.__aexit__(None, None, None)
        [sent] = upstream.sent_headers
    names = tuple(name for name in sent if name.startswith("anthropic-ratelimit-"))
    assert len(names) == 6
    assert _upstream_part(raw.headers, sent) == _expected(sent, names, "request-id")
    assert "request-id" not in raw.headers and "anthropic-organization-id" not in raw.headers


async def test_an_empty_allowlist_forwards_none(upstream: FakeUpstream) -> None:
    server = await _serve(_config(upstream.base_url, upstream_headers=[]))
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            for stream in (False, True):
                body = {"model": "gpt-4o", "messages": HELLO, "stream": stream, "temperature": 0.5 + stream}
                answer = await http.post("/v1/chat/completions", json=body)
                assert answer.status_code == 200
                assert _upstream_part(answer.headers, upstream.sent_headers[-1]) == {}
    finally:
        await server.__aexit__(None, None, None)
    assert len(upstream.sent_headers) == 2


async def test_a_configured_list_forwards_exactly_its_entries(upstream: FakeUpstream) -> None:
    server = await _serve(_config(upstream.base_url, upstream_headers=["openai-version", "X-RateLimit-Reset-*"]))
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            answer = await http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO})
    finally:
        await server.__aexit__(None, None, None)
    [sent] = upstream.sent_headers
    names = ("openai-version", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
    assert _upstream_part(answer.headers, sent) == {name: sent[name] for name in names}


async def test_a_cache_hit_carries_no_upstream_header(upstream: FakeUpstream) -> None:
    server = await _serve(_config(upstream.base_url))
    try:
        client = _client(server)
        first = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
        second = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
        await client.close()
    finally:
        await server.__aexit__(None, None, None)
    [sent] = upstream.sent_headers  # the second came from the cache
    assert first.headers["x-onion-cache"] == "miss" and second.headers["x-onion-cache"] == "hit"
    assert _upstream_part(first.headers, sent) == _expected(sent, OPENAI_FORWARDED, "x-request-id")
    assert _upstream_part(second.headers, sent) == {}


@pytest.mark.parametrize("stream", [False, True])
async def test_after_a_retry_the_headers_are_the_answering_attempts(upstream: FakeUpstream, stream: bool) -> None:
    stack = [{**t, "base_delay": 0.0} if t["use"] == "retry" else dict(t) for t in DEFAULT_STACK]
    upstream.push(Fault(status=503))
    server = await _serve(_config(upstream.base_url, stack=stack))
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            answer = await http.post(
                "/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO, "stream": stream}
            )
            assert answer.status_code == 200
    finally:
        await server.__aexit__(None, None, None)
    failed, answered = upstream.sent_headers
    assert failed["x-request-id"] != answered["x-request-id"]
    assert _upstream_part(answer.headers, answered) == _expected(answered, OPENAI_FORWARDED, "x-request-id")


async def test_after_a_fallback_the_headers_are_the_answering_deployments() -> None:
    async with FakeUpstream() as down, FakeUpstream() as up:
        down.fault_for = lambda body: Fault(status=500)
        providers = [
            {"name": "down", "kind": "openai", "base_url": down.base_url, "models": ["gpt-4o"]},
            {"name": "up", "kind": "openai", "base_url": up.base_url, "models": ["gpt-4o-mini"]},
        ]
        stack = [{"use": "fallback", "models": ["gpt-4o", "gpt-4o-mini"]}]
        config = parse_config({"providers": providers, "stack": stack}, env={})
        server = await _serve(config)
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                answer = await http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO})
        finally:
            await server.__aexit__(None, None, None)
        assert answer.status_code == 200, answer.text
        [answered] = up.sent_headers
        assert down.sent_headers
    assert _upstream_part(answer.headers, answered) == _expected(answered, OPENAI_FORWARDED, "x-request-id")


@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_429_reaching_the_client_keeps_its_ratelimit_headers(
    upstream: FakeUpstream, stream: bool
) -> None:
    upstream.fault_for = lambda body: Fault(status=429, retry_after="7", error_code="rate_limit_exceeded")
    server = await _serve(_config(upstream.base_url, stack=[]))
    try:
        client = _client(server)
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=stream)
        await client.close()
    finally:
        await server.__aexit__(None, None, None)
    [sent] = upstream.sent_headers
    headers = caught.value.response.headers
    assert headers["retry-after"] == "7"
    assert _upstream_part(headers, sent) == _expected(sent, OPENAI_FORWARDED, "x-request-id")


# -- the never-list: refused in config, never forwarded ---------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        "set-cookie",
        "Content-Type",
        "content-*",
        "transfer-encoding",
        "authorization",
        "www-authenticate",
        "proxy-authenticate",
        "proxy-*",
        "openai-organization",
        "openai-*",
        "server",
        "date",
        "x-request-id",
        "x-onion-cache",
        "x-onion-*",
        "x-*",
        "*",
        "x-rate?limit",
        "x-*-ms",
        "",
        "bad name",
    ],
)
def test_a_never_forwarded_or_malformed_entry_is_a_config_error_naming_it(entry: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config("http://127.0.0.1:9/v1", upstream_headers=["x-ratelimit-*", entry])
    [problem] = caught.value.problems
    assert problem.table == "server" and problem.field == "upstream_headers[1]"
    with pytest.raises(ValueError, match=r"upstream_headers\[0\]"):
        HeaderAllowlist([entry])


_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=24)


@given(
    entries=st.lists(_NAME.map(lambda n: n + "*") | _NAME, max_size=5),
    raw=st.lists(
        st.tuples(
            _NAME | st.sampled_from(sorted(_NEVER)) | st.sampled_from([p + "x" for p in _NEVER_PREFIXES]),
            st.text(alphabet="ab1\r\n\0 ", max_size=6),
        ),
        max_size=12,
    ),
)
def test_pick_forwards_exactly_the_allowed_and_safe_headers(entries: list[str], raw: list[tuple[str, str]]) -> None:
    # Laws: a forwarded header matched an entry, its value is unchanged and has no CR, LF or
    # NUL; no never-forwarded name ever comes out; every safe matching header does.
    allowed = [e for e in entries if refusal(e) is None]
    picked = HeaderAllowlist(allowed).pick([(k.encode(), v.encode()) for k, v in raw])

    def matches(name: str) -> bool:
        return any(name.startswith(e[:-1]) if e.endswith("*") else name == e for e in allowed)

    expected = {k: v for k, v in raw if matches(k) and not any(c in v for c in "\r\n\0")}
    assert picked == expected
    for name in picked:
        assert name not in _NEVER and not name.startswith(_NEVER_PREFIXES)


def test_an_empty_allowlist_is_falsy() -> None:
    assert not HeaderAllowlist([])
    assert HeaderAllowlist(["x-upstream-request-id"]).pick([(b"Request-Id", b"r1")]) == {"x-upstream-request-id": "r1"}


async def test_the_routers_deployments_each_give_their_own_headers() -> None:
    # One model on two deployments, one of them failing: the router tries the other, and
    # the answer carries the headers of the deployment that served it.
    async with FakeUpstream() as down, FakeUpstream() as up:
        down.fault_for = lambda body: Fault(status=500)
        providers = [
            # Picked first almost always, so the router's failover is what is tested.
            {"name": "down", "kind": "openai", "base_url": down.base_url, "models": ["gpt-4o"], "weight": 1000},
            {"name": "up", "kind": "openai", "base_url": up.base_url, "models": ["gpt-4o"]},
        ]
        server = await _serve(parse_config({"providers": providers, "stack": []}, env={}))
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                for turn in range(3):
                    body = {"model": "gpt-4o", "messages": HELLO, "temperature": turn / 10}
                    answer = await http.post("/v1/chat/completions", json=body)
                    assert answer.status_code == 200, answer.text
                    assert answer.headers["x-onion-deployment"] == "up"
                    answered = up.sent_headers[-1]
                    expected = _expected(answered, OPENAI_FORWARDED, "x-request-id")
                    assert _upstream_part(answer.headers, answered) == expected
        finally:
            await server.__aexit__(None, None, None)
        assert len(up.sent_headers) == 3 and down.sent_headers


_SPELLED = st.tuples(_NAME | st.sampled_from(["x-request-id", "request-id", "x-ratelimit-limit"]), st.randoms()).map(
    lambda pair: "".join(c.upper() if pair[1].random() < 0.5 else c for c in pair[0])
)


@given(
    entries=st.lists(_NAME.map(lambda n: n + "*") | _NAME | st.just("x-upstream-request-id"), max_size=5),
    answers=st.lists(
        st.lists(st.tuples(_SPELLED, st.text(alphabet="ab1\r\n\0 ", max_size=6)), max_size=10), min_size=1, max_size=6
    ),
)
def test_one_allowlist_picks_every_answer_as_the_rule_says_whatever_it_saw_before(
    entries: list[str], answers: list[list[tuple[str, str]]]
) -> None:
    # The allowlist remembers what it decided for each header name as spelled: answer after
    # answer on the same allowlist, names in any case, the upstream's request id included,
    # what comes out is still the rule's (lower-cased names, values unchanged and safe).
    allowed = [e for e in entries if refusal(e) is None]
    shared = HeaderAllowlist(allowed)
    ids = "x-upstream-request-id" in allowed

    def matches(name: str) -> bool:
        return any(name.startswith(e[:-1]) if e.endswith("*") else name == e for e in allowed if e != REQUEST_ID)

    for raw in answers:
        expected: dict[str, str] = {}
        for key, value in raw:
            name = key.lower()
            if any(c in value for c in "\r\n\0"):
                continue
            if matches(name):
                expected[name] = value
            if ids and name in ("x-request-id", "request-id"):
                expected.setdefault(REQUEST_ID, value)
        assert shared.pick([(k.encode(), v.encode()) for k, v in raw]) == expected


def test_an_upstream_that_invents_header_names_is_still_picked_right() -> None:
    # Past the bound on remembered names, a name is decided afresh each time.
    allowlist = HeaderAllowlist(["x-ratelimit-*"])
    for n in range(600):
        raw = [(b"x-invented-%d" % n, b"v"), (b"X-RateLimit-Remaining-%d" % n, b"%d" % n)]
        assert allowlist.pick(raw) == {f"x-ratelimit-remaining-{n}": str(n)}
