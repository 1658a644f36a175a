"""``metrics``: OpenTelemetry metrics for every request that passes, and onion's overhead.

Where it sits decides what it counts. Outermost, it sees every request the gateway
answered — cache hits, guard blocks, rate limits included — and its duration is what
the caller waited. Innermost (just above the provider) it sees each upstream attempt:
a retry or a fallback is two operations there, and a cache hit is none. Both placements
work at once; the ``scope`` attribute (``gateway`` / ``upstream``, you choose) keeps
their series apart.

Recorded per request, exactly once (at the end of the stream for a streamed answer):

- GenAI semantic conventions (version pinned in ``middlewares/_otel.py``):
  ``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage`` (by
  ``gen_ai.token.type``), and for streams ``gen_ai.client.operation.time_to_first_chunk``
  and ``gen_ai.client.operation.time_per_output_chunk``; attributes
  ``gen_ai.operation.name`` (``chat``, ``embeddings``), ``gen_ai.provider.name``,
  ``gen_ai.request.model``, ``gen_ai.response.model``, ``error.type``.
- ``onion.requests``: by ``onion.outcome`` (ok, blocked, rate_limited, timeout, error,
  cancelled) and ``onion.served_by`` (the layer or provider that answered: a cache, a
  guard, the upstream); ``onion.fallback = true`` marks answers from a later model of a
  fallback chain.
- ``onion.cost``: estimated dollars by model, from ``middlewares.observe.prices``; a model with
  no price is counted in ``onion.cost.unpriced`` instead, never guessed. Answers served
  from a cache cost nothing and use no tokens, so they add to neither.
- ``onion.spend``: the same dollars by ``onion.key`` (``context.caller``) and ``onion.team``;
  the first ``SPEND_LABELS`` (200) distinct keys and teams per process are named, later
  ones count as ``other`` (bounded cardinality).
- ``onion.overhead``: time spent in the gateway minus time waiting for upstreams
  (``request.context.upstream_seconds``), also sent as the ``x-onion-overhead-ms``
  response header. A stream's headers leave before it ends, so its header carries the
  overhead measured until ``call_next`` returned; the histogram gets the full value at
  the end.
  For a stream, time the consumer holds a chunk (the server writing to a slow client) is
  not counted as overhead.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from onion import (
    AnswerEnd,
    CallNext,
    CircuitOpen,
    Clock,
    GuardFindings,
    GuardrailViolation,
    Layer,
    ProviderError,
    RateLimited,
    Request,
    Response,
    error_type,
    outcome,
)
from onion.telemetry import (
    CHUNK_BUCKETS,
    DURATION_BUCKETS,
    OVERHEAD_BUCKETS,
    SCOPE,
    TOKEN_BUCKETS,
    HistogramSeries,
    default_meter_provider,
    mask_secrets,
    summed_histogram,
)

from .prices import Price, PriceTable

__all__ = ["OVERHEAD_HEADER", "Metrics"]

OVERHEAD_HEADER = "x-onion-overhead-ms"
"""Response header with the gateway's own time for the request, in milliseconds."""


class _Totals:
    """Running sums by attribute values, reported through an observable counter.

    A synchronous OpenTelemetry counter costs several microseconds per ``add`` (it
    validates and hashes the attributes every time); a dict update costs a fraction of
    one. The SDK reads the sums when it collects (a scrape, an export), so the exported
    series are the same. At most ``limit`` distinct attribute sets are kept; the rest
    are summed under ``otel.metric.overflow = true``, as the SDK itself does.
    """

    __slots__ = ("attrs", "limit", "names", "values")

    def __init__(self, names: tuple[str, ...], limit: int = 2000) -> None:
        self.names = names
        self.limit = limit
        # One one-item list per series: a layer keeps the cell of a series it adds to
        # often, and adds to it with no key hashed (``cell``).
        self.values: dict[tuple[Any, ...], list[float]] = {}
        self.attrs: dict[tuple[Any, ...], dict[str, Any]] = {}

    def add(self, key: tuple[Any, ...], amount: float) -> None:
        """Add ``amount`` to the series whose attribute values are ``key`` (in ``names`` order)."""
        found = self.values.get(key)
        if found is None:
            found = self.cell(key)
        found[0] += amount

    def cell(self, key: tuple[Any, ...]) -> list[float]:
        """The running sum of series ``key`` as a one-item list, to keep and add to (the
        overflow series' once ``limit`` series exist)."""
        values = self.values
        found = values.get(key)
        if found is not None:
            return found
        if len(values) >= self.limit:
            key = ("__overflow__",)
            self.attrs.setdefault(key, {"otel.metric.overflow": True})
            found = values.get(key)
            if found is None:
                found = values[key] = [0.0]
            return found
        # Attributes are built once per series; False flags are left out (e.g. onion.fallback).
        self.attrs[key] = {name: value for name, value in zip(self.names, key, strict=True) if value is not False}
        found = values[key] = [0.0]
        return found

    def observe(self, options: CallbackOptions) -> list[Observation]:
        """The callback the SDK calls when it collects."""
        attrs = self.attrs
        return [Observation(value[0], attrs[key]) for key, value in list(self.values.items())]


# One set of sums per meter provider, shared by every Metrics layer on it: an observable
# instrument is registered once per name, so two layers (outermost and innermost) must
# feed the same callback; their series differ by ``onion.scope``.
_TOTALS: weakref.WeakKeyDictionary[Any, tuple[_Totals, _Totals, _Totals, _Totals]] = weakref.WeakKeyDictionary()
_TOTALS_LOCK = threading.Lock()


def _counters_of(provider: Any, meter: Any) -> tuple[_Totals, _Totals, _Totals, _Totals]:
    with _TOTALS_LOCK:
        found = _TOTALS.get(provider)
        if found is not None:
            return found
        requests = _Totals(
            ("onion.outcome", "onion.served_by", "gen_ai.request.model", "onion.scope", "onion.fallback")
        )
        cost = _Totals(("gen_ai.response.model", "onion.scope"))
        unpriced = _Totals(("gen_ai.response.model", "onion.scope"))
        findings = _Totals(("onion.guard", "onion.rule", "onion.scope"))
        meter.create_observable_counter(
            "onion.requests",
            [requests.observe],
            unit="{request}",
            description="Requests by outcome and by what answered them.",
        )
        meter.create_observable_counter(
            "onion.cost", [cost.observe], unit="USD", description="Estimated cost of answers, by model."
        )
        meter.create_observable_counter(
            "onion.cost.unpriced",
            [unpriced.observe],
            unit="{request}",
            description="Answers whose model has no price in the table.",
        )
        meter.create_observable_counter(
            "onion.guard.findings",
            [findings.observe],
            unit="{finding}",
            description="What the guards found: input rules set to flag, output detectors (redacted or blocked).",
        )
        _TOTALS[provider] = found = (requests, cost, unpriced, findings)
        return found


_SPEND: weakref.WeakKeyDictionary[Any, _Totals] = weakref.WeakKeyDictionary()
SPEND_LABELS = 200
"""Distinct keys (and teams) ``onion.spend`` names per process; later ones count as ``other``."""


def _spend_of(provider: Any, meter: Any) -> _Totals:
    with _TOTALS_LOCK:
        found = _SPEND.get(provider)
        if found is None:
            found = _SPEND[provider] = _Totals(("onion.key", "onion.team", "onion.scope"))
            meter.create_observable_counter(
                "onion.spend", [found.observe], unit="USD", description="Estimated cost of answers, by key and team."
            )
        return found


class _Labels:
    """At most ``SPEND_LABELS`` distinct values, then ``other``: a metric series per key
    would grow without bound with issued keys."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if value is None:
            return "none"
        # Without api_keys the caller is the request's own ``user`` field: a key written
        # there must not reach /metrics (masked as the log line masks it). Called once per
        # (caller, team) a layer keeps, so the scan is not per request.
        value = mask_secrets(value)
        if value in self.seen:
            return value
        if len(self.seen) >= SPEND_LABELS:
            return "other"
        self.seen.add(value)
        return value


_UNKNOWN = object()  # a _Series' price before it is looked up

_SERIES_MEMO = 4096
"""Distinct attribute sets a ``Metrics`` layer keeps its series for; later ones are found
again per request (the histograms bound their own series)."""


class _Series:
    """The series one request adds to, for one attribute set: found once, kept.

    Built per (operation, provider, models, error type, served_by, fallback), so a request
    with a seen attribute set builds no key tuple and hashes none per instrument; the
    stream-only and token series are found on first use.
    """

    __slots__ = ("_first", "_input", "_keys", "_metrics", "_output", "_per_chunk", "_price", "cost", "cost_cell",
                 "duration", "overhead", "requests", "unpriced_cell")  # fmt: skip

    def __init__(
        self,
        metrics: Metrics,
        duration: tuple[Any, ...],
        stream: tuple[Any, ...],
        requests: tuple[Any, ...],
        overhead: tuple[str, str],
        cost: tuple[str, str],
    ) -> None:
        self._metrics = metrics
        self._keys = (duration, stream)
        self.duration = metrics._duration.series_of(duration, _attributes)
        self.overhead = metrics._overhead.series_of(overhead, _overhead_attributes)
        self.requests = metrics._requests.cell(requests)  # every request adds to it: found now
        self.cost = cost
        self.cost_cell: list[float] | None = None
        self.unpriced_cell: list[float] | None = None
        self._price: Any = _UNKNOWN
        self._first: HistogramSeries | None = None
        self._per_chunk: HistogramSeries | None = None
        self._input: HistogramSeries | None = None
        self._output: HistogramSeries | None = None

    def price(self) -> Price | None:
        """The price of the series' model (``None``: not in the table), looked up once."""
        found = self._price
        if found is _UNKNOWN:
            found = self._price = self._metrics.prices.lookup(self.cost[0])
        return found  # type: ignore[no-any-return]

    def first_chunk(self) -> HistogramSeries:
        found = self._first
        if found is None:
            found = self._first = self._metrics._first_chunk.series_of(self._keys[1], _attributes)
        return found

    def per_chunk(self) -> HistogramSeries:
        found = self._per_chunk
        if found is None:
            found = self._per_chunk = self._metrics._per_chunk.series_of(self._keys[1], _attributes)
        return found

    def input_tokens(self) -> HistogramSeries:
        found = self._input
        if found is None:
            found = self._input = self._metrics._tokens.series_of((*self._keys[0][:5], None, "input"), _attributes)
        return found

    def output_tokens(self) -> HistogramSeries:
        found = self._output
        if found is None:
            found = self._output = self._metrics._tokens.series_of((*self._keys[0][:5], None, "output"), _attributes)
        return found


class Metrics(Layer):
    """Counts requests, tokens, cost, latency and overhead with OpenTelemetry instruments.

    - ``meter_provider``: where the instruments live (default: onion's, which
      ``GET /metrics`` renders; tests pass one with an ``InMemoryMetricReader``).
    - ``prices`` / ``prices_file``: extend or override the default price table
      (``{model = {input = $/1M, output = $/1M}}``); ``default_prices = false`` drops it.
    - ``provider``: ``gen_ai.provider.name`` when the response does not name one
      (providers set ``response.provider``).
    - ``scope``: value of the ``onion.scope`` attribute, to tell placements apart.
    - ``overhead_header``: set ``x-onion-overhead-ms`` on responses.
    - ``chunk_timing``: record ``time_per_output_chunk`` (one histogram point per chunk).
    """

    name = "metrics"
    provides = frozenset({"metrics"})

    def __init__(
        self,
        *,
        meter_provider: Any = None,
        prices: dict[str, Any] | None = None,
        prices_file: str | None = None,
        default_prices: bool = True,
        provider: str = "openai",
        scope: str = "gateway",
        overhead_header: bool = True,
        chunk_timing: bool = True,
        clock: Clock | None = None,
    ) -> None:
        meters = meter_provider or default_meter_provider()
        meter = meters.get_meter(SCOPE)
        self.prices = PriceTable.build(prices, prices_file, defaults=default_prices)
        self.provider = provider
        self.scope = scope
        self.overhead_header = overhead_header
        self.chunk_timing = chunk_timing
        self._now: Callable[[], float] = clock.now if clock is not None else time.perf_counter
        # Summed in this process and added to what the readers collect: a synchronous SDK
        # histogram costs ~8 µs per point, and a stream has one point per chunk.
        self._duration = summed_histogram(
            meters,
            SCOPE,
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            bounds=DURATION_BUCKETS,
        )
        self._tokens = summed_histogram(
            meters,
            SCOPE,
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            bounds=TOKEN_BUCKETS,
        )
        self._first_chunk = summed_histogram(
            meters,
            SCOPE,
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time from the request to the first chunk of a streamed answer.",
            bounds=CHUNK_BUCKETS,
        )
        self._per_chunk = summed_histogram(
            meters,
            SCOPE,
            "gen_ai.client.operation.time_per_output_chunk",
            unit="s",
            description="Time between consecutive chunks of a streamed answer.",
            bounds=CHUNK_BUCKETS,
        )
        self._requests, self._cost, self._unpriced, self._findings = _counters_of(meters, meter)
        self._spend = _spend_of(meters, meter)
        self._key_label, self._team_label = _Labels(), _Labels()
        self._series: dict[tuple[Any, ...], _Series] = {}
        self._spend_cells: dict[tuple[str | None, str | None], list[float]] = {}
        self._overhead = summed_histogram(
            meters,
            SCOPE,
            "onion.overhead",
            unit="s",
            description="Time spent in the gateway itself: total minus time waiting for upstreams.",
            bounds=OVERHEAD_BUCKETS,
        )

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        start = self._now()
        context = request.context
        upstream_before = context.upstream_seconds
        try:
            response = await call_next(request)
        except BaseException as error:
            self._ended(request, None, start, upstream_before, AnswerEnd.failed(error, self._now()))
            raise
        if self.overhead_header:
            # A stream's headers leave before it ends: its header carries the overhead so far.
            overhead = self._now() - start - (context.upstream_seconds - upstream_before)
            response.headers[OVERHEAD_HEADER] = f"{overhead * 1000:.3f}"
        return await response.on_end(
            partial(self._ended, request, response, start, upstream_before),  # no frame of its own, as a lambda has
            now=self._now,
            # Read for a stream only (a complete answer has no chunks): no is_stream asked.
            chunk_times=self.chunk_timing,
            content=False,  # the model, usage and timings only: a stream's text is not gathered
        )

    def _ended(
        self, request: Request, response: Response | None, start: float, upstream_before: float, end: AnswerEnd
    ) -> None:
        context = request.context  # read once: every field below comes from it or the end
        completion = end.completion
        elapsed = end.ended_at - start
        # Time the consumer held a chunk is not the gateway's: a slow client reading the
        # socket must not show up as onion overhead.
        overhead = elapsed - (context.upstream_seconds - upstream_before) - end.held
        error = end.failure
        if response is not None:
            provider = response.provider or self.provider
            answered_model = response.model
            model = completion.model or answered_model
            served_by = response.served_by
            # A later model of a fallback chain answered.
            fallback = bool(response.fallback)
        else:
            provider = self._provider_of(None, error)
            model = completion.model or ""
            served_by, answered_model, fallback = _stopped_by(error), "", False
        operation = "chat" if request.embedding is None else "embeddings"
        if error is None:
            kind, result = None, "ok"
        else:
            kind, result = error_type(error), outcome(error)
        key = (operation, provider, request.model, model, answered_model, kind, result, served_by, fallback)
        # Every series this request adds to, found once per attribute set (see _Series).
        series = self._series.get(key)
        if series is None:
            series = self._series_for(key)
        series.duration.add(elapsed)
        if end.first_chunk_at is not None and response is not None:
            (series._first or series.first_chunk()).add(end.first_chunk_at - start)
            times = end.chunk_times
            if times is not None and len(times) > 1:
                # Per the conventions, one point per chunk after the first: the time since
                # the previous one arrived. Summed here, so a point costs a bisect.
                (series._per_chunk or series.per_chunk()).add_gaps(times)
        series.requests[0] += 1
        series.overhead.add(overhead)
        usage = completion.usage
        # A cached answer carries the usage of the call that produced it; it was not spent again.
        if usage is not None and (response is None or response.cache != "hit"):
            (series._input or series.input_tokens()).add(usage.prompt_tokens)
            (series._output or series.output_tokens()).add(usage.completion_tokens)
            price = series.price()
            if price is None:
                cell = series.unpriced_cell
                if cell is None:
                    cell = series.unpriced_cell = self._unpriced.cell(series.cost)
                cell[0] += 1
            else:
                cost = price.cost(usage)
                cell = series.cost_cell
                if cell is None:
                    cell = series.cost_cell = self._cost.cell(series.cost)
                cell[0] += cost
                who = (context.caller, context.team)
                spent = self._spend_cells.get(who)
                if spent is None:
                    spent = self._spend_cell(who)
                spent[0] += cost
        findings = context.findings
        if findings is not None:
            self._count_findings(findings)

    def _spend_cell(self, who: tuple[str | None, str | None]) -> list[float]:
        # A caller's and team's labels never change once given (see _Labels): the cell
        # they name is kept per (caller, team), bounded as callers' keys are unbounded.
        caller, team = who
        cell = self._spend.cell((self._key_label(caller), self._team_label(team), self.scope))
        if len(self._spend_cells) < _SERIES_MEMO:
            self._spend_cells[who] = cell
        return cell

    def _series_for(self, key: tuple[Any, ...]) -> _Series:
        operation, provider, request_model, model, answered_model, kind, result, served_by, fallback = key
        scope = self.scope
        found = _Series(
            self,
            (operation, provider, request_model, scope, model, kind),
            (operation, provider, request_model, scope, answered_model, None),
            (result, served_by, request_model, scope, fallback),
            (served_by, scope),
            (model or request_model, scope),
        )
        if len(self._series) < _SERIES_MEMO:  # keys come from callers' model names: bounded
            self._series[key] = found
        return found

    def _provider_of(self, response: Response | None, error: BaseException | None) -> str:
        if response is not None:
            return response.provider or self.provider
        if isinstance(error, ProviderError) and error.provider_kind:
            # The API spoken, as on success; the configured name is not a conventional value.
            return error.provider_kind
        return self.provider

    def _count_findings(self, findings: GuardFindings) -> None:
        # Flags pass the request on and redactions the answer: this is where they show.
        for rule in findings.flags:
            self._findings.add(("input", rule, self.scope), 1)
        for detector, found in findings.redactions.items():
            self._findings.add(("output", detector, self.scope), found)


def _attributes(key: tuple[Any, ...]) -> dict[str, Any]:
    """The GenAI attributes of a series key: (operation, provider, request model, scope,
    response model, error type[, token type]); empty parts are left out."""
    operation, provider, request_model, scope, response_model, error, *token_type = key
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": request_model,
        "onion.scope": scope,
    }
    if response_model:
        attrs["gen_ai.response.model"] = response_model
    if error is not None:
        attrs["error.type"] = error
    if token_type:
        attrs["gen_ai.token.type"] = token_type[0]
    return attrs


def _overhead_attributes(key: tuple[str, str]) -> dict[str, Any]:
    return {"onion.served_by": key[0], "onion.scope": key[1]}


def _stopped_by(error: BaseException | None) -> str:
    """The layer that ended a request without an answer, for ``onion.served_by``."""
    if isinstance(error, GuardrailViolation):
        return f"{error.stage}_guard" if error.stage in ("input", "output") else "guard"
    if isinstance(error, RateLimited):
        return "rate_limit"
    if isinstance(error, CircuitOpen):
        return "circuit_breaker"
    return "none"
