"""budget: worst case reserved before the call, settled to the real cost, never overshot."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from middlewares.limit.budget import Budget, nano_usd
from middlewares.limit.budget_stores import MemoryBudgetStore, RedisBudgetStore, SQLiteBudgetStore, window_of
from middlewares.observe.prices import PriceTable
from onion import (
    BadRequest,
    BudgetExceeded,
    Completion,
    ConfigError,
    Context,
    Message,
    RateLimited,
    Request,
    Response,
    Stack,
    Usage,
    build_layer,
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
    layer = _budget(default_completion_tokens=5)
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
    for bad in (
        {"window": "week"},
        {"keys": {"a": -1}},
        {"keys": {"a": {"usd": 1, "window": "year"}}},
        {"backend": "sqlite"},
        {"backend": "redis"},
        {"backend": "disk"},
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
            store = RedisBudgetStore(request.getfixturevalue("redis_url"))
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
    # A call still running when the process stops: its reservation is released on reopen.
    await first.store.reserve(first.lines(_request()), 12345)
    await first.aclose()
    second = Budget(keys={"alice": 1.0}, price_table=PRICES, backend="sqlite", path=str(path), clock=clock)
    assert (await second.status("onion:budget:key:alice"))[:2] == (100 * IN + 50 * OUT, 0)
    await second.aclose()
