"""One attempt's limits, enforced where an attempt happens: at the stack's handler.

Each call of the stack's handler (the provider) is one attempt, whatever layers sit
above it. So the per-attempt limits a ``timeout`` layer puts on the context
(``context.phases``: time to the first chunk, longest gap between chunks) and the
deadline in force when the attempt starts (``context.deadline``) are enforced here, once,
for every stack: a ``retry`` or ``fallback`` above sees a silent or stalled attempt as a
``Timeout`` of that phase and recovers it like any other failure, with no hand-off
between layers. Providers need no cancel scope of their own for the deadline
(``context.deadline_guarded`` says it is enforced).

Costs: nothing when no limit is set; otherwise one cancel scope to open the attempt and,
for a stream, a time comparison and one clock read per chunk. A blocked pull can only be
abandoned by cancelling it, and no cancel scope may be held across a ``yield``: under
asyncio a ``_PullWatch`` per attempt, on the loop's one timer, cancels an await (the
handler call, a pull) that waits past its limit, honouring anyio shields; under trio the
call and each pull open a scope of their own (trio's, half the cost of anyio's) only if
they suspend: one that returns at once, as a pull of a buffered stream does, costs a
comparison (see ``_rest_scoped``). Under asyncio a stream's limits are checked around
each pull by the watch that reads it (``_BoundedPulls``, ``Response._bound``): the
breaker's or the timeout's ``on_end`` pass, with no generator of their own.
``within`` gives layers the same for one await.
"""

from __future__ import annotations

import asyncio
import sys
import types
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from functools import partial
from types import CoroutineType
from typing import Any, TypeVar

import anyio

from ._clock import async_library, asyncio_clock, loop_clock
from ._context import PhaseLimits
from ._response import Response, _Producer
from ._types import Chunk, Request
from .errors import Timeout

__all__ = ["bounded_attempt", "within"]

T = TypeVar("T")

try:  # anyio's per-task cancel-scope state, read to honour shields (see ``_PullWatch``)
    from anyio._backends._asyncio import _task_states
except ImportError:  # another anyio layout: every pull gets its own cancel scope
    _task_states = None
# The running task of each loop: asyncio's own table (``current_task`` is a Python
# function in 3.11, five times the cost of the lookup it makes).
_current_tasks: dict[Any, asyncio.Task[Any]] | None = getattr(asyncio.tasks, "_current_tasks", None)


def _scope_type(library: str) -> Any:
    """The cancel scope a pull opens where no ``_PullWatch`` runs: under trio its own
    (half the cost of anyio's wrapper around it, same clock), else anyio's."""
    trio = sys.modules.get("trio") if library == "trio" else None
    return trio.CancelScope if trio is not None else anyio.CancelScope


async def bounded_attempt(
    handler: Callable[[Request], Awaitable[Response]],
    request: Request,
    phases: PhaseLimits | None,
    deadline: float | None,
) -> Response:
    """``handler(request)`` within ``deadline`` and, for a stream, ``phases``."""
    library = async_library()
    watch = _PullWatch.start() if library == "asyncio" else None
    start = watch.loop.time() if watch is not None else loop_clock()()
    first = idle = None
    if phases is not None:
        if request.stream:
            first, idle = phases.first_chunk, phases.idle
        elif phases.answer is not None:
            # A complete answer arrives in one piece: its limit is the whole answer's.
            first = phases.answer
    until, phase = deadline, "total"
    if first is not None and (until is None or start + first < until):
        until, phase = start + first, "first_chunk" if request.stream else "answer"
    request.context.deadline_guarded = deadline
    if until is None:
        response = await handler(request)
    elif watch is not None:
        # asyncio: the attempt's one timer, kept for its stream's pulls.
        watch.arm(until)
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            if watch.caught():
                watch.stop()
                raise _late(phase, until - start) from None
            watch.stop()
            raise
        except BaseException:
            watch.stop()
            raise
        watch.active = False
        if watch.caught():
            watch.stop()
            await _aclose_response(response)
            raise _late(phase, until - start)
    else:
        response = await _scoped(handler(request), until, start, library, lambda: _late(phase, until - start))
    if response.is_stream and (deadline is not None or first is not None or idle is not None):
        if watch is not None:
            # asyncio: the limits as plain calls around each pull of the watch that reads
            # the stream (the breaker's, metrics' ...): no generator of their own.
            response._bound(_BoundedPulls(watch, start, first, idle, deadline))
        else:
            response.wrap(lambda chunks: _bounded_chunks(chunks, start, first, idle, deadline, library, watch))
    elif watch is not None:
        watch.stop()
    return response


async def within(
    awaitable: Awaitable[T], deadline: float, late: Callable[[], BaseException], *, library: str | None = None
) -> T:
    """``await awaitable``, cancelled at ``deadline`` (on ``anyio.current_time``'s clock);
    raises ``late()`` if the deadline cut it. What ``with anyio.CancelScope(deadline=...)``
    does around one await, at a fraction of its cost under asyncio: one timer, anyio
    shields inside honoured, a cancellation from elsewhere left one. A cancel scope on
    other backends. ``library``: the running library's name (``async_library()``), when
    the caller asked already (it is a fifth of this call's own cost on a cache hit).
    """
    if library is None:
        library = async_library()
    if _task_states is None or library != "asyncio":
        return await _scoped(awaitable, deadline, None, library, late)
    # A timer can only cut an await while it waits: one that returns without waiting (a
    # cache hit) needs none, so the watch is armed only once the await first suspends.
    step: Any = awaitable if isinstance(awaitable, CoroutineType) else awaitable.__await__()
    try:
        signal = step.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    watch = _PullWatch(asyncio.get_running_loop())
    watch.arm(deadline)
    try:
        result = await types.coroutine(_forward)(step, signal)
    except asyncio.CancelledError:
        if watch.caught():
            raise late() from None
        raise
    finally:
        watch.stop()
    if watch.caught():  # the cancellation was swallowed inside: the deadline still passed
        raise late()
    return result


def _stream_late(phase: str) -> Timeout:
    return Timeout(f"the stream passed its {phase} limit", phase=phase)


async def _scoped(
    awaitable: Awaitable[T], until: float, started: float | None, library: str, late: Callable[[], BaseException]
) -> T:
    """``await awaitable`` under a cancel scope with deadline ``until``; ``late()`` raised
    if the scope cut it. Under trio the scope is opened only if the await suspends
    (``_rest_scoped``), unless ``until`` has passed already (``started``: the clock's
    reading at the start, when the caller has one)."""
    if library == "trio" and _trio_nesting():
        now = started if started is not None else sys.modules["trio"].current_time()
        if until > now:
            step: Any = awaitable if isinstance(awaitable, CoroutineType) else awaitable.__await__()
            began = _trio_status()
            try:
                signal = step.send(None)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            return await _rest_scoped(step, signal, until, began, late)  # type: ignore[no-any-return]
    with _scope_type(library)(deadline=until) as scope:
        result = await awaitable
    if scope.cancelled_caught:
        raise late()
    return result


# trio: a cancel scope opened only for an await that suspends. The await runs first; when
# it yields to trio (it waits), a scope is entered there and its cancel status put where
# a scope entered at the await's start would have been: between the status the task had
# then and any scope the await itself opened before suspending (an HTTP client's read
# timeout). Cancellation reaches a trio task only at a suspension, and from that first one
# on the await is inside the scope, so it is cut exactly as under a scope entered before
# it; an await that never suspends, the usual pull of a buffered stream, costs no scope.
# The re-nesting is trio's own re-parenting of cancel statuses (what
# ``TaskStatus.started`` does to a task's scopes), read from trio's private task state;
# where that state is not as expected, every await gets its scope up front, as before.
_TRIO_NESTING: bool | None = None
_current_trio_task: Callable[[], Any] | None = None  # trio.lowlevel.current_task, once looked up


def _trio_nesting() -> bool:
    """Whether trio's cancel-status tree can be read here (checked once)."""
    global _TRIO_NESTING, _current_trio_task
    if _TRIO_NESTING is None:
        trio = sys.modules.get("trio")
        try:
            _current_trio_task = trio.lowlevel.current_task  # type: ignore[union-attr]
            task = _current_trio_task()
            status = task._cancel_status
            _TRIO_NESTING = (
                callable(getattr(task, "_activate_cancel_status", None))
                and hasattr(status, "parent")
                and hasattr(trio.CancelScope, "_cancel_status")  # type: ignore[union-attr]
            )
        except Exception:  # another trio layout: scopes up front
            _TRIO_NESTING = False
    return _TRIO_NESTING


def _trio_status() -> Any:
    """The running trio task's current cancel status (trio's private state; only called
    once ``_trio_nesting`` said it can be read)."""
    return _current_trio_task()._cancel_status  # type: ignore[misc]


def _forward(step: Any, signal: Any) -> Any:
    """What ``await`` does (PEP 380's ``yield from``) for an awaitable already started,
    ``signal`` being what it first yielded to the event loop; returns its result."""
    while True:
        try:
            sent = yield signal
        except GeneratorExit:
            step.close()
            raise
        except BaseException as error:
            try:
                signal = step.throw(error)
            except StopIteration as done:
                return done.value
        else:
            try:
                signal = step.send(sent)
            except StopIteration as done:
                return done.value


@types.coroutine
def _rest_scoped(step: Any, signal: Any, until: float, began: Any, late: Callable[[], BaseException]) -> Any:
    """trio: the rest of an await that suspended (``signal``: what it yielded to trio) under
    a cancel scope with ``until``, nested at ``began`` (the task's status at its start)."""
    trio = sys.modules["trio"]
    task = trio.lowlevel.current_task()
    value: Any = None
    with trio.CancelScope(deadline=until) as scope:
        _nest(task, scope, began)
        value = yield from _forward(step, signal)
    if scope.cancelled_caught:
        raise late()
    return value


def _nest(task: Any, scope: Any, began: Any) -> None:
    """Move ``scope``'s cancel status (just entered, innermost) to just inside ``began``:
    the scopes the await opened before it suspended go inside it, the task stays in the
    innermost of them. When they close, in order, the task is back in ``scope``'s."""
    mine = scope._cancel_status
    inner = mine.parent
    if inner is began:
        return  # the usual case: the await opened no scope of its own before waiting
    outer = inner
    while outer is not None and outer.parent is not began:
        outer = outer.parent
    if outer is None:  # the await left ``began`` itself (misnested code): ours stays innermost
        return
    mine.parent = began
    outer.parent = mine
    task._activate_cancel_status(inner)


def _late(phase: str, seconds: float) -> Timeout:
    return Timeout(f"the attempt passed its {phase} limit ({seconds:.3g} s) before answering", phase=phase)


async def _aclose_response(response: Response) -> None:
    with anyio.CancelScope(shield=True):
        await response.aclose()


async def _bounded_chunks(
    source: AsyncIterator[Chunk],
    start: float,
    first: float | None,
    idle: float | None,
    deadline: float | None,
    library: str,
    watch: _PullWatch | None,
) -> AsyncGenerator[Chunk, None]:
    """Forward ``source``; each pull is cancelled at the earlier of the deadline and its
    phase limit (from the attempt's start until the first chunk with content, a tool call
    or a finish reason; from the previous chunk after it). ``watch``: the attempt's
    timer under asyncio (made here if the attempt had none: no limit while it opened)."""
    # The producer's own ``__anext__`` (one call fewer per chunk), as a watch reads it.
    pull = source._chunks.__anext__ if type(source) is _Producer and not source._cut else source.__anext__
    gap, since, phase = first, start, "first_chunk"
    if watch is None and library == "asyncio":
        watch = _PullWatch.start()
    scope_type = _scope_type(library) if watch is None else None
    lazy = watch is None and library == "trio" and _trio_nesting()
    # The backend's clock itself (anyio's current_time looks the backend up on every read).
    now = loop_clock()
    try:
        while True:
            # Plain comparisons (no allocation): the earlier of the deadline and the phase limit.
            until, label = deadline, "total"
            if gap is not None and (until is None or since + gap < until):
                until, label = since + gap, phase
            if until is None:
                try:
                    chunk = await pull()
                except StopAsyncIteration:
                    return
            elif watch is not None:
                # asyncio: the attempt's one timer stands guard; a pull costs a few stores.
                watch.arm(until)
                try:
                    chunk = await pull()
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if watch.caught():
                        raise _stream_late(label) from None
                    raise
                finally:
                    watch.active = False
                # The pull swallowed the cancellation: the limit still passed (``fired`` read
                # first: the usual pull costs no call here).
                if watch.fired and watch.caught():
                    raise _stream_late(label)
            elif lazy and until > (since if phase == "idle" and idle is not None else now()):
                # trio: the pull runs at once; only one that waits gets its cancel scope,
                # nested where it began (``_rest_scoped``). A limit already passed takes
                # the scope from the start (below), as it always did.
                step = pull()
                began = _trio_status()
                try:
                    signal = step.send(None)
                except StopIteration as done:
                    chunk = done.value
                except StopAsyncIteration:
                    return
                else:
                    try:
                        chunk = await _rest_scoped(step, signal, until, began, partial(_stream_late, label))
                    except StopAsyncIteration:
                        return
            else:
                with scope_type(deadline=until) as scope:
                    try:
                        chunk = await pull()
                    except StopAsyncIteration:
                        return
                if scope.cancelled_caught:
                    raise _stream_late(label)
            yield chunk
            if phase == "first_chunk" and not (chunk.content or chunk.tool_calls or chunk.finish_reason):
                continue  # a role-only opening chunk is no token: the first-chunk limit holds
            if idle is not None:
                since = now()
            gap, phase = idle, "idle"
    finally:
        if watch is not None:
            watch.stop()
        aclose = getattr(source, "aclose", None)
        # A generator that ran to its end needs no close (a shielded scope costs as
        # much as a short stream's other overhead).
        if aclose is not None and getattr(source, "ag_frame", True) is not None:
            with anyio.CancelScope(shield=True):
                await aclose()


class _BoundedPulls:
    """asyncio: ``_bounded_chunks`` as a ``PullTap``: the same limits, checked by the watch
    that reads the stream around each of its pulls (``Response._bound``), with the
    attempt's ``_PullWatch`` armed before each pull and disarmed after it.

    Equivalent to the generator: the limit of a pull is the earlier of the deadline and
    its phase limit (time to the first chunk with content, a tool call or a finish reason
    from the attempt's start; then the gap from when the previous chunk's reader asked
    for the next one), computed in ``before`` as the generator computed it at the top of
    its loop; the phase moves on at the next ``before``, where the generator moved it
    after its ``yield`` returned.
    """

    __slots__ = ("deadline", "gap", "idle", "label", "moved", "now", "phase", "since", "watch")

    def __init__(
        self, watch: _PullWatch, start: float, first: float | None, idle: float | None, deadline: float | None
    ) -> None:
        self.watch = watch
        self.deadline = deadline
        self.idle = idle
        self.gap = first
        self.since = start
        self.phase = "first_chunk"
        self.label: str | None = None  # the phase of the armed pull (None: not armed)
        self.moved = False  # the previous chunk ended the first-chunk phase (or was in the idle one)
        self.now = asyncio_clock(watch.loop)

    def before(self) -> None:
        if self.moved:
            self.moved = False
            idle = self.idle
            if idle is not None:
                self.since = self.now()
            self.gap, self.phase = idle, "idle"
        until, label = self.deadline, "total"
        gap = self.gap
        if gap is not None and (until is None or self.since + gap < until):
            until, label = self.since + gap, self.phase
        if until is None:
            self.label = None
            return
        self.label = label
        # ``_PullWatch.arm``, inline: this runs once per chunk.
        watch = self.watch
        tasks = _current_tasks
        task = watch.task = tasks.get(watch.loop) if tasks is not None else asyncio.current_task()
        watch.cancelling = task.cancelling() if task is not None else 0
        watch.until = until
        watch.active = True
        timer = watch.timer
        timer.watches.add(watch)
        if until < timer.at:
            timer.schedule(until)

    def after(self, chunk: Chunk) -> None:
        label = self.label
        if label is not None:
            watch = self.watch
            watch.active = False
            # The pull swallowed the cancellation: the limit still passed (``fired`` read
            # first: the usual pull costs no call here).
            if watch.fired and watch.caught():
                raise _stream_late(label)
        if self.phase == "idle" or chunk.content or chunk.tool_calls or chunk.finish_reason:
            self.moved = True  # a role-only opening chunk is no token: the first-chunk limit holds

    def cut(self, error: BaseException) -> BaseException | None:
        label = self.label
        if label is None:
            return None
        watch = self.watch
        watch.active = False
        if isinstance(error, asyncio.CancelledError) and watch.caught():
            return _stream_late(label)
        return None

    def stop(self) -> None:
        self.watch.stop()


def _shielded_asyncio(task: asyncio.Task[object]) -> bool:
    """True while ``task`` runs inside a shielded anyio cancel scope (anyio's own
    bookkeeping, read only here; a task anyio does not know is never shielded)."""
    state = _task_states.get(task) if _task_states is not None else None
    scope = state.cancel_scope if state is not None else None
    while scope is not None:
        if scope.shield:
            return True
        scope = scope._parent_scope
    return False


class _PullWatch:
    """asyncio only: a deadline on one await at a time, in place of a cancel scope each.

    ``arm(until)`` before the await (a few attribute writes; the loop's one timer,
    ``_LoopTimer``, moves only when ``until`` is earlier than any it watches), ``active =
    False`` after it. When the timer finds an armed watch past its limit, it cancels the
    task (``Task.cancel``, counted as ``asyncio.timeout`` counts it, so a cancellation
    from elsewhere is never taken for ours: ``caught``). A watch no longer armed is
    forgotten (the next pull arms it again). An await inside a shielded anyio scope (a
    provider closing its connection) is not cancelled until the shield ends, as under an
    anyio deadline.
    """

    __slots__ = ("active", "cancelling", "fired", "loop", "task", "timer", "until")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.timer = _timer_of(loop)
        self.task: asyncio.Task[object] | None = None
        self.until = 0.0
        self.active = self.fired = False
        self.cancelling = 0

    @classmethod
    def start(cls) -> _PullWatch | None:
        """A watch on the running asyncio loop, or ``None`` if anyio's state cannot be read."""
        return None if _task_states is None else cls(asyncio.get_running_loop())

    def arm(self, until: float) -> None:
        tasks = _current_tasks
        task = self.task = tasks.get(self.loop) if tasks is not None else asyncio.current_task()
        self.cancelling = task.cancelling() if task is not None else 0
        self.until = until
        self.active = True
        timer = self.timer
        timer.watches.add(self)
        if until < timer.at:
            timer.schedule(until)

    def caught(self) -> bool:
        """After an await: whether this watch cancelled it (the cancel request is withdrawn)."""
        if not self.fired:
            return False
        self.fired = False
        task = self.task
        return task is None or task.uncancel() <= self.cancelling

    def stop(self) -> None:
        self.active = False
        self.timer.watches.discard(self)


_INF = float("inf")


class _LoopTimer:
    """The one ``call_at`` timer of a loop's watches, due at the earliest limit among them
    (or earlier: a watch that ended leaves it due, and it then looks and moves on)."""

    __slots__ = ("at", "handle", "loop", "watches")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.watches: set[_PullWatch] = set()
        self.handle: asyncio.TimerHandle | None = None
        self.at = _INF

    def schedule(self, at: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.at = at
        self.handle = self.loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self.handle, self.at = None, _INF
        now = self.loop.time()
        earliest = _INF
        watches = self.watches
        for watch in list(watches):
            task = watch.task
            if not watch.active or task is None:
                watches.discard(watch)  # between pulls, or done: its next arm adds it again
                continue
            due = watch.until
            if due <= now:
                if not _shielded_asyncio(task):
                    watches.discard(watch)
                    watch.fired = True
                    task.cancel()
                    continue
                due = now + 0.005  # look again once the shield may have ended
            if due < earliest:
                earliest = due
        if earliest < _INF:
            self.schedule(earliest)


_TIMERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopTimer] = weakref.WeakKeyDictionary()
_last_timer: _LoopTimer | None = None  # the usual case: one loop per process


def _timer_of(loop: asyncio.AbstractEventLoop) -> _LoopTimer:
    global _last_timer
    timer = _last_timer
    if timer is not None and timer.loop is loop:
        return timer
    timer = _TIMERS.get(loop)
    if timer is None:
        timer = _TIMERS[loop] = _LoopTimer(loop)
    _last_timer = timer
    return timer
