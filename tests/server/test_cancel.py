"""A call's cancel under asyncio (``onion/server/_cancel.py``): what the anyio scope it
replaces did, checked on real tasks, and over real sockets through onion's protocol."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

import anyio
import httpx
import pytest

from onion.config import build_gateway, parse_config
from onion.server import create_app
from onion.server._cancel import CallCancel
from onion.server._protocol import GuardedProtocol
from onion.testing.upstream import FakeUpstream, Fault, ThreadedServer


def gateway_for(upstream: FakeUpstream) -> Any:
    # No layers: the call is the server's and the provider's alone.
    provider = {"name": "p", "kind": "openai", "base_url": upstream.base_url, "models": ["gpt-4o"]}
    config = {"stack": [], "providers": [provider]}
    return build_gateway(parse_config(config))


async def _one_call(ours: bool, elsewhere: bool, shielded: bool) -> dict[str, Any]:
    """A call in its own task: a shielded wait of 40 ms (or none), then a wait of 150 ms;
    after 10 ms the call is cancelled by its CallCancel (``ours``) and/or by a plain
    ``Task.cancel`` (``elsewhere``). What the task saw and how it ended."""
    loop = asyncio.get_running_loop()
    seen: dict[str, Any] = {"shield_done": False}
    ready = asyncio.Event()

    async def call() -> str:
        cancel = CallCancel.for_loop(loop)
        assert cancel is not None
        seen["cancel"] = cancel
        ready.set()
        began = time.monotonic()
        try:
            if shielded:
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(0.04)
                seen["shield_done"] = True
            await anyio.sleep(0.15)
        except asyncio.CancelledError:
            seen["after"] = time.monotonic() - began
            if not cancel.caught():
                raise
            return "swallowed"
        cancel.close()
        return "returned"

    task = asyncio.ensure_future(call())
    await ready.wait()
    await asyncio.sleep(0.01)
    if ours:
        seen["cancel"].cancel()
    if elsewhere:
        task.cancel()
    try:
        seen["outcome"] = await task
    except asyncio.CancelledError:
        seen["outcome"] = "cancelled"
    seen["cancelling"] = task.cancelling()
    return seen


CASES = list(itertools.product([False, True], repeat=3))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(("ours", "elsewhere", "shielded"), CASES)
async def test_only_its_own_cancel_is_swallowed_and_a_shield_delays_it(
    ours: bool, elsewhere: bool, shielded: bool
) -> None:
    # Every combination (the whole space of this law): a cancellation from elsewhere is
    # never taken for the call's own, the call's own waits out an anyio shield, and a
    # swallowed one leaves the task's count of cancel requests as it was.
    seen = await _one_call(ours, elsewhere, shielded)
    if elsewhere:
        assert seen["outcome"] == "cancelled"
    elif ours:
        assert seen["outcome"] == "swallowed"
        assert seen["cancel"].cancelled_caught
        assert seen["cancelling"] == 0
        if shielded:
            assert seen["shield_done"], "the cancel cut a shielded wait"
            assert 0.035 <= seen["after"] < 0.1
        else:
            assert seen["after"] < 0.03
    else:
        assert seen["outcome"] == "returned"
        assert not seen["cancel"].cancelled_caught


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_cancel_after_the_call_ended_does_nothing() -> None:
    loop = asyncio.get_running_loop()
    cancel = CallCancel.for_loop(loop)
    assert cancel is not None
    cancel.close()
    cancel.cancel()
    await asyncio.sleep(0.01)  # would raise CancelledError had the task been cancelled
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_cancel_swallowed_inside_the_call_is_withdrawn() -> None:
    loop = asyncio.get_running_loop()
    cancel = CallCancel.for_loop(loop)
    assert cancel is not None
    cancel.cancel()
    with contextlib.suppress(asyncio.CancelledError):  # a layer that swallows it: the call returns
        await asyncio.sleep(1)
    cancel.close()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)  # not cancelled again


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_leaves_cancels_the_upstream_through_onions_protocol(stream: bool) -> None:
    # The app's cancel here is the CallCancel (onion's protocol gives the loop); the
    # upstream connection must close within 100 ms of the client's, streamed or not.
    with FakeUpstream() as upstream:
        upstream.push(Fault(chunk_delay=0.05) if stream else Fault(delay=10))
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": " ".join(["w"] * 400)}], "stream": stream}
        async with ThreadedServer(create_app(gateway_for(upstream)), protocol=GuardedProtocol) as server:
            closed_before = len(upstream.stats.closed_at)
            async with httpx.AsyncClient(base_url=server.url) as http:
                if stream:
                    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                        assert response.status_code == 200
                        async for line in response.aiter_lines():
                            if line:
                                break
                else:
                    with anyio.move_on_after(0.3):
                        await http.post("/v1/chat/completions", json=body, timeout=5)
                    assert upstream.stats.requests == 1
            left = time.monotonic()
            for _ in range(200):
                if len(upstream.stats.closed_at) > closed_before:
                    break
                await anyio.sleep(0.005)
            assert len(upstream.stats.closed_at) > closed_before, "the upstream connection stayed open"
            assert upstream.stats.closed_at[closed_before] - left < 0.1
            # The gateway serves on: the next call is answered.
            async with httpx.AsyncClient(base_url=server.url) as http:
                reply = await http.post("/v1/chat/completions", json={**body, "stream": False}, timeout=5)
            assert reply.status_code == 200, reply.text
