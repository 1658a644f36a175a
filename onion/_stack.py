"""The middleware protocol and ``Stack``, which compiles an ordered list of layers.

The list is the onion: the first layer is the outermost. ``call_next`` is a plain
callable that returns the inner layer's awaitable, so a layer's ``await call_next(r)``
runs the inner layers in the caller's own task (contextvars, cancellation and streaming
behave as if the layers were one function).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from types import BuiltinFunctionType, FunctionType, MethodType
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import msgspec

from ._attempt import bounded_attempt
from ._response import Response
from ._types import Request
from .errors import ConfigError

__all__ = [
    "CallNext",
    "Handler",
    "Layer",
    "LayerInfo",
    "Middleware",
    "Order",
    "PROTOCOL_VERSION",
    "Stack",
    "layer_info",
]

PROTOCOL_VERSION = 1
"""The version of the middleware protocol this onion speaks."""

Handler = Callable[[Request], Awaitable[Response]]
"""Anything that turns a request into a response: a provider, a router, a ``Stack``."""

CallNext = Handler
"""What a layer calls to pass a request inward."""


@runtime_checkable
class Middleware(Protocol):
    """A layer: ``async def __call__(self, request, call_next) -> Response``.

    A plain ``async def fn(request, call_next)`` function is a middleware too.
    """

    async def __call__(self, request: Request, call_next: CallNext, /) -> Response: ...


class Order(msgspec.Struct, frozen=True):
    """An ordering constraint: this layer must sit ``where`` any layer that provides
    ``capability``. ``reason`` is shown when a stack breaks the constraint."""

    capability: str
    where: Literal["inside", "outside"]
    reason: str


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Layer:
    """Optional base class for middleware; it supplies the declarations with defaults.

    Class attributes (an instance may override any of them):

    - ``name``: used in traces, logs, errors and ``served_by`` (default: snake_case of
      the class name).
    - ``provides``: capabilities other layers can order themselves against
      (for example ``"guard.input"``, ``"cache"``, ``"retry"``).
    - ``ordering``: ``Order`` constraints checked when a stack is built.
    - ``short_circuit``: when the layer may answer without calling ``call_next``.
    - ``buffers``: what the layer holds back of a stream, at most (``None``: nothing).
    - ``onion_protocol``: the protocol version the layer speaks.

    A layer may also define ``async def run_background(self) -> None``: work it needs
    done off the request's path for as long as the gateway serves (the semantic cache's
    verifier). ``onion serve`` runs each one (``Stack.background_jobs``) in a task group
    from start-up to shutdown; in-process, start them in a task group of your own.
    """

    name: ClassVar[str] = ""
    provides: ClassVar[frozenset[str]] = frozenset()
    ordering: ClassVar[tuple[Order, ...]] = ()
    short_circuit: ClassVar[str | None] = None
    buffers: ClassVar[str | None] = None
    onion_protocol: ClassVar[int] = PROTOCOL_VERSION

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = _snake(cls.__name__)

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        return await call_next(request)


class LayerInfo(msgspec.Struct, frozen=True):
    """What a layer declares about itself, read once when a stack is built."""

    name: str
    provides: frozenset[str]
    ordering: tuple[Order, ...]
    short_circuit: str | None
    buffers: str | None


def _name_of(obj: Any) -> str:
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name
    fn_name = getattr(obj, "__name__", None)
    return fn_name if isinstance(fn_name, str) else _snake(type(obj).__name__)


def layer_info(layer: Any) -> LayerInfo:
    """The declarations of ``layer`` (missing ones take the ``Layer`` defaults)."""
    version = getattr(layer, "onion_protocol", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ConfigError(
            f"layer {_name_of(layer)!r} speaks onion protocol {version!r}; this onion speaks {PROTOCOL_VERSION}"
        )
    return LayerInfo(
        name=_name_of(layer),
        provides=frozenset(getattr(layer, "provides", ())),
        ordering=tuple(getattr(layer, "ordering", ())),
        short_circuit=getattr(layer, "short_circuit", None),
        buffers=getattr(layer, "buffers", None),
    )


def _check_ordering(infos: Sequence[LayerInfo], name: str = "stack") -> None:
    """Raise one ``ConfigError`` listing every ordering constraint the list breaks."""
    problems = []
    for i, info in enumerate(infos):
        for order in info.ordering:
            for j, other in enumerate(infos):
                if j == i or order.capability not in other.provides:
                    continue
                wrong = (order.where == "inside" and j > i) or (order.where == "outside" and j < i)
                if wrong:
                    message = (
                        f"layer {info.name!r} (position {i + 1}) must sit {order.where} "
                        f"{other.name!r} (position {j + 1}), which provides {order.capability!r}: {order.reason}"
                    )
                    problems.append(ConfigError(message, table=f"{name}[{i}]"))
    if problems:
        raise ConfigError(problems=problems)


def _link(call: Callable[..., Awaitable[Response]], inner: Handler, name: str) -> Handler:
    # A plain function, not a coroutine: calling it records the layer and returns the
    # layer's own coroutine, so a link costs one cheap call and no extra frame on await.
    def call_next(request: Request) -> Awaitable[Response]:
        request.context.trace.append(name)
        return call(request, inner)

    return call_next


def _terminal(handler: Handler, name: str) -> Handler:
    # One frame per request (not per layer): an answer the handler left unnamed is named
    # here, so an unnamed answer reaching the stack's top is known to be a layer's.
    # A stack used as the handler of another bounds its own attempts itself.
    nested = isinstance(handler, Stack)

    async def call_handler(request: Request) -> Response:
        context = request.context
        context.trace.append(name)
        context.attempts += 1
        if nested or (context.phases is None and context.deadline is None):
            # Nothing bounds this attempt here: a provider must not rely on an earlier one's guard.
            context.deadline_guarded = None
            response = await handler(request)
        else:
            # One call here is one attempt: its limits are enforced here, for every stack.
            response = await bounded_attempt(handler, request, context.phases, context.deadline)
        if not response.served_by:
            response.served_by = name
        return response

    return call_handler


class Stack:
    """An ordered list of layers around a handler, compiled once.

    ``Stack([outermost, ..., innermost], handler=provider)`` is itself a handler: call it
    with a request, or use it as the handler of another stack. Building it checks every
    layer's ordering constraints and raises ``ConfigError`` naming both layers.
    """

    def __init__(self, layers: Sequence[Middleware], handler: Handler, *, name: str = "stack") -> None:
        self.layers: tuple[Middleware, ...] = tuple(layers)
        self.handler = handler
        self.name = name
        self.infos: tuple[LayerInfo, ...] = tuple(layer_info(layer) for layer in self.layers)
        _check_ordering(self.infos, name)
        self.handler_name = _name_of(handler)
        entry = _terminal(handler, self.handler_name)
        for layer, info in zip(reversed(self.layers), reversed(self.infos), strict=True):
            call: Callable[..., Awaitable[Response]] = layer if _is_function(layer) else layer.__call__
            entry = _link(call, entry, info.name)
        self._entry = entry

    @classmethod
    def from_config(cls, tables: Sequence[Mapping[str, Any]], handler: Handler, *, name: str = "stack") -> Stack:
        """Build a stack from ``{use = NAME, **params}`` tables, outermost first.

        ``use`` is a built-in's short name, an entry point in the group
        ``onion.middlewares``, or an import path ``package.module:attr``. Parameters are
        validated against the layer's constructor; errors name the table and field, and
        one ``ConfigError`` carries the problems of every table.
        """
        from ._registry import build_layer

        layers, problems = [], []
        for index, table in enumerate(tables):
            try:
                layers.append(build_layer(table, f"{name}[{index}]"))
            except ConfigError as error:
                problems.extend(error.problems)
        if problems:
            # Ordering is checked once every layer is built: a missing one shifts the positions.
            raise ConfigError(problems=problems)
        return cls(layers, handler, name=name)

    async def __call__(self, request: Request) -> Response:
        response = await self._entry(request)
        if not response.served_by:
            # A layer answered without naming itself (layers should pass served_by). If it
            # never called further in, it is the last one the request reached; if the
            # handler was reached, the layer cannot be told apart: name the stack instead
            # of blaming the handler.
            trace = request.context.trace
            last = trace[-1] if trace else ""
            response.served_by = last if last and last != self.handler_name else self.name
        return response

    def background_jobs(self) -> list[Callable[[], Awaitable[None]]]:
        """The layers' ``run_background`` methods (see ``Layer``), outermost first, those
        of nested stacks (a stack used as a layer's handler or as a layer) included."""
        jobs: list[Callable[[], Awaitable[None]]] = []
        for part in (*self.layers, self.handler):
            if isinstance(part, Stack):
                jobs += part.background_jobs()
                continue
            job = getattr(part, "run_background", None)
            if callable(job):
                jobs.append(job)
        return jobs

    def describe(self) -> str:
        """A text diagram of the onion: each layer, where it may answer, what it needs."""
        lines = [f"{self.name}: request enters at the top, the answer leaves the same way"]
        outside: frozenset[str] = frozenset()
        for depth, (layer, info) in enumerate(zip(self.layers, self.infos, strict=True)):
            pad = "│ " * depth
            lines.append(f"{pad}┌─ {depth + 1}. {info.name}")
            notes = _resilience_notes(layer, outside)
            outside |= info.provides
            if info.short_circuit:
                notes.append(f"may answer early: {info.short_circuit}")
            if info.buffers:
                notes.append(f"holds back: {info.buffers}")
            if info.provides:
                notes.append("provides: " + ", ".join(sorted(info.provides)))
            for order in info.ordering:
                notes.append(f"sits {order.where} any {order.capability!r} layer ({order.reason})")
            lines.extend(f"{pad}│    {note}" for note in notes)
        pad = "│ " * len(self.infos)
        lines.append(f"{pad}▶ handler: {self.handler_name}")
        for depth in range(len(self.infos) - 1, -1, -1):
            lines.append("│ " * depth + "└─")
        return "\n".join(lines)

    def __repr__(self) -> str:
        names = ", ".join(info.name for info in self.infos)
        return f"Stack([{names}], handler={self.handler_name})"


def _resilience_notes(layer: Any, outside: frozenset[str]) -> list[str]:
    """What a resilience layer says of itself for ``describe``: where its deadline applies
    (``position(outside)``: ``"total"`` or ``"attempt"``, from the capabilities of the
    layers outside it) and which failure classes it acts on (``acts_on()``)."""
    notes = []
    position = getattr(layer, "position", None)
    if callable(position):
        where = position(outside)
        notes.append(f"timeout position: {where} ({'each attempt' if where == 'attempt' else 'the whole call'})")
    acts_on = getattr(layer, "acts_on", None)
    if callable(acts_on):
        notes.append(str(acts_on()))
    return notes


def _is_function(obj: Any) -> bool:
    # Functions are called directly; for other objects the bound ``__call__`` is looked up
    # once here, which skips the type-slot dispatch on every call.
    return isinstance(obj, (FunctionType, MethodType, BuiltinFunctionType, partial))
