"""Laws of the onion: ordering, short-circuit, errors, streaming, closing, retries."""

from __future__ import annotations

import anyio
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import CallNext, Completion, ConfigError, Layer, Message, Order, ProviderError, Request, Response, Stack
from onion.testing import Fail, Reply, ScriptedProvider, each_chunk


def _request(stream: bool = False) -> Request:
    return Request(model="m", messages=[Message("user", "hi")], stream=stream)


class Recorder(Layer):
    """Records entering and leaving in a shared log."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        self.log.append(f"in:{self.name}")
        response = await call_next(request)
        self.log.append(f"out:{self.name}")
        return response


class Answer(Layer):
    """Short-circuits with a fixed answer."""

    short_circuit = "always"

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        return Response.complete(msgspec.convert({"content": "early"}, type=__import__("onion").Completion))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 12), stream=st.booleans())
async def test_in_is_list_order_and_out_is_reverse(n: int, stream: bool) -> None:
    log: list[str] = []
    names = [f"l{i}" for i in range(n)]
    provider = ScriptedProvider(default=Reply("a b"))
    stack = Stack([Recorder(name, log) for name in names], handler=provider)
    request = _request(stream)
    response = await stack(request)
    assert (await response.result()).content == "a b"
    assert log == [f"in:{x}" for x in names] + [f"out:{x}" for x in reversed(names)]
    assert request.context.trace == [*names, "scripted"]
    assert response.served_by == "scripted"


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 10), data=st.data())
async def test_short_circuit_runs_nothing_inside_and_is_named(n: int, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, n - 1))
    log: list[str] = []
    layers: list[object] = [Recorder(f"l{i}", log) for i in range(n)]
    layers[position] = Answer("answerer")
    provider = ScriptedProvider()
    stack = Stack(layers, handler=provider)
    response = await stack(_request())
    assert response.served_by == "answerer"
    assert provider.calls == 0
    entered = [entry for entry in log if entry.startswith("in:")]
    assert entered == [f"in:l{i}" for i in range(position)]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 10))
async def test_exception_propagates_unchanged(n: int) -> None:
    error = ProviderError("boom", upstream_status=500, retryable=True)

    async def raise_it(request: Request) -> Response:
        raise error

    log: list[str] = []
    stack = Stack([Recorder(f"l{i}", log) for i in range(n)], handler=raise_it)
    with pytest.raises(ProviderError) as caught:
        await stack(_request())
    assert caught.value is error
    assert log == [f"in:l{i}" for i in range(n)]


class PassThroughStream(Layer):
    """Wraps the stream without buffering (a per-chunk watcher)."""

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        return response.wrap(each_chunk(lambda chunk: None))


@pytest.mark.parametrize("n", [0, 1, 5, 20])
async def test_stream_is_not_buffered(n: int) -> None:
    provider = ScriptedProvider(default=Reply("one two three four"))
    stack = Stack([PassThroughStream() for _ in range(n)], handler=provider)
    response = await stack(_request(stream=True))
    seen: list[int] = []
    async with response:
        async for _chunk in response:
            seen.append(provider.streams[0].produced)
    # When the k-th chunk reaches the caller the producer has made exactly k chunks.
    assert seen == list(range(1, len(seen) + 1))
    assert provider.streams[0].closed


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 15), read=st.integers(0, 3))
async def test_closing_early_closes_the_producer(n: int, read: int) -> None:
    provider = ScriptedProvider(default=Reply("a b c d e f"))
    stack = Stack([PassThroughStream() for _ in range(n)], handler=provider)
    response = await stack(_request(stream=True))
    async with response:
        count = 0
        async for _chunk in response:
            count += 1
            if count > read:
                break
    record = provider.streams[0]
    assert record.closed and not record.completed


@pytest.mark.parametrize("n", [0, 3, 12])
async def test_cancelling_the_caller_closes_the_producer(n: int) -> None:
    provider = ScriptedProvider(default=Reply("a b c d e f", delay=10))
    stack = Stack([PassThroughStream() for _ in range(n)], handler=provider)
    got_first = anyio.Event()

    async def consume() -> None:
        response = await stack(_request(stream=True))
        async with response:
            async for _chunk in response:
                got_first.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await got_first.wait()
        tg.cancel_scope.cancel()
    assert provider.streams[0].closed and not provider.streams[0].completed


class TwiceOnFailure(Layer):
    """A minimal retry: calls call_next again after a failure."""

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        try:
            return await call_next(request)
        except ProviderError:
            return await call_next(request)


class Rewrite(Layer):
    """Passes a changed copy inward, as a value."""

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        changed = msgspec.structs.replace(request, model=request.model + "-x", messages=[Message("user", "changed")])
        return await call_next(changed)


@settings(max_examples=20, deadline=None)
@given(text=st.text(max_size=30))
async def test_retry_sees_the_same_original_request(text: str) -> None:
    from onion.testing import Fail

    seen: list[Request] = []

    async def spy(request: Request, call_next: CallNext) -> Response:
        seen.append(request)
        return await call_next(request)

    provider = ScriptedProvider([Fail(ProviderError("x", retryable=True)), Reply("ok")])
    stack = Stack([TwiceOnFailure(), spy, Rewrite()], handler=provider)
    original = Request(model="m", messages=[Message("user", text)])
    response = await stack(original)
    assert (await response.result()).content == "ok"
    assert len(seen) == 2 and seen[0] is original and seen[1] is original
    assert original.model == "m" and original.messages[0].content == text
    assert [r.model for r in provider.requests] == ["m-x", "m-x"]


class Guard(Layer):
    provides = frozenset({"guard.input"})


class Cache(Layer):
    provides = frozenset({"cache"})
    ordering = (Order("guard.input", "inside", "a blocked request must never be looked up"),)


def test_ordering_constraint_names_both_layers_and_the_reason() -> None:
    provider = ScriptedProvider()
    Stack([Guard(), Cache()], handler=provider)
    Stack([Cache()], handler=provider)
    with pytest.raises(ConfigError) as caught:
        Stack([Cache(), Guard()], handler=provider)
    message = str(caught.value)
    assert "'cache'" in message and "'guard'" in message
    assert "a blocked request must never be looked up" in message


def test_protocol_version_is_checked() -> None:
    class Future(Layer):
        onion_protocol = 99

    with pytest.raises(ConfigError, match="protocol 99"):
        Stack([Future()], handler=ScriptedProvider())


def test_describe_shows_every_layer_and_short_circuits() -> None:
    stack = Stack([Guard(), Cache(), Answer("answerer")], handler=ScriptedProvider())
    text = stack.describe()
    for name in ("guard", "cache", "answerer", "handler: scripted"):
        assert name in text
    assert "may answer early: always" in text
    assert "sits inside any 'guard.input' layer" in text


async def test_stacks_nest_as_handlers() -> None:
    log: list[str] = []
    inner = Stack([Recorder("inner", log)], handler=ScriptedProvider(default=Reply("deep")), name="inner_stack")
    outer = Stack([Recorder("outer", log)], handler=inner)
    request = _request()
    response = await outer(request)
    assert (await response.result()).content == "deep"
    assert log == ["in:outer", "in:inner", "out:inner", "out:outer"]
    assert request.context.trace == ["outer", "inner_stack", "inner", "scripted"]
    assert response.served_by == "scripted"


async def test_contextvars_are_visible_inside() -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []

    async def setter(request: Request, call_next: CallNext) -> Response:
        var.set("set-by-outer")
        return await call_next(request)

    async def reader(request: Request) -> Response:
        seen.append(var.get())
        return await ScriptedProvider()(request)

    await Stack([setter], handler=reader)(_request())
    assert seen == ["set-by-outer"]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 8), take_iterator=st.booleans())
async def test_closing_before_the_first_read_runs_every_cleanup(n: int, take_iterator: bool) -> None:
    # No wrapper has started when nobody read: closing must still close the producer and
    # end every wrapper as cancelled (their counting, spans, trials and settlements).
    ended: list[tuple[object, object]] = []

    async def watcher(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        return await response.on_end(lambda end: ended.append((end.completion if end.ok else None, end.error)))

    provider = ScriptedProvider(default=Reply("a b c d e f"))
    stack = Stack([watcher, *(PassThroughStream() for _ in range(n))], handler=provider)
    response = await stack(_request(stream=True))
    if take_iterator:
        aiter(response)  # asked for, never read: only the producer's own cleanup is owed
    await response.aclose()
    record = provider.streams[0]
    assert record.closed and record.produced == 0
    assert ended == ([] if take_iterator else [(None, None)])


async def test_an_unnamed_answer_is_never_blamed_on_the_handler() -> None:
    # A layer that reaches the handler, catches its failure and answers itself without
    # naming itself: the handler did not produce that answer.
    async def rescue(request: Request, call_next: CallNext) -> Response:
        try:
            return await call_next(request)
        except ProviderError:
            return Response.complete(Completion(content="canned", model="m"))

    async def unnamed_handler(request: Request) -> Response:
        return Response.complete(Completion(content="from the handler", model="m"))

    failing = Stack([rescue], handler=ScriptedProvider([Fail(ProviderError("down"))]), name="edge")
    response = await failing(_request())
    assert (response.completion.content, response.served_by) == ("canned", "edge")  # type: ignore[union-attr]

    working = Stack([rescue], handler=unnamed_handler, name="edge")
    assert (await working(_request())).served_by == "unnamed_handler"
