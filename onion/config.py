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

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ._registry import convert_every_field
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
    """A client key with a name: the name (never the key) becomes the request's caller."""

    name: str
    key: str

    def __repr__(self) -> str:
        return f"ApiKey(name={self.name!r}, key=<hidden>)"


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[server]``: where to listen, who may call, and the bounds that keep one client
    (slow, idle, abandoning or hostile) from locking the others out.

    - ``header_timeout_seconds`` / ``body_timeout_seconds``: time to receive the request
      headers (from the connection's start, or the next request's first byte) and then
      the body; past it, 408 and the connection is closed.
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
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: list[str | ApiKey] = []
    max_body_bytes: int = 4 * 1024 * 1024
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


_SHARED_FIELDS = frozenset({"name", "kind", "models"})
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
    rates to ``simulated``); setting one on the wrong kind is an error."""

    name: str
    kind: Literal["openai", "anthropic", "simulated"]
    models: list[str] = []
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
        allowed = _KIND_FIELDS[self.kind] - {"kind"}
        values = msgspec.structs.asdict(self)
        given = msgspec.to_builtins(self)
        out = {k: values[k] for k in allowed if k in given}
        out["name"] = self.name
        if "models" in out:
            out["models"] = tuple(out["models"])
        return out


class GatewayConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole file: ``[server]``, ``[telemetry]``, ``[[providers]]``, ``[[stack]]``
    (outermost first)."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    telemetry: TelemetryConfig = msgspec.field(default_factory=TelemetryConfig)
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
_TOP_TABLES = ("server", "telemetry", "providers", "stack")


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
        if resolved is not None:
            if any(isinstance(key, ApiKey) and key.key == resolved for key in keys):
                table.problem(f"api_keys[{index}]", "the same key is listed twice")
            keys.append(ApiKey(name, resolved))
    admin_key = None if server.admin_key is None else table.secret(server.admin_key, "admin_key", env)
    if admin_key is not None and any(isinstance(key, ApiKey) and key.key == admin_key for key in keys):
        table.problem("admin_key", "the admin key must differ from every client key in api_keys")
    if not 1 <= server.port <= 65535:
        table.problem("port", "must be 1-65535")
    if server.max_body_bytes < 1024:
        table.problem("max_body_bytes", "must be at least 1024")
    _check_bounds(server, table)
    return msgspec.structs.replace(server, api_keys=keys, admin_key=admin_key)


def _check_telemetry(telemetry: TelemetryConfig, origin: str, problems: list[ConfigError]) -> None:
    problem = _Table("telemetry", f"{origin}: telemetry", problems).problem
    if not telemetry.export_interval_seconds > 0:
        problem("export_interval_seconds", "must be positive")
    for field in ("otlp_metrics_endpoint", "otlp_traces_endpoint"):
        value = getattr(telemetry, field)
        if value is not None and not value.startswith(("http://", "https://")):
            problem(field, "must start with http:// or https://")


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
    if telemetry is not None:
        _check_telemetry(telemetry, origin, problems)
    provider_tables = _convert(data.get("providers", []), list[Any], "providers", origin, problems)
    if provider_tables == []:
        problems.append(
            ConfigError(f"{origin}: providers: at least one [[providers]] table is required", table="providers")
        )
    providers = _check_providers(provider_tables or [], origin, env, problems)
    stack = _check_stack(_convert(data.get("stack", []), list[Any], "stack", origin, problems) or [], origin, problems)
    config = GatewayConfig(
        server=server,
        telemetry=telemetry or TelemetryConfig(),
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
        raise ConfigError(f"{origin}: no such file") from None
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
            lines.append(f"{spec.name} ({spec.kind}{where}): {models}")
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


async def _no_upstream(request: Any) -> Any:
    # The handler of a stack built only to be checked, when no provider could be built.
    raise ConfigError("no provider could be built")


def _build(config: GatewayConfig, problems: list[ConfigError]) -> Gateway | None:
    """The gateway, or ``None`` after appending what stopped it to ``problems``."""
    from ._stack import Stack
    from .providers import Router, build_provider

    before = len(problems)
    providers = []
    for index, spec in enumerate(config.providers):
        try:
            params = spec.params()
            if spec.kind != "simulated":
                params["max_answer_bytes"] = config.server.max_answer_bytes
            providers.append(build_provider(spec.kind, **params))
        except (TypeError, ValueError) as error:
            message = f"{config.source}: providers[{index}] (name = {spec.name!r}): {error}"
            problems.append(ConfigError(message, table=f"providers[{index}]"))
    # Without providers the router refuses to exist; when that is already reported,
    # the stack is still built (on a stand-in) so its problems are listed too.
    router = Router(providers) if providers or not problems else None
    try:
        stack = Stack.from_config(config.stack, router or _no_upstream, name="stack")
    except ConfigError as error:
        for problem in error.problems:
            problems.append(ConfigError(f"{config.source}: {problem}", table=problem.table, field=problem.field))
    if router is None or len(problems) > before:
        return None
    return Gateway(config, providers, router, stack)
