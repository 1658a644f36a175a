"""Every async test runs on both anyio backends: asyncio and trio."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# Loaded at collection on purpose: hypothesis imports it lazily in the middle of a test,
# and pytest's assertion rewriting of it there intermittently fails on CPython 3.11.7
# with "SystemError: AST constructor recursion depth mismatch".
import hypothesis.internal.conjecture.optimiser  # noqa: F401
import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def start_redis(workdir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """A real ``redis-server`` on a free loopback port, answering PING: its URL and process.

    CI installs Debian's redis-server (see .ci/run); without it the Redis tests fail
    under CI=true and are skipped elsewhere.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; .ci/run must install it")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0", process
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.terminate()
            pytest.fail("redis-server did not start")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_starter() -> Callable[[Path], tuple[str, subprocess.Popen[bytes]]]:
    """``start_redis``, for tests that need a redis-server of their own (to pause it)."""
    return start_redis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real ``redis-server`` for the whole test session (see ``start_redis``)."""
    url, process = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
