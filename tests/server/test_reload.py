"""Hot reload (``onion/server/_reload.py``) over real ``onion serve`` processes: under
load no request fails, answers in flight finish on the old stack, new ones see the new
one, an unchanged layer keeps its state, a bad file is refused and the old config keeps
serving; SIGHUP to the supervisor of ``--workers`` reloads every worker."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ADMIN = "admin-key-for-the-reload-test-0123"
# With the admin API on, every call needs a key (issued or configured): the clients' one.
CLIENT = "client-key-for-the-reload-test-456"
AUTH = {"authorization": f"Bearer {CLIENT}"}


def _config(provider: str, *, stack: str = "", ttft: float = 0.0, tokens_per_second: float = 2000.0) -> str:
    return (
        '[server]\nadmin_key = "env:ONION_TEST_ADMIN"\napi_keys = ["env:ONION_TEST_CLIENT"]\n'
        "shutdown_grace_seconds = 5\n"
        f'[[providers]]\nname = "{provider}"\nkind = "simulated"\nmodels = ["m"]\nttft = {ttft}\n'
        f"tokens_per_second = {tokens_per_second}\nanswer_tokens = 12\n" + stack
    )


CACHE = '[[stack]]\nuse = "exact_cache"\n'
RETRY = '[[stack]]\nuse = "retry"\n'


def _ask(url: str, prompt: str, *, stream: bool = False) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": stream}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30)


def _reload(url: str) -> httpx.Response:
    return httpx.post(url + "/admin/reload", headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)


def _until(check: Callable[[], bool], seconds: float = 25.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_reload_under_load_swaps_the_stack_and_keeps_unchanged_state(
    tmp_path: Path, gateway: Callable[..., Any]
) -> None:
    os.environ["ONION_TEST_ADMIN"] = ADMIN
    os.environ["ONION_TEST_CLIENT"] = CLIENT
    config = tmp_path / "onion.toml"
    config.write_text(_config("old", stack=CACHE))
    served = gateway(config)
    url = served.url
    first = _ask(url, "remember me")
    assert first.headers["x-onion-cache"] == "miss" and first.headers["x-onion-served-by"] == "old"
    assert _ask(url, "remember me").headers["x-onion-cache"] == "hit"

    # Load: three clients keep asking while the file changes and the gateway reloads.
    failures: list[str] = []
    served_by: list[tuple[float, str]] = []
    stop = threading.Event()

    def load(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                answer = _ask(url, f"load {n} {i}")
            except httpx.HTTPError as error:
                failures.append(repr(error))
                continue
            if answer.status_code != 200:
                failures.append(f"{answer.status_code} {answer.text}")
            served_by.append((time.monotonic(), answer.headers.get("x-onion-served-by", "")))

    threads = [threading.Thread(target=load, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    # New provider (router rebuilt), exact_cache table unchanged (kept), retry added.
    config.write_text(_config("new", stack=CACHE + RETRY, ttft=0.0))
    reloaded = _reload(url)
    swapped_at = time.monotonic()
    assert reloaded.status_code == 200, reloaded.text
    done = reloaded.json()
    assert done["layers_kept"] == ["exact_cache"] and done["layers_built"] == ["retry"]
    assert done["router"] == "rebuilt" and done["restart_needed"] == []
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []
    after = [name for at, name in served_by if at > swapped_at + 0.05]
    before = [name for at, name in served_by if at < swapped_at - 0.2]
    assert after and set(after) == {"new"}, after
    assert before and set(before) == {"old"}, before
    # The kept cache still holds the answer stored before the reload.
    again = _ask(url, "remember me")
    assert again.headers["x-onion-cache"] == "hit" and again.json() == first.json()


def test_an_answer_in_flight_finishes_on_the_old_stack(tmp_path: Path, gateway: Callable[..., Any]) -> None:
    os.environ["ONION_TEST_ADMIN"] = ADMIN
    os.environ["ONION_TEST_CLIENT"] = CLIENT
    config = tmp_path / "onion.toml"
    config.write_text(_config("old", tokens_per_second=10.0))  # 12 tokens: ~1.2 s
    served = gateway(config)
    result: dict[str, Any] = {}

    def long_stream() -> None:
        body = {"model": "m", "messages": [{"role": "user", "content": "slow"}], "stream": True}
        with httpx.stream("POST", served.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30) as answer:
            result["served_by"] = answer.headers["x-onion-served-by"]
            result["text"] = answer.read().decode()

    thread = threading.Thread(target=long_stream)
    thread.start()
    _until(lambda: "served_by" in result)
    config.write_text(_config("new"))
    assert _reload(served.url).status_code == 200
    assert _ask(served.url, "quick").headers["x-onion-served-by"] == "new"
    assert "text" not in result  # still streaming from the old provider
    thread.join(timeout=30)
    assert result["served_by"] == "old"
    assert result["text"].rstrip().endswith("data: [DONE]") and '"error"' not in result["text"]


def test_a_bad_config_is_refused_and_the_old_one_keeps_serving(tmp_path: Path, gateway: Callable[..., Any]) -> None:
    os.environ["ONION_TEST_ADMIN"] = ADMIN
    os.environ["ONION_TEST_CLIENT"] = CLIENT
    config = tmp_path / "onion.toml"
    config.write_text(_config("old"))
    served = gateway(config)
    config.write_text(_config("new", stack='[[stack]]\nuse = "exact_cache"\nttl_seconds = "soon"\n'))
    refused = _reload(served.url)
    assert refused.status_code == 422, refused.text
    problems = refused.json()["error"]["problems"]
    assert [(p["table"], p["field"]) for p in problems] == [("stack[0]", "ttl_seconds")]
    assert refused.json()["error"]["code"] == "config_refused"
    assert _ask(served.url, "still").headers["x-onion-served-by"] == "old"
    # The same by SIGHUP: logged, the process lives on, the old config serves.
    served.process.send_signal(signal.SIGHUP)
    _until(lambda: served.text().count("reload refused") >= 2)
    assert "ttl_seconds" in served.text()
    assert served.process.poll() is None
    assert _ask(served.url, "still, after the signal").headers["x-onion-served-by"] == "old"
    # Without the admin key the route is closed.
    assert httpx.post(served.url + "/admin/reload").status_code == 401


def test_after_a_reload_the_model_list_asks_the_new_upstream(tmp_path: Path, gateway: Callable[..., Any]) -> None:
    # Before: GET /v1/models kept asking the providers of the first config (the lister
    # was built once at start), so a reload to another upstream listed the old one's models.
    from onion.testing.upstream import FakeUpstream

    os.environ["ONION_TEST_ADMIN"] = ADMIN
    os.environ["ONION_TEST_CLIENT"] = CLIENT
    head = 'stack = []\n[server]\nadmin_key = "env:ONION_TEST_ADMIN"\napi_keys = ["env:ONION_TEST_CLIENT"]\n'
    with FakeUpstream(models=("old-1",)) as old, FakeUpstream(models=("new-1", "new-2")) as new:
        config = tmp_path / "onion.toml"
        provider = '[[providers]]\nname = "up"\nkind = "openai"\nbase_url = "{}"\nmodels = ["*-1", "*-2"]\n'
        config.write_text(head + provider.format(old.base_url))
        served = gateway(config)
        listed = httpx.get(served.url + "/v1/models", headers=AUTH, timeout=10).json()["data"]
        assert [m["id"] for m in listed] == ["old-1"]
        config.write_text(head + provider.format(new.base_url))
        assert _reload(served.url).status_code == 200
        listed = httpx.get(served.url + "/v1/models", headers=AUTH, timeout=10).json()["data"]
        assert [m["id"] for m in listed] == ["new-1", "new-2"]


def test_sighup_to_the_supervisor_reloads_every_worker(tmp_path: Path, gateway: Callable[..., Any]) -> None:
    os.environ["ONION_TEST_ADMIN"] = ADMIN
    os.environ["ONION_TEST_CLIENT"] = CLIENT
    config = tmp_path / "onion.toml"
    config.write_text(_config("old"))
    served = gateway(config, args=("--workers", "2"))
    _until(lambda: served.text().count("listening on") >= 3)
    config.write_text(_config("new"))
    served.process.send_signal(signal.SIGHUP)
    _until(lambda: served.text().count("config reloaded") >= 2)

    def every_worker_new() -> bool:
        names = set()
        for n in range(12):
            with httpx.Client() as client:  # a new connection each: the kernel spreads them
                body = {"model": "m", "messages": [{"role": "user", "content": f"w {n}"}]}
                answer = client.post(served.url + "/v1/chat/completions", json=body, headers=AUTH)
                names.add(answer.headers["x-onion-served-by"])
        return names == {"new"}

    _until(every_worker_new)
    assert served.process.poll() is None
