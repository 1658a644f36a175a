"""Two ``onion serve`` processes sharing keys and budgets through a real redis-server: a
key issued on one works on the other, a revoked one is refused on the other within a
second, and concurrent load over both never spends more than the key's budget."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

from middlewares.limit.budget_stores import RedisBudgetStore

ADMIN = "admin-secret-0123456789"


def _config(tmp_path: Path, redis_url: str, prefix: str) -> Path:
    path = tmp_path / "onion.toml"
    path.write_text(
        f"""
[server]
admin_key = "{ADMIN}"

[state]
backend = "redis"
redis_url = "{redis_url}"

[prices]
"sim-small" = {{ input = 1.0, output = 2.0 }}

[[providers]]
name = "sim"
kind = "simulated"
models = ["sim-small"]
ttft = 0.02
tokens_per_second = 2000
answer_tokens = 12

[[stack]]
use = "budget"
backend = "redis"
redis_url = "{redis_url}"
key_prefix = "{prefix}"
"""
    )
    return path


def _chat(stream: bool = False) -> dict[str, Any]:
    messages = [{"role": "user", "content": "hello"}]
    return {"model": "sim-small", "messages": messages, "max_tokens": 20, "stream": stream}


def test_revocation_reaches_the_other_worker_within_a_second(
    tmp_path: Path, redis_url: str, gateway: Callable[..., Any]
) -> None:
    config = _config(tmp_path, redis_url, f"t:{uuid.uuid4().hex}")
    one, two = gateway(config), gateway(config)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    made = httpx.post(one.url + "/admin/keys", json={"name": f"k-{uuid.uuid4().hex[:8]}"}, headers=admin)
    assert made.status_code == 201, made.text
    auth = {"Authorization": f"Bearer {made.json()['key']}"}
    assert httpx.post(two.url + "/v1/chat/completions", json=_chat(), headers=auth).status_code == 200
    assert httpx.get(two.url + "/admin/keys", headers=auth).status_code == 403  # known to two now: 403
    assert httpx.delete(one.url + f"/admin/keys/{made.json()['id']}", headers=admin).status_code == 200
    revoked = time.monotonic()
    while httpx.post(two.url + "/v1/chat/completions", json=_chat(), headers=auth).status_code == 200:
        assert time.monotonic() - revoked < 1.0, "the other worker still accepts the revoked key"
        time.sleep(0.02)
    assert time.monotonic() - revoked < 1.0


def test_two_workers_never_spend_more_than_a_shared_key_budget(
    tmp_path: Path, redis_url: str, gateway: Callable[..., Any]
) -> None:
    prefix = f"t:{uuid.uuid4().hex}"
    config = _config(tmp_path, redis_url, prefix)
    one, two = gateway(config), gateway(config)
    name = f"k-{uuid.uuid4().hex[:8]}"
    # Worst case of a call: ~9 prompt tokens at $1/1M + 20 answer tokens at $2/1M ≈ 49e-6 USD.
    budget = 10 * 49e-6
    made = httpx.post(
        one.url + "/admin/keys", json={"name": name, "budget_usd": budget}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    auth = {"Authorization": f"Bearer {made.json()['key']}"}
    costs: list[int] = []
    statuses: list[int] = []

    async def load() -> None:
        async with httpx.AsyncClient(timeout=30) as http:

            async def call(index: int) -> None:
                url = (one, two)[index % 2].url + "/v1/chat/completions"
                answer = await http.post(url, json=_chat(), headers=auth)
                statuses.append(answer.status_code)
                if answer.status_code == 200:
                    usage = answer.json()["usage"]
                    costs.append(usage["prompt_tokens"] * 1000 + usage["completion_tokens"] * 2000)

            async with anyio.create_task_group() as group:
                for index in range(80):
                    group.start_soon(call, index)

    anyio.run(load)
    store = RedisBudgetStore(redis_url)
    spent, reserved, _ = anyio.run(store.status, f"{prefix}:key:{name}", "month")
    anyio.run(store.aclose)
    print(f"admitted {statuses.count(200)}/80, spent {spent} of {round(budget * 1e9)} nano-USD")
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(429) > 0 and costs
    assert reserved == 0
    assert spent == sum(costs)  # the final spend is the sum of the real costs
    assert spent <= round(budget * 1e9)  # never more than the budget's worth
    # The spend report (a Redis ledger both workers write) says the same, from either worker.
    report = httpx.get(two.url + f"/admin/spend?key={name}", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert round(report["by_key"][name]["usd"] * 1e9) == spent
    assert report["by_key"][name]["calls"] == len(costs) and report["total"]["cache_hits"] == 0


def test_workers_with_the_admin_api_refuse_a_memory_state(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    config = tmp_path / "onion.toml"
    config.write_text(
        f'[server]\nadmin_key = "{ADMIN}"\n[state]\nbackend = "memory"\n'
        '[[providers]]\nname = "sim"\nkind = "simulated"\nmodels = ["sim-small"]\n'
    )
    command = [sys.executable, "-m", "onion.cli", "serve", "--port", "0", "--workers", "2", "--config", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert done.returncode == 2
    assert '[state] backend = "sqlite" or "redis"' in done.stderr
