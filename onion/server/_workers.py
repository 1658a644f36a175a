"""``onion serve --workers N``: N gateway processes on one port, and their metrics.

The supervisor (the process the operator started) validates the config, reserves the
port, and starts N workers, each a plain ``onion serve`` that binds the same address
with ``SO_REUSEPORT``: the kernel spreads new connections across them evenly (a shared
accept socket would wake every worker and let the busiest take most). A worker that dies
is restarted (at most once a second, so a crash loop does not spin). SIGTERM or SIGINT
is passed to every worker, which drains as one process would (``GatewayApp.drain``);
the supervisor exits 0 when they have all stopped cleanly. SIGHUP is passed to every
worker too: each reloads the config file (``_reload``).

State that must be shared (rate limits, caches, …) goes through Redis where the config
says so; otherwise each worker has its own.

Metrics: each worker writes its Prometheus text every ``interval`` seconds to a
directory the supervisor owns; ``GET /metrics`` on any worker answers one scrape with
every worker's series, each labelled ``onion_worker="<index>"``: its own fresh, the
others' as of their last snapshot (at most ``interval`` old). Sum over the label for
the gateway's totals.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["MergedMetrics", "label_samples", "merge_families", "supervise"]

_RESTART_EVERY = 1.0


def supervise(command: list[str], workers: int, grace: float) -> int:
    """Run ``workers`` copies of ``command`` (each gets ``ONION_WORKER_INDEX`` and
    ``ONION_METRICS_DIR``), restarting any that dies, until SIGTERM or SIGINT."""
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()

    processes: list[subprocess.Popen[bytes] | None] = [None] * workers

    def hang_up(signum: int, frame: object) -> None:
        # A config reload: every worker re-reads the file itself (and refuses a bad one).
        for process in processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGHUP)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    if hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, hang_up)
    metrics_dir = tempfile.mkdtemp(prefix="onion-metrics-")
    started_at = [0.0] * workers

    def start(index: int) -> None:
        env = {**os.environ, "ONION_WORKER_INDEX": str(index), "ONION_METRICS_DIR": metrics_dir}
        processes[index] = subprocess.Popen(command, env=env)
        started_at[index] = time.monotonic()

    try:
        for index in range(workers):
            start(index)
        while not stopping.wait(0.2):
            for index, process in enumerate(processes):
                if process is not None and process.poll() is not None:
                    if time.monotonic() - started_at[index] < _RESTART_EVERY:
                        continue  # at most one restart a second
                    print(
                        f"onion serve: worker {index} (pid {process.pid}) exited with {process.returncode}; restarting",
                        file=sys.stderr,
                        flush=True,
                    )
                    start(index)
        return _stop_all([p for p in processes if p is not None], grace)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for leftover in Path(metrics_dir).glob("*"):
            leftover.unlink(missing_ok=True)
        os.rmdir(metrics_dir)


def _stop_all(processes: list[subprocess.Popen[bytes]], grace: float) -> int:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace + 5
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return 0 if all(code == 0 for code in codes) else 1


# -- metrics across workers -------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?( .*)$")


def label_samples(text: str, worker: str) -> str:
    """Prometheus text with ``onion_worker="<worker>"`` added to every sample."""
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line) if line and not line.startswith("#") else None
        if match is None:
            out.append(line)
            continue
        name, labels, rest = match.groups()
        inner = labels[1:-1] if labels else ""
        joined = f'onion_worker="{worker}"' + ("," + inner if inner else "")
        out.append(f"{name}{{{joined}}}{rest}")
    return "\n".join(out) + "\n"


def merge_families(texts: list[str]) -> str:
    """Several expositions as one: each family's HELP and TYPE once, then every sample
    of that family from every text (the format allows one block per family)."""
    families: dict[str, list[str]] = {}
    heads: dict[str, list[str]] = {}
    for text in texts:
        family = ""
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                family = line.split(" ", 3)[2]
                heads.setdefault(family, [])
                if len(heads[family]) < 2 and line not in heads[family]:
                    heads[family].append(line)
                families.setdefault(family, [])
            elif line and not line.startswith("#"):
                families.setdefault(family, []).append(line)
    out = []
    for family, samples in families.items():
        out += heads.get(family, [])
        out += samples
    return "\n".join(out) + "\n"


class MergedMetrics:
    """The ``/metrics`` renderer of one worker: its own series and the other workers'
    latest snapshots, labelled by worker; a daemon thread writes its own snapshot."""

    def __init__(self, render: Callable[[], tuple[bytes, str]], directory: str, worker: str, interval: float = 2.0):
        self.render = render
        self.directory = Path(directory)
        self.worker = worker
        self.interval = interval
        threading.Thread(target=self._snapshots, name="onion-metrics-snapshot", daemon=True).start()

    def _own(self) -> tuple[str, str]:
        body, content_type = self.render()
        return label_samples(body.decode(), self.worker), content_type

    def _snapshots(self) -> None:
        while True:
            try:
                text, _ = self._own()
                path = self.directory / f"worker-{self.worker}.prom"
                temporary = path.with_suffix(".tmp")
                temporary.write_text(text)
                temporary.replace(path)  # atomic: a reader sees the old or the new file
            except (ImportError, OSError):
                return
            time.sleep(self.interval)

    def __call__(self) -> tuple[bytes, str]:
        own, content_type = self._own()
        texts = [own]
        for path in sorted(self.directory.glob("worker-*.prom")):
            if path.stem != f"worker-{self.worker}":
                try:
                    texts.append(path.read_text())
                except OSError:
                    continue
        return merge_families(texts).encode(), content_type
