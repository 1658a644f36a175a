"""The gateway's ASGI app of two checkouts side by side, over a real HTTP upstream: gateway
CPU per request, before/after from one run.

Each ``name=TREE`` starts a child process that imports onion and the layers from ``TREE``
(``PYTHONPATH=TREE``), builds the gateway as ``onion serve`` does (``load_config``,
``configure_telemetry``, ``build_gateway``, ``create_app``; the log line to a file) with
the default stack (or ``--empty``: ``stack = []``) in front of one shared fake upstream
(``onion.testing.upstream``, its own process), and calls the ASGI app in process with a
fake receive/send on uvloop, one request at a time, every prompt new. No uvicorn and no
client socket: what is left is the app, the layers, the provider and its socket. The
parent asks every child in turn for ``--calls`` requests, round after round (the order
flips every round), so the machine's noise falls on every checkout alike; each child
reports its own CPU time per request (``time.process_time``) and the wall time, and
checks that every answer is a 200 from the upstream provider (``x-onion-served-by: up``).
With ``taskset`` the children share core 0 and the upstream has core 1.

    git archive <before> | tar -x -C /tmp/before
    python benchmarks/http_app_ab.py --rounds 6 --calls 1000 before=/tmp/before after=$PWD
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def app_caller(
    config_path: str, log_path: str, prepare: Callable[[Any], None] | None = None
) -> tuple[Any, Callable[[str], Awaitable[tuple[int, str]]]]:
    """The gateway as ``onion serve`` builds it from ``config_path`` (the log line to
    ``log_path``), and one ASGI call of it with a new prompt: its status and served-by.
    ``prepare(gateway)`` may change the gateway before the app is made of it."""
    import asyncio

    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 2)  # the log line goes to a file, as to a collector
    from onion.config import build_gateway, configure_telemetry, load_config
    from onion.server._app import create_app
    from onion.server._http import DISCONNECT, DisconnectHook

    config = load_config(config_path)
    configure_telemetry(config.telemetry)
    gateway = build_gateway(config)
    if prepare is not None:
        prepare(gateway)
    app = create_app(gateway)
    counter = 0

    async def one(tag: str) -> tuple[int, str]:
        nonlocal counter
        counter += 1
        body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"ab %s %d"}]}' % (tag.encode(), counter)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
            # What onion's protocol adds: the app cancels the call from the hook, no task per request.
            "extensions": {DISCONNECT: DisconnectHook()},
        }
        sent = False
        answer: dict[str, Any] = {}

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client stays until the answer ends
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = dict(message["headers"])

        await app(scope, receive, send)
        return answer["status"], answer["headers"].get(b"x-onion-served-by", b"").decode()

    return gateway, one


def run_served(runner: Callable[[], Awaitable[None]]) -> None:
    """Run ``runner`` on uvloop (where installed) as onion serve runs it: sniffio told the
    thread runs asyncio, where the tree does so."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    from onion.server import _runner

    named = getattr(_runner, "_named_library", None)
    go = (lambda: asyncio.run(runner())) if uvloop is None else (lambda: uvloop.run(runner()))
    if named is None:
        go()
    else:
        with named("asyncio"):
            go()


def recorded_handler(gateway: Any, pause: float) -> None:
    """Put an in-process handler in place of the router: it answers every request with
    one answer the upstream gave (read once over HTTP, decoded by the provider's own
    decoder each call, named as the provider names it) after ``await asyncio.sleep(pause)``.
    What the layers then cost without the socket, with or without the idle gap an
    upstream call leaves (``http_idle.py``)."""
    import asyncio

    import httpx

    from onion import Response, Stack

    provider = gateway.providers[0]
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "ab recorded 1"}]}
    data = httpx.post(provider.base_url + "/chat/completions", json=body).content

    async def up(request: Any) -> Response:
        completion = provider.decode_completion(data, request)
        await asyncio.sleep(pause)
        response = Response.complete(completion, served_by=provider.name)
        response.provider = provider.kind
        return response

    up.name = provider.name  # type: ignore[attr-defined]
    gateway.stack = Stack(gateway.stack.layers, up, name=gateway.stack.name)


def child(config_path: str, log_path: str, handler: str = "http") -> None:
    """Serve rounds on stdin/stdout with the gateway of the checkout on ``sys.path``;
    ``handler``: ``http`` (the provider), ``recorded`` or ``recorded-<seconds>`` (see
    ``recorded_handler``)."""
    prepare = None
    if handler != "http":
        pause = float(handler.partition("-")[2] or 0)
        prepare = functools.partial(recorded_handler, pause=pause)
    gateway, one = app_caller(config_path, log_path, prepare)

    async def serve() -> None:
        for line in sys.stdin:
            calls, tag = line.split()
            served: dict[str, int] = {}
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(int(calls)):
                status, who = await one(tag)
                key = who if status == 200 else f"status {status}"
                served[key] = served.get(key, 0) + 1
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            out = {"cpu_us": cpu / int(calls) * 1e6, "wall_us": wall / int(calls) * 1e6, "served": served}
            print(json.dumps(out), flush=True)
        await gateway.aclose()

    run_served(serve)


def run_rounds(
    cases: list[tuple[str, str, str]] | list[tuple[str, str, str, str]],
    upstream_url: str,
    rounds: int,
    calls: int,
    gateway_pin: list[str],
    quiet: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """One child per ``(name, tree, TOML[, handler])`` case (``handler``: see ``child``),
    ``rounds`` rounds of ``calls`` requests each, the order flipped every round; each
    child's results per round."""
    children: dict[str, subprocess.Popen[str]] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            for name, tree, config, *handler in cases:
                path = Path(workdir) / f"{name}.toml"
                path.write_text(config)
                env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
                env["PYTHONPATH"] = tree
                code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import http_app_ab as m; m.child(*sys.argv[1:])"
                children[name] = subprocess.Popen(
                    [*gateway_pin, sys.executable, "-c", code, str(path), str(Path(workdir) / f"{name}.log"), *handler],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                    cwd=tree,
                )
                samples[name] = []
            for name, process in children.items():  # warm-up: connections, caches, imports
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write(f"200 w{name.replace(' ', '_')}\n")
                process.stdin.flush()
                if not process.stdout.readline():  # it died: its traceback is in its log
                    log = (Path(workdir) / f"{name}.log").read_text()
                    raise RuntimeError(f"{name} failed:\n{log[-3000:]}")
            names = list(children)
            for round_ in range(rounds):
                for name in names if round_ % 2 == 0 else names[::-1]:
                    process = children[name]
                    assert process.stdin is not None and process.stdout is not None
                    process.stdin.write(f"{calls} r{round_}{name.replace(' ', '_')}\n")
                    process.stdin.flush()
                    result = json.loads(process.stdout.readline())
                    if set(result["served"]) != {"up"}:
                        raise RuntimeError(f"{name}: every answer should be a 200 from 'up', got {result['served']}")
                    samples[name].append(result)
                    if not quiet:
                        print(f"round {round_} {name}: {result['cpu_us']:.0f} µs CPU, {result['wall_us']:.0f} µs wall")
    finally:
        for process in children.values():
            if process.stdin is not None:
                process.stdin.close()
        for process in children.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", help="name=TREE")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--empty", action="store_true", help="stack = [] instead of the default stack")
    parser.add_argument("--no-taskset", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from http_stack import gateway_config, pins, start_upstream

    pinned, gateway_pin, other_pin = pins(args.no_taskset)
    upstream, upstream_url = start_upstream(other_pin)
    try:
        config = gateway_config(upstream_url, empty=args.empty)
        cases = [(name, tree, config) for name, _, tree in (spec.partition("=") for spec in args.trees)]
        samples = run_rounds(cases, upstream_url, args.rounds, args.calls, gateway_pin)
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
    stack = "stack = []" if args.empty else "DEFAULT_STACK"
    print(f"gateway ASGI app in process, {stack}, HTTP upstream, {args.rounds} rounds x {args.calls}; pinned={pinned}")
    for name, results in samples.items():
        cpu = sorted(r["cpu_us"] for r in results)
        print(
            f"  {name}: CPU per request median {statistics.median(cpu):.0f} µs, range {cpu[0]:.0f}-{cpu[-1]:.0f}"
            f" -> {1e6 / statistics.median(cpu):.0f} requests per CPU-second"
        )


if __name__ == "__main__":
    sys.exit(main())
