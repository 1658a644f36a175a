"""Load: two deployments of one model, one failing half its calls (issue 17, item 5).

2,000 requests on asyncio, 1,000 on trio (every other one streamed), 16 at a time, through the router to two
``FakeUpstream``\\ s over real HTTP. West answers 503 to a random half of its calls.
Proof: at least 99.9 % of the requests are answered, and west's share of the calls
shrinks while it is ejected (its ejections grow: 2 s, 4 s, 6 s ...). The shares per
window of 200 requests are printed (``pytest -s``) for the note.
"""

from __future__ import annotations

import random
import time

import anyio
import pytest

from onion import Context, Message, Request
from onion.providers import EjectionPolicy, OpenAIProvider, Router
from onion.testing.upstream import FakeUpstream, Fault

CONCURRENCY = 16
WINDOW = 200


# The 2,000 requests on asyncio; 1,000 on trio keep both under 20 s together.
@pytest.mark.parametrize(("anyio_backend", "requests"), [("asyncio", 2000), ("trio", 1000)])
async def test_a_deployment_failing_half_its_calls_is_ejected_and_nearly_every_request_answered(
    anyio_backend: str, requests: int
) -> None:
    faults = random.Random(17)
    async with FakeUpstream() as east, FakeUpstream() as west:
        west.fault_for = lambda body: Fault(status=503) if faults.random() < 0.5 else None
        policy = EjectionPolicy(base_ejection_seconds=2.0, max_ejection_seconds=10.0)
        router = Router(
            [
                OpenAIProvider(name="east", base_url=east.base_url, models=["gpt-4o"], read_timeout=5),
                OpenAIProvider(name="west", base_url=west.base_url, models=["gpt-4o"], read_timeout=5),
            ],
            policy=policy,
            rng=random.Random(5),
        )
        answered = 0
        order = iter(range(requests))

        async def client() -> None:
            nonlocal answered
            for index in order:
                request = Request(
                    model="gpt-4o", messages=[Message("user", f"q{index}")], stream=index % 2 == 1, context=Context()
                )
                try:
                    response = await router(request)
                    if (await response.result()).content:
                        answered += 1
                except Exception:
                    pass

        started = time.perf_counter()
        try:
            async with anyio.create_task_group() as tasks:
                for _ in range(CONCURRENCY):
                    tasks.start_soon(client)
        finally:
            await router.aclose()
        elapsed = time.perf_counter() - started
        west_state = router.health.state("west")
    # Each call carries its request's number: the calls of each window of 200 requests.
    window_calls = [{"east": 0, "west": 0} for _ in range(requests // WINDOW)]
    for name, upstream in (("east", east), ("west", west)):
        for _, _, body in upstream.requests:
            window_calls[int(body["messages"][0]["content"][1:]) // WINDOW][name] += 1
    shares = [w["west"] / max(1, w["east"] + w["west"]) for w in window_calls]
    print(
        f"\n[{anyio_backend}] {requests} requests in {elapsed:.1f} s: answered {answered} "
        f"({answered / requests:.2%}); calls east {len(east.requests)}, west {len(west.requests)}; "
        f"west ejected {west_state.ejections} times"
    )
    print("west's share of the calls per 200 requests: " + " ".join(f"{share:.2f}" for share in shares))
    assert answered >= requests * 0.999
    # At least once: how many ejection cycles fit depends on how fast the run is (2 s each).
    assert west_state.ejections >= 1
    # West's share shrinks while it is ejected: far below the even half it started with.
    first, rest = shares[0], sum(shares[len(shares) // 2 :]) / (len(shares) - len(shares) // 2)
    assert rest < first and rest < 0.25, shares
