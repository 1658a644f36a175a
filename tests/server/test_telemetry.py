"""``[telemetry]``: validated like every table, and OTLP export reaching a collector over HTTP."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from onion import ConfigError, Message, Request, Stack
from onion.config import TelemetryConfig, configure_telemetry, parse_config
from onion.testing import Reply, ScriptedProvider, ThreadedServer

PROVIDERS = [{"name": "sim", "kind": "simulated", "models": ["m"]}]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"log_format": "xml"}, "telemetry: field 'log_format'"),
        ({"log_level": "loud"}, "telemetry: field 'log_level'"),
        ({"otlp_endpoint": "x"}, "telemetry: field 'otlp_endpoint': no such setting"),
        ({"export_interval_seconds": 0}, "telemetry: field 'export_interval_seconds': must be positive"),
        ({"otlp_traces_endpoint": "collector:4318"}, "telemetry: field 'otlp_traces_endpoint': must start with"),
    ],
)
def test_bad_telemetry_tables_name_the_field(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"providers": PROVIDERS, "telemetry": table}, origin="gw.toml")


def test_telemetry_defaults() -> None:
    telemetry = parse_config({"providers": PROVIDERS}).telemetry
    assert telemetry == TelemetryConfig()
    assert telemetry.prometheus and not telemetry.otlp and telemetry.log_level == "info"


class Collector:
    """An OTLP/HTTP collector: keeps the path and body of every export it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.received.append((scope["path"], body))
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x-protobuf")]}
        )
        await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the exporters post from their own threads
async def test_otlp_export_reaches_a_collector_and_logs_are_json(
    monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    from middlewares import Metrics, Tracing
    from middlewares.observe.request_log import RequestLog
    from onion.telemetry import _otel, reset_logging

    for name in ("_meter_provider", "_tracer_provider", "_prometheus_registry"):
        monkeypatch.setattr(_otel, name, getattr(_otel, name))  # restored after the test
    stream = io.StringIO()
    collector = Collector()
    with ThreadedServer(collector) as server:
        telemetry = TelemetryConfig(
            service_name="onion-otlp-test",
            log_format="json",
            otlp=True,
            otlp_metrics_endpoint=server.url + "/v1/metrics",
            otlp_traces_endpoint=server.url + "/v1/traces",
            export_interval_seconds=60,
        )
        monkeypatch.setattr("sys.stderr", stream)
        try:
            configure_telemetry(telemetry)
            stack = Stack([Metrics(), Tracing(), RequestLog()], ScriptedProvider(default=Reply("fine, thanks")))
            for streamed in (False, True):
                request = Request(model="m", messages=[Message("user", "how are you")], stream=streamed)
                await (await stack(request)).result()
            meters, tracers = _otel.default_meter_provider(), _otel.default_tracer_provider()
            assert meters.force_flush(10_000) and tracers.force_flush(10_000)
        finally:
            reset_logging()
            # While the collector still listens: a provider shut down at exit would export again.
            _otel.default_meter_provider().shutdown()
            _otel.default_tracer_provider().shutdown()
    paths = {path for path, _ in collector.received}
    assert paths == {"/v1/metrics", "/v1/traces"}
    metrics = b"".join(body for path, body in collector.received if path == "/v1/metrics")
    traces = b"".join(body for path, body in collector.received if path == "/v1/traces")
    # Protobuf keeps strings as they are: the names and attributes can be found in the bytes.
    assert b"gen_ai.client.operation.duration" in metrics and b"onion-otlp-test" in metrics
    assert b"gen_ai.request.model" in traces and b"onion-otlp-test" in traces
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    assert [line["outcome"] for line in lines if "outcome" in line] == ["ok", "ok"]
