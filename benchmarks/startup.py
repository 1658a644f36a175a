"""Start-up and footprint: ``import onion`` time (target < 0.3 s) against LiteLLM's, the
time ``onion serve`` takes to give its first answer, and the RSS of each.

Each import is timed in a fresh interpreter (median of ``--runs``), so nothing is cached
in the process; the OS file cache is warm after the first run for both sides alike.

- ``import onion``: the core a Python service imports;
- ``onion + built-in layers``: also every layer registered in ``onion.middlewares``;
- ``onion serve modules``: what the gateway imports (config, the server, which loads its
  wire dialects, providers, uvicorn);
- ``import litellm``: the peer, in an interpreter that has it (this one, or
  ``--litellm-python`` / ``$ONION_BENCH_LITELLM_PYTHON``, e.g. a venv made with
  ``python -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install litellm``);
  skipped, and said so, when none has it.
- ``onion serve``: process start to the first 200 answer over HTTP, the default stack in
  front of a simulated upstream with no latency, and the server's RSS after it.

Prints a table and writes ``benchmarks/results/startup.json``.

    python benchmarks/startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _fullstack import print_table, write_results

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 0.3
VENV_GUESS = Path("/tmp/litellm-venv/bin/python")

# Runs in the child: time the import alone (not the interpreter's own start) and read RSS.
PROBE = """
import time, sys
t = time.perf_counter()
{imports}
elapsed = time.perf_counter() - t
rss = 0.0
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        rss = float(line.split()[1]) / 1024
print(elapsed, rss, len(sys.modules))
"""


def _layer_imports() -> str:
    lines = ["import onion"]
    for module in layer_modules():
        # A layer that has not landed yet is skipped; the rest are imported.
        lines.append(f"try:\n    import {module}\nexcept ImportError:\n    pass")
    return "\n".join(lines)


def layer_modules() -> list[str]:
    """Modules of the layers registered in ``onion.middlewares`` (landed or not)."""
    from onion import available_layers

    return sorted({target.split(":")[0] for target in available_layers().values()})


PER_MODULE = """
import onion, time, sys
before = set(sys.modules)
t = time.perf_counter()
import {module}
print(time.perf_counter() - t, len(set(sys.modules) - before))
"""


def time_layer_modules(runs: int) -> dict[str, dict]:
    """Import time each layer module adds on top of ``import onion`` (median of runs)."""
    out = {}
    for module in layer_modules():
        samples = []
        for _ in range(runs):
            done = subprocess.run(
                [sys.executable, "-c", PER_MODULE.format(module=module)], capture_output=True, text=True, cwd=ROOT
            )
            if done.returncode != 0:
                break
            seconds, modules = done.stdout.split()
            samples.append((float(seconds), int(modules)))
        if samples:
            out[module] = {"seconds": statistics.median(s[0] for s in samples), "new_modules": samples[0][1]}
    return out


def time_import(python: str, imports: str, runs: int) -> dict | None:
    """Median import seconds, RSS MiB and module count over ``runs`` fresh interpreters."""
    samples = []
    for _ in range(runs):
        done = subprocess.run(
            [python, "-c", PROBE.format(imports=imports)], capture_output=True, text=True, cwd=ROOT, timeout=120
        )
        if done.returncode != 0:
            return None
        seconds, rss, modules = done.stdout.split()
        samples.append((float(seconds), float(rss), int(modules)))
    return {
        "seconds": statistics.median(s[0] for s in samples),
        "min_seconds": min(s[0] for s in samples),
        "rss_mb": statistics.median(s[1] for s in samples),
        "modules": samples[0][2],
        "runs": runs,
    }


def _litellm_python(explicit: str | None) -> tuple[str | None, str]:
    candidates = [explicit, os.environ.get("ONION_BENCH_LITELLM_PYTHON"), sys.executable]
    if VENV_GUESS.exists():
        candidates.append(str(VENV_GUESS))
    for python in filter(None, candidates):
        probe = subprocess.run(
            [python, "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0:
            return python, probe.stdout.strip()
    return None, ""


SERVE_CONFIG = """
[[providers]]
name = "sim"
kind = "simulated"
models = ["sim-small"]
ttft = 0.0
tokens_per_second = 1000000.0
answer_tokens = 8
"""


def _serve_config() -> str:
    from onion.config import DEFAULT_STACK

    lines = [SERVE_CONFIG]
    for table in DEFAULT_STACK:
        lines.append("[[stack]]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in table.items())
    return "\n".join(lines) + "\n"


def time_serve(runs: int) -> dict | None:
    """Median seconds from spawning ``onion serve`` to listening and to the first answer."""
    try:
        config_text = _serve_config()
    except ImportError:
        return None
    results = []
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "onion.toml"
        config.write_text(config_text)
        for _ in range(runs):
            result = _serve_once(config)
            if result is None:
                return None
            results.append(result)
    return {
        "listening_seconds": statistics.median(r[0] for r in results),
        "first_answer_seconds": statistics.median(r[1] for r in results),
        "rss_mb_after_first_answer": statistics.median(r[2] for r in results),
        "runs": runs,
        "stack": "DEFAULT_STACK of onion.config",
    }


def _serve_once(config: Path) -> tuple[float, float, float] | None:
    command = [sys.executable, "-m", "onion.cli", "serve", "--config", str(config), "--host", "127.0.0.1"]
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
    )
    try:
        url = None
        assert process.stdout is not None
        for line in process.stdout:
            if "listening on " in line:
                url = line.split("listening on ", 1)[1].split()[0]
                break
        listening = time.perf_counter() - started
        if url is None:
            return None
        body = {"model": "sim-small", "messages": [{"role": "user", "content": "hello"}]}
        with httpx.Client(timeout=5) as client:
            while time.perf_counter() - started < 30:
                try:
                    if client.post(f"{url}/v1/chat/completions", json=body).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.005)
            else:
                return None
        answered = time.perf_counter() - started
        rss = 0.0
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = float(line.split()[1]) / 1024
        return listening, answered, rss
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--litellm-python", help="an interpreter that has litellm installed")
    args = parser.parse_args()
    python = sys.executable
    rows: dict[str, dict | None] = {
        "import onion": time_import(python, "import onion", args.runs),
        "onion + built-in layers": time_import(python, _layer_imports(), args.runs),
        "onion serve modules": time_import(
            python, "import onion, onion.config, onion.server, onion.providers, uvicorn", args.runs
        ),
    }
    litellm_python, litellm_version = _litellm_python(args.litellm_python)
    skipped = {}
    if litellm_python:
        rows[f"import litellm {litellm_version}"] = time_import(
            litellm_python, "import litellm", max(3, args.runs // 2)
        )
    else:
        skipped["litellm"] = "no interpreter with litellm (pip install litellm, or pass --litellm-python)"
    serve = time_serve(max(3, args.runs // 2))
    if serve is None:
        skipped["onion serve"] = "onion serve did not start or answer"
    table = []
    for name, row in rows.items():
        if row is None:
            skipped[name] = "the import failed"
            continue
        table.append([name, row["seconds"], row["min_seconds"], row["rss_mb"], row["modules"]])
    print(f"import time in a fresh interpreter (median of runs; target for onion: < {TARGET_SECONDS} s)")
    print_table(["import", "seconds", "best", "RSS MiB", "modules"], table)
    onion_row = rows["import onion"]
    litellm_row = next((v for k, v in rows.items() if k.startswith("import litellm")), None)
    if onion_row:
        verdict = "meets" if onion_row["seconds"] < TARGET_SECONDS else "MISSES"
        print(f"import onion: {onion_row['seconds']:.3f} s, {verdict} the {TARGET_SECONDS} s target")
        if litellm_row:
            print(f"litellm imports {litellm_row['seconds'] / onion_row['seconds']:.0f}x slower than onion")
    per_module = time_layer_modules(3)
    print("\neach layer module on top of import onion (median of 3; lazy imports keep a layer's cost off others)")
    print_table(
        ["module", "seconds", "new modules"],
        [[m, v["seconds"], v["new_modules"]] for m, v in sorted(per_module.items(), key=lambda kv: -kv[1]["seconds"])],
    )
    if serve:
        print(
            f"onion serve: listening after {serve['listening_seconds']:.2f} s, first answer after "
            f"{serve['first_answer_seconds']:.2f} s, RSS {serve['rss_mb_after_first_answer']:.1f} MiB"
        )
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    path = write_results(
        "startup",
        {
            "target_seconds": TARGET_SECONDS,
            "imports": {k: v for k, v in rows.items() if v is not None},
            "litellm_version": litellm_version or None,
            "serve": serve,
            "layer_modules": per_module,
            "skipped": skipped,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
