"""One call's cancel under asyncio: what an anyio ``CancelScope`` around the call did, for
the two things that cancel it (the client's disconnect and the end of a drain's grace).

An anyio scope per call costs its creation, enter and exit on every request (anyio's task
state, ``current_task`` and its ``getpid``, the scope tree): measured 22 µs for a bare
enter and exit on a busy machine, for the rare call that is cancelled. ``CallCancel``
costs a look-up of the running task and a few attribute writes (~0.5 µs) when nothing
cancels the call. ``cancel()`` cancels the call's task the way
``asyncio.timeout`` does (``Task.cancel``, counted, so a cancellation from elsewhere, such
as the server's own, is never taken for this one and is re-raised), and honours anyio
shields as anyio's scope did: while the task runs in a shielded anyio scope (a provider
closing its connection, a stream's ``aclose``) the cancel waits, looking again every 5 ms.

Only under asyncio, with anyio's task state readable (``_attempt``'s ``_PullWatch`` reads
the same); elsewhere the app keeps its anyio scope.
"""

from __future__ import annotations

import asyncio

from .._attempt import _current_tasks, _shielded_asyncio, _task_states

__all__ = ["CallCancel"]

# How often a cancel held back by a shield looks again (the disconnect tests allow 100 ms).
_SHIELD_POLL = 0.005


class CallCancel:
    """The cancel of the call running in the current task of ``loop``; build it with
    ``for_loop`` inside that task, end it with ``caught`` (on ``CancelledError``) or
    ``close`` (otherwise)."""

    __slots__ = ("_baseline", "_delivered", "_loop", "_open", "_task", "cancel_called", "cancelled_caught")

    def __init__(self, task: asyncio.Task[object], loop: asyncio.AbstractEventLoop) -> None:
        self._task = task
        self._loop = loop
        self._baseline = task.cancelling()
        self._open = True
        self._delivered = False
        self.cancel_called = False
        self.cancelled_caught = False

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> CallCancel | None:
        """The current task's cancel, or ``None`` when anyio's state cannot be read (then
        an anyio scope does the work)."""
        if _task_states is None or _current_tasks is None:
            return None
        task = _current_tasks.get(loop)
        return None if task is None else cls(task, loop)

    def cancel(self) -> None:
        """Cancel the call (once; nothing after it ended). Safe from any callback or task
        of the loop."""
        if self.cancel_called or not self._open:
            return
        self.cancel_called = True
        self._deliver()

    def _deliver(self) -> None:
        if not self._open:
            return
        if _shielded_asyncio(self._task):
            self._loop.call_later(_SHIELD_POLL, self._deliver)
            return
        self._delivered = True
        self._task.cancel()

    def caught(self) -> bool:
        """End the call on a ``CancelledError``: whether it was this cancel's (then the
        caller swallows it, and ``cancelled_caught`` is set)."""
        self._open = False
        if not self._delivered:
            return False
        self._delivered = False
        self.cancelled_caught = self._task.uncancel() <= self._baseline
        return self.cancelled_caught

    def close(self) -> None:
        """End a call that returned: a cancel swallowed inside it is withdrawn, so the
        task's count of cancel requests is what it was."""
        self._open = False
        if self._delivered:
            self._delivered = False
            self._task.uncancel()
