"""Fixtures of the server tests: ``gateway``, a factory of ``onion serve`` subprocesses."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_spec = importlib.util.spec_from_file_location("_onion_test_gateway", Path(__file__).with_name("_gateway.py"))
assert _spec is not None and _spec.loader is not None
_gateway = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gateway)


@pytest.fixture
def gateway() -> Iterator[Callable[..., Any]]:
    """``gateway(config_path_or_None, open_files=None, args=())`` starts ``onion serve``;
    every one started is stopped (SIGTERM, then SIGKILL) at the end of the test."""
    started: list[Any] = []

    def start(config: Path | None = None, **kwargs: Any) -> Any:
        served = _gateway.Gateway(config, **kwargs)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()
