"""``onion serve --workers N``: one port, N processes, restarted when they die, and one
``/metrics`` scrape that shows every worker (``onion/server/_workers.py``)."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from onion.server._workers import label_samples, merge_families

BODY = {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}


def test_two_workers_share_the_port_restart_and_stop_cleanly(tmp_path: Path, gateway: Callable[..., Any]) -> None:
    served = gateway(None, args=("--workers", "2"))
    assert "(2 workers)" in served.text()
    for n in range(20):
        with httpx.Client() as client:  # a new connection each time: the kernel spreads them
            body = {**BODY, "messages": [{"role": "user", "content": f"hi {n}"}]}
            assert client.post(served.url + "/v1/chat/completions", json=body).status_code == 200
    pids = {}
    for _ in range(100):
        pids = dict(re.findall(r"worker (\d) \(pid (\d+)\)", served.text()))
        if len(pids) == 2:
            break
        time.sleep(0.05)
    assert set(pids) == {"0", "1"}
    time.sleep(2.5)  # each worker snapshots its metrics every 2 s
    metrics = httpx.get(served.url + "/metrics").text
    assert 'onion_worker="0"' in metrics and 'onion_worker="1"' in metrics
    counts = re.findall(
        r'^gen_ai_client_operation_duration_seconds_count\{onion_worker="(\d)".*\} (\S+)$', metrics, re.M
    )
    assert sum(float(v) for _, v in counts) >= 20, counts
    os.kill(int(pids["0"]), signal.SIGKILL)
    for _ in range(100):
        text = served.text()
        if "restarting" in text and "worker 0 (pid" in text.split("restarting")[-1]:
            break
        time.sleep(0.05)
    assert "exited with -9; restarting" in served.text()
    for _ in range(5):
        with httpx.Client() as client:
            assert client.post(served.url + "/v1/chat/completions", json=BODY).status_code == 200
    assert served.stop() == 0


def test_metrics_of_several_workers_merge_into_one_valid_exposition() -> None:
    one = '# HELP x_total X.\n# TYPE x_total counter\nx_total{a="1"} 3.0\n# HELP y Y.\n# TYPE y gauge\ny 1.0\n'
    merged = merge_families([label_samples(one, "0"), label_samples(one, "1")])
    assert merged.count("# TYPE x_total counter") == 1
    assert 'x_total{onion_worker="0",a="1"} 3.0' in merged and 'x_total{onion_worker="1",a="1"} 3.0' in merged
    assert 'y{onion_worker="1"} 1.0' in merged
    lines = merged.splitlines()
    assert lines.index('x_total{onion_worker="1",a="1"} 3.0') < lines.index('y{onion_worker="0"} 1.0')  # grouped
