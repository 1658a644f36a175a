"""The handler boundary's limits on a stream's pulls (``onion._attempt``).

Under asyncio one timer per stream stands in for a cancel scope per pull; these tests
hold it to what a scope per pull did: the limits cut a wait, a shield defers the cut, a
cancellation from elsewhere stays a cancellation, and the task reading is the one cut.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from middlewares.resilience import CircuitBreaker, Deadline
from onion import Chunk, Completion, Message, Request, Response, Stack, Timeout
from onion._attempt import bounded_attempt, within
from onion._context import PhaseLimits
from onion.testing import FakeClock


def _request() -> Request:
    return Request(model="m", messages=[Message("user", "hi")], stream=True)


class Gaps:
    """A stream handler: before chunk i it waits ``gaps[i]`` seconds (``shielded``: those
    waits run in a shielded scope); after the last, it stalls for ``stall_after`` seconds."""

    def __init__(self, gaps: list[float], *, shielded: frozenset[int] = frozenset(), stall_after: float = 0.0) -> None:
        self.gaps, self.shielded, self.stall_after = gaps, shielded, stall_after
        self.closed = False

    async def __call__(self, request: Request) -> Response:
        return Response.stream(self._chunks(), served_by="gaps", model=request.model)

    async def _chunks(self) -> AsyncGenerator[Chunk, None]:
        try:
            for i, gap in enumerate(self.gaps):
                if i in self.shielded:
                    with anyio.CancelScope(shield=True):
                        await anyio.sleep(gap)
                elif gap:
                    await anyio.sleep(gap)
                yield Chunk(content=f"c{i} ")
            if self.stall_after:
                await anyio.sleep(self.stall_after)
            yield Chunk(finish_reason="stop")
        finally:
            self.closed = True


async def _open(handler: Gaps, first: float | None, idle: float | None) -> Response:
    request = _request()
    return await bounded_attempt(handler, request, PhaseLimits(first_chunk=first, idle=idle), None)


async def test_a_wait_in_a_shielded_scope_is_cut_only_after_the_shield() -> None:
    # The second chunk's wait (0.3 s) passes the idle limit inside a shield: it arrives,
    # as under a cancel scope; the stall after it is cut.
    handler = Gaps([0.0, 0.3], shielded={1}, stall_after=30)
    received = []
    began = anyio.current_time()
    with pytest.raises(Timeout) as info:
        async for chunk in await _open(handler, first=1.0, idle=0.05):
            received.append(chunk.content)
    assert info.value.phase == "idle"
    assert received == ["c0 ", "c1 "]
    assert anyio.current_time() - began < 5
    assert handler.closed


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    handler = Gaps([0.0], stall_after=30)
    received = []
    with anyio.move_on_after(0.1) as scope:
        async for chunk in await _open(handler, first=10, idle=10):
            received.append(chunk.content)
    assert scope.cancelled_caught
    assert received == ["c0 "]
    assert handler.closed
    await anyio.sleep(0.01)  # nothing cancels this task later: no cancel request was left behind


async def test_the_task_reading_is_the_one_cut() -> None:
    # The first chunk is read in another task; the stall is met by this one.
    handler = Gaps([0.0], stall_after=30)
    response = await _open(handler, first=10, idle=0.05)
    chunks = aiter(response)
    firsts: list[str] = []

    async def first() -> None:
        firsts.append((await anext(chunks)).content)

    async with anyio.create_task_group() as group:
        group.start_soon(first)
    assert firsts == ["c0 "]
    with pytest.raises(Timeout) as info:
        await anext(chunks)
    assert info.value.phase == "idle"


async def test_limits_that_move_every_chunk_never_cut_a_steady_stream() -> None:
    # 12 chunks 30 ms apart: 0.36 s in all, past the first-chunk limit and many idle limits.
    handler = Gaps([0.03] * 12)
    response = await _open(handler, first=0.2, idle=0.15)
    assert len([chunk async for chunk in response]) == 13


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gaps=st.lists(st.sampled_from([0.0, 0.01, 0.4]), min_size=1, max_size=4))
async def test_a_stream_fails_at_its_first_gap_past_the_idle_limit(gaps: list[float]) -> None:
    # The law a cancel scope per pull gave: every chunk before the first gap past the
    # limit arrives, then Timeout("idle"); no such gap, the whole stream. The first gap
    # counts against the first-chunk limit, which is generous here.
    handler = Gaps([0.0, *gaps])
    stack = Stack([], handler)
    request = _request()
    request.context.phases = PhaseLimits(first_chunk=5.0, idle=0.1)
    received = []
    late = next((i + 1 for i, gap in enumerate(gaps) if gap > 0.1), None)
    try:
        async for chunk in await stack(request):
            received.append(chunk)
    except Timeout as error:
        assert late is not None and error.phase == "idle"
        assert [c.content for c in received] == [f"c{i} " for i in range(late)]
    else:
        assert late is None and len(received) == len(gaps) + 2


async def test_a_complete_answer_past_its_limit_times_out_unless_shielded() -> None:
    async def slow(request: Request, shielded: bool) -> Response:
        with anyio.CancelScope(shield=shielded):
            await anyio.sleep(0.3)
        return Response.complete(Completion(content="late"), served_by="slow")

    request = Request(model="m", messages=[Message("user", "hi")])
    limits = PhaseLimits(first_chunk=None, idle=None, answer=0.05)
    with pytest.raises(Timeout) as info:
        await bounded_attempt(lambda r: slow(r, False), request, limits, None)
    assert info.value.phase == "answer"
    answer = await bounded_attempt(lambda r: slow(r, True), request, limits, None)
    assert (await answer.result()).content == "late"


class _Late(Exception):
    pass


async def test_within_raises_late_only_for_its_own_deadline() -> None:
    with pytest.raises(_Late):
        await within(anyio.sleep(5), anyio.current_time() + 0.05, _Late)
    assert await within(_value(), anyio.current_time() + 5, _Late) == 7

    async def own_timeout() -> None:
        raise TimeoutError("the inner code's own")

    with pytest.raises(TimeoutError, match="inner code"):  # not taken for the deadline's
        await within(own_timeout(), anyio.current_time() + 5, _Late)
    with anyio.move_on_after(0.05) as outer:  # a cancellation from outside stays one
        await within(anyio.sleep(5), anyio.current_time() + 5, _Late)
    assert outer.cancelled_caught

    async def shielded() -> int:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.2)
        return 8

    # The deadline passes inside a shield: the shielded work finishes, as under a scope.
    assert await within(shielded(), anyio.current_time() + 0.02, _Late) == 8


async def test_within_an_await_that_never_waits_gives_its_value_or_its_error() -> None:
    # Under asyncio the timer is armed only once the await first waits (a cache hit never
    # does): its value and its own errors come back as they would under a scope, and an
    # await that waits after some work without waiting is still cut at the deadline.
    async def ready() -> int:
        return 9

    async def fails() -> None:
        raise KeyError("its own")

    async def works_then_waits() -> None:
        await ready()
        await anyio.sleep(5)

    assert await within(ready(), anyio.current_time() + 5, _Late) == 9
    with pytest.raises(KeyError, match="its own"):
        await within(fails(), anyio.current_time() + 5, _Late)
    with pytest.raises(_Late):
        await within(works_then_waits(), anyio.current_time() + 0.05, _Late)
    assert await within(_value(), anyio.current_time() + 5, _Late) == 7


async def _value() -> int:
    await anyio.sleep(0.001)
    return 7


async def test_concurrent_deadlines_each_end_at_their_own_time() -> None:
    # One timer serves every watch on a loop: each still ends at its own limit, also
    # after the earliest one ended early (the timer wakes for nothing, then moves on).
    began = anyio.current_time()
    ended: dict[str, float] = {}

    async def wait(name: str, seconds: float, sleep: float) -> None:
        try:
            await within(anyio.sleep(sleep), began + seconds, _Late)
        except _Late:
            ended[name] = anyio.current_time() - began

    async with anyio.create_task_group() as group:
        group.start_soon(wait, "late", 0.45, 5)
        group.start_soon(wait, "early", 0.15, 5)
        group.start_soon(wait, "done first", 0.05, 0.01)  # ends before its limit
        group.start_soon(wait, "middle", 0.3, 5)
    assert sorted(ended, key=ended.__getitem__) == ["early", "middle", "late"]
    assert ended["early"] >= 0.15 and ended["middle"] >= 0.3 and ended["late"] >= 0.45
    assert ended["late"] < 3


async def test_the_loop_clock_and_library_are_anyios() -> None:
    import sniffio

    from onion import async_library, loop_clock

    assert async_library() == sniffio.current_async_library()
    before = anyio.current_time()
    read = loop_clock()()
    assert before <= read <= anyio.current_time()
    # The clock for the library a caller already asked for (the timeout layer asks once).
    told = loop_clock(async_library())
    assert told == loop_clock()
    assert read <= told() <= anyio.current_time()


async def test_within_told_the_library_behaves_as_when_it_asks() -> None:
    from onion import async_library

    library = async_library()

    async def ready() -> int:
        return 9

    assert await within(ready(), anyio.current_time() + 5, _Late, library=library) == 9
    with pytest.raises(_Late):
        await within(anyio.sleep(5), anyio.current_time() + 0.05, _Late, library=library)


class ScopedReads:
    """A stream handler whose pulls wait as an HTTP client's reads do: inside a cancel
    scope of their own (a generous read timeout, nested ones), opened before the wait.
    Pull i waits ``waits[i]`` seconds; ``None``: it returns at once, no scope opened."""

    def __init__(self, waits: list[float | None], read_timeout: float = 60) -> None:
        self.waits, self.read_timeout = waits, read_timeout
        self.own_timeouts = 0

    async def __call__(self, request: Request) -> Response:
        return Response.stream(self._chunks(), served_by="scoped", model=request.model)

    async def _chunks(self) -> AsyncGenerator[Chunk, None]:
        for i, wait in enumerate(self.waits):
            if wait is not None:
                with anyio.move_on_after(self.read_timeout) as read_timeout:
                    with anyio.CancelScope():
                        await anyio.sleep(wait)
                if read_timeout.cancelled_caught:
                    self.own_timeouts += 1
            yield Chunk(content=f"c{i} ")
        yield Chunk(finish_reason="stop")


async def test_a_wait_inside_the_pulls_own_scopes_is_cut_by_the_attempts_limit() -> None:
    # Under trio the attempt's scope is opened at the pull's first wait, inside the read
    # timeout's: it must still cut the wait as the outer scope, and leave the task's
    # scopes in order (a misnested scope raises RuntimeError when it closes).
    handler = ScopedReads([None, 0.0, 0.01, 30])
    received = []
    with pytest.raises(Timeout) as info:
        async for chunk in await _open(handler, first=5, idle=0.2):
            received.append(chunk.content)
    assert info.value.phase == "idle"
    assert received == ["c0 ", "c1 ", "c2 "]
    assert handler.own_timeouts == 0  # the cut was the attempt's, not the read timeout's
    with anyio.move_on_after(0.05) as after:  # the task's own scopes still work
        await anyio.sleep(5)
    assert after.cancelled_caught


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(waits=st.lists(st.sampled_from([None, 0.0, 0.005]), min_size=1, max_size=6))
async def test_pulls_that_wait_in_their_own_scopes_or_not_at_all_all_arrive(waits: list[float | None]) -> None:
    # Whether a pull waits (in its own scopes) or returns at once, under the limits every
    # chunk arrives in order and the stream ends cleanly: the law a scope per pull gave.
    handler = ScopedReads(waits)
    response = await _open(handler, first=5, idle=5)
    contents = [chunk.content async for chunk in response]
    assert contents == [f"c{i} " for i in range(len(waits))] + [""]
    assert handler.own_timeouts == 0


async def test_a_pull_that_returns_at_once_opens_no_cancel_scope() -> None:
    # The cost a scope per pull had, gone: a pull served from what the producer holds
    # runs under the reader's own deadline (none here); one that waits gets the limit.
    seen: list[float] = []

    async def chunks() -> AsyncGenerator[Chunk, None]:
        seen.append(anyio.current_effective_deadline())
        yield Chunk(content="a ")
        seen.append(anyio.current_effective_deadline())
        yield Chunk(content="b ")
        await anyio.lowlevel.checkpoint()
        yield Chunk(finish_reason="stop")

    async def handler(request: Request) -> Response:
        return Response.stream(chunks(), served_by="held", model=request.model)

    response = await bounded_attempt(handler, _request(), PhaseLimits(first_chunk=5, idle=5), None)
    assert len([chunk async for chunk in response]) == 3
    assert seen == [float("inf"), float("inf")]


async def test_the_pulls_own_timeout_stays_its_own() -> None:
    # The read timeout inside the pull fires first: the pull handles it itself (here it
    # goes on), the attempt's scope around it neither takes it for its own nor hides it.
    handler = ScopedReads([0.0, 5, None], read_timeout=0.05)
    response = await _open(handler, first=5, idle=2)
    assert [chunk.content async for chunk in response] == ["c0 ", "c1 ", "c2 ", ""]
    assert handler.own_timeouts == 1


async def test_a_cancellation_from_elsewhere_reaches_a_pull_inside_its_own_scopes() -> None:
    handler = ScopedReads([0.0, 30])
    received = []
    with anyio.move_on_after(0.1) as scope:
        async for chunk in await _open(handler, first=10, idle=10):
            received.append(chunk.content)
    assert scope.cancelled_caught
    assert received == ["c0 "]
    assert handler.own_timeouts == 0


async def test_within_cuts_an_await_that_waits_inside_its_own_scope() -> None:
    async def read(wait: float) -> str:
        with anyio.move_on_after(60):
            with anyio.CancelScope():
                await anyio.sleep(wait)
        return "read"

    class Late(Exception):
        pass

    assert await within(read(0.01), anyio.current_time() + 5, Late) == "read"
    with pytest.raises(Late):
        await within(read(30), anyio.current_time() + 0.05, Late)
    with anyio.move_on_after(0.05) as after:  # the task's own scopes are in order
        await anyio.sleep(5)
    assert after.cancelled_caught


def _counting_async_generators() -> tuple[list[int], Callable[[], None]]:
    """Counts the async generators started from now on (asyncio's first-iteration hook);
    returns the count and a function that puts the hooks back."""
    import sys

    hooks = sys.get_asyncgen_hooks()
    seen = [0]

    def firstiter(generator: object) -> None:
        seen[0] += 1
        if hooks.firstiter is not None:
            hooks.firstiter(generator)

    sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=hooks.finalizer)
    return seen, lambda: sys.set_asyncgen_hooks(*hooks)


async def test_the_limits_and_the_watch_above_them_read_the_stream_in_one_pass(anyio_backend: str) -> None:
    # Under asyncio the attempt's limits are checked by the watch of the layer above (the
    # timeout's own ``on_end``), around its pulls: the producer and that one watch are
    # all the generators a chunk passes through. (Under trio the limits keep a generator.)
    if anyio_backend != "asyncio":
        pytest.skip("under trio the pulls keep their own generator")
    stack = Stack([Deadline(seconds=30, first_token_seconds=10, idle_seconds=10)], Gaps([0.0] * 5))
    seen, restore = _counting_async_generators()
    try:
        response = await stack(_request())
        received = [chunk.content async for chunk in response]
    finally:
        restore()
    assert received == [f"c{i} " for i in range(5)] + [""]
    assert seen[0] == 2


async def test_the_breaker_above_the_limits_counts_a_stalled_stream_and_a_clean_one() -> None:
    breaker = CircuitBreaker(min_calls=100)
    stalled = Gaps([0.0], stall_after=30)
    stack = Stack([Deadline(seconds=30, first_token_seconds=10, idle_seconds=0.05), breaker], stalled)
    with pytest.raises(Timeout) as info:
        async for _ in await stack(_request()):
            pass
    assert info.value.phase == "idle"
    assert breaker.state("m").failures == 1
    clean = Stack([Deadline(seconds=30, first_token_seconds=10, idle_seconds=10), breaker], Gaps([0.0, 0.0]))
    async for _ in await clean(_request()):
        pass
    state = breaker.state("m")
    assert (state.calls, state.failures) == (2, 1)


async def test_the_first_watch_above_the_limits_times_the_answer_on_its_own_clock(anyio_backend: str) -> None:
    # The breaker's clock is frozen: its slow-call verdict must read that clock, not the
    # watch's default one (perf_counter's reading is far from the fake clock's 1000 s).
    # Under asyncio it joins the watch of the limits (taking it over with its clock): the
    # producer, that watch and the timeout's own (on another clock) are all there is.
    clock = FakeClock()
    breaker = CircuitBreaker(min_calls=1, slow_call_seconds=5, slow_call_ratio=0.5, clock=clock)
    stack = Stack([Deadline(seconds=30, first_token_seconds=10, idle_seconds=10), breaker], Gaps([0.0, 0.0]))
    seen, restore = _counting_async_generators()
    try:
        for _ in range(3):
            async for _ in await stack(_request()):
                pass
    finally:
        restore()
    state = breaker.state("m")
    assert (state.state, state.calls, state.slow) == ("closed", 3, 0)
    assert seen[0] == (3 if anyio_backend == "asyncio" else 4) * 3
