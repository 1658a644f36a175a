"""budget: worst case reserved before the call, settled to the real cost, never overshot."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from middlewares.limit.budget import Budget, SpendRecord, nano_usd
from middlewares.limit.budget_stores import MemoryBudgetStore, RedisBudgetStore, SQLiteBudgetStore, window_of
from middlewares.observe.prices import PriceTable
from onion import (
    BadRequest,
    BudgetExceeded,
    Completion,
    ConfigError,
    Context,
    KeyPolicy,
    Message,
    RateLimited,
    RedisClient,
    Request,
    Response,
    Stack,
    Usage,
    build_layer,
    counter_for,
    prompt_tokens,
)
from onion.testing import Fail, Reply, ScriptedProvider

# $1 per 1M input tokens, $2 per 1M output: 1,000 and 2,000 nano-dollars a token.
PRICES = PriceTable({"m": (1.0, 2.0)})
IN, OUT = 1000, 2000
NOON = datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp()


class WallClock:
    """A settable Unix clock for the stores."""

    def __init__(self, now: float = NOON) -> None:
        self.t = now

    def __call__(self) -> float:
        return self.t


def _request(
    caller: str | None = "alice", *, team: str | None = None, max_tokens: int | None = 10, stream: bool = False
) -> Request:
    return Request(
        model="m",
        messages=[Message("user", "x" * 40)],
        max_tokens=max_tokens,
        stream=stream,
        context=Context(caller=caller, team=team),
    )


PROMPT = prompt_tokens(_request().messages)
WORST = PROMPT * IN + 10 * OUT  # what _request() reserves


FULL = Usage(PROMPT, 10, PROMPT + 10)  # a _request() that used its whole answer limit


def _complete(request: Request, usage: Usage = FULL) -> Response:
    return Response.complete(Completion(content="ok", model=request.model, usage=usage))


def _budget(clock: WallClock | None = None, **kwargs: object) -> Budget:
    kwargs.setdefault("keys", {"alice": WORST * 3 / 1e9})
    return Budget(price_table=PRICES, clock=clock or WallClock(), **kwargs)  # type: ignore[arg-type]


async def test_admits_while_the_worst_case_fits_then_refuses_until_the_window_resets() -> None:
    clock = WallClock()
    layer = _budget(clock, window="day")
    provider = ScriptedProvider(default=Reply("ok", usage=Usage(PROMPT, 10, PROMPT + 10)))
    stack = Stack([layer], provider)
    for _ in range(3):
        await (await stack(_request())).result()
    with pytest.raises(BudgetExceeded) as info:
        await stack(_request())
    error = info.value
    assert isinstance(error, RateLimited) and error.status == 429 and error.code == "budget_exceeded"
    assert error.budget == "key" and error.retry_after == pytest.approx(12 * 3600)
    assert error.resets_at == datetime(2026, 12, 3, tzinfo=UTC).timestamp()
    assert error.public_message == "the key budget is used up; it resets in 43200 s"
    assert provider.calls == 3
    clock.t += 12 * 3600  # midnight UTC: a new day, a fresh budget
    await (await stack(_request())).result()


async def test_the_reservation_is_settled_to_the_real_cost() -> None:
    layer = _budget()
    provider = ScriptedProvider(default=Reply("ok", usage=Usage(5, 2, 7)))
    stack = Stack([layer], provider)
    response = await stack(_request())
    month_end = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert await layer.status("onion:budget:key:alice") == (5 * IN + 2 * OUT, 0, month_end)
    await response.result()
    # The budget is 3 worst cases; each call costs 9,000 of them, so 9 fit, not 3: after 8,
    # 72,000 spent + a worst case of 36,000 = the 108,000 budget.
    for _ in range(8):
        await (await stack(_request())).result()
    with pytest.raises(BudgetExceeded):
        await stack(_request())
    spent, reserved, _ = await layer.status("onion:budget:key:alice")
    assert (spent, reserved) == (9 * (5 * IN + 2 * OUT), 0) and WORST == 36_000


async def test_key_team_and_global_budgets_all_apply() -> None:
    one = WORST / 1e9
    layer = _budget(
        keys={"alice": 10 * one, "bob": 10 * one},
        teams={"red": 2 * one},
        team_of={"bob": "red"},
        global_usd=3 * one,
    )
    provider = ScriptedProvider(default=Reply("ok", usage=Usage(PROMPT, 10, PROMPT + 10)))
    stack = Stack([layer], provider)
    await stack(_request("alice", team="red"))  # team from the context
    await stack(_request("bob"))  # team from team_of
    with pytest.raises(BudgetExceeded) as info:
        await stack(_request("bob"))
    assert info.value.budget == "team"
    await stack(_request("carol"))  # no key or team budget; the global one has room for one more
    with pytest.raises(BudgetExceeded) as info:
        await stack(_request("dave"))
    assert info.value.budget == "global"
    assert layer.lines(_request(None)) == [("onion:budget:global", nano_usd(3 * one), "month")]


async def test_no_budget_no_charge_and_no_price_needed() -> None:
    layer = _budget(keys={})
    stack = Stack([layer], ScriptedProvider())
    await stack(Request(model="unpriced", messages=[Message("user", "hi")], context=Context(caller="alice")))


async def test_a_model_without_a_price_is_refused_at_build_and_per_call() -> None:
    with pytest.raises(ConfigError, match="'mystery'"):
        _budget(models=["m", "mystery"])
    # Config adds prices; a price of zero is free on purpose (a self-hosted model), not by omission.
    layer = Budget(keys={"alice": 1}, prices={"mystery": (1, 1), "local": {"input": 0, "output": 0}}, models=["local"])
    assert layer.unpriced(["mystery", "local", "gpt-4o", "nope", "nope"]) == ["nope"]
    local = Request(model="local", messages=[Message("user", "hi")], context=Context(caller="alice"))
    await Stack([layer], ScriptedProvider())(local)
    assert (await layer.status("onion:budget:key:alice"))[:2] == (0, 0)
    stack = Stack([_budget()], ScriptedProvider())
    with pytest.raises(BadRequest) as info:
        await stack(Request(model="mystery", messages=[Message("user", "hi")], context=Context(caller="alice")))
    assert info.value.code == "model_not_priced" and info.value.param == "model"


async def test_a_failed_or_cancelled_call_is_refunded() -> None:
    layer = _budget()
    stack = Stack([layer], ScriptedProvider(default=Fail(RuntimeError("down"))))
    for _ in range(5):
        with pytest.raises(RuntimeError):
            await stack(_request())

    async def hang(request: Request) -> Response:
        await anyio.sleep_forever()
        raise AssertionError

    with anyio.move_on_after(0.01):
        await Stack([layer], hang)(_request())
    assert (await layer.status("onion:budget:key:alice"))[:2] == (0, 0)


async def test_a_cache_hit_costs_nothing() -> None:
    layer = _budget()

    async def cached(request: Request) -> Response:
        response = _complete(request, Usage(9, 9, 18))
        response.cache = "hit"
        return response

    for _ in range(10):
        await (await Stack([layer], cached)(_request())).result()
    assert (await layer.status("onion:budget:key:alice"))[:2] == (0, 0)


async def test_a_stream_that_outgrows_its_reservation_is_cut() -> None:
    layer = _budget(default_completion_tokens=5, cap_answer=False)
    provider = ScriptedProvider(default=Reply(" ".join(["word"] * 30)))
    response = await Stack([layer], provider)(_request(max_tokens=None, stream=True))
    passed = []
    with pytest.raises(BudgetExceeded) as info:
        async for chunk in response:
            passed.append(chunk.content)
    assert info.value.budget == "reservation" and "cut" in info.value.public_message
    assert 0 < len(passed) < 30
    assert provider.streams[0].closed
    worst = PROMPT * IN + 5 * OUT
    assert (await layer.status("onion:budget:key:alice"))[:2] == (worst, 0)  # charged the whole reservation


async def test_a_call_without_an_answer_limit_is_capped_at_its_reservation() -> None:
    layer = _budget(default_completion_tokens=7)
    provider = ScriptedProvider()
    await Stack([layer], provider)(_request(max_tokens=None))
    assert provider.requests[0].max_completion_tokens == 7 and provider.requests[0].max_tokens is None
    # Without the cap the request goes unchanged, and a complete answer over its
    # reservation (it cannot be cut) is charged what it cost: the documented overshoot.
    uncapped = _budget(default_completion_tokens=7, cap_answer=False)
    provider = ScriptedProvider(default=Reply("long", usage=Usage(PROMPT, 50, PROMPT + 50)))
    await Stack([uncapped], provider)(_request(max_tokens=None))
    assert provider.requests[0].answer_tokens_limit is None
    assert (await uncapped.status("onion:budget:key:alice"))[:2] == (PROMPT * IN + 50 * OUT, 0)


async def test_a_cancelled_stream_is_charged_what_passed() -> None:
    layer = _budget()
    provider = ScriptedProvider(default=Reply("a b c d e f", usage=Usage(PROMPT, 6, PROMPT + 6)))
    response = await Stack([layer], provider)(_request(stream=True))
    chunks = response.__aiter__()
    first = await chunks.__anext__()
    await response.aclose()
    spent, reserved, _ = await layer.status("onion:budget:key:alice")
    assert reserved == 0 and spent == PROMPT * IN + len(first.content) // 4 * OUT + OUT


async def test_build_by_import_path_and_config_validation(tmp_path: Path) -> None:
    layer = build_layer({"use": "middlewares.limit.budget:Budget", "keys": {"alice": {"usd": 5, "window": "day"}}})
    assert isinstance(layer, Budget) and isinstance(layer.store, MemoryBudgetStore)
    assert layer.lines(_request()) == [("onion:budget:key:alice", 5_000_000_000, "day")]
    sqlite = build_layer({"use": "middlewares.limit.budget:Budget", "backend": "sqlite", "path": str(tmp_path / "b")})
    assert isinstance(sqlite.store, SQLiteBudgetStore)
    shared = build_layer(
        {"use": "middlewares.limit.budget:Budget", "backend": "redis", "redis_url": "redis://127.0.0.1:1/0"}
        | {"redis_deadline": 0.2}
    )
    assert shared.store.redis.deadline == 0.2  # no connection yet: the client connects on first use
    for bad in (
        {"window": "week"},
        {"keys": {"a": -1}},
        {"keys": {"a": {"usd": 1, "window": "year"}}},
        {"backend": "sqlite"},
        {"backend": "redis"},
        {"backend": "disk"},
        {"backend": "redis", "redis_url": "redis://127.0.0.1:1", "redis_deadline": 0},
    ):
        with pytest.raises(ConfigError):
            build_layer({"use": "middlewares.limit.budget:Budget", **bad})


def test_calendar_windows() -> None:
    assert window_of("day", NOON) == (20789, datetime(2026, 12, 3, tzinfo=UTC).timestamp())
    assert window_of("month", NOON) == (2026 * 12 + 11, datetime(2027, 1, 1, tzinfo=UTC).timestamp())
    feb = datetime(2028, 2, 29, 23, 59, tzinfo=UTC).timestamp()
    assert window_of("month", feb)[1] == datetime(2028, 3, 1, tzinfo=UTC).timestamp()


# -- every store: the same laws ---------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_store(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[object]:
    made: list[object] = []

    def make(clock: WallClock | None = None) -> object:
        if store_kind == "memory":
            store: object = MemoryBudgetStore(clock)
        elif store_kind == "sqlite":
            store = SQLiteBudgetStore(tmp_path / "budget.db", clock=clock)
        else:
            # The laws are about overshoot, not Redis's deadline: a generous one, so that 200
            # calls on a loaded machine (GIL, 40 worker threads) never trip the short default
            # (50 ms per operation, tested with a paused redis-server in tests/test_redis.py).
            url = request.getfixturevalue("redis_url")
            store = RedisBudgetStore(url, deadline=1.0)
        made.append(store)
        return store

    yield make


def _prefix() -> str:
    return f"t:{uuid.uuid4().hex[:10]}"


async def test_law_200_concurrent_calls_admit_at_most_10_calls_worth(make_store, store_kind: str) -> None:  # type: ignore[no-untyped-def]
    store = make_store(WallClock())
    layer = Budget(keys={"alice": WORST * 10 / 1e9}, price_table=PRICES, store=store, key_prefix=_prefix())
    admitted = 0

    async def handler(request: Request) -> Response:
        nonlocal admitted
        admitted += 1
        await anyio.sleep(0.01)  # every admitted call is still running while the others arrive
        return _complete(request)

    stack = Stack([layer], handler)
    outcomes: list[str] = []

    async def one() -> None:
        try:
            await (await stack(_request())).result()
            outcomes.append("ok")
        except BudgetExceeded:
            outcomes.append("refused")

    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(one)
    assert admitted == outcomes.count("ok") == 10 and outcomes.count("refused") == 190
    spent, reserved, _ = await layer.status(f"{layer.prefix}:key:alice")
    assert (spent, reserved) == (10 * WORST, 0)
    await layer.aclose()


async def _drain(stream: AsyncIterator[object]) -> None:
    async for _ in stream:
        pass


async def test_sqlite_spend_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "spend.db"
    clock = WallClock()
    first = Budget(keys={"alice": 1.0}, price_table=PRICES, backend="sqlite", path=str(path), clock=clock)
    provider = ScriptedProvider(default=Reply("ok", usage=Usage(100, 50, 150)))
    await (await Stack([first], provider)(_request())).result()
    # A call still running when the process stops: its hold outlives the process.
    await first.store.reserve(first.lines(_request()), 12345)
    await first.aclose()
    second = Budget(keys={"alice": 1.0}, price_table=PRICES, backend="sqlite", path=str(path), clock=clock)
    assert (await second.status("onion:budget:key:alice"))[:2] == (100 * IN + 50 * OUT, 12345)
    await second.aclose()


async def test_sqlite_workers_share_a_file_and_a_dead_workers_hold_expires(tmp_path: Path) -> None:
    path, clock = tmp_path / "spend.db", WallClock()
    one = SQLiteBudgetStore(path, clock=clock, hold_seconds=60)
    two = SQLiteBudgetStore(path, clock=clock, hold_seconds=60)  # another worker, same file
    line = ("b", 1000, "month")
    orphan = await one.reserve([line], 700)
    await one.aclose()  # that worker dies mid-call
    assert (await two.reserve([line], 700)).refused == 0  # its hold still counts
    clock.t += 61
    late = await two.reserve([line], 700)  # expired: released
    assert late.refused == -1 and (await two.status("b", "month"))[:2] == (0, 700)
    await two.settle([line], orphan, 700, 100)  # a late settle is charged, nothing double-released
    await two.settle([line], late, 700, 200)
    assert (await two.status("b", "month"))[:2] == (300, 0)
    await two.aclose()


class Recording:
    """A store wrapper that checks, at every reserve and settle, that the budget is never
    overshot (spent + reserved <= limit) and that no call costs more than it reserved."""

    def __init__(self, store: object, budget_id: str, limit: int) -> None:
        self.store, self.budget_id, self.limit = store, budget_id, limit
        self.costs: list[int] = []

    async def _check(self) -> None:
        spent, reserved, _ = await self.store.status(self.budget_id, "month")  # type: ignore[attr-defined]
        assert reserved >= 0 and spent + reserved <= self.limit

    async def reserve(self, lines, amount):  # type: ignore[no-untyped-def]
        admission = await self.store.reserve(lines, amount)  # type: ignore[attr-defined]
        await self._check()
        return admission

    async def settle(self, lines, admission, amount, cost):  # type: ignore[no-untyped-def]
        assert cost <= amount, "a call spent more than it reserved"
        self.costs.append(cost)
        await self.store.settle(lines, admission, amount, cost)  # type: ignore[attr-defined]
        await self._check()

    async def status(self, budget_id, window):  # type: ignore[no-untyped-def]
        return await self.store.status(budget_id, window)  # type: ignore[attr-defined]


# One call of the property test: prompt size, answer words, max_tokens (None: the budget
# caps it at default_completion_tokens), streamed or not, how it ends, where it ends.
CALL = st.tuples(
    st.integers(1, 400),
    st.integers(1, 40),
    st.one_of(st.none(), st.integers(1, 60)),
    st.booleans(),
    st.sampled_from(["complete", "upstream_cut", "consumer_stops", "fails_before"]),
    st.integers(0, 12),
)


def _upstream(calls: list[tuple[int, int, int | None, bool, str, int]]) -> ScriptedProvider:
    """An upstream that honours the answer limit it receives and reports real usage."""

    def script(request: Request, index: int) -> Reply | Fail:
        _, words, _, _, end, k = calls[int(request.messages[0].text.split(":")[0])]
        words = min(words, request.answer_tokens_limit or words)
        usage = Usage(prompt_tokens(request.messages), words, 0)
        reply = Reply(" ".join(["w"] * words), usage=usage)
        if end == "fails_before":
            return Fail(RuntimeError("upstream down"))
        if end == "upstream_cut" and request.stream:
            return Fail(RuntimeError("cut"), after_chunks=k, reply=reply)
        return reply

    return ScriptedProvider(script)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(CALL, min_size=1, max_size=25), worst_cases=st.integers(1, 8), virtual=st.booleans())
async def test_law_never_overshoots_and_spend_is_the_sum_of_real_costs(make_store, calls, worst_cases, virtual) -> None:  # type: ignore[no-untyped-def]
    prefix = _prefix()
    limit = worst_cases * 150_000
    budget_id = f"{prefix}:key:alice"
    store = Recording(make_store(WallClock()), budget_id, limit)
    # The key's budget from the layer's config, or from a virtual key on the context.
    key = KeyPolicy(name="alice", budget_usd=limit / 1e9) if virtual else None
    layer = Budget(
        keys={} if virtual else {"alice": limit / 1e9},
        price_table=PRICES,
        store=store,
        key_prefix=prefix,
        default_completion_tokens=20,
    )
    stack = Stack([layer], _upstream(calls))
    count = counter_for("m").count
    real_costs: list[int] = []  # what each admitted call really cost, as the caller saw it

    async def one(index: int) -> None:
        chars, _, max_tokens, stream, end, k = calls[index]
        request = Request(
            model="m",
            messages=[Message("user", f"{index}:" + "x" * chars)],
            max_tokens=max_tokens,
            stream=stream,
            context=Context(caller="alice", key=key),
        )
        prompt = prompt_tokens(request.messages)
        try:
            response = await stack(request)
        except BudgetExceeded:
            return
        except RuntimeError:
            real_costs.append(0)  # failed before any answer: refunded
            return
        if not stream:
            usage = (await response.result()).usage
            assert usage is not None
            real_costs.append(usage.prompt_tokens * IN + usage.completion_tokens * OUT)
            return
        passed, chunks = "", 0
        try:
            async for chunk in response:
                passed += chunk.content
                chunks += 1
                if chunk.usage is not None:  # the whole answer arrived with its usage
                    real_costs.append(chunk.usage.prompt_tokens * IN + chunk.usage.completion_tokens * OUT)
                    return
                if end == "consumer_stops" and chunks > k:
                    break
        except RuntimeError:
            pass
        finally:
            await response.aclose()
        real_costs.append(prompt * IN + count(passed) * OUT)  # no usage: what passed, as counted

    async with anyio.create_task_group() as tg:
        for index in range(len(calls)):
            tg.start_soon(one, index)
    spent, reserved, _ = await layer.status(budget_id)
    assert reserved == 0
    assert sorted(store.costs) == sorted(real_costs)
    assert spent == sum(real_costs)
    await layer.aclose()


async def test_a_call_that_outlives_its_window_is_charged_to_the_next(make_store, store_kind: str) -> None:  # type: ignore[no-untyped-def]
    if store_kind == "redis":
        pytest.skip("the Redis store reads the server's clock")
    clock = WallClock(datetime(2026, 12, 2, 23, 59, 59, tzinfo=UTC).timestamp())
    store = make_store(clock)
    line = (f"{_prefix()}:key:alice", 100_000, "day")
    admission = await store.reserve([line], 60_000)
    assert (await store.status(line[0], "day"))[:2] == (0, 60_000)
    clock.t += 2  # past midnight: the new day starts empty, the reservation went with the old one
    assert (await store.status(line[0], "day"))[:2] == (0, 0)
    await store.settle([line], admission, 60_000, 25_000)
    assert (await store.status(line[0], "day"))[:2] == (25_000, 0)  # money spent is never dropped


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    moment=st.one_of(
        st.floats(0, 4_102_444_800),  # 1970 .. 2100
        st.builds(
            lambda y, m, s: datetime(y, m, 1, tzinfo=UTC).timestamp() + s,
            st.integers(1971, 2099),
            st.integers(1, 12),
            st.sampled_from([-1.0, -0.001, 0.0, 0.5, 86399.5]),
        ),
    ),
    window=st.sampled_from(["day", "month"]),
)
def test_law_the_lua_calendar_is_the_python_one(redis_url: str, moment: float, window: str) -> None:
    import redis

    from middlewares.limit.budget_stores import _CALENDAR_AT

    client = redis.Redis.from_url(redis_url)
    period, ends = client.eval(_CALENDAR_AT, 0, window, repr(moment))
    assert (int(period), float(ends)) == window_of(window, moment)
    client.close()


async def test_redis_refusal_waits_for_the_server_windows_end(redis_url: str) -> None:
    store = RedisBudgetStore(redis_url)
    line = (f"{_prefix()}:team:red", 1000, "day")
    assert (await store.reserve([line], 600)).refused == -1
    refused = await store.reserve([line, (f"{_prefix()}:global", 10**9, "month")], 600)
    _, ends = window_of("day", time.time())
    assert refused.refused == 0 and refused.resets_at == ends
    assert refused.retry_after == pytest.approx(ends - time.time(), abs=2)
    await store.aclose()


_WORKER = """
import sys, anyio
from middlewares.limit.budget import Budget
from middlewares.observe.prices import PriceTable
from onion import BudgetExceeded, Completion, Context, Message, Request, Response, Stack, Usage

async def main(url, prefix, usd):
    layer = Budget(keys={"alice": float(usd)}, price_table=PriceTable({"m": (1.0, 2.0)}),
                   backend="redis", redis_url=url, key_prefix=prefix, redis_deadline=1.0)
    async def upstream(request):
        await anyio.sleep(0.05)
        return Response.complete(Completion(content="ok", model="m", usage=Usage(16, 10, 26)))
    stack = Stack([layer], upstream)
    ok = 0
    async def one():
        nonlocal ok
        try:
            await stack(Request(model="m", messages=[Message("user", "x" * 40)], max_tokens=10,
                                context=Context(caller="alice")))
            ok += 1
        except BudgetExceeded:
            pass
    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(one)
    print(ok)
    await layer.aclose()

anyio.run(main, *sys.argv[1:])
"""


def test_redis_two_processes_sharing_a_budget_admit_at_most_its_worth(redis_url: str, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    prefix = _prefix()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    args = [sys.executable, str(script), redis_url, prefix, repr(WORST * 10 / 1e9)]
    workers = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    admitted = [int(worker.communicate(timeout=60)[0].strip().splitlines()[-1]) for worker in workers]
    assert sum(admitted) == 10, admitted  # 200 calls in two processes; a budget of 10 calls' worth
    store = RedisBudgetStore(redis_url)
    spent, reserved, _ = anyio.run(store.status, f"{prefix}:key:alice", "month")
    anyio.run(store.aclose)
    assert (spent, reserved) == (10 * WORST, 0)


# -- over HTTP: the 429 and the cut stream as a client sees them -------------------------


class Caller:
    """Sets the caller as the server does for an API key (the test app has none)."""

    name = "caller"

    async def __call__(self, request: Request, call_next):  # type: ignore[no-untyped-def]
        request.context.caller = "alice"
        return await call_next(request)


async def test_over_http_a_refusal_is_429_budget_exceeded_with_retry_after() -> None:
    import httpx

    from onion.server import GatewayApp
    from onion.testing.upstream import ThreadedServer

    layer = Budget(keys={"alice": 0.000001}, price_table=PRICES)  # $1e-6: less than one call's worst case
    provider = ScriptedProvider()
    app = GatewayApp(Stack([Caller(), layer], provider))
    async with ThreadedServer(app) as server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 429 and provider.calls == 0
    assert response.json()["error"]["code"] == "budget_exceeded"
    assert "more than the whole key budget; lower max_tokens" in response.json()["error"]["message"]
    _, resets = window_of("month", time.time())
    assert abs(int(response.headers["retry-after"]) - (resets - time.time())) < 5


async def test_over_http_a_stream_that_outgrows_its_reservation_ends_with_an_error_event() -> None:
    import httpx

    from onion.server import GatewayApp
    from onion.testing.upstream import ThreadedServer

    layer = Budget(keys={"alice": 1.0}, price_table=PRICES, cap_answer=False, default_completion_tokens=8)
    provider = ScriptedProvider(default=Reply(" ".join(["word"] * 50)))
    app = GatewayApp(Stack([Caller(), layer], provider))
    async with ThreadedServer(app) as server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert '"content":"word ' in events[0]
    assert "budget_exceeded" in events[-1] or "budget_exceeded" in events[-2]
    assert all(record.closed for record in provider.streams)
    spent, reserved, _ = await layer.status("onion:budget:key:alice")
    hi = Request(model="m", messages=[Message("user", "hi")])
    assert reserved == 0 and spent == layer.worst_case(hi, PRICES.lookup("m"))[0]  # type: ignore[arg-type]


async def test_a_store_that_is_down_fails_closed_or_open_as_configured(tmp_path: Path) -> None:
    url = "redis://127.0.0.1:1/0"
    closed = Budget(keys={"alice": 1.0}, price_table=PRICES, backend="redis", redis_url=url)
    with pytest.raises(RateLimited) as info:
        await Stack([closed], ScriptedProvider())(_request())
    assert not isinstance(info.value, BudgetExceeded)
    opened = Budget(keys={"alice": 1.0}, price_table=PRICES, backend="redis", redis_url=url, fail_open=True)
    provider = ScriptedProvider()
    await Stack([opened], provider)(_request())
    assert provider.calls == 1
    await closed.aclose()
    await opened.aclose()


async def test_redis_a_dead_workers_hold_expires(redis_url: str) -> None:
    store = RedisBudgetStore(redis_url, hold_seconds=0.2)
    line = (f"{_prefix()}:key:alice", 1000, "month")
    orphan = await store.reserve([line], 800)  # its process "dies": never settled
    assert (await store.reserve([line], 800)).refused == 0
    await anyio.sleep(0.3)
    late = await store.reserve([line], 800)  # the orphan's hold expired and was released
    assert late.refused == -1
    assert (await store.status(line[0], "month"))[:2] == (0, 800)
    await store.settle([line], orphan, 800, 300)  # settled after all: charged, nothing double-released
    await store.settle([line], late, 800, 500)
    assert (await store.status(line[0], "month"))[:2] == (800, 0)
    await store.aclose()


async def test_on_spend_reports_every_settled_call_and_cache_hits_cost_nothing() -> None:
    records: list[SpendRecord] = []
    layer = _budget(team_of={"alice": "red"}, on_spend=records.append)

    async def upstream(request: Request) -> Response:
        response = _complete(request, Usage(5, 2, 7))
        response.cache = "hit" if len(records) == 1 else None
        return response

    stack = Stack([layer], upstream)
    await stack(_request())
    await stack(_request())
    assert [(r.key, r.team, r.model, r.cached) for r in records] == [
        ("alice", "red", "m", False),
        ("alice", "red", "m", True),
    ]
    assert records[0].cost == pytest.approx((5 * IN + 2 * OUT) / 1e9) and records[1].cost == 0
    assert records[0].reserved == pytest.approx(WORST / 1e9)


class _LateAnswers(RedisClient):
    """A real Redis client whose every script runs on the server and then answers too
    late (the redis-py timeout a busy machine gives past the deadline): the store's
    answer is lost, its effect is not."""

    def script(self, source: str) -> Any:
        real = super().script(source)

        def late(*args: Any, **kwargs: Any) -> Any:
            real(*args, **kwargs)
            raise redis.exceptions.TimeoutError("Timeout reading from socket")

        return late


async def test_a_reserve_whose_answer_came_too_late_holds_nothing(redis_url: str) -> None:
    # Without the take-back the budget stays reserved until the hold expires (an hour),
    # refusing calls it has room for: what two workers under load showed.
    prefix = _prefix()
    late = RedisBudgetStore(redis_url, client=_LateAnswers(redis_url, timeout=1.0))
    layer = Budget(keys={"alice": WORST * 10 / 1e9}, price_table=PRICES, store=late, key_prefix=prefix)
    with pytest.raises(RateLimited, match="unreachable"):
        await Stack([layer], _complete_async)(_request())
    checker = RedisBudgetStore(redis_url)
    try:
        spent, reserved, _ = await checker.status(f"{prefix}:key:alice", "month")
        assert (spent, reserved) == (0, 0)
    finally:
        await checker.aclose()
        await late.aclose()


async def _complete_async(request: Request) -> Response:
    return _complete(request)
