"""Watching a stack at work: which layers each request visited and what came out of each.

A ``Probe`` builds the user's own layers into a ``Stack`` (so their ordering
constraints are checked as usual) with every layer wrapped in a transparent tap: the tap
keeps the layer's name and declarations, so the request's trace is unchanged, and
records, per request, what the layer received, each call it made inward and what it
answered (a finished text, an error, a stream cut or closed early). Laws
(``onion.testing.laws``) read these ``Observation``\\ s; they never look at the layers'
classes, only at what each layer declares it provides and at what it did.

::

    probe = Probe([InputGuard(...), ExactCache(...), Retry(...)], handler=planned_provider(plan))
    observation = await probe.send(request)
    print(observation.report())
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import msgspec

from .._context import Context
from .._response import AnswerEnd, Response
from .._stack import Handler, LayerInfo, Stack, layer_info
from .._types import Completion, Request
from ..errors import GuardrailViolation, OnionError

__all__ = ["Observation", "Outcome", "Probe", "Visit", "provides"]

OutcomeKind = Literal["pending", "answer", "error", "closed"]


@dataclass(slots=True)
class Outcome:
    """How one answer ended, as seen at one point of the onion.

    ``kind``: ``"answer"`` (finished cleanly), ``"error"`` (raised, or a stream failed
    part-way), ``"closed"`` (the reader stopped early or was cancelled) or ``"pending"``
    (a stream nobody finished reading). ``text`` is what passed before the end.
    """

    kind: OutcomeKind = "pending"
    parts: list[str] = field(default_factory=list)
    error: BaseException | None = None
    finish_reason: str | None = None
    streamed: bool = False

    @property
    def text(self) -> str:
        """The text that passed this point."""
        return "".join(self.parts)

    def finish(self, completion: Completion) -> None:
        """Record a complete answer."""
        self.kind = "answer"
        self.parts = [completion.content]
        self.finish_reason = completion.finish_reason

    def fail(self, error: BaseException) -> None:
        """Record an error."""
        self.kind = "error"
        self.error = error

    def summary(self, width: int = 60) -> str:
        """One line: kind, error type, start of the text."""
        text = self.text
        shown = repr(text if len(text) <= width else text[:width] + "…")
        mode = "stream" if self.streamed else "complete"
        if self.kind == "error":
            return f"error {_error_name(self.error)} after {shown} ({mode})"
        return f"{self.kind} {shown} ({mode})"


def _error_name(error: BaseException | None) -> str:
    if error is None:
        return "?"
    if isinstance(error, GuardrailViolation):
        return f"GuardrailViolation({error.stage}/{error.rule})"
    status = getattr(error, "upstream_status", None)
    return f"{type(error).__name__}({status})" if status else type(error).__name__


@dataclass(slots=True)
class Visit:
    """One entry of a request into one layer (a retried layer is visited again).

    ``index`` is the layer's position (0 = outermost; ``len(layers)`` = the handler),
    ``inner`` the outcome of each call the layer made inward, ``outcome`` what it answered.
    """

    index: int
    name: str
    provides: frozenset[str]
    request: Request
    inner: list[Outcome] = field(default_factory=list)
    outcome: Outcome = field(default_factory=Outcome)

    @property
    def answered_early(self) -> bool:
        """True if the layer answered (or failed) without calling inward: a short-circuit."""
        return not self.inner and self.outcome.kind != "pending"


def provides(capabilities: frozenset[str], capability: str) -> bool:
    """True if ``capabilities`` include ``capability`` or a refinement of it
    (``"cache.exact"`` provides ``"cache"``)."""
    if capability in capabilities:
        return True
    prefix = capability + "."
    return any(c.startswith(prefix) for c in capabilities)


@dataclass(slots=True)
class Observation:
    """Everything one request did: what the caller got, the trace, each layer's visit,
    the requests that reached the handler, whether an input guard blocks it, and the
    model that answered (``model``: after a fallback, the later model)."""

    request: Request
    outcome: Outcome
    served_by: str
    visits: list[Visit]
    upstream: list[Request]
    input_blocked: bool | None = None
    layer_names: tuple[str, ...] = ()
    layer_provides: tuple[frozenset[str], ...] = ()
    model: str = ""

    @property
    def trace(self) -> list[str]:
        """The layers entered, in order (``request.context.trace``)."""
        return self.request.context.trace

    def visits_to(self, capability: str) -> list[Visit]:
        """Visits to layers that provide ``capability``."""
        return [v for v in self.visits if provides(v.provides, capability)]

    def report(self) -> str:
        """A readable account of the request, for failure messages."""
        request = self.request
        last = request.messages[-1].text if request.messages else ""
        lines = [
            f"request:  model={request.model!r} stream={request.stream} caller={request.context.caller!r} "
            f"messages={len(request.messages)} last={last[:60]!r}",
            f"onion:    {' > '.join(self.layer_names) or '(no layers)'}",
            f"trace:    {request.context.trace}",
            f"caller:   {self.outcome.summary()}  served_by={self.served_by!r}",
            f"upstream: {len(self.upstream)} call(s)",
        ]
        if self.input_blocked is not None:
            lines.append(f"input guard verdict: {'blocked' if self.input_blocked else 'allowed'}")
        for visit in self.visits:
            caps = ", ".join(sorted(visit.provides)) or "-"
            early = "  [answered early]" if visit.answered_early and visit.index < len(self.layer_names) else ""
            inward = "; ".join(o.summary(30) for o in visit.inner) or "none"
            lines.append(f"  {visit.index + 1}. {visit.name} [{caps}] -> {visit.outcome.summary(40)}{early}")
            lines.append(f"       inward: {inward}")
        return "\n".join(lines)


class _Recorder:
    """Collects visits per request id."""

    def __init__(self) -> None:
        self.visits: dict[str, list[Visit]] = {}

    def enter(self, index: int, info: LayerInfo | None, name: str, request: Request) -> Visit:
        visit = Visit(index, name, info.provides if info else frozenset({"upstream"}), request)
        self.visits.setdefault(request.context.request_id, []).append(visit)
        return visit


async def _track(response: Response, out: Outcome) -> Response:
    out.streamed = out.streamed or response.is_stream
    return await response.on_end(partial(_ended, out))


def _ended(out: Outcome, end: AnswerEnd) -> None:
    completion = end.completion
    out.parts = [completion.content] if completion.content else []
    out.finish_reason = completion.finish_reason
    if end.ok:
        out.kind = "answer"
    elif end.cancelled:
        out.kind = "closed"
    else:
        out.fail(end.error or RuntimeError("the stream failed"))


class _Tapped:
    """A layer in disguise: same name and declarations, records each visit."""

    def __init__(self, layer: Any, index: int, recorder: _Recorder) -> None:
        info = layer_info(layer)
        self.layer = layer
        self.info = info
        self.index = index
        self.recorder = recorder
        self.name = info.name
        self.provides = info.provides
        self.ordering = info.ordering
        self.short_circuit = info.short_circuit
        self.buffers = info.buffers

    async def __call__(self, request: Request, call_next: Handler) -> Response:
        visit = self.recorder.enter(self.index, self.info, self.name, request)

        async def inward(inner_request: Request) -> Response:
            out = Outcome()
            visit.inner.append(out)
            try:
                response = await call_next(inner_request)
            except BaseException as error:
                out.fail(error)
                raise
            return await _track(response, out)

        try:
            response = await self.layer(request, inward)
        except BaseException as error:
            visit.outcome.fail(error)
            raise
        return await _track(response, visit.outcome)


class _TappedHandler:
    def __init__(self, handler: Handler, index: int, recorder: _Recorder, name: str) -> None:
        self.handler = handler
        self.index = index
        self.recorder = recorder
        self.name = name

    async def __call__(self, request: Request) -> Response:
        visit = self.recorder.enter(self.index, None, self.name, request)
        try:
            response = await self.handler(request)
        except BaseException as error:
            visit.outcome.fail(error)
            raise
        return await _track(response, visit.outcome)


def fresh_context(request: Request) -> Request:
    """A copy of ``request`` with a new context (new id, empty trace and state) that keeps
    the caller, options and deadline: each send is a new request."""
    old = request.context
    context = Context(caller=old.caller, deadline=old.deadline, options=old.options)
    return msgspec.structs.replace(request, context=context)


class Probe:
    """The user's layers and handler built into a watched ``Stack``.

    Building it checks the layers' ordering constraints exactly as ``Stack`` does (a
    ``ConfigError`` means the order is rejected). ``send`` runs one request to the end
    (reading the whole answer, or ``read`` chunks of a stream) and returns its
    ``Observation``; ``observations`` keeps them all, in order, for laws that look at
    history (a cache answer must have come from somewhere).
    """

    def __init__(self, layers: Sequence[Any], handler: Handler, *, name: str = "probe", oracle: bool = True) -> None:
        self.layers = tuple(layers)
        self.handler = handler
        self._recorder = _Recorder()
        tapped = [_Tapped(layer, index, self._recorder) for index, layer in enumerate(self.layers)]
        handler_name = getattr(handler, "name", None) or getattr(handler, "__name__", "handler")
        self.stack = Stack(tapped, _TappedHandler(handler, len(tapped), self._recorder, handler_name), name=name)
        self.infos = self.stack.infos
        self._guards = [
            layer
            for layer, info in zip(self.layers, self.infos, strict=True)
            if oracle and provides(info.provides, "guard.input")
        ]
        self.observations: list[Observation] = []

    def describe(self) -> str:
        """The onion as ``Stack.describe`` prints it."""
        return self.stack.describe()

    async def send(self, request: Request, *, read: int | None = None) -> Observation:
        """Send ``request`` (with a fresh context) and read its answer to the end, or
        close a stream after ``read`` chunks. Errors are recorded, not raised."""
        request = fresh_context(request)
        outcome = Outcome(streamed=request.stream)
        served_by = model = ""
        try:
            response = await self.stack(request)
            served_by, model = response.served_by, response.model
            await _consume(response, request.stream, read, outcome)
        except Exception as error:
            outcome.fail(error)
        visits = self._recorder.visits.pop(request.context.request_id, [])
        upstream = [v.request for v in visits if v.index == len(self.layers)]
        observation = Observation(
            request=request,
            outcome=outcome,
            served_by=served_by,
            visits=[v for v in visits if v.index < len(self.layers)],
            upstream=upstream,
            input_blocked=await self.input_verdict(request) if self._guards else None,
            layer_names=tuple(info.name for info in self.infos),
            layer_provides=tuple(info.provides for info in self.infos),
            model=model,
        )
        observation.visits.extend(v for v in visits if v.index == len(self.layers))
        self.observations.append(observation)
        return observation

    async def send_both(self, request: Request) -> tuple[Observation, Observation]:
        """The same request complete, then streamed: ``(complete, stream)``."""
        complete = await self.send(msgspec.structs.replace(request, stream=False))
        streamed = await self.send(msgspec.structs.replace(request, stream=True))
        return complete, streamed

    async def input_verdict(self, request: Request) -> bool:
        """Whether some input guard of the stack blocks ``request``, asked of the guard
        layers directly (with a fresh context and a stand-in for the inner onion)."""
        for guard in self._guards:
            passed = False

            async def inward(inner: Request) -> Response:
                nonlocal passed
                passed = True
                return Response.complete(Completion(content=""))

            try:
                await guard(fresh_context(request), inward)
            except GuardrailViolation as error:
                if error.stage == "input":
                    return True
            except OnionError:
                continue
            if not passed:
                return True
        return False


async def _consume(response: Response, stream: bool, read: int | None, outcome: Outcome) -> None:
    async with response:
        if not stream:
            outcome.finish(await response.result())
            return
        count = 0
        async for chunk in response:
            if chunk.content:
                outcome.parts.append(chunk.content)
            if chunk.finish_reason is not None:
                outcome.finish_reason = chunk.finish_reason
            count += 1
            if read is not None and count >= read:
                outcome.kind = "closed"
                return
        outcome.kind = "answer"
