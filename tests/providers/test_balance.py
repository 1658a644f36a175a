"""Several deployments per model: weights, outlier ejection and its probe, another
deployment before failing, all-ejected behaviour, Redis sharing, config errors.

Deployments are ``OpenAIProvider``\\ s talking to ``FakeUpstream``\\ s over real HTTP.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import ConfigError, Context, Message, PhaseLimits, ProviderError, Request, Stack
from onion.config import build_gateway, parse_config
from onion.providers import EjectionPolicy, HealthTable, OpenAIProvider, Router
from onion.testing import Fail, Reply, ScriptedProvider
from onion.testing.upstream import FakeUpstream, Fault

MODEL = "gpt-4o"


class Clock:
    """Wall time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[FakeUpstream, FakeUpstream]]:
    async with FakeUpstream() as east, FakeUpstream() as west:
        yield east, west


def deployments(east: FakeUpstream, west: FakeUpstream) -> list[OpenAIProvider]:
    return [
        OpenAIProvider(name="east", base_url=east.base_url, models=[MODEL], read_timeout=5),
        OpenAIProvider(name="west", base_url=west.base_url, models=[MODEL], read_timeout=5),
    ]


def ask(*, stream: bool = False) -> Request:
    return Request(model=MODEL, messages=[Message("user", "hello")], stream=stream, context=Context())


async def answer(router: Router, *, stream: bool = False) -> tuple[str, str]:
    """(the deployment that served, the text)."""
    response = await router(ask(stream=stream))
    deployment = response.headers["x-onion-deployment"]
    return deployment, (await response.result()).content or ""


def chat_calls(upstream: FakeUpstream) -> int:
    return sum(1 for path, _, _ in upstream.requests if path.endswith("/chat/completions"))


@pytest.mark.parametrize("stream", [False, True])
async def test_weights_share_the_calls(upstreams: tuple[FakeUpstream, FakeUpstream], stream: bool) -> None:
    east, west = upstreams
    router = Router(deployments(east, west), weights={"east": 3.0}, rng=random.Random(7))
    try:
        served = [(await answer(router, stream=stream))[0] for _ in range(200)]
    finally:
        await router.aclose()
    share = served.count("east") / len(served)
    # 200 draws at p = 0.75: sd 0.031; the bounds are 4 sd wide, the seed makes it exact.
    assert 0.62 <= share <= 0.88, share
    assert chat_calls(east) == served.count("east") and chat_calls(west) == served.count("west")


def test_weights_hold_over_many_picks_and_in_flight_steers() -> None:
    table = HealthTable({"a": 3.0, "b": 1.0}, groups=[["a", "b"]], rng=random.Random(1))
    picks = [table.pick(["a", "b"]) for _ in range(8000)]
    assert abs(picks.count("a") / 8000 - 0.75) < 0.02
    for _ in range(9):  # nine calls in flight on a: its score drops to 3/10 against b's 1
        table.started("a")
    picks = [table.pick(["a", "b"]) for _ in range(8000)]
    assert abs(picks.count("a") / 8000 - 0.3 / 1.3) < 0.02
    plain = HealthTable({"a": 3.0, "b": 1.0}, EjectionPolicy(in_flight_bias=0), rng=random.Random(1))
    for _ in range(9):
        plain.started("a")
    assert abs([plain.pick(["a", "b"]) for _ in range(8000)].count("a") / 8000 - 0.75) < 0.02


@pytest.mark.parametrize("stream", [False, True])
async def test_a_failure_tries_the_other_deployment_first(
    upstreams: tuple[FakeUpstream, FakeUpstream], stream: bool
) -> None:
    east, west = upstreams
    router = Router(deployments(east, west), weights={"east": 1e9}, rng=random.Random(1))
    stack = Stack([], handler=router)
    try:
        east.push(Fault(status=503))
        request = ask(stream=stream)
        response = await stack(request)
        assert response.headers["x-onion-deployment"] == "west"
        assert (await response.result()).content
        assert (chat_calls(east), chat_calls(west)) == (1, 1)
        assert request.context.attempts == 2  # both calls are counted
        assert router.health.state("east").failed == 1 and router.health.state("west").served == 1
        # A caller's own 400 is no deployment's fault: surfaced as is, nothing else called.
        east.push(Fault(status=400, error_type="invalid_request_error"))
        with pytest.raises(ProviderError) as caught:
            await router(ask(stream=stream))
        assert caught.value.status == 400 and (chat_calls(east), chat_calls(west)) == (2, 1)
        assert router.health.state("east").failed == 1
        # Both fail: the last error surfaces after two attempts (the layers outside decide).
        east.push(Fault(status=500))
        west.push(Fault(status=502))
        with pytest.raises(ProviderError) as caught:
            await router(ask(stream=stream))
        assert caught.value.retryable and (chat_calls(east), chat_calls(west)) == (3, 2)
    finally:
        await router.aclose()


async def test_a_cut_stream_counts_against_its_deployment_and_a_cancel_does_not(
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> None:
    east, west = upstreams
    router = Router(deployments(east, west), weights={"east": 1e9}, rng=random.Random(1))
    try:
        east.push(Fault(cut_after=2))
        response = await router(ask(stream=True))
        with pytest.raises(ProviderError):
            await response.result()
        assert router.health.state("east").failed == 1
        assert chat_calls(west) == 0  # a stream that began is never re-sent here
        # A client that stops reading is no verdict, and its call is no longer in flight.
        east.push(Fault(chunk_delay=0.05))
        response = await router(ask(stream=True))
        async for _ in response:
            break
        await response.aclose()
        state = router.health.state("east")
        assert (state.failed, state.served, state.in_flight) == (1, 0, 0)
        await answer(router, stream=True)
        assert router.health.state("east").served == 1
    finally:
        await router.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_cut_by_its_deadline_is_a_stall_and_a_cancel_is_no_verdict(
    upstreams: tuple[FakeUpstream, FakeUpstream], stream: bool
) -> None:
    east, west = upstreams
    router = Router(deployments(east, west), weights={"east": 1e9}, rng=random.Random(1))
    try:
        # No deadline: the caller went away, no verdict on east.
        east.push(Fault(delay=1))
        with anyio.move_on_after(0.3):
            await (await router(ask(stream=stream))).result()
        assert router.health.state("east").failed == 0
        # The request's deadline passed (an outer timeout cut it): east stalled.
        east.push(Fault(delay=1) if not stream else Fault(stall_after=1, stall=1))
        request = ask(stream=stream)
        request.context.deadline = anyio.current_time() + 0.3
        with anyio.move_on_after(0.3):
            await (await router(request)).result()
        state = router.health.state("east")
        assert (state.failed, state.in_flight) == (1, 0)
    finally:
        await router.aclose()


async def test_a_stream_cut_by_a_phase_limit_is_a_stall(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    east, west = upstreams
    router = Router(deployments(east, west), weights={"east": 1e9}, rng=random.Random(1))

    async def read(phases: PhaseLimits, fault: Fault, within: float) -> None:
        east.push(fault)
        request = ask(stream=True)
        request.context.phases = phases  # as an outer timeout writes them
        with anyio.move_on_after(within):  # stands for the timeout cutting the wait
            await (await router(request)).result()

    try:
        # Idle limit 0.3 s: the upstream went quiet after one chunk and was cut: a stall.
        # The cut comes 0.2 s past the limit (the 1 s stall goes on): a loaded machine may
        # start the wait late, and a cut that comes before the limit passed is no verdict.
        await read(PhaseLimits(None, 0.3, None), Fault(stall_after=1, stall=1), 0.5)
        assert router.health.state("east").failed == 1
        # First-chunk limit 0.3 s: no headers at all within it: a stall too.
        await read(PhaseLimits(0.3, None, None), Fault(delay=1), 0.5)
        assert router.health.state("east").failed == 2
        # Cut well before any limit: the caller's doing, no verdict.
        await read(PhaseLimits(5.0, 5.0, None), Fault(stall_after=1, stall=1), 0.3)
        assert router.health.state("east").failed == 2
    finally:
        await router.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_ejection_then_a_probe_after_the_ejection_time(
    upstreams: tuple[FakeUpstream, FakeUpstream], stream: bool
) -> None:
    east, west = upstreams
    clock = Clock()
    policy = EjectionPolicy(consecutive_failures=3, base_ejection_seconds=10, max_ejection_seconds=100)
    router = Router(deployments(east, west), weights={"west": 1e9}, policy=policy, clock=clock, rng=random.Random(2))
    west.fault_for = lambda body: Fault(status=503)
    try:
        for _ in range(3):  # each fails on west and is answered by east
            assert (await answer(router, stream=stream))[0] == "east"
        state = router.health.state("west")
        assert (state.status, state.ejections, state.ejected_until) == ("ejected", 1, clock.now + 10)
        assert [p.name for p in router.healthy_deployments(MODEL)] == ["east"]
        for _ in range(20):  # ejected: west takes nothing despite its weight
            assert (await answer(router, stream=stream))[0] == "east"
        assert chat_calls(west) == 3
        clock.now += 10  # the ejection time is over: west is probed, fails, is ejected for 20 s
        assert router.health.state("west").status == "probing"
        assert (await answer(router, stream=stream))[0] == "east"
        state = router.health.state("west")
        assert (chat_calls(west), state.status, state.ejections) == (4, "ejected", 2)
        assert state.ejected_until == clock.now + 20
        west.fault_for = None  # west recovers; its probe succeeds and it is back in the pool
        clock.now += 20
        assert (await answer(router, stream=stream))[0] == "west"
        assert router.health.state("west").status == "healthy"
        assert [p.name for p in router.healthy_deployments(MODEL)] == ["east", "west"]
        assert (await answer(router, stream=stream))[0] == "west"
    finally:
        await router.aclose()


async def test_never_all_ejected_and_panic_picks_the_soonest_back(
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> None:
    east, west = upstreams
    clock = Clock()
    policy = EjectionPolicy(consecutive_failures=1, base_ejection_seconds=10, max_ejection_seconds=10)
    router = Router(deployments(east, west), policy=policy, clock=clock, rng=random.Random(3))
    east.fault_for = west.fault_for = lambda body: Fault(status=503)
    try:
        for _ in range(6):
            with pytest.raises(ProviderError):
                await router(ask())
        ejected = [name for name in ("east", "west") if router.health.ejected(name)]
        assert len(ejected) == 1  # the other one is left to serve, failing or not
        assert len(router.healthy_deployments(MODEL)) == 1
        # Another worker says the other one is ejected too (Redis): the router still
        # serves, from the one whose ejection ends first, and /readyz sees every one.
        other = "west" if ejected == ["east"] else "east"
        router.health.merge(other, 0, clock.now + 5, 1)
        east.fault_for = west.fault_for = None
        assert (await answer(router))[0] == other
        assert len(router.healthy_deployments(MODEL)) == 2
    finally:
        await router.aclose()


async def test_shared_through_redis(upstreams: tuple[FakeUpstream, FakeUpstream], redis_url: str) -> None:
    east, west = upstreams
    prefix = f"onion:test:{random.getrandbits(32)}:"
    policy = EjectionPolicy(consecutive_failures=4, base_ejection_seconds=30, max_ejection_seconds=60)
    workers = [
        Router(deployments(east, west), weights={"west": 1e9}, policy=policy, redis=redis_url, refresh_seconds=0)
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.shared is not None
        worker.shared.prefix = prefix
    one, two = workers
    west.fault_for = lambda body: Fault(status=503)
    try:
        # Failures in a row are counted over both workers: 2 + 2 eject west.
        for worker in (one, one, two):
            await answer(worker)
        assert not one.health.ejected("west") and not two.health.ejected("west")
        await answer(two)
        assert two.health.ejected("west")
        await answer(one)  # one reads the ejection before its pick: nothing goes to west
        assert one.health.ejected("west") and chat_calls(west) == 4
        assert [p.name for p in one.healthy_deployments(MODEL)] == ["east"]
        # Calls in flight: one holds a stream open on east and shares its counts (as it
        # does before a pick every refresh_seconds); two sees it and weighs it.
        east.push(Fault(chunk_delay=0.2))
        held = await one(ask(stream=True))
        await one.share_health()
        await two.share_health()
        assert two.health.state("east").in_flight == 1 and two.health.state("west").in_flight == 0
        await held.aclose()
        await one.share_health()
        await two.share_health()
        assert two.health.state("east").in_flight == 0
        # A healthy call writes nothing to Redis (only failures, recoveries, ejections do).
        assert one.shared is not None
        before = one.shared.redis.sync.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        await answer(one)
        after = one.shared.redis.sync.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        assert after - before == 2  # only the exchange before the pick (one script per deployment)
    finally:
        for worker in workers:
            await worker.aclose()


async def test_a_hung_redis_never_hangs_a_call(
    upstreams: tuple[FakeUpstream, FakeUpstream], redis_starter: object, tmp_path: object
) -> None:
    import signal

    east, west = upstreams
    url, process = redis_starter(tmp_path)  # type: ignore[operator]
    router = Router(deployments(east, west), redis=url, refresh_seconds=0)
    try:
        await answer(router)
        process.send_signal(signal.SIGSTOP)
        with anyio.fail_after(5):  # a generous bound: each Redis call has a 0.2 s deadline
            for _ in range(10):
                assert (await answer(router))[1]
    finally:
        process.send_signal(signal.SIGCONT)
        await router.aclose()
        process.terminate()
        process.wait(timeout=10)


def providers(**extra: object) -> dict[str, object]:
    return {
        "providers": [
            {"name": "a", "kind": "simulated", "models": ["m"], "weight": 3},
            {"name": "b", "kind": "simulated", "models": ["m"]},
        ],
        **extra,
    }


def test_config_weights_and_router_table() -> None:
    gateway = build_gateway(parse_config(providers(router={"consecutive_failures": 2, "max_ejection_percent": 100})))
    router = gateway.router
    assert router.health.state("a").weight == 3 and router.health.state("b").weight == 1
    assert router.health.policy.consecutive_failures == 2 and router.shared is None


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"providers": [{"name": "a", "kind": "simulated", "weight": 0}]}, "weight"),
        ({"providers": [{"name": "a", "kind": "openai", "base_url": "http://x", "weight": -2}]}, "weight"),
        ({"providers": [{"name": "a", "kind": "simulated", "weight": float("inf")}]}, "weight"),
        (providers(router={"consecutive_failures": 0}), "consecutive_failures"),
        (providers(router={"max_ejection_percent": 101}), "max_ejection_percent"),
        (providers(router={"base_ejection_seconds": -1}), "base_ejection_seconds"),
        (providers(router={"base_ejection_seconds": 60, "max_ejection_seconds": 10}), "max_ejection_seconds"),
        (providers(router={"in_flight_bias": -1}), "in_flight_bias"),
        (providers(router={"redis_url": "http://localhost"}), "redis_url"),
        (providers(router={"redis_url": "env:NO_SUCH_VARIABLE_HERE"}), "redis_url"),
        (providers(router={"ejection": 1}), "ejection"),
    ],
)
def test_config_errors_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, env={})
    assert any(problem.field == field for problem in caught.value.problems), caught.value
    assert field in str(caught.value)


def test_code_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="weight"):
        HealthTable({"a": 0.0})
    with pytest.raises(ConfigError, match="no provider is named"):
        Router([OpenAIProvider(name="a", base_url="http://127.0.0.1:9/v1", models=[MODEL])], weights={"b": 2})
    with pytest.raises(ConfigError, match="max_ejection_percent"):
        EjectionPolicy(max_ejection_percent=-1)


NAMES = ["d0", "d1", "d2", "d3", "d4"]
operations = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.sampled_from(NAMES)),
        st.tuples(st.just("finish"), st.sampled_from(NAMES), st.sampled_from(["ok", "failed", "failed", "none"])),
        st.tuples(st.just("advance"), st.floats(0, 40)),
        st.tuples(st.just("call"), st.integers(0, 3), st.sampled_from(["ok", "failed", "failed", "failed", "none"])),
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(
    groups=st.lists(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True), min_size=1, max_size=4),
    failures=st.integers(1, 3),
    percent=st.floats(0, 100),
    ops=operations,
    seed=st.integers(0, 2**16),
)
def test_law_an_ejected_deployment_is_never_picked_while_a_healthy_one_exists_and_never_all_are_ejected(
    groups: list[list[str]], failures: int, percent: float, ops: list[tuple[object, ...]], seed: int
) -> None:
    clock = Clock()
    policy = EjectionPolicy(
        consecutive_failures=failures,
        base_ejection_seconds=10,
        max_ejection_seconds=30,
        max_ejection_percent=percent,
    )
    table = HealthTable(dict.fromkeys(NAMES, 1.0), policy, groups=groups, clock=clock, rng=random.Random(seed))
    started = dict.fromkeys(NAMES, 0)
    for op in ops:
        if op[0] == "start":
            name = str(op[1])
            table.started(name)
            started[name] += 1
        elif op[0] == "finish" and started[str(op[1])]:
            name = str(op[1])
            started[name] -= 1
            table.finished(name, op[2])  # type: ignore[arg-type]
        elif op[0] == "advance":
            clock.now += float(op[1])  # type: ignore[arg-type]
        elif op[0] == "call":  # pick, start, and finish at once
            group = groups[int(op[1]) % len(groups)]  # type: ignore[call-overload]
            chosen = table.pick(group)
            assert chosen in group
            if any(not table.ejected(name) for name in group):
                assert not table.ejected(chosen)
            assert chosen is not None
            table.started(chosen)
            table.finished(chosen, op[2])  # type: ignore[arg-type]
        for group in groups:
            ejected = [name for name in group if table.ejected(name)]
            assert len(ejected) < len(group)  # never all
            allowed = max(1, int(len(group) * percent / 100)) if percent > 0 else 0
            assert len(ejected) <= allowed
        for name in NAMES:
            state = table.state(name)
            assert state.ejected_until <= clock.now + policy.max_ejection_seconds
            assert state.in_flight == started[name]


@pytest.mark.parametrize("stream", [False, True])
async def test_the_gateway_names_the_deployment_that_served(
    upstreams: tuple[FakeUpstream, FakeUpstream], stream: bool
) -> None:
    import httpx

    from onion.server import create_app
    from onion.testing import ThreadedServer

    east, west = upstreams
    config = parse_config(
        {
            "providers": [
                {"name": "east", "kind": "openai", "base_url": east.base_url, "models": [MODEL]},
                {"name": "west", "kind": "openai", "base_url": west.base_url, "models": [MODEL], "weight": 1e9},
            ],
            "router": {"consecutive_failures": 1},
            "stack": [],  # the router alone (no [[stack]] would be the default stack)
        }
    )
    gateway = build_gateway(config)
    assert "(weight 1e+09)" in gateway.describe_upstreams()
    west.push(Fault(status=503))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    # lifespan="on": the app closes the providers in the server's own loop.
    async with (
        ThreadedServer(create_app(gateway), lifespan="on") as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        first = await http.post("/v1/chat/completions", json=body)
        second = await http.post("/v1/chat/completions", json=body)
    # west failed (no answer): east answered the same call; west is then ejected.
    assert first.status_code == 200 and first.headers["x-onion-deployment"] == "east"
    assert second.status_code == 200 and second.headers["x-onion-deployment"] == "east"
    assert (chat_calls(east), chat_calls(west)) == (2, 1)
    assert [p.name for p in gateway.router.healthy_deployments(MODEL)] == ["east"]


STEPS = {
    "ok": Reply("fine"),
    "503": Fail(ProviderError("down", upstream_status=503, retryable=True)),
    "429": Fail(ProviderError("slow down", upstream_status=429, retryable=True)),
    "400": Fail(ProviderError("bad", upstream_status=400, retryable=False)),
    "cut": Fail(ProviderError("cut", retryable=True), after_chunks=1),
}


@settings(max_examples=60, deadline=None)
@given(
    scripts=st.lists(st.lists(st.sampled_from(sorted(STEPS)), max_size=12), min_size=2, max_size=4),
    stream=st.booleans(),
    seed=st.integers(0, 2**16),
)
async def test_law_a_call_bills_a_second_deployment_only_after_a_failure_with_no_answer(
    scripts: list[list[str]], stream: bool, seed: int
) -> None:
    providers = []
    for index, script in enumerate(scripts):
        provider = ScriptedProvider([STEPS[step] for step in script], name=f"d{index}")
        provider.models = (MODEL,)  # type: ignore[attr-defined]
        providers.append(provider)
    router = Router(providers, policy=EjectionPolicy(consecutive_failures=2), rng=random.Random(seed))
    for _ in range(12):
        before = [p.calls for p in providers]
        request = ask(stream=stream)
        outcome: object
        try:
            response = await router(request)
            outcome = await response.result()
        except ProviderError as error:
            outcome = error
        reached = [i for i, p in enumerate(providers) if p.calls > before[i]]
        steps = [scripts[i][before[i]] if before[i] < len(scripts[i]) else "ok" for i in reached]
        assert 1 <= len(reached) <= 2 and request.context.attempts == len(reached) - 1
        if len(reached) == 2:  # the first failed before any answer, with a failure another may fix
            assert any(step in ("503", "429") or (step == "cut" and not stream) for step in steps)
        if isinstance(outcome, ProviderError) and outcome.status == 400 and len(reached) == 1:
            assert steps == ["400"]
        assert sum(1 for p in providers for s in p.streams if not s.closed) == 0
