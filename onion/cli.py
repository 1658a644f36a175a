"""The ``onion`` command: ``onion check CONFIG``, ``onion demo``."""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._stack import Stack
from .errors import ConfigError


def _load_toml(path: str) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None


def _check(args: argparse.Namespace) -> int:
    from .testing import ScriptedProvider

    try:
        data = _load_toml(args.config)
        tables = data.get("stack", [])
        if not isinstance(tables, list):
            raise ConfigError(f"{args.config}: 'stack' must be an array of tables ([[stack]])")
        stack = Stack.from_config(tables, ScriptedProvider(name="(configured providers)"))
    except ConfigError as error:
        print(f"onion check: {error}", file=sys.stderr)
        return 2
    print(stack.describe())
    return 0


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
    parser = argparse.ArgumentParser(prog="onion", description="LLM calls in production, as an onion of layers.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a TOML config and print its stack")
    check.add_argument("config")
    check.set_defaults(func=_check)
    demo = sub.add_parser("demo", help="run a small stack in process and stream its answer")
    demo.add_argument("prompt", nargs="?", default="hello")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
