"""``onion serve`` refuses to start in one line with the fix (busy port, missing extra,
unreadable config), a non-zero exit status and no traceback; real subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from onion.server._port import port_holder

SIMULATED = '[[providers]]\nname = "sim"\nkind = "simulated"\nmodels = ["m"]\n'


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    environment.update(env or {})
    command = [sys.executable, "-m", "onion.cli", "serve", *args]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)


def _one_line_without_traceback(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_busy_port_names_the_process_holding_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen();"
            " print(s.getsockname()[1], flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        assert port_holder(port) == (holder.pid, port_holder(port)[1])  # type: ignore[index]
        config = tmp_path / "onion.toml"
        config.write_text(SIMULATED)
        for extra in ((), ("--workers", "2")):
            line = _one_line_without_traceback(_serve("--config", str(config), "--port", str(port), *extra))
            assert f"port {port} on 127.0.0.1 is already in use by pid {holder.pid} (" in line, line
            assert "--port N (0 picks a free port)" in line
    finally:
        holder.kill()
        holder.wait()


def test_port_holder_is_none_for_a_free_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: not a holder
        assert port_holder(port) is None
    assert port_holder(port, proc="/nonexistent") is None


def test_a_missing_extra_names_the_pip_install(tmp_path: Path) -> None:
    # A stand-in for "redis is not installed": a package named redis that fails to import.
    fake = tmp_path / "site" / "redis"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ModuleNotFoundError("No module named \'redis\'", name="redis")\n')
    config = tmp_path / "onion.toml"
    config.write_text(SIMULATED + '[[stack]]\nuse = "exact_cache"\nbackend = "redis"\nredis_url = "redis://x"\n')
    path = os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])
    line = _one_line_without_traceback(_serve("--config", str(config), "--port", "0", env={"PYTHONPATH": path}))
    assert "stack[0] (use = 'exact_cache')" in line
    assert "pip install 'onion-llm[redis]'" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file (the directory case covers the same path)")
def test_an_unreadable_config_says_so_with_the_fix(tmp_path: Path) -> None:
    config = tmp_path / "onion.toml"
    config.write_text(SIMULATED)
    config.chmod(0)
    line = _one_line_without_traceback(_serve("--config", str(config), "--port", "0"))
    assert f"{config}: cannot read it: Permission denied (check its path and permissions)" in line


def test_a_directory_or_missing_file_as_config_is_one_line(tmp_path: Path) -> None:
    line = _one_line_without_traceback(_serve("--config", str(tmp_path), "--port", "0"))
    assert f"{tmp_path}: cannot read it: Is a directory" in line
    line = _one_line_without_traceback(_serve("--config", str(tmp_path / "nope.toml"), "--port", "0"))
    assert "nope.toml: no such file (check the path" in line


def test_python_dash_m_onion_is_the_console_script(tmp_path: Path) -> None:
    # The same one-line refusal as `onion serve` (a config that is a directory): the module
    # runs the script's main, arguments and exit status included.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    command = [sys.executable, "-m", "onion", "serve", "--config", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)
    assert str(tmp_path) in _one_line_without_traceback(result)
    assert subprocess.run([sys.executable, "-m", "onion", "--help"], capture_output=True, timeout=60).returncode == 0
