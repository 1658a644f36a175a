"""``GET /readyz`` (``onion/server/_readiness.py``): 200 only while the shared stores
answer and every configured model has a healthy deployment; 503 naming what is down.
Redis is a real ``redis-server`` stopped and started again on the same port."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from onion import Router, SimulatedProvider, Stack
from onion.server import GatewayApp
from onion.server._readiness import Readiness
from onion.testing.upstream import FakeUpstream, Fault, ThreadedServer

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class _RedisOnPort:
    """A redis-server that can be stopped and started again on its port."""

    def __init__(self, workdir: Path, starter: Callable[[Path], tuple[str, subprocess.Popen[bytes]]]) -> None:
        self.url, self.process = starter(workdir)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        self.workdir = workdir

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not come back")


@pytest.fixture
def own_redis(tmp_path: Path, redis_starter: Any) -> Iterator[_RedisOnPort]:
    server = _RedisOnPort(tmp_path, redis_starter)
    yield server
    if server.process.poll() is None:
        server.stop()


def _until(url: str, status: int, seconds: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        answer = httpx.get(url + "/readyz", timeout=5)
        if answer.status_code == status or time.monotonic() > deadline:
            assert answer.status_code == status, answer.text
            return answer.json()
        time.sleep(0.1)


def test_readiness_follows_redis_going_away_and_coming_back(
    tmp_path: Path, gateway: Callable[..., Any], own_redis: _RedisOnPort
) -> None:
    config = tmp_path / "onion.toml"
    config.write_text(
        '[[providers]]\nname = "sim"\nkind = "simulated"\nmodels = ["m"]\nttft = 0.0\n'
        f'[[stack]]\nuse = "exact_cache"\nbackend = "redis"\nredis_url = "{own_redis.url}"\n'
        f'[[stack]]\nuse = "rate_limit"\nrequests_per_minute = 1000\nbackend = "redis"\nredis_url = "{own_redis.url}"\n'
    )
    served = gateway(config)
    assert httpx.get(served.url + "/healthz").status_code == 200
    ready = _until(served.url, 200)
    assert ready["status"] == "ready"
    assert ready["stores"] == {"exact_cache": "ok", "rate_limit": "ok"}
    assert ready["models"] == {"m": {"healthy": ["sim"], "deployments": ["sim"]}}

    # The ping result is kept for a second: a load balancer polling hard costs Redis little.
    stats = redis.Redis.from_url(own_redis.url)
    before = stats.info("commandstats").get("cmdstat_ping", {}).get("calls", 0)
    started = time.monotonic()
    for _ in range(40):
        assert httpx.get(served.url + "/readyz").status_code == 200
    seconds = time.monotonic() - started
    pings = stats.info("commandstats").get("cmdstat_ping", {}).get("calls", 0) - before
    # 2 layers, each pinged at most once per second of polling (and once at the start),
    # however many polls came in that second: not 40 pings each.
    assert pings <= 2 * (int(seconds) + 2), (pings, seconds)

    own_redis.stop()
    down = _until(served.url, 503)
    assert down["status"] == "not_ready"
    assert any(line.startswith("store exact_cache: down") for line in down["down"]), down
    assert any(line.startswith("store rate_limit: down") for line in down["down"]), down
    assert httpx.get(served.url + "/healthz").status_code == 200  # liveness is not readiness

    own_redis.start()
    assert _until(served.url, 200)["status"] == "ready"


def test_readiness_follows_a_models_only_upstream_failing_and_recovering(
    tmp_path: Path, gateway: Callable[..., Any]
) -> None:
    # One deployment is never ejected (it keeps taking calls), but after 3 failures in a
    # row it is down for readiness, until base_ejection_seconds pass with no new one.
    with FakeUpstream() as upstream:
        config = tmp_path / "onion.toml"
        config.write_text(
            "stack = []\n[router]\nconsecutive_failures = 3\nbase_ejection_seconds = 1.5\n"
            f'[[providers]]\nname = "up"\nkind = "openai"\nbase_url = "{upstream.base_url}"\nmodels = ["gpt-4o"]\n'
        )
        served = gateway(config)
        assert _until(served.url, 200)["models"] == {"gpt-4o": {"healthy": ["up"], "deployments": ["up"]}}
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(3):
            upstream.push(Fault(status=503))
            assert httpx.post(served.url + "/v1/chat/completions", json=body, timeout=10).status_code == 503
        down = httpx.get(served.url + "/readyz", timeout=5)
        assert down.status_code == 503, down.text
        assert "model gpt-4o: no healthy deployment" in down.json()["down"]
        assert httpx.get(served.url + "/healthz").status_code == 200
        # No traffic is needed to come back: the load balancer then sends the calls that tell.
        assert _until(served.url, 200, seconds=10)["status"] == "ready"
        assert httpx.post(served.url + "/v1/chat/completions", json=body, timeout=10).status_code == 200
        assert httpx.get(served.url + "/readyz", timeout=5).status_code == 200


class _HealthRouter(Router):
    """A router whose health data a test sets (what outlier ejection will feed)."""

    def __init__(self, providers: list[Any]) -> None:
        super().__init__(providers)
        self.ejected: set[str] = set()

    def ready_deployments(self, model: str) -> list[Any]:
        return [p for p in self.deployments(model) if p.name not in self.ejected]


@pytest.mark.anyio
async def test_readiness_follows_the_routers_health_data_and_the_drain() -> None:
    router = _HealthRouter(
        [
            SimulatedProvider(name="a", models=("m", "n")),
            SimulatedProvider(name="b", models=("m",)),
        ]
    )
    stack = Stack([], handler=router)
    app = GatewayApp(stack, readiness=Readiness(stack.layers, router))
    async with ThreadedServer(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/readyz")).status_code == 200
        router.ejected = {"b"}  # one of m's two deployments is down: m still has one
        assert (await client.get("/readyz")).status_code == 200
        router.ejected = {"a"}  # n has none left
        answer = await client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["down"] == ["model n: no healthy deployment"]
        assert answer.json()["models"]["m"] == {"healthy": ["b"], "deployments": ["a", "b"]}
        router.ejected = set()
        assert (await client.get("/readyz")).status_code == 200
        await app.drain(0.1)
        answer = await client.get("/readyz")
        assert answer.status_code == 503 and answer.json()["down"] == ["gateway: draining (shutting down)"]
