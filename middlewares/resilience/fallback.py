"""``fallback``: a chain of models in priority order; on failure, the next one answers.

Sits outside ``retry`` (each model gets its own retries before the chain moves on) and
inside ``timeout`` (one deadline for the whole chain). The chain starts at the requested
model when it is in ``models`` (and goes on with the models after it), else with the
requested model followed by all of ``models``. A failure the policy calls
fallback-worthy (by default: provider errors, timeouts, open circuits; not bad requests,
not guard blocks) moves to the next model, with a warning in the log naming it. The
response's ``model`` and ``fallback`` record the model that answered. When
every model failed: ``AllProvidersFailed`` with each cause.

A stream falls back freely until its first chunk reached the caller; after that only by
resumption (see ``middlewares/_resume.py``), else it fails with an explicit error.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import msgspec
import structlog

from onion import AllProvidersFailed, CallNext, Layer, Order, ProviderError, Request, Response, Timeout

from .resumption import ResumeMode, claim_phases, note_resumed, open_resumed, owned, recover_stream, resume_mode

__all__ = ["Fallback", "FallbackPolicy"]

_log = structlog.get_logger("onion.fallback")


def default_fallback_worthy(error: BaseException) -> bool:
    """Provider errors (open circuits included) and timeouts; not the caller's errors."""
    return isinstance(error, (ProviderError, Timeout))


class FallbackPolicy:
    """Which failures move the chain to the next model."""

    __slots__ = ("should_fallback",)

    def __init__(self, should_fallback: Callable[[BaseException], bool] = default_fallback_worthy) -> None:
        self.should_fallback = should_fallback


class Fallback(Layer):
    """Try ``models`` in order until one answers.

    TOML: ``models = ["gpt-4o", "gpt-4o-mini"]``, ``resume`` (``"auto"``, the default,
    ``"reissue"``, ``"continue"``, ``"off"``: see ``middlewares/_resume.py``). In code also
    ``policy=FallbackPolicy(should_fallback)``.
    """

    name = "fallback"
    provides = frozenset({"fallback"})
    short_circuit = None
    ordering = (Order("retry", "outside", "each model gets its own retries before the chain moves to the next one"),)

    def __init__(self, models: list[str], resume: ResumeMode = "auto", *, policy: FallbackPolicy | None = None) -> None:
        if not models:
            raise ValueError("models must name at least one model")
        self.models = list(models)
        self.resume = resume
        self.policy = policy or FallbackPolicy()
        self._chains: dict[str, list[str]] = {}

    def chain(self, model: str) -> list[str]:
        """The models tried for a request for ``model``, in order (do not mutate it)."""
        chain = self._chains.get(model)
        if chain is None:
            chain = self.models[self.models.index(model) :] if model in self.models else [model, *self.models]
            if len(self._chains) < 1024:  # model names come from requests: bound the cache
                self._chains[model] = chain
        return chain

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        chain = _Chain(self, request, call_next)
        try:
            response = await chain.first()
        except Exception as error:
            response = await chain.reopen(error, "")
        if response.is_stream:
            chain.outer = response
            phases = owned(chain.phases, self)
            response.wrap(lambda chunks: recover_stream(chunks, chain.reopen, mode=chain.mode, phases=phases))
        return response


class _Chain:
    """The progress of one call along the chain, shared with its stream recovery."""

    __slots__ = ("call_next", "causes", "index", "layer", "mode", "models", "outer", "phases", "request")

    def __init__(self, layer: Fallback, request: Request, call_next: CallNext) -> None:
        self.layer = layer
        self.request = request
        self.call_next = call_next
        self.models = layer.chain(request.model)
        self.index = 0
        self.causes: list[BaseException] = []
        self.phases = claim_phases(request, layer) if request.stream else None
        self.mode = resume_mode(request, layer.resume)
        # The response the caller holds: a stream resumed on another model says so there.
        self.outer: Response | None = None

    async def _call(self, model: str, sent: str) -> Response:
        request = self.request if model == self.request.model else msgspec.structs.replace(self.request, model=model)
        response = await open_resumed(request, sent, self.mode, self.call_next, self.phases, self.layer)
        response.model = response.model or model
        if self.index:
            response.fallback = model
        return response

    async def first(self) -> Response:
        return await self._call(self.models[0], "")

    async def reopen(self, error: BaseException, sent: str) -> Response:
        """The next model's response, or raise ``AllProvidersFailed`` / a non-worthy error."""
        while True:
            if not isinstance(error, Exception) or not self.layer.policy.should_fallback(error):
                raise error
            self.causes.append(error)
            deadline = self.request.context.deadline
            if isinstance(error, Timeout) and error.phase == "total":
                raise error  # the whole call is out of time; no model could answer now
            if self.index + 1 >= len(self.models) or (deadline is not None and anyio.current_time() >= deadline):
                raise AllProvidersFailed(self.causes, models=self.models[: len(self.causes)])
            failed, self.index = self.models[self.index], self.index + 1
            model = self.models[self.index]
            _log.warning(
                "falling back to the next model",
                failed_model=failed,
                fallback_model=model,
                error=type(error).__name__,
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
