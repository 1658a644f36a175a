"""The ``onion`` command: ``onion serve [--config FILE]``, ``onion check CONFIG``,
``onion eval CASES``, ``onion demo``."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any

from ._stack import Stack
from .errors import ConfigError


def _check(args: argparse.Namespace) -> int:
    """Exit 0 and print the onion when the config is valid; else list every problem, exit 1."""
    import json

    from .config import check_config

    try:
        gateway = check_config(args.config)
    except ConfigError as error:
        problems = error.problems
        if args.json:
            found = [{"table": p.table, "field": p.field, "message": str(p)} for p in problems]
            print(json.dumps({"config": args.config, "ok": False, "problems": found}, indent=2))
        else:
            for problem in problems:
                print(f"onion check: {problem}", file=sys.stderr)
            print(f"onion check: {args.config}: {_count(len(problems))}", file=sys.stderr)
        return 1
    if args.json:
        summary = {
            "config": args.config,
            "ok": True,
            "problems": [],
            "providers": [{"name": p.name, "kind": p.kind, "models": p.models} for p in gateway.config.providers],
            "stack": [info.name for info in gateway.stack.infos],
        }
        print(json.dumps(summary, indent=2))
        return 0
    from .testing.construction import describe_law_status

    print("providers:")
    print("  " + gateway.describe_upstreams().replace("\n", "\n  "))
    print(gateway.stack.describe())
    print(describe_law_status(gateway.stack))
    return 0


def _count(problems: int) -> str:
    return "1 problem" if problems == 1 else f"{problems} problems"


def _metrics_renderer(stack: Stack) -> Any:
    """The Prometheus renderer of the built-in metrics layer, when the stack has one."""
    if not any("metrics" in info.provides for info in stack.infos):
        return None
    try:
        from .telemetry import render_prometheus
    except ImportError:
        return None
    return render_prometheus


_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def _single_threaded_blas(environ: MutableMapping[str, str]) -> None:
    """One BLAS thread unless the operator chose otherwise. Must run before numpy loads.

    A semantic-cache lookup is one matrix-vector product; on a small machine shared with
    the event loop, OpenBLAS's extra threads made each lookup of a few thousand entries
    10-20x slower (benchmarks/streaming.py), and concurrent requests already use the cores.
    """
    if not any(name in environ for name in _BLAS_THREADS):
        for name in _BLAS_THREADS:
            environ[name] = "1"


def _connection_limits(server: Any) -> Any:
    """The ``[server]`` bounds for the protocol, after raising the open-file limit (said
    on stdout: an operator should know what the process may hold)."""
    from .server._protocol import ConnectionLimits
    from .server._runner import fit_connection_cap, raise_open_file_limit

    before, after = raise_open_file_limit()
    if after != before:
        print(f"open files: soft limit raised from {before} to {after}")
    cap = fit_connection_cap(server.max_connections, after)
    if cap != server.max_connections:
        print(f"max_connections: {server.max_connections} lowered to {cap} to fit {after} open files")
    return ConnectionLimits(
        header_timeout=server.header_timeout_seconds,
        body_timeout=server.body_timeout_seconds,
        max_connections=cap,
        max_headers=server.max_headers,
        max_header_bytes=server.max_header_bytes,
    )


def _serve(args: argparse.Namespace) -> int:
    import os
    import signal
    import socket

    if "numpy" not in sys.modules:
        _single_threaded_blas(os.environ)
    if hasattr(signal, "SIGHUP"):
        from .server._runner import note_early_hangup

        # A SIGHUP while starting must not end the process, nor be lost.
        signal.signal(signal.SIGHUP, note_early_hangup)

    from .config import build_gateway, configure_telemetry, default_config, load_config
    from .server import create_app
    from .server._runner import run

    try:
        config = load_config(args.config) if args.config else default_config()
        if args.log_level:
            config.telemetry.log_level = args.log_level
        # Before the stack is built: its metrics and tracing layers take the providers set here.
        configure_telemetry(config.telemetry)
        gateway = build_gateway(config)
    except ConfigError as error:
        for problem in error.problems:
            print(f"onion serve: {problem}", file=sys.stderr)
        return 2
    except ImportError as error:  # an optional package the config needs, outside any layer
        from ._extras import install_hint

        print(f"onion serve: {args.config or 'the embedded default'} {install_hint(error)}", file=sys.stderr)
        return 2
    server_config = config.server
    host = args.host or server_config.host
    port = server_config.port if args.port is None else args.port
    workers = server_config.workers if args.workers is None else args.workers
    worker = os.environ.get("ONION_WORKER_INDEX")  # set by the supervisor of --workers
    if workers < 1:
        print("onion serve: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers > 1 and server_config.admin_key and _state_backend(config) == "memory":
        # Each worker would hold its own issued keys and spend: a key issued on one is unknown to the rest.
        message = 'onion serve: --workers > 1 with the admin API needs [state] backend = "sqlite" or "redis"'
        print(message, file=sys.stderr)
        return 2
    try:
        # IPPROTO_TCP explicitly: asyncio turns on TCP_NODELAY only for sockets that say
        # so, and without it small writes wait on delayed ACKs (~40 ms per answer).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if workers > 1 or worker is not None:
            # Every worker binds the one port; the supervisor's socket (bound, never
            # listening) only reserves it and resolves port 0.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if workers > 1 and worker is None and port:
            _refuse_if_held(port)  # SO_REUSEPORT would let a second supervisor share it
        sock.bind((host, port))
    except OSError as error:
        print(f"onion serve: {_bind_failure(host, port, error)}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    if worker is not None:
        return _serve_worker(gateway, sock, config, worker, url, args.config)
    if workers > 1:
        _banner(config, gateway, url, f"  ({workers} workers)")
        from .server._workers import supervise

        command = [sys.executable, "-m", "onion.cli", "serve", "--host", host, "--port", str(port)]
        command += ["--config", args.config] if args.config else []
        command += ["--log-level", args.log_level] if args.log_level else []
        try:
            return supervise(command, workers, server_config.shutdown_grace_seconds)
        finally:
            sock.close()
    app = create_app(gateway, metrics_renderer=_metrics_renderer(gateway.stack))
    reloader = _reloadable(app, gateway, args.config)
    limits = _connection_limits(server_config)
    _banner(config, gateway, url)
    run(app, sock, server_config, config.telemetry.log_level, limits, on_hangup=reloader.on_hangup)
    return 0


def _reloadable(app: Any, gateway: Any, path: str | None) -> Any:
    """SIGHUP and ``POST /admin/reload`` re-read ``path`` (``onion.server._reload``)."""
    from .server._admin_ops import add_reload_route
    from .server._reload import Reloader

    reloader = Reloader(app, gateway, path)
    add_reload_route(app.admin, reloader.reload)
    return reloader


def _refuse_if_held(port: int) -> None:
    from .server._port import port_holder

    if port_holder(port) is not None:
        raise OSError(errno.EADDRINUSE, "Address already in use")


def _bind_failure(host: str, port: int, error: OSError) -> str:
    """One line: why the address cannot be had, who holds it (where the OS says), the fix."""
    where = f"{host}:{port}"
    if error.errno == errno.EADDRINUSE:
        from .server._port import port_holder

        holder = port_holder(port)
        by = f" by pid {holder[0]} ({holder[1]})" if holder else " by another process"
        return f"port {port} on {host} is already in use{by}; stop it, or pass --port N (0 picks a free port)"
    if error.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need privileges; use --port 8000)"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: no such address on this machine (use --host 127.0.0.1 or 0.0.0.0)"
    return f"cannot listen on {where}: {error.strerror}"


def _serve_worker(gateway: Any, sock: Any, config: Any, worker: str, url: str, path: str | None) -> int:
    """One of the processes of ``--workers``: no banner, metrics merged across workers."""
    import os

    from .server import create_app
    from .server._runner import run
    from .server._workers import MergedMetrics

    renderer = _metrics_renderer(gateway.stack)
    directory = os.environ.get("ONION_METRICS_DIR")
    if renderer is not None and directory:
        renderer = MergedMetrics(renderer, directory, worker)
    app = create_app(gateway, metrics_renderer=renderer)
    reloader = _reloadable(app, gateway, path)
    limits = _connection_limits(config.server)
    print(f"worker {worker} (pid {os.getpid()}): listening on {url}", flush=True)
    run(app, sock, config.server, config.telemetry.log_level, limits, on_hangup=reloader.on_hangup)
    return 0


def _state_backend(config: Any) -> str:
    from .config import state_settings

    return state_settings(config)[0]


def _banner(config: Any, gateway: Any, url: str, workers: str = "") -> None:
    model = next((m for p in config.providers for m in p.models), "gpt-4o-mini")
    auth = ' -H "Authorization: Bearer $YOUR_KEY"' if gateway.api_keys else ""
    print(f"onion gateway: {config.source}")
    print("upstream: " + gateway.describe_upstreams().replace("\n", "\n          "))
    print("stack: " + (" > ".join(info.name for info in gateway.stack.infos) or "(no layers)") + " > router")
    print(f"listening on {url}  (OpenAI base URL: {url}/v1){workers}")
    from .server import served_routes

    print("routes: " + ", ".join(served_routes(metrics=_metrics_renderer(gateway.stack) is not None)))
    print(
        f"try: curl -s {url}/v1/chat/completions -H 'content-type: application/json'{auth} "
        f'-d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "hello"}}]}}\'',
        flush=True,
    )


def _demo(args: argparse.Namespace) -> int:
    import anyio

    from ._types import Message, Request
    from .testing import Reply, ScriptedProvider

    async def run() -> None:
        provider = ScriptedProvider(default=Reply("Hello from the onion demo: every layer saw this answer pass."))

        async def shout_model(request: Request, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers["x-demo"] = "1"
            return response

        stack = Stack([shout_model], handler=provider, name="demo")
        print(stack.describe())
        request = Request(model="demo-model", messages=[Message("user", args.prompt)], stream=True)
        async with await stack(request) as response:
            async for chunk in response:
                print(chunk.content, end="", flush=True)
        print(f"\n[served_by={response.served_by} trace={request.context.trace}]")

    anyio.run(run)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``onion`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["eval"]:
        from .eval import main as eval_main

        return eval_main(argv[1:])
    parser = argparse.ArgumentParser(prog="onion", description="LLM calls in production, as an onion of layers.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the OpenAI-compatible gateway")
    serve.add_argument("--config", help="TOML config file (default: the embedded default)")
    serve.add_argument("--host", help="address to listen on (overrides [server] host)")
    serve.add_argument("--port", type=int, help="port to listen on, 0 for any free one (overrides [server] port)")
    serve.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="overrides [telemetry] log_level"
    )
    serve.add_argument(
        "--workers", type=int, help="processes serving the port, restarted if they die (overrides [server] workers)"
    )
    serve.set_defaults(func=_serve)
    check = sub.add_parser(
        "check",
        help="validate a TOML config (every problem at once, exit 1); print its providers, stack, "
        "and which laws hold by construction",
    )
    check.add_argument("config")
    check.add_argument("--json", action="store_true", help="print the result (or every problem) as JSON on stdout")
    check.set_defaults(func=_check)
    # Listed for --help only: main() hands "eval" to onion.eval before parsing, so the
    # other commands never pay for importing it.
    evaluate = sub.add_parser(
        "eval", help="run regression cases through a stack or a gateway and score them", add_help=False
    )
    evaluate.add_argument("args", nargs=argparse.REMAINDER)
    demo = sub.add_parser("demo", help="run a small stack in process and stream its answer")
    demo.add_argument("prompt", nargs="?", default="hello")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
