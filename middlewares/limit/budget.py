"""``budget``: spend budgets in USD per key, per team and global, that never overshoot.

Sits near the outside of the onion, next to ``rate_limit`` (inside ``mask_errors`` and
the logging/metrics layers). Outside the caches, a cache hit is reserved for and then
settled at zero cost; inside them, a hit never reaches it. Either way a hit costs nothing.

**The model.** A call is charged against every budget that applies to it: its key's
(``context.caller``), its team's (``context.team``, else ``team_of[caller]``) and the
global one, each ``USD over a window``. A key or team with no budget is not limited by
one. Before the call, the **worst-case cost** is reserved against all of them at once,
atomically: the prompt as ``onion.prompt_tokens`` counts it (the estimate errs high) at
the model's input price, plus the answer's limit (``max_tokens``, else
``default_completion_tokens``) at its output price. If any budget lacks room the call is
refused with ``BudgetExceeded`` (429, ``budget_exceeded``, ``Retry-After`` until that
window resets) and nothing is sent upstream. Because reservations are checked, not
spends, concurrent calls cannot overshoot: N calls in flight hold N worst cases.

When the answer ends the reservation is **settled** to the real cost: the ``usage`` it
reported, at the price of the model that answered. Without usage (a stream cancelled
before its usage chunk, a provider that reports none) the cost is the prompt estimate
plus the answer's text as counted. A call that raised before any answer is refunded;
a cache hit costs nothing.

The answer must stay inside its reservation. With ``max_tokens`` (or
``max_completion_tokens``) the provider stops it there. A caller who set neither gets
``max_completion_tokens = default_completion_tokens`` on the request sent inward
(``cap_answer``, the default): again the provider stops it, exactly. With ``cap_answer =
false`` the request goes unchanged (for an upstream that rejects the field): a stream is
then counted as it passes and **cut** before the chunk that would outgrow its
reservation (the server ends it with an SSE error event, ``budget_exceeded``) and is
charged its whole reservation; a complete answer cannot be cut, so that one case is
charged its real cost even when that is more than was reserved.

**Windows** are calendar-aligned in UTC (``"day"``: from midnight, ``"month"``: from the
1st), not rolling: a budget then means what an invoice means, it resets at one instant
every caller can be told (``Retry-After``), and the state is one row per budget (spent,
reserved) instead of a log of every call in the last 30 days.

**Prices** come from ``middlewares.observe.prices`` (``prices``/``prices_file`` add or
override). A budget never treats a model as free: ``models`` named at build time must
all be priced (``ConfigError`` naming the unpriced ones), and a call for an unpriced
model under a budget is refused (400 ``model_not_priced``).

**State** (``budget_stores``): ``"memory"`` (one process, lost on restart), ``"sqlite"``
(a local file, survives restarts) or ``"redis"`` (shared by every gateway process; one
Lua script per reserve and per settle, on the Redis server's clock). If the store is
unreachable the call is refused (``fail_open = false``, the default: money fails closed)
or admitted uncounted.
"""

from __future__ import annotations

import inspect
import math
import sqlite3
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Literal

import anyio
import msgspec
import structlog

from onion import (
    AnswerEnd,
    BadRequest,
    BudgetExceeded,
    CallNext,
    Chunk,
    Completion,
    ConfigError,
    KeyPolicy,
    Layer,
    RateLimited,
    Request,
    Response,
    TokenCounter,
    counter_for,
    input_tokens,
)

from ..observe.prices import Price, PriceSpec, PriceTable
from .budget_stores import (
    Admission,
    BudgetLine,
    BudgetStore,
    MemoryBudgetStore,
    RedisBudgetStore,
    SQLiteBudgetStore,
    Window,
)
from .rate_backends import BACKEND_DOWN

__all__ = ["Budget", "BudgetLimit", "SpendRecord", "nano_usd"]

_log = structlog.get_logger("onion.budget")

STORE_DOWN: tuple[type[BaseException], ...] = (*BACKEND_DOWN, sqlite3.OperationalError)

NANO = 1_000_000_000
"""Nano-dollars per dollar: the stores count integer nano-dollars."""


def nano_usd(usd: float) -> int:
    """``usd`` in whole nano-dollars (rounded to the nearest: config amounts are exact)."""
    return round(usd * NANO)


def _rate(per_million: float) -> int:
    # Dollars per 1M tokens -> nano-dollars per token, rounded up: a price never rounds to free.
    return math.ceil(round(per_million * 1000, 6))


BudgetLimit = float | tuple[float, Window] | Mapping[str, Any]
"""A budget as config gives it: ``usd`` (over the layer's ``window``), ``(usd, window)``
or ``{usd = …, window = "day" | "month"}``."""


def _limit(where: str, spec: Any, window: Window) -> tuple[int, Window]:
    if isinstance(spec, Mapping):
        usd, window = spec.get("usd"), spec.get("window", window)
    elif isinstance(spec, (tuple, list)):
        usd, window = spec
    else:
        usd = spec
    if not isinstance(usd, (int, float)) or isinstance(usd, bool) or usd < 0:
        raise ConfigError(f"budget {where}: usd must be a non-negative number of dollars, not {usd!r}")
    if window not in ("day", "month"):
        raise ConfigError(f"budget {where}: window must be 'day' or 'month', not {window!r}")
    return nano_usd(usd), window


class SpendRecord(msgspec.Struct, frozen=True):
    """One settled call, handed to ``on_spend`` (for a spend report, metrics, a log line):
    who (``key``, ``team``), which ``model`` was asked for, what it ``cost`` and what was
    ``reserved`` for it (USD), whether a cache answered it (``cached``: cost 0) and when it
    was settled (``at``, Unix time)."""

    key: str | None
    team: str | None
    model: str
    cost: float
    reserved: float
    cached: bool
    at: float


class _Charge:
    """One admitted call: what it reserved, against which budgets, and how to settle it."""

    __slots__ = (
        "admission",
        "allowance",
        "amount",
        "cached",
        "counted",
        "counter",
        "cut",
        "layer",
        "lines",
        "price",
        "prompt",
        "request",
    )

    def __init__(self, layer: Budget, lines: list[BudgetLine], admission: Admission, amount: int, price: Price) -> None:
        self.layer = layer
        self.lines = lines
        self.admission = admission
        self.amount = amount
        self.price = price
        self.prompt = 0
        self.allowance = -1  # answer tokens a stream may pass before it is cut (-1: not counted)
        self.counted = 0
        self.counter: TokenCounter | None = None
        self.cut = False
        self.cached = False
        self.request: Request | None = None  # kept only for on_spend

    async def guard(self, source: AsyncIterator[Chunk]) -> AsyncGenerator[Chunk, None]:
        """The stream, cut before the chunk that would outgrow the reservation."""
        count = self.counter.count if self.counter is not None else len
        try:
            async for chunk in source:
                if chunk.content:
                    self.counted += count(chunk.content)
                    if self.counted > self.allowance:
                        self.cut = True
                        raise BudgetExceeded(
                            f"the answer passed the {self.allowance} tokens reserved for it; stream cut",
                            budget="reservation",
                            retry_after=0.0,
                            resets_at=0.0,
                            public_message="the answer was cut: it outgrew what the budget reserved for it",
                        )
                yield chunk
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    def cost(self, completion: Completion) -> int:
        """What the answer cost: its usage at the price of the model that answered; without
        usage, the prompt as counted and the answer's text as counted; a cut stream, all of
        its reservation."""
        if self.cut:
            return self.amount
        usage = completion.usage
        model = completion.model
        price = (self.layer.prices.lookup(model) or self.price) if model else self.price
        rate_in, rate_out = self.layer.rates(price)
        if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
            return usage.prompt_tokens * rate_in + usage.completion_tokens * rate_out
        counter = self.counter or counter_for(model)
        return self.prompt * rate_in + counter.count(completion.content) * rate_out

    async def settle(self, end: AnswerEnd) -> None:
        await self.layer._settle(self, self.cost(end.completion))


class Budget(Layer):
    """Refuse calls whose worst-case cost does not fit every budget that applies.

    TOML: ``keys`` (key name → budget), ``teams`` (team → budget), ``team_of`` (key
    name → team, for callers whose context has no ``team``), ``global_usd``,
    ``window`` (``"day"`` | ``"month"``, the default for the budgets above),
    ``backend`` (``"memory"`` | ``"sqlite"`` | ``"redis"``), ``path`` (SQLite),
    ``redis_url``, ``redis_deadline`` (seconds per Redis operation, 0.05, as the rate
    limit's and the exact cache's), ``key_prefix``, ``prices``, ``prices_file``,
    ``models`` (checked for a price at build), ``default_completion_tokens``,
    ``cap_answer``, ``fail_open``.

    ``keys``, ``teams`` and ``team_of`` are read per call, so a live mapping (a key
    store that issues and revokes keys) can be passed in code; ``on_spend`` receives a
    ``SpendRecord`` for every settled call (a spend report's feed; awaited if it returns
    an awaitable), calls under no budget included (priced, nothing reserved). A call
    under a budget gets ``x-onion-budget-remaining`` (USD: the least room left in its
    budgets once its worst case is held). A virtual key's own budget
    (``context.key.budget_usd``) applies when ``keys`` has none for it.
    """

    name = "budget"
    provides = frozenset({"budget"})
    short_circuit = "no room in a budget for the worst-case cost (BudgetExceeded 429; nothing sent upstream)"

    def __init__(
        self,
        keys: Mapping[str, BudgetLimit] | None = None,
        teams: Mapping[str, BudgetLimit] | None = None,
        team_of: Mapping[str, str] | None = None,
        global_usd: float | None = None,
        window: Window = "month",
        backend: Literal["memory", "sqlite", "redis"] = "memory",
        path: str | None = None,
        redis_url: str | None = None,
        key_prefix: str = "onion:budget",
        prices: Mapping[str, PriceSpec] | None = None,
        prices_file: str | None = None,
        models: Iterable[str] = (),
        default_completion_tokens: int = 1024,
        fail_open: bool = False,
        cap_answer: bool = True,
        redis_deadline: float = 0.05,
        *,
        on_spend: Callable[[SpendRecord], object] | None = None,
        store: BudgetStore | None = None,
        price_table: PriceTable | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if window not in ("day", "month"):
            raise ConfigError(f"budget window must be 'day' or 'month', not {window!r}")
        if default_completion_tokens < 1:
            raise ConfigError("budget default_completion_tokens must be positive")
        if not redis_deadline > 0:
            raise ConfigError(f"budget redis_deadline must be a positive number of seconds, not {redis_deadline!r}")
        self.window: Window = window
        self.keys: Mapping[str, BudgetLimit] = keys if keys is not None else {}
        self.teams: Mapping[str, BudgetLimit] = teams if teams is not None else {}
        self.team_of: Mapping[str, str] = team_of if team_of is not None else {}
        # Config limits are checked now; a live mapping's entries are checked when used.
        for where, table in (("key", self.keys), ("team", self.teams)):
            for name, spec in table.items():
                _limit(f"{where} {name!r}", spec, window)
        self.global_line: BudgetLine | None = None
        if global_usd is not None:
            self.global_line = (f"{key_prefix}:global", *_limit("global", global_usd, window))
        self.prefix = key_prefix
        self._lines: dict[tuple[str, str], tuple[BudgetLimit, BudgetLine]] = {}
        self._rates: dict[Price, tuple[int, int]] = {}
        self.prices = price_table or PriceTable.build(prices, prices_file)
        unpriced = self.unpriced(models)
        if unpriced:
            raise ConfigError(
                f"budget: no price for model(s) {', '.join(map(repr, unpriced))}; "
                "add them under [prices] (a budgeted model is never free)"
            )
        self.default_completion_tokens = default_completion_tokens
        self.fail_open = fail_open
        self.on_spend = on_spend
        self.cap_answer = cap_answer
        self.store: BudgetStore = store or self._store(backend, path, redis_url, clock, redis_deadline)
        _log.info(
            "budget ready",
            store=type(self.store).__name__,
            window=window,
            on_store_down="admit (fail open)" if fail_open else "reject (fail closed)",
        )

    @staticmethod
    def _store(
        backend: str, path: str | None, redis_url: str | None, clock: Callable[[], float] | None, deadline: float
    ) -> BudgetStore:
        if backend == "memory":
            return MemoryBudgetStore(clock)
        if backend == "sqlite":
            if not path:
                raise ConfigError("budget backend 'sqlite' needs path")
            return SQLiteBudgetStore(path, clock=clock)
        if backend == "redis":
            if not redis_url:
                raise ConfigError("budget backend 'redis' needs redis_url")
            return RedisBudgetStore(redis_url, deadline=deadline)
        raise ConfigError(f"budget backend must be 'memory', 'sqlite' or 'redis', not {backend!r}")

    def unpriced(self, models: Iterable[str]) -> list[str]:
        """The ``models`` the price table has no price for (``onion check`` can name them)."""
        return sorted({model for model in models if model not in self.prices})

    async def ping(self) -> None:
        """Return when the shared store answers (``onion.Pingable``, for ``/readyz``); at
        once for a store in process memory."""
        redis = getattr(self.store, "redis", None)
        if redis is not None:
            await redis.ping()

    async def aclose(self) -> None:
        """Release the store's connections, if it has any."""
        close = getattr(self.store, "aclose", None)
        if close is not None:
            await close()

    def _line(self, kind: str, name: str, spec: BudgetLimit) -> BudgetLine:
        # Remembered per name while its spec is the same object: a live mapping that
        # replaces a key's budget gets it checked and used from the next call on.
        known = self._lines.get((kind, name))
        if known is not None and known[0] is spec:
            return known[1]
        line = (f"{self.prefix}:{kind}:{name}", *_limit(f"{kind} {name!r}", spec, self.window))
        if len(self._lines) >= 65536:
            self._lines.clear()
        self._lines[kind, name] = (spec, line)
        return line

    def _key_line(self, caller: str, policy: KeyPolicy) -> BudgetLine:
        # A virtual key's own budget (``context.key``), remembered while the policy is the same object.
        known = self._lines.get(("key", caller))
        if known is not None and known[0] is policy:
            return known[1]
        spec = {"usd": policy.budget_usd, "window": policy.budget_window}
        line = (f"{self.prefix}:key:{caller}", *_limit(f"key {caller!r}", spec, self.window))
        self._lines["key", caller] = (policy, line)  # type: ignore[assignment]
        return line

    def lines(self, request: Request) -> list[BudgetLine]:
        """The budgets ``request`` is charged against: its key's, its team's, the global one."""
        lines: list[BudgetLine] = []
        context = request.context
        caller = context.caller
        if caller is not None:
            spec = self.keys.get(caller)
            if spec is not None:
                lines.append(self._line("key", caller, spec))
            elif context.key is not None and context.key.budget_usd is not None:
                lines.append(self._key_line(caller, context.key))
        team = context.team or (self.team_of.get(caller) if caller is not None else None)
        if team is not None:
            spec = self.teams.get(team)
            if spec is not None:
                lines.append(self._line("team", team, spec))
        if self.global_line is not None:
            lines.append(self.global_line)
        return lines

    def rates(self, price: Price) -> tuple[int, int]:
        """Nano-dollars per input and per output token at ``price`` (rounded up)."""
        rates = self._rates.get(price)
        if rates is None:
            rates = self._rates[price] = (_rate(price.input), _rate(price.output))
        return rates

    def worst_case(self, request: Request, price: Price) -> tuple[int, int, int]:
        """``(nano-dollars, prompt tokens, answer tokens)`` the call may cost at most."""
        prompt = input_tokens(request)
        answer = request.answer_tokens_limit
        answer = self.default_completion_tokens if answer is None else answer
        if request.embedding is not None:
            answer = 0  # an embedding's answer costs no tokens
        rate_in, rate_out = self.rates(price)
        return prompt * rate_in + answer * rate_out, prompt, answer

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        lines = self.lines(request)
        if not lines:
            if self.on_spend is None:
                return await call_next(request)
            return await self._unbudgeted(request, call_next)
        price = self.prices.lookup(request.model)
        if price is None:
            raise BadRequest(
                f"model {request.model!r} has no price and the caller has a budget",
                public_message=f"the model {request.model!r} cannot be used under a budget: it has no price",
                param="model",
                code="model_not_priced",
            )
        amount, prompt, _ = self.worst_case(request, price)
        try:
            admission = await self.store.reserve(lines, amount)
        except STORE_DOWN as error:
            _log.warning(
                "budget store unreachable",
                error=type(error).__name__,
                action="admitted (fail open)" if self.fail_open else "rejected (fail closed)",
            )
            if not self.fail_open:
                raise RateLimited("budget store unreachable; failing closed", retry_after=1.0) from None
            return await call_next(request)
        if admission.refused >= 0:
            budget_id, limit, _ = lines[admission.refused]
            kind = budget_id.removeprefix(self.prefix + ":").split(":", 1)[0]
            # A worst case larger than the whole budget would not fit after the reset either.
            hint = (
                f"this call's worst-case cost is more than the whole {kind} budget; lower max_tokens"
                if amount > limit
                else None
            )
            raise BudgetExceeded(
                f"{kind} budget {budget_id!r} has no room for ${amount / NANO:.6f}",
                budget=kind,
                retry_after=admission.retry_after,
                resets_at=admission.resets_at,
                public_message=hint,
            )
        charge = _Charge(self, lines, admission, amount, price)
        charge.prompt = prompt
        if self.on_spend is not None:
            charge.request = request
        uncapped = request.answer_tokens_limit is None
        if uncapped and self.cap_answer:
            request = msgspec.structs.replace(request, max_completion_tokens=self.default_completion_tokens)
            uncapped = False
        try:
            response = await call_next(request)
        except BaseException:
            with anyio.CancelScope(shield=True):  # a cancelled call still refunds
                await self._settle(charge, 0)
            raise
        if admission.remaining >= 0:
            # Headroom once this call's worst case is held: what the caller can still start.
            response.headers["x-onion-budget-remaining"] = f"{admission.remaining / NANO:.6f}"
        if response.cache == "hit":
            charge.cached = True
            await self._settle(charge, 0)
            return response
        completion = response.completion
        if completion is not None:  # a complete answer ends here: settle it now
            await self._settle(charge, charge.cost(completion))
            return response
        if uncapped:
            charge.counter = counter_for(request.model)
            rate_in, rate_out = self.rates(price)
            charge.allowance = (amount - prompt * rate_in) // max(1, rate_out)
            response.wrap(charge.guard)
        return await response.on_end(charge.settle)

    async def _unbudgeted(self, request: Request, call_next: CallNext) -> Response:
        # No budget applies, but spend is reported: count the cost, reserve nothing.
        price = self.prices.lookup(request.model)
        if price is None:
            return await call_next(request)
        charge = _Charge(self, [], Admission(()), 0, price)
        charge.prompt = input_tokens(request)
        charge.request = request
        response = await call_next(request)
        if response.cache == "hit":
            charge.cached = True
            await self._settle(charge, 0)
            return response
        if response.completion is not None:
            await self._settle(charge, charge.cost(response.completion))
            return response
        return await response.on_end(charge.settle)

    async def _settle(self, charge: _Charge, cost: int) -> None:
        if charge.lines:
            try:
                await self.store.settle(charge.lines, charge.admission, charge.amount, cost)
            except STORE_DOWN as error:
                _log.warning("budget store unreachable while settling", error=type(error).__name__)
        on_spend, request = self.on_spend, charge.request
        if on_spend is not None and request is not None:
            context = request.context
            team = context.team or (self.team_of.get(context.caller) if context.caller is not None else None)
            record = SpendRecord(
                context.caller, team, request.model, cost / NANO, charge.amount / NANO, charge.cached, time.time()
            )
            try:
                result = on_spend(record)
                if inspect.isawaitable(result):  # a ledger that writes to a store
                    await result
            except Exception:
                _log.exception("budget on_spend failed")

    async def status(self, budget_id: str, window: Window | None = None) -> tuple[int, int, float]:
        """``(spent, reserved, resets_at)`` of one budget (nano-dollars; ids as ``lines``)."""
        return await self.store.status(budget_id, window or self.window)
