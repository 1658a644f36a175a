"""The gateway's configuration: one TOML file with ``[server]``, ``[[providers]]`` and
``[[stack]]`` tables, validated with msgspec.

Every error is a ``ConfigError`` that names the table and the field
(``providers[1]: field 'kind': Invalid enum value 'opnai'``). A string ``"env:NAME"``
in a secret-bearing field (``api_key``, ``api_keys``, ``base_url``, ``headers``) reads the
environment variable ``NAME`` when the file is loaded; the secret itself never appears
in an error message.

Without a file, ``default_config`` gives the embedded default: a simulated upstream
behind ``DEFAULT_STACK``, or, when ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` are set, that
OpenAI-compatible upstream. ``build_gateway`` turns a config into providers, the router
and the stack, which ``onion serve`` and ``onion check`` use.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ._registry import convert_every_field
from ._upstream_headers import DEFAULT_UPSTREAM_HEADERS
from ._upstream_headers import refusal as upstream_header_refusal
from .errors import ConfigError

if TYPE_CHECKING:
    # Loaded by build_gateway only: validating a config needs neither httpx nor the layers.
    from ._stack import Stack
    from .providers import Provider, Router

__all__ = [
    "DEFAULT_STACK",
    "ApiKey",
    "Gateway",
    "GatewayConfig",
    "ProviderConfig",
    "RouterConfig",
    "ServerConfig",
    "TelemetryConfig",
    "build_gateway",
    "check_config",
    "configure_telemetry",
    "default_config",
    "load_config",
    "parse_config",
]

DEFAULT_STACK: list[dict[str, Any]] = [
    # Outermost first. Layers are named as in the ``onion.middlewares`` entry points.
    # metrics and logging outermost: they see every request, whoever answers it.
    {"use": "metrics"},
    {"use": "logging"},
    # The deadline bounds everything below, retries and backoff included; the phase limits
    # bound each attempt, so a silent, stalled or hung attempt ends in time for the one
    # retry to finish before the deadline (2 x 25 s < 60 s): no fault hangs past 60 s.
    {"use": "timeout", "seconds": 60.0, "first_token_seconds": 25.0, "idle_seconds": 15.0, "answer_seconds": 25.0},
    # A blocked prompt is never looked up, stored or sent upstream.
    {"use": "input_guard"},
    {"use": "exact_cache"},
    # Inside the cache: only what the guard let through is stored; redacts by default.
    {"use": "output_guard"},
    # Two attempts at most: no answer is billed more than twice.
    {"use": "retry", "attempts": 2},
    # Inside retry: a retry sees the open circuit and stops.
    {"use": "circuit_breaker"},
]
"""The stack ``onion serve`` runs when no config file is given."""

SIMULATED_MODELS = ["sim-small", "sim-large"]


class ApiKey(msgspec.Struct, forbid_unknown_fields=True):
    """A client key with a name: the name (never the key) becomes the request's caller.

    A virtual key also sets ``team``, the ``models`` it may call (globs), its own
    ``rpm``/``tpm`` (applied by a ``rate_limit`` layer), a budget (``budget_usd`` per
    ``budget_window``, charged by a ``budget`` layer), ``expires`` (a TOML date or
    datetime, UTC) and free ``metadata``."""

    name: str
    key: str
    team: str | None = None
    models: list[str] = []
    budget_usd: float | None = None
    budget_window: Literal["day", "month"] = "month"
    rpm: int | None = None
    tpm: int | None = None
    expires: Any = None
    metadata: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"ApiKey(name={self.name!r}, key=<hidden>)"


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[server]``: where to listen, who may call, and the bounds that keep one client
    (slow, idle, abandoning or hostile) from locking the others out.

    - ``header_timeout_seconds`` / ``body_timeout_seconds``: time to receive the request
      headers (from the connection's start, or the next request's first byte) and then
      the body, plus a second per MiB of body received (a large upload on a slow link);
      past it, 408 and the connection is closed.
    - ``keepalive_idle_seconds``: an idle kept-alive connection is closed after this.
    - ``max_connections``: open connections above it get 503 and are closed (``onion
      serve`` raises the soft open-file limit to the hard one and lowers this cap to fit).
    - ``max_headers`` / ``max_header_bytes``: caps on the request headers (431).
    - ``max_json_depth``: a body nesting arrays and objects deeper is a 400.
    - ``max_answer_bytes``: an upstream answer larger than this is cut with an error.
    - ``metrics_auth``: ``GET /metrics`` needs an API key when ``api_keys`` is set.
    - ``workers``: processes serving the one port (``--workers`` overrides).
    - ``admin_key``: the admin API's key (``env:NAME``), sent as ``Authorization: Bearer``;
      unset, the ``/admin/`` routes answer 403. No client key opens them.
    - ``upstream_headers``: upstream answer headers passed to the client unchanged (exact
      names or ``prefix*``; ``x-upstream-request-id`` forwards the upstream's request id
      under that name; ``[]``: none). Framing, cookies, credentials and onion's own names
      are refused.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: list[str | ApiKey] = []
    # Anthropic's request limit: an image or PDF sent inline as base64 (a phone photo is
    # 4-8 MB) must pass a drop-in gateway.
    max_body_bytes: int = 32 * 1024 * 1024
    shutdown_grace_seconds: float = 10.0
    header_timeout_seconds: float = 5.0
    body_timeout_seconds: float = 10.0
    keepalive_idle_seconds: float = 5.0
    max_connections: int = 4096
    max_headers: int = 100
    max_header_bytes: int = 32 * 1024
    max_json_depth: int = 128
    max_answer_bytes: int = 32 * 1024 * 1024
    metrics_auth: bool = True
    workers: int = 1
    admin_key: str | None = None
    upstream_headers: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_UPSTREAM_HEADERS))

    def __repr__(self) -> str:
        # The resolved admin key lives here: keep it out of reprs, logs and tracebacks.
        fields = ", ".join(
            f"{name}={'<hidden>' if name == 'admin_key' and value else repr(value)}"
            for name, value in msgspec.structs.asdict(self).items()
            if name != "api_keys"
        )
        return f"ServerConfig({fields}, api_keys=<{len(self.api_keys)} keys>)"


class TelemetryConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[telemetry]``: how ``onion serve`` logs and exports metrics and traces.

    - ``log_format``: ``"json"`` lines, ``"console"`` (pretty), or ``"auto"`` (JSON unless
      stderr is a terminal); ``log_level`` filters the gateway's own log lines.
    - ``prometheus``: keep the reader behind ``GET /metrics``.
    - ``otlp``: also push metrics and traces over OTLP/HTTP every
      ``export_interval_seconds`` (endpoints default to the ``OTEL_EXPORTER_OTLP_*``
      environment variables; needs ``pip install onion-llm[otlp]``).
    """

    service_name: str = "onion"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    prometheus: bool = True
    otlp: bool = False
    otlp_metrics_endpoint: str | None = None
    otlp_traces_endpoint: str | None = None
    export_interval_seconds: float = 15.0


_SHARED_FIELDS = frozenset({"name", "kind", "models", "weight"})
_HTTP_FIELDS = frozenset(
    {
        "base_url",
        "api_key",
        "connect_timeout",
        "read_timeout",
        "total_timeout",
        "max_connections",
        "max_keepalive_connections",
        "headers",
        "trust_env",
    }
)
_KIND_FIELDS: dict[str, frozenset[str]] = {
    "openai": _SHARED_FIELDS | _HTTP_FIELDS | {"stream_usage", "continue_final_message"},
    "anthropic": _SHARED_FIELDS | _HTTP_FIELDS | {"version", "default_max_tokens"},
    "simulated": _SHARED_FIELDS
    | {
        "ttft",
        "tokens_per_second",
        "answer_tokens",
        "error_rates",
        "timeout_rate",
        "cut_rate",
        "stall_seconds",
        "retry_after",
        "seed",
    },
}


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """``[[providers]]``: one upstream. Fields other than ``name``, ``kind`` and ``models``
    apply to some kinds only (HTTP settings to ``openai``/``anthropic``, latency and fault
    rates to ``simulated``); setting one on the wrong kind is an error. Several providers
    listing one model are its deployments, balanced by ``weight`` (> 0, default 1: the
    share of calls each gets while all are healthy; see ``[router]``)."""

    name: str
    kind: Literal["openai", "anthropic", "simulated"]
    models: list[str] = []
    weight: float = 1.0
    base_url: str | None = None
    api_key: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    total_timeout: float | None = 600.0
    max_connections: int = 256
    max_keepalive_connections: int = 64
    headers: dict[str, str] = {}
    trust_env: bool = False
    stream_usage: bool = True
    continue_final_message: bool = False
    version: str = "2023-06-01"
    default_max_tokens: int = 1024
    ttft: float = 0.05
    tokens_per_second: float = 100.0
    answer_tokens: int = 24
    error_rates: dict[int, float] = {}
    timeout_rate: float = 0.0
    cut_rate: float = 0.0
    stall_seconds: float = 30.0
    retry_after: float = 1.0
    seed: int | None = None

    def __repr__(self) -> str:
        # Resolved secrets live in this struct: keep them out of reprs, logs and tracebacks.
        return f"ProviderConfig(name={self.name!r}, kind={self.kind!r}, models={self.models!r})"

    def params(self) -> dict[str, Any]:
        """The constructor arguments of this provider's kind (defaults left to the class)."""
        allowed = _KIND_FIELDS[self.kind] - {"kind", "weight"}  # the router's, not the provider's
        values = msgspec.structs.asdict(self)
        given = msgspec.to_builtins(self)
        out = {k: values[k] for k in allowed if k in given}
        out["name"] = self.name
        if "models" in out:
            out["models"] = tuple(out["models"])
        return out


class RouterConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """``[router]``: outlier ejection across a model's deployments (``EjectionPolicy``'s
    fields, same defaults) and ``redis_url`` (``env:NAME`` allowed) to share calls in
    flight and ejections between workers."""

    consecutive_failures: int = 5
    base_ejection_seconds: float = 30.0
    max_ejection_seconds: float = 300.0
    max_ejection_percent: float = 50.0
    in_flight_bias: float = 1.0
    redis_url: str | None = None

    def __repr__(self) -> str:
        return "RouterConfig(<redis url hidden>)" if self.redis_url else "RouterConfig()"


class StateConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[state]``: where issued keys, budgets and spend live. ``backend``: ``"memory"``
    (one process, lost on restart), ``"sqlite"`` (the file ``path``, survives restarts;
    the default for a config file: ``onion-state.db`` beside it) or ``"redis"``
    (``redis_url``, shared by every worker and machine). ``secret`` (``env:NAME``) keys
    the hashes issued keys are stored as (without it one is kept in the store)."""

    backend: Literal["memory", "sqlite", "redis"] | None = None
    path: str | None = None
    redis_url: str | None = None
    secret: str | None = None

    def __repr__(self) -> str:
        return f"StateConfig(backend={self.backend!r}, path={self.path!r})"


class GatewayConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole file: ``[server]``, ``[telemetry]``, ``[router]``, ``[state]``, ``[prices]``
    (model → ``{input, output}`` USD per 1M tokens, added to and overriding the shipped
    table for every layer that prices calls), ``[[providers]]``, ``[[stack]]`` (outermost
    first)."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    telemetry: TelemetryConfig = msgspec.field(default_factory=TelemetryConfig)
    router: RouterConfig = msgspec.field(default_factory=RouterConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    prices: dict[str, Any] = {}
    providers: list[ProviderConfig] = []
    stack: list[dict[str, Any]] = []
    source: str = "file"


# -- validation ----------------------------------------------------------------------
#
# Validation gathers every problem of a file before it raises, so one run of
# ``onion check`` lists them all: a table that fails is left out of the result and the
# others are still checked.

_AT = re.compile(r"\s*-\s*at `\$([^`]*)`$")
_NAMED = re.compile(r"(unknown|missing required) field `([^`]*)`")
_TOP_TABLES = ("server", "telemetry", "router", "state", "prices", "providers", "stack")


def _explain(error: msgspec.ValidationError, origin: str, table: str) -> ConfigError:
    text = str(error)
    match = _AT.search(text)
    message = text[: match.start()] if match else text
    field = match.group(1).lstrip(".") if match else None
    named = _NAMED.search(message)
    if named:
        field, message = named.group(2), "no such setting" if named.group(1) == "unknown" else "required"
    where = f"{table}: field {field!r}" if field else table
    return ConfigError(f"{origin}: {where}: {message}", table=table, field=field or None)


def _convert(value: Any, type_: Any, table: str, origin: str, problems: list[ConfigError]) -> Any:
    """``value`` as ``type_``, or ``None`` after reporting each of its bad fields."""
    return convert_every_field(value, type_, lambda error: _explain(error, origin, table), problems, strict=False)


class _Table:
    """Where problems of one table are reported: its name, how messages name it, the list."""

    def __init__(self, table: str, where: str, problems: list[ConfigError]) -> None:
        self.table, self.where, self.problems = table, where, problems

    def problem(self, field: str, message: str) -> None:
        self.problems.append(ConfigError(f"{self.where}: field {field!r}: {message}", table=self.table, field=field))

    def secret(self, value: str, field: str, env: Mapping[str, str]) -> str | None:
        """``value``, or the environment variable an ``env:NAME`` value names (``None`` if unset)."""
        if not value.startswith("env:"):
            return value
        resolved = env.get(value[4:])
        if not resolved:
            self.problem(field, f"environment variable {value[4:]} is not set")
        return resolved or None


def _check_provider(
    provider: ProviderConfig, index: int, origin: str, env: Mapping[str, str], problems: list[ConfigError]
) -> ProviderConfig | None:
    table = _Table(f"providers[{index}]", f"{origin}: providers[{index}] (name = {provider.name!r})", problems)
    problem = table.problem
    before = len(problems)
    given = set(msgspec.to_builtins(provider))
    if not (math.isfinite(provider.weight) and provider.weight > 0):
        problem("weight", "must be a number > 0")
    for field in sorted(given - _KIND_FIELDS[provider.kind]):
        problem(field, f"does not apply to kind = {provider.kind!r}")
    if provider.kind == "simulated":
        for status, rate in provider.error_rates.items():
            if not (400 <= status <= 599 and 0.0 <= rate <= 1.0):
                problem("error_rates", "expected {status 400-599 = rate 0..1}")
                break
        return provider if len(problems) == before else None
    changes: dict[str, Any] = {}
    if provider.api_key is not None:
        changes["api_key"] = table.secret(provider.api_key, "api_key", env)
    if provider.base_url is not None:
        base_url = changes["base_url"] = table.secret(provider.base_url, "base_url", env)
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            problem("base_url", "must start with http:// or https://")
    if provider.headers:
        changes["headers"] = {k: table.secret(v, f"headers.{k}", env) for k, v in provider.headers.items()}
    if len(problems) > before:
        return None
    return msgspec.structs.replace(provider, **changes) if changes else provider


_POSITIVE_SERVER_FIELDS = (
    "shutdown_grace_seconds",
    "header_timeout_seconds",
    "body_timeout_seconds",
    "keepalive_idle_seconds",
    "max_connections",
    "max_headers",
    "max_header_bytes",
    "max_json_depth",
    "max_answer_bytes",
    "workers",
)


def _check_bounds(server: ServerConfig, table: _Table) -> None:
    for name in _POSITIVE_SERVER_FIELDS:
        if getattr(server, name) <= 0:
            table.problem(name, "must be greater than 0")
    if server.max_header_bytes < 1024:
        table.problem("max_header_bytes", "must be at least 1024")


def _check_keys(server: ServerConfig, origin: str, env: Mapping[str, str], problems: list[ConfigError]) -> ServerConfig:
    table = _Table("server", f"{origin}: server", problems)
    keys: list[str | ApiKey] = []
    for index, entry in enumerate(server.api_keys):
        if isinstance(entry, ApiKey):
            name, value = entry.name, entry.key
        else:
            # A bare key is named after its variable (env:ONION_KEY_ALICE → ONION_KEY_ALICE),
            # or its position: the key itself must never become an identity that gets logged.
            name, value = (entry[4:] if entry.startswith("env:") else f"key-{index + 1}"), entry
        resolved = table.secret(value, f"api_keys[{index}]", env)
        if isinstance(entry, ApiKey):
            _check_virtual_key(entry, index, table)
        if resolved is not None:
            if any(isinstance(key, ApiKey) and key.key == resolved for key in keys):
                table.problem(f"api_keys[{index}]", "the same key is listed twice")
            if any(isinstance(key, ApiKey) and key.name == name for key in keys):
                table.problem(f"api_keys[{index}].name", f"{name!r} is used twice")
            keys.append(
                msgspec.structs.replace(entry, key=resolved) if isinstance(entry, ApiKey) else ApiKey(name, resolved)
            )
    admin_key = None if server.admin_key is None else table.secret(server.admin_key, "admin_key", env)
    if admin_key is not None and any(isinstance(key, ApiKey) and key.key == admin_key for key in keys):
        table.problem("admin_key", "the admin key must differ from every client key in api_keys")
    if not 1 <= server.port <= 65535:
        table.problem("port", "must be 1-65535")
    if server.max_body_bytes < 1024:
        table.problem("max_body_bytes", "must be at least 1024")
    _check_bounds(server, table)
    for index, entry in enumerate(server.upstream_headers):
        problem = upstream_header_refusal(entry)
        if problem is not None:
            table.problem(f"upstream_headers[{index}]", problem)
    return msgspec.structs.replace(server, api_keys=keys, admin_key=admin_key)


def _check_virtual_key(entry: ApiKey, index: int, table: _Table) -> None:
    from ._policy import expiry

    where = f"api_keys[{index}]"
    if entry.budget_usd is not None and not entry.budget_usd >= 0:
        table.problem(f"{where}.budget_usd", "must be a non-negative number of dollars")
    for field in ("rpm", "tpm"):
        if (value := getattr(entry, field)) is not None and value < 1:
            table.problem(f"{where}.{field}", "must be at least 1")
    if entry.expires is not None:
        try:
            expiry(entry.expires)
        except ValueError as error:
            table.problem(f"{where}.expires", str(error))


def _check_state(state: StateConfig, origin: str, env: Mapping[str, str], problems: list[ConfigError]) -> StateConfig:
    table = _Table("state", f"{origin}: state", problems)
    changes: dict[str, Any] = {}
    if state.backend == "redis" and not state.redis_url:
        table.problem("redis_url", "backend 'redis' needs redis_url")
    if state.redis_url is not None:
        changes["redis_url"] = table.secret(state.redis_url, "redis_url", env)
    if state.secret is not None:
        changes["secret"] = table.secret(state.secret, "secret", env)
    return msgspec.structs.replace(state, **changes) if changes else state


def _check_prices(prices: Any, origin: str, problems: list[ConfigError]) -> dict[str, Any]:
    table = _Table("prices", f"{origin}: prices", problems)
    if not isinstance(prices, Mapping):
        table.problem("prices", 'expected a table of "model" = {input = USD/1M, output = USD/1M}')
        return {}
    good: dict[str, Any] = {}
    for model, spec in prices.items():
        if (
            not isinstance(spec, Mapping)
            or set(spec) - {"input", "output", "as_of"}
            or not {"input", "output"} <= set(spec)
        ):
            table.problem(model, "expected {input = USD per 1M tokens, output = USD per 1M tokens}")
            continue
        if any(
            not isinstance(spec[k], (int, float)) or isinstance(spec[k], bool) or spec[k] < 0
            for k in ("input", "output")
        ):
            table.problem(model, "input and output must be non-negative numbers (USD per 1M tokens)")
            continue
        good[model] = dict(spec)
    return good


def _check_telemetry(telemetry: TelemetryConfig, origin: str, problems: list[ConfigError]) -> None:
    problem = _Table("telemetry", f"{origin}: telemetry", problems).problem
    if not telemetry.export_interval_seconds > 0:
        problem("export_interval_seconds", "must be positive")
    for field in ("otlp_metrics_endpoint", "otlp_traces_endpoint"):
        value = getattr(telemetry, field)
        if value is not None and not value.startswith(("http://", "https://")):
            problem(field, "must start with http:// or https://")


def _check_router(
    router: RouterConfig, origin: str, env: Mapping[str, str], problems: list[ConfigError]
) -> RouterConfig:
    table = _Table("router", f"{origin}: router", problems)
    from .providers.balance import EjectionPolicy

    fields = {k: v for k, v in msgspec.structs.asdict(router).items() if k != "redis_url"}
    try:
        EjectionPolicy(**fields)
    except ConfigError as error:
        table.problem(error.field or "router", str(error).split(": ", 1)[-1])
    if router.redis_url is None:
        return router
    url = table.secret(router.redis_url, "redis_url", env)
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        table.problem("redis_url", "must start with redis://, rediss:// or unix://")
    return msgspec.structs.replace(router, redis_url=url)


def _check_providers(
    tables: list[Any], origin: str, env: Mapping[str, str], problems: list[ConfigError]
) -> list[ProviderConfig]:
    names: set[str] = set()
    providers = []
    for index, table in enumerate(tables):
        provider = _convert(table, ProviderConfig, f"providers[{index}]", origin, problems)
        if provider is None:
            continue
        if provider.name in names:
            message = f"{origin}: providers[{index}]: field 'name': {provider.name!r} is used twice"
            problems.append(ConfigError(message, table=f"providers[{index}]", field="name"))
            continue
        names.add(provider.name)
        checked = _check_provider(provider, index, origin, env, problems)
        if checked is not None:
            providers.append(checked)
    return providers


def _check_stack(tables: list[Any], origin: str, problems: list[ConfigError]) -> list[dict[str, Any]]:
    stack = []
    for index, value in enumerate(tables):
        table = _convert(value, dict[str, Any], f"stack[{index}]", origin, problems)
        if table is None:
            continue
        if not isinstance(table.get("use"), str):
            message = f"{origin}: stack[{index}]: field 'use': required, the name of a layer"
            problems.append(ConfigError(message, table=f"stack[{index}]", field="use"))
            continue
        stack.append(table)
    return stack


def _validate(data: Mapping[str, Any], origin: str, env: Mapping[str, str]) -> tuple[GatewayConfig, list[ConfigError]]:
    """The config with every table that passed, and every problem of the ones that did not."""
    problems: list[ConfigError] = []
    for key in data:
        if key not in _TOP_TABLES:
            problems.append(ConfigError(f"{origin}: config: field {key!r}: no such setting", table="config", field=key))
    server = _convert(data.get("server", {}), ServerConfig, "server", origin, problems) or ServerConfig()
    server = _check_keys(server, origin, env, problems)
    telemetry = _convert(data.get("telemetry", {}), TelemetryConfig, "telemetry", origin, problems)
    state = _convert(data.get("state", {}), StateConfig, "state", origin, problems) or StateConfig()
    state = _check_state(state, origin, env, problems)
    prices = _check_prices(data.get("prices", {}), origin, problems)
    if telemetry is not None:
        _check_telemetry(telemetry, origin, problems)
    provider_tables = _convert(data.get("providers", []), list[Any], "providers", origin, problems)
    if provider_tables == []:
        problems.append(
            ConfigError(f"{origin}: providers: at least one [[providers]] table is required", table="providers")
        )
    providers = _check_providers(provider_tables or [], origin, env, problems)
    router = RouterConfig()
    if "router" in data:
        converted = _convert(data["router"], RouterConfig, "router", origin, problems)
        router = _check_router(converted, origin, env, problems) if converted is not None else router
    # No [[stack]] at all is the embedded default stack (its per-attempt limits, one
    # retry, the breaker, the guards and the cache); `stack = []` asks for no layers.
    tables = data["stack"] if "stack" in data else [dict(table) for table in DEFAULT_STACK]
    stack = _check_stack(_convert(tables, list[Any], "stack", origin, problems) or [], origin, problems)
    config = GatewayConfig(
        server=server,
        telemetry=telemetry or TelemetryConfig(),
        router=router,
        state=state,
        prices=prices,
        providers=providers,
        stack=stack,
        source=origin,
    )
    return config, problems


def parse_config(
    data: Mapping[str, Any], *, origin: str = "config", env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Validate a parsed TOML document and resolve its ``env:`` secrets.

    Raises one ``ConfigError`` carrying every problem found (``error.problems``)."""
    config, problems = _validate(data, origin, os.environ if env is None else env)
    if problems:
        raise ConfigError(problems=problems)
    return config


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate a TOML config file."""
    return parse_config(_read(path), origin=str(path), env=env)


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    origin = str(path)
    try:
        with Path(path).open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{origin}: no such file (check the path; without --config the default runs)") from None
    except OSError as error:  # unreadable: permissions, a directory, an I/O error
        raise ConfigError(f"{origin}: cannot read it: {error.strerror} (check its path and permissions)") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{origin}: not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{origin}: not UTF-8 text") from None
    return data


def default_config(env: Mapping[str, str] | None = None) -> GatewayConfig:
    """The embedded config: the OpenAI-compatible upstream named by ``OPENAI_BASE_URL`` /
    ``OPENAI_API_KEY`` if either is set, else a simulated upstream; ``DEFAULT_STACK`` around it."""
    env = os.environ if env is None else env
    stack = [dict(table) for table in DEFAULT_STACK]
    if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL"):
        provider: dict[str, Any] = {
            "name": "openai",
            "kind": "openai",
            "base_url": env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
        }
        if env.get("OPENAI_API_KEY"):
            provider["api_key"] = "env:OPENAI_API_KEY"
        data: dict[str, Any] = {"providers": [provider], "stack": stack}
        origin = "embedded default (OpenAI-compatible upstream from OPENAI_BASE_URL / OPENAI_API_KEY)"
    else:
        data = {
            "providers": [{"name": "simulated", "kind": "simulated", "models": SIMULATED_MODELS}],
            "stack": stack,
        }
        origin = "embedded default (simulated upstream)"
    return parse_config(data, origin=origin, env=env)


# -- building --------------------------------------------------------------------------


class Gateway:
    """A config made real: providers, the router, the stack, and the key table."""

    def __init__(self, config: GatewayConfig, providers: list[Provider], router: Router, stack: Stack) -> None:
        self.config = config
        self.providers = providers
        self.router = router
        self.stack = stack
        self.api_keys: dict[str, str] = {
            entry.key: entry.name for entry in config.server.api_keys if isinstance(entry, ApiKey)
        }

    def describe_upstreams(self) -> str:
        """One line per provider: name, kind, where, which models (never a key)."""
        lines = []
        for spec in self.config.providers:
            models = ", ".join(spec.models) if spec.models else "any model"
            where = f" at {spec.base_url}" if spec.base_url else ""
            weight = f" (weight {spec.weight:g})" if spec.weight != 1.0 else ""
            lines.append(f"{spec.name} ({spec.kind}{where}): {models}{weight}")
        return "\n".join(lines)

    async def aclose(self) -> None:
        """Close the providers' connection pools."""
        await self.router.aclose()


def configure_telemetry(telemetry: TelemetryConfig) -> None:
    """Set up logging and the OpenTelemetry exporters ``[telemetry]`` asks for.

    Call it before ``build_gateway``: the metrics and tracing layers take the default
    providers when they are built.
    """
    from .telemetry import configure_logging, configure_otel

    json = None if telemetry.log_format == "auto" else telemetry.log_format == "json"
    configure_logging(json=json, level=telemetry.log_level)
    try:
        configure_otel(
            service_name=telemetry.service_name,
            prometheus=telemetry.prometheus,
            otlp=telemetry.otlp,
            otlp_metrics_endpoint=telemetry.otlp_metrics_endpoint,
            otlp_traces_endpoint=telemetry.otlp_traces_endpoint,
            export_interval_seconds=telemetry.export_interval_seconds,
        )
    except ImportError as error:
        raise ConfigError(f"telemetry: field 'otlp': {error}") from None


def build_gateway(config: GatewayConfig) -> Gateway:
    """Build providers, router and stack from a validated config.

    Raises one ``ConfigError`` carrying every provider and stack problem."""
    problems: list[ConfigError] = []
    gateway = _build(config, problems)
    if gateway is None:
        raise ConfigError(problems=problems)
    return gateway


def check_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Gateway:
    """Load and build a config file as ``onion check`` does: one ``ConfigError`` carries
    every problem at once, the file's own and those of building its providers and stack
    (each table that passed validation is still built)."""
    config, problems = _validate(_read(path), str(path), os.environ if env is None else env)
    gateway = _build(config, problems)
    if gateway is None or problems:
        raise ConfigError(problems=problems)
    return gateway


def _router(config: GatewayConfig, providers: list[Provider]) -> Router:
    from .providers import Router
    from .providers.balance import EjectionPolicy

    settings = msgspec.structs.asdict(config.router)
    redis_url = settings.pop("redis_url")
    built = {provider.name for provider in providers}
    weights = {spec.name: spec.weight for spec in config.providers if spec.weight != 1.0 and spec.name in built}
    return Router(providers, weights=weights, policy=EjectionPolicy(**settings), redis=redis_url)


async def _no_upstream(request: Any) -> Any:
    # The handler of a stack built only to be checked, when no provider could be built.
    raise ConfigError("no provider could be built")


def _build(config: GatewayConfig, problems: list[ConfigError]) -> Gateway | None:
    """The gateway, or ``None`` after appending what stopped it to ``problems``."""
    from ._stack import Stack
    from .providers import build_provider

    before = len(problems)
    providers = []
    for index, spec in enumerate(config.providers):
        try:
            params = spec.params()
            if spec.kind != "simulated":
                params["max_answer_bytes"] = config.server.max_answer_bytes
                params["upstream_headers"] = config.server.upstream_headers
            providers.append(build_provider(spec.kind, **params))
        except (TypeError, ValueError) as error:
            message = f"{config.source}: providers[{index}] (name = {spec.name!r}): {error}"
            problems.append(ConfigError(message, table=f"providers[{index}]"))
    # Without providers the router refuses to exist; when that is already reported,
    # the stack is still built (on a stand-in) so its problems are listed too.
    router = _router(config, providers) if providers or not problems else None
    tables = _with_shared_settings(config, router, problems)
    try:
        stack = Stack.from_config(tables, router or _no_upstream, name="stack")
    except ConfigError as error:
        for problem in error.problems:
            problems.append(ConfigError(f"{config.source}: {problem}", table=problem.table, field=problem.field))
    if router is None or len(problems) > before:
        return None
    return Gateway(config, providers, router, stack)


# Layers that price calls get ``[prices]`` (their own ``prices`` win, model by model).
_PRICED_LAYERS = frozenset({"metrics", "logging", "budget"})


def state_settings(config: GatewayConfig) -> tuple[str, str | None, str | None]:
    """``(backend, path, redis_url)`` of ``[state]``, defaults filled in: SQLite beside a
    config file (``onion-state.db``), memory for a config given in code."""
    state = config.state
    backend = state.backend
    source = Path(config.source)
    if backend is None:
        backend = "redis" if state.redis_url else ("sqlite" if source.is_file() or state.path else "memory")
    path = state.path
    if backend == "sqlite" and path is None:
        path = str(source.parent / "onion-state.db") if source.is_file() else "onion-state.db"
    return backend, path, state.redis_url


def _with_shared_settings(config: GatewayConfig, router: Any, problems: list[ConfigError]) -> list[dict[str, Any]]:
    """The stack tables with ``[prices]``, ``[state]`` and the virtual keys' needs applied:
    a budget layer stores where ``[state]`` says and must price every model a budgeted
    key may call; a key's rpm/tpm or budget with no layer to apply it is an error."""
    tables = [dict(table) for table in config.stack]
    uses = {table["use"] for table in tables}
    keys = [key for key in config.server.api_keys if isinstance(key, ApiKey)]
    served = [model for model, _ in router.models()] if router is not None else []
    budgeted: set[str] = set()
    for index, key in enumerate(keys):
        for field, layer in (("rpm", "rate_limit"), ("tpm", "rate_limit"), ("budget_usd", "budget")):
            if getattr(key, field) is not None and layer not in uses:
                message = (
                    f"{config.source}: server: field 'api_keys[{index}].{field}': needs a {layer!r} layer in [[stack]]"
                )
                problems.append(ConfigError(message, table="server", field=f"api_keys[{index}].{field}"))
        if key.budget_usd is not None:
            import fnmatch

            budgeted.update(m for m in served if not key.models or any(fnmatch.fnmatchcase(m, g) for g in key.models))
            budgeted.update(g for g in key.models if not any(c in g for c in "*?["))
    backend, path, redis_url = state_settings(config)
    for table in tables:
        use = table["use"]
        if use in _PRICED_LAYERS and config.prices:
            table["prices"] = {**config.prices, **table.get("prices", {})}
        if use == "budget":
            if "backend" not in table:
                table.update(backend=backend, path=path, redis_url=redis_url)
            if budgeted:
                table["models"] = sorted(set(table.get("models", [])) | budgeted)
    return tables
