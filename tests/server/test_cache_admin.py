"""``DELETE /admin/cache`` and ``x-onion-cache: refresh`` over ``onion serve --workers 2``
sharing one real redis-server: a purge on any worker removes the exact and semantic
entries it names for both workers, and narrows by model, caller scope or one key."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ADMIN = "admin-key-for-the-cache-test-0123"
KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-0123456789"}


def _ask(url: str, who: str, prompt: str, model: str = "m", refresh: bool = False) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEYS[who]}"}
    if refresh:
        headers["x-onion-cache"] = "refresh"
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    with httpx.Client() as client:  # a new connection each time: the kernel spreads them over the workers
        answer = client.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer


def _purge(url: str, **query: str) -> dict[str, Any]:
    answer = httpx.delete(url + "/admin/cache", params=query, headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _cached(answer: httpx.Response) -> str:
    return answer.headers["x-onion-cache"]


def test_purge_on_two_workers_sharing_redis(tmp_path: Path, gateway: Callable[..., Any], redis_url: str) -> None:
    os.environ.update({"ONION_TEST_ADMIN": ADMIN, "ONION_KEY_A": KEYS["alice"], "ONION_KEY_B": KEYS["bob"]})
    prefix = f"purge-test-{time.monotonic_ns()}:"
    config = tmp_path / "onion.toml"
    config.write_text(
        '[server]\nadmin_key = "env:ONION_TEST_ADMIN"\n'
        'api_keys = [{name = "alice", key = "env:ONION_KEY_A"}, {name = "bob", key = "env:ONION_KEY_B"}]\n'
        '[[providers]]\nname = "sim"\nkind = "simulated"\nmodels = ["m", "m2"]\nttft = 0.0\n'
        f'[[stack]]\nuse = "exact_cache"\nbackend = "redis"\nredis_url = "{redis_url}"\nprefix = "{prefix}x:"\n'
        f'[[stack]]\nuse = "semantic_cache"\nbackend = "redis"\nredis_url = "{redis_url}"\nprefix = "{prefix}s:"\n'
    )
    served = gateway(config, args=("--workers", "2"))
    url = served.url
    deadline = time.monotonic() + 30
    while served.text().count("listening on") < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    asked = [("alice", "what is an onion", "m"), ("bob", "what is an onion", "m"), ("alice", "and a shallot", "m2")]
    for who, prompt, model in asked:
        assert _cached(_ask(url, who, prompt, model)) == "miss"
    for _ in range(4):  # either worker answers from the shared store
        for who, prompt, model in asked:
            assert _cached(_ask(url, who, prompt, model)) == "hit"

    # One caller's answers for one model: bob's and the other model's stay.
    gone = _purge(url, scope="alice", model="m")
    assert gone["purged"] == {"exact_cache": 1, "semantic_cache": 1} and gone["total"] == 2
    assert _cached(_ask(url, "alice", "what is an onion")) == "miss"
    bob = _ask(url, "bob", "what is an onion")
    assert _cached(bob) == "hit"
    assert _cached(_ask(url, "alice", "and a shallot", "m2")) == "hit"

    # One key (the exact cache's, from the answer's header): the semantic entry answers next.
    key = bob.headers["x-onion-cache-key"]
    assert _purge(url, key=key)["purged"] == {"exact_cache": 1, "semantic_cache": 0}
    semantic = _ask(url, "bob", "what is an onion")
    assert _cached(semantic) == "hit" and semantic.headers["x-onion-served-by"] == "semantic_cache"
    assert _purge(url, key=semantic.headers["x-onion-cache-key"])["purged"]["semantic_cache"] == 1

    # A refresh skips the lookup and stores the new answer.
    refreshed = _ask(url, "alice", "and a shallot", "m2", refresh=True)
    assert _cached(refreshed) == "refresh"
    assert _cached(_ask(url, "alice", "and a shallot", "m2")) == "hit"

    # Everything, then every request is a miss on both workers.
    assert _purge(url)["total"] >= 3
    for who, prompt, model in asked:
        assert _cached(_ask(url, who, prompt, model)) == "miss"

    bad = httpx.delete(url + "/admin/cache?caller=alice", headers={"authorization": f"Bearer {ADMIN}"})
    assert bad.status_code == 400 and "caller" in bad.text
    client = httpx.delete(url + "/admin/cache", headers={"authorization": f"Bearer {KEYS['alice']}"})
    assert client.status_code == 403
