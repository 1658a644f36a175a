""".ci/run, the CI entry point, run against fake tools: how it treats pytest's exit codes
and when it installs redis-server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "run"


def fake_tool(bin_dir: Path, name: str, body: str) -> None:
    tool = bin_dir / name
    tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "$CALLS"\n{body}\n')
    tool.chmod(0o755)


def run_ci(
    tmp_path: Path, *, pytest_exit: int = 0, pip_exit: int = 0, redis: bool = True
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run a copy of .ci/run with only fake tools on PATH; returns the result and the tool calls."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # Only what the script runs: its own dirname, and fakes for everything else.
    dirname = shutil.which("dirname")
    assert dirname is not None
    (bin_dir / "dirname").symlink_to(dirname)
    fake_tool(bin_dir, "pip", f"exit {pip_exit}")
    fake_tool(bin_dir, "python", f'echo "pytest output"\nexit {pytest_exit}')
    fake_tool(bin_dir, "apt-get", "exit 0")
    if redis:
        fake_tool(bin_dir, "redis-server", "exit 0")
    calls = tmp_path / "calls"
    calls.touch()
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run(
        [bash, str(repo / ".ci" / "run")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"PATH": str(bin_dir), "CALLS": str(calls), "HOME": str(tmp_path)},
    )
    return result, calls.read_text().splitlines()


def test_ci_passes_when_pytest_passes(tmp_path: Path) -> None:
    result, calls = run_ci(tmp_path, pytest_exit=0)
    assert result.returncode == 0, result.stderr
    assert calls == ["pip install -e .[dev] -e tests/thirdparty_pkg", "python -m pytest -q"]
    assert "pytest output" in result.stdout
    assert "no tests" not in result.stderr


def test_ci_fails_when_pytest_collects_no_tests(tmp_path: Path) -> None:
    result, calls = run_ci(tmp_path, pytest_exit=5)
    assert result.returncode == 1
    assert "pytest collected no tests: that is a failure" in result.stderr
    assert calls[-1] == "python -m pytest -q"
    assert not any(call.startswith("apt-get") for call in calls)


@pytest.mark.parametrize("code", [1, 2, 3, 4])
def test_ci_returns_pytests_other_exit_codes(tmp_path: Path, code: int) -> None:
    result, _ = run_ci(tmp_path, pytest_exit=code)
    assert result.returncode == code
    assert "no tests" not in result.stderr


def test_ci_fails_without_running_pytest_when_pip_fails(tmp_path: Path) -> None:
    result, calls = run_ci(tmp_path, pip_exit=1)
    assert result.returncode == 1
    assert calls == ["pip install -e .[dev] -e tests/thirdparty_pkg"]


def test_ci_installs_redis_server_only_when_missing(tmp_path: Path) -> None:
    result, calls = run_ci(tmp_path, redis=False)
    assert result.returncode == 0, result.stderr
    assert calls[:2] == ["apt-get update -qq", "apt-get install -y -qq redis-server"]
