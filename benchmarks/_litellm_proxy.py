"""LiteLLM's proxy server, run offline in front of the gateway benchmark's fake upstream.

LiteLLM lives in its own virtualenv so the project's environment stays as it is. Where
the index has ``litellm-proxy`` (the package ``litellm[proxy]`` pins), that is

    python -m venv /tmp/litellm-venv
    /tmp/litellm-venv/bin/pip install 'litellm[proxy]==1.110.2' httptools

and where it does not (as here), install litellm, then the extra's other requirements
(the server runs without ``litellm-proxy``, ``litellm-proxy-extras`` and
``litellm-enterprise`` when it has no database):

    /tmp/litellm-venv/bin/pip install litellm==1.110.2 httptools
    /tmp/litellm-venv/bin/python benchmarks/_litellm_proxy.py > /tmp/proxy-reqs.txt
    /tmp/litellm-venv/bin/pip install -r /tmp/proxy-reqs.txt

The benchmarks find that interpreter through ``--litellm-python PATH`` or
``$ONION_BENCH_LITELLM_PYTHON`` (only that one is tried then), else this interpreter
if it can run the proxy, else ``/tmp/litellm-venv/bin/python``. ``stack_overhead.py``
uses it too: LiteLLM's SDK serves a cache hit only with the proxy's requirements present.

The proxy is set up to do the same work as ``onion serve`` with an empty stack: one
process (one uvicorn worker; install ``httptools`` in its venv too, or uvicorn parses
HTTP with the slower h11 where onion's uses httptools), no database, no master
key, no cache, no retries, no telemetry, logs at ERROR level into a file, and the model
cost map read from the copy inside the package instead of the network.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import httpx

ENV_VAR = "ONION_BENCH_LITELLM_PYTHON"
VENV_GUESS = Path("/tmp/litellm-venv/bin/python")
MOCK_TEXT = "This is a mocked answer of sixteen words from the LiteLLM proxy for the throughput run."

# ``sim`` answers from ``mock_response``: LiteLLM's closest equivalent of onion's simulated
# provider with no latency (the router, logging and response building still run; only
# the call to the provider is skipped).
CONFIG = """\
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: {api_base}
      api_key: sk-onion-bench-dummy
      max_retries: 0
  - model_name: sim
    litellm_params:
      model: openai/sim
      api_key: sk-onion-bench-dummy
      mock_response: "{mock_text}"
litellm_settings:
  num_retries: 0
  request_timeout: 60
  cache: false
  telemetry: false
  set_verbose: false
  drop_params: true
router_settings:
  num_retries: 0
  disable_cooldowns: true
general_settings:
  # onion's bare gateway checks no key either; this is the proxy's switch for that.
  dangerously_permit_weak_or_unset_master_key: true
"""


@dataclass
class LiteLLMProxy:
    """A LiteLLM proxy process being started or serving at ``base_url``."""

    process: subprocess.Popen[bytes]
    base_url: str
    interpreter: Interpreter
    config_text: str
    log_path: Path
    launched_at: float
    ready_seconds: float = float("nan")

    def log_tail(self, lines: int = 5) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


# What the proxy server imports beyond the SDK (a few of ``litellm[proxy]``'s extras): an
# interpreter with litellm alone, as a project environment may have, cannot run it.
PROBE = """
import importlib.metadata, importlib.util
missing = [m for m in ("fastapi", "uvicorn", "websockets", "backoff", "orjson", "apscheduler", "yaml")
           if importlib.util.find_spec(m) is None]
print(importlib.metadata.version("litellm"), "httptools" if importlib.util.find_spec("httptools") else "h11", *missing)
"""


class Interpreter(NamedTuple):
    """A Python that can run LiteLLM's proxy."""

    python: str
    version: str  # litellm's
    http_parser: str  # what uvicorn's http="auto" picks there


def find_python(explicit: str | None) -> tuple[Interpreter | None, str]:
    """The first interpreter that can run the proxy, or None and why not."""
    # An interpreter named by the caller is the only one tried: falling back to another
    # would measure a LiteLLM they did not ask for.
    named = explicit or os.environ.get(ENV_VAR)
    candidates = [named] if named else [sys.executable, str(VENV_GUESS)]
    tried = []
    for python in dict.fromkeys(candidates):
        try:
            probe = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            tried.append(f"{python}: {error}")
            continue
        if probe.returncode != 0:
            tried.append(f"{python}: no litellm")
            continue
        version, parser, *missing = probe.stdout.split()
        if not missing:
            return Interpreter(python, version, parser), ""
        tried.append(f"{python}: litellm {version} without {', '.join(missing)}")
    reason = (
        f"no interpreter can run LiteLLM's proxy ({'; '.join(tried)}); make /tmp/litellm-venv as "
        f"benchmarks/_litellm_proxy.py says, or pass --litellm-python or ${ENV_VAR}"
    )
    return None, reason


def _free_port() -> int:
    # The proxy takes a port number, not a socket: a port the kernel just handed out and
    # that was closed again is free unless something races for it within the second.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(interpreter: Interpreter, workdir: str, upstream_base_url: str) -> LiteLLMProxy:
    """Start the proxy and return at once (it takes seconds to boot; see ``wait_ready``)."""
    config_text = CONFIG.format(api_base=upstream_base_url, mock_text=MOCK_TEXT)
    config_path = Path(workdir) / "litellm.yaml"
    config_path.write_text(config_text)
    script = Path(interpreter.python).parent / "litellm"
    command = [str(script)] if script.exists() else [interpreter.python, "-m", "litellm.proxy.proxy_cli"]
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "LITELLM_", "DATABASE_URL", "REDIS_")) and k != "PYTHONPATH"
    }
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # else it fetches the cost map from GitHub at import
        LITELLM_TELEMETRY_DISABLED="true",
        LITELLM_LOG="ERROR",  # also sets uvicorn's level, so no access log line per request
    )
    log_path = Path(workdir) / "litellm.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,  # a .env file in the caller's directory would be loaded otherwise
        )
    return LiteLLMProxy(
        process=process,
        base_url=f"http://127.0.0.1:{port}/v1",
        interpreter=interpreter,
        config_text=config_text,
        log_path=log_path,
        launched_at=time.perf_counter(),
    )


def wait_ready(proxy: LiteLLMProxy, timeout: float = 180.0) -> None:
    """Block until the proxy answers a chat completion from the upstream; raise with its
    log's last lines if it exits or takes longer than ``timeout`` seconds."""
    root = proxy.base_url.removesuffix("/v1")
    deadline = proxy.launched_at + timeout
    with httpx.Client(timeout=10) as client:
        while time.perf_counter() < deadline:
            if proxy.process.poll() is not None:
                raise RuntimeError(f"exited with status {proxy.process.returncode}: {proxy.log_tail()}")
            try:
                if client.get(root + "/health/liveliness").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        else:
            raise RuntimeError(f"not ready after {timeout:.0f} s: {proxy.log_tail()}")
        proxy.ready_seconds = time.perf_counter() - proxy.launched_at
        # Liveliness says nothing of routing: one real answer proves the model list works.
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "ping"}]}
        answer = client.post(proxy.base_url + "/chat/completions", json=body)
        if answer.status_code != 200:
            raise RuntimeError(f"first answer was HTTP {answer.status_code}: {answer.text[:300]}")


def proxy_requirements() -> list[str]:
    """``litellm[proxy]``'s requirements without the packages that only a database needs,
    as lines for ``pip install -r`` (run by the interpreter that has litellm)."""
    from importlib.metadata import requires

    lines = []
    for requirement in requires("litellm") or []:
        spec, _, marker = requirement.partition(";")
        if "extra == 'proxy'" not in marker or spec.startswith(("litellm-proxy", "litellm-enterprise")):
            continue
        rest = " and ".join(m.strip() for m in marker.split(" and ") if "extra ==" not in m)
        lines.append(f"{spec.strip()} ; {rest}" if rest else spec.strip())
    return lines


if __name__ == "__main__":
    print("\n".join(proxy_requirements()))
