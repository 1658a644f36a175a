"""``fallback``: a chain of models in priority order; on failure, the next one answers.

Sits outside ``retry`` (each model gets its own retries before the chain moves on); a
``timeout`` outside it bounds the whole chain, one inside it bounds each model's try. The
chain starts at the requested model when it is in ``models`` (and goes on with the models
after it), else with the requested model followed by all of ``models``. A request may
name its own chain (``"fallbacks": [...]`` in its body, or ``x-onion-fallbacks``), limited
to the models in ``allow_request_fallbacks``.

What falls back is a policy over failure classes (``onion.failure_class``). By default
every upstream failure does except the request's own faults: a ``content_filter`` or
``invalid_request`` 400 is answered with the upstream's own error (another model would
refuse it too, or worse, answer what the first one filtered), and a ``context_length``
400 moves only to the models listed for it in ``context_fallbacks`` (a larger window),
else it is answered as it is. Each move is a warning in the log naming both models. The
response's ``model`` and ``fallback`` record the model that answered. When every model
failed: ``AllProvidersFailed`` with each cause.

A stream falls back freely until its first chunk reached the caller; after that only by
resumption (see ``resumption.py``), else it fails with an explicit error.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import msgspec
import structlog

from onion import (
    UPSTREAM_FAILURES,
    AllProvidersFailed,
    BadRequest,
    CallNext,
    ConfigError,
    Layer,
    Order,
    Request,
    Response,
    Timeout,
    failure_class,
    failure_classes,
)

from .resumption import ResumeMode, note_resumed, open_resumed, recover_stream, resume_mode

__all__ = ["DEFAULT_FALLBACK_ON", "Fallback", "FallbackPolicy"]

_log = structlog.get_logger("onion.fallback")


DEFAULT_FALLBACK_ON = UPSTREAM_FAILURES | {"upstream_auth", "circuit_open"}
"""Failure classes ``fallback`` moves to the next model on by default (``context_length``
moves only to a model listed in ``context_fallbacks``)."""


class FallbackPolicy:
    """Which failures move the chain to the next model: ``fallback_on`` (failure
    classes, ``DEFAULT_FALLBACK_ON``), or ``should_fallback(error)`` when given."""

    __slots__ = ("fallback_on", "should_fallback")

    def __init__(
        self,
        should_fallback: Callable[[BaseException], bool] | None = None,
        *,
        fallback_on: frozenset[str] | list[str] = DEFAULT_FALLBACK_ON,
    ) -> None:
        self.should_fallback = should_fallback
        self.fallback_on = failure_classes(fallback_on, "fallback_on")

    def worthy(self, error: BaseException) -> bool:
        """Whether ``error`` moves the chain to its next model."""
        if self.should_fallback is not None:
            return self.should_fallback(error)
        return failure_class(error) in self.fallback_on


class Fallback(Layer):
    """Try ``models`` in order until one answers.

    TOML: ``models = ["gpt-4o", "gpt-4o-mini"]``; ``fallback_on`` (failure classes);
    ``context_fallbacks = {"gpt-4o-mini" = ["gpt-4o"]}`` (where a prompt too long for a
    model's window may go); ``allow_request_fallbacks`` (the models a request may name
    in its own chain; empty: requests may not name one); ``resume`` (``"auto"``, the
    default, ``"reissue"``, ``"continue"``, ``"off"``: see ``resumption.py``). In code also
    ``policy=FallbackPolicy(...)``.
    """

    name = "fallback"
    provides = frozenset({"fallback"})
    short_circuit = None
    ordering = (Order("retry", "outside", "each model gets its own retries before the chain moves to the next one"),)

    def __init__(
        self,
        models: list[str],
        resume: ResumeMode = "auto",
        fallback_on: list[str] | None = None,
        context_fallbacks: dict[str, list[str]] | None = None,
        allow_request_fallbacks: list[str] | None = None,
        max_request_fallbacks: int = 4,
        *,
        policy: FallbackPolicy | None = None,
    ) -> None:
        if not models:
            raise ValueError("models must name at least one model")
        self.models = list(models)
        self.resume = resume
        self.policy = policy or FallbackPolicy(fallback_on=DEFAULT_FALLBACK_ON if fallback_on is None else fallback_on)
        self.context_fallbacks = {model: list(bigger) for model, bigger in (context_fallbacks or {}).items()}
        for model, bigger in self.context_fallbacks.items():
            if not bigger or model in bigger:
                raise ConfigError(
                    f"context_fallbacks[{model!r}] must list other models with a larger window",
                    field="context_fallbacks",
                )
        self.allowed = frozenset(allow_request_fallbacks or ())
        self.max_request_fallbacks = max_request_fallbacks
        self._chains: dict[str, list[str]] = {}

    def chain(self, model: str) -> list[str]:
        """The models tried for a request for ``model``, in order (do not mutate it)."""
        chain = self._chains.get(model)
        if chain is None:
            chain = self.models[self.models.index(model) :] if model in self.models else [model, *self.models]
            if len(self._chains) < 1024:  # model names come from requests: bound the cache
                self._chains[model] = chain
        return chain

    def chain_for(self, request: Request) -> list[str]:
        """The chain of this request: its own (checked against the allowlist), else the layer's."""
        asked = request.context.chain
        if asked is None or asked.fallbacks is None:
            return self.chain(request.model)
        fallbacks = list(asked.fallbacks)
        if len(fallbacks) > self.max_request_fallbacks:
            raise BadRequest(f"name at most {self.max_request_fallbacks} fallbacks", param="fallbacks")
        refused = [model for model in fallbacks if model not in self.allowed]
        if refused:
            raise BadRequest(
                f"fallbacks: {refused[0][:100]!r} is not a model this gateway lets a request fall back to",
                param="fallbacks",
            )
        return [request.model, *(model for model in fallbacks if model != request.model)]

    def acts_on(self) -> str:
        """The failure classes this layer falls back on, for ``onion check``."""
        if self.policy.should_fallback is not None:
            return "falls back: what its should_fallback() accepts"
        text = "falls back: " + ", ".join(sorted(self.policy.fallback_on))
        if self.context_fallbacks:
            routes = (f"{model} -> {'/'.join(bigger)}" for model, bigger in self.context_fallbacks.items())
            text += "; context_length only: " + ", ".join(routes)
        return text

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        chain = _Chain(self, request, call_next)
        try:
            response = await chain.first()
        except Exception as error:
            response = await chain.reopen(error, "")
        if response.is_stream:
            chain.outer = response
            response.wrap(lambda chunks: recover_stream(chunks, chain.reopen, mode=chain.mode))
        return response


class _Chain:
    """The progress of one call along the chain, shared with its stream recovery."""

    __slots__ = ("call_next", "causes", "index", "layer", "mode", "models", "outer", "request")

    def __init__(self, layer: Fallback, request: Request, call_next: CallNext) -> None:
        self.layer = layer
        self.request = request
        self.call_next = call_next
        self.models = layer.chain_for(request)
        self.index = 0
        self.causes: list[BaseException] = []
        self.mode = resume_mode(request, layer.resume)
        # The response the caller holds: a stream resumed on another model says so there.
        self.outer: Response | None = None

    async def _call(self, model: str, sent: str) -> Response:
        request = self.request if model == self.request.model else msgspec.structs.replace(self.request, model=model)
        # A retry inside moves on at once from a silent attempt while a model is left here.
        request.context.alternatives = len(self.models) - self.index - 1
        response = await open_resumed(request, sent, self.mode, self.call_next)
        response.model = response.model or model
        if self.index:
            response.fallback = model
        return response

    async def first(self) -> Response:
        return await self._call(self.models[0], "")

    def _next_models(self, error: BaseException) -> bool:
        """Whether ``error`` moves the chain on (a context-length refusal may reroute it)."""
        if failure_class(error) == "context_length" and self.layer.policy.should_fallback is None:
            bigger = self.layer.context_fallbacks.get(self.models[self.index])
            if not bigger:
                return False
            self.models = [*self.models[: self.index + 1], *bigger]
            return True
        return self.layer.policy.worthy(error)

    async def reopen(self, error: BaseException, sent: str) -> Response:
        """The next model's response, or raise ``AllProvidersFailed`` / a non-worthy error."""
        while True:
            if not isinstance(error, Exception) or not self._next_models(error):
                raise error
            self.causes.append(error)
            deadline = self.request.context.deadline
            if deadline is not None and anyio.current_time() >= deadline:
                if isinstance(error, Timeout):
                    raise error  # the whole call is out of time; no model could answer now
                raise AllProvidersFailed(self.causes, models=self.models[: len(self.causes)])
            if self.index + 1 >= len(self.models):
                raise AllProvidersFailed(self.causes, models=self.models[: len(self.causes)])
            failed, self.index = self.models[self.index], self.index + 1
            model = self.models[self.index]
            _log.warning(
                "falling back to the next model",
                failed_model=failed,
                fallback_model=model,
                error=type(error).__name__,
                failure=failure_class(error),
                request_id=self.request.context.request_id,
            )
            try:
                response = await self._call(model, sent)
            except Exception as failure:
                error = failure
                continue
            if self.outer is not None:
                self.outer.model = response.model
                self.outer.fallback = model
                note_resumed(self.outer, response, sent, self.mode)
            return response
