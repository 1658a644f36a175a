"""Hypothesis strategies for property tests of stacks.

- ``chat_requests``: requests with every role, unicode, empty and long contents, tool
  calls and tool results;
- ``chunk_cuts`` / ``chunkings``: stream chunk boundaries anywhere in a text (inside a
  word, between a letter and its combining mark, empty chunks);
- ``faults`` / ``fault_plans``: which upstream attempt fails and how (``faults.py``);
- ``pii_values``: realistic personal data to plant in provider answers;
- ``orderings``: permutations of given layers that respect their declared ordering
  constraints (drawn as random topological orders, so no example is wasted on a stack
  ``Stack`` would reject); ``all_orderings`` splits every permutation into accepted and
  rejected ones.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

from hypothesis import strategies as st

from .._stack import LayerInfo, _check_ordering, layer_info
from .._types import Message, Request
from ..errors import ConfigError
from .faults import Cut, Fault, FaultPlan, Slow, Status, TimedOut

__all__ = [
    "all_orderings",
    "chat_requests",
    "chunk_cuts",
    "chunkings",
    "declared",
    "fault_plans",
    "faults",
    "instantiate",
    "messages",
    "orderings",
    "pii_values",
    "texts",
    "tool_calls",
]

T = TypeVar("T")

# Letters, marks, numbers, punctuation, symbols (emoji) and separators, but no lone
# surrogates, which cannot be encoded to UTF-8 on the wire.
_CHARACTERS = st.characters(exclude_categories=("Cs",))


def texts(*, min_size: int = 0, max_size: int = 80, long: bool = True) -> st.SearchStrategy[str]:
    """Message contents: unicode of any script, empty strings, and (``long``) a few
    thousand characters of repeated words."""
    plain = st.text(_CHARACTERS, min_size=min_size, max_size=max_size)
    if not long:
        return plain
    long_text = st.builds(
        lambda word, n: (word + " ") * n, st.text(_CHARACTERS, min_size=1, max_size=8), st.integers(200, 800)
    )
    return st.one_of(plain, long_text)


def tool_calls() -> st.SearchStrategy[list[dict[str, Any]]]:
    """The ``tool_calls`` of an assistant message (OpenAI's function-call shape)."""
    call = st.builds(
        lambda i, name, args: {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": name, "arguments": args},
        },
        st.integers(0, 9999),
        st.from_regex(r"[a-z_]{1,16}", fullmatch=True),
        st.sampled_from(["{}", '{"city": "Paris"}', '{"q": "naïve café ☕", "n": 3}']),
    )
    return st.lists(call, min_size=1, max_size=3)


def messages(*, roles: Sequence[str] = ("system", "user", "assistant", "tool")) -> st.SearchStrategy[Message]:
    """One message of any of ``roles``; assistants may call tools, tools answer one."""
    options = []
    for role in roles:
        if role == "assistant":
            options.append(
                st.one_of(
                    st.builds(Message, st.just("assistant"), texts()),
                    st.builds(
                        lambda calls: Message("assistant", None, tool_calls=calls),
                        tool_calls(),
                    ),
                )
            )
        elif role == "tool":
            options.append(
                st.builds(
                    lambda text, i: Message("tool", text, tool_call_id=f"call_{i}"),
                    texts(long=False),
                    st.integers(0, 9999),
                )
            )
        else:
            options.append(st.builds(Message, st.just(role), texts()))
    return st.one_of(options)


def chat_requests(
    *,
    models: Sequence[str] = ("m",),
    stream: bool | None = None,
    max_messages: int = 5,
    callers: Sequence[str | None] = (None,),
    user_texts: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[Request]:
    """Chat requests: a conversation of up to ``max_messages`` ending with a user
    message (drawn from ``user_texts`` when given), a model from ``models``, streamed or
    not (``stream=None`` draws it), a caller from ``callers``."""
    last = st.builds(Message, st.just("user"), user_texts if user_texts is not None else texts())

    def build(history: list[Message], final: Message, model: str, is_stream: bool, caller: str | None) -> Request:
        request = Request(model=model, messages=[*history, final], stream=is_stream)
        request.context.caller = caller
        return request

    return st.builds(
        build,
        st.lists(messages(), max_size=max(0, max_messages - 1)),
        last,
        st.sampled_from(list(models)),
        st.booleans() if stream is None else st.just(stream),
        st.sampled_from(list(callers)),
    )


def chunk_cuts(*, max_cuts: int = 8, max_offset: int = 400) -> st.SearchStrategy[tuple[int, ...]]:
    """Character offsets where a stream breaks; repeated offsets make empty chunks."""
    return st.lists(st.integers(0, max_offset), max_size=max_cuts).map(lambda cuts: tuple(sorted(cuts)))


def chunkings(text: str, *, max_cuts: int = 8) -> st.SearchStrategy[tuple[str, ...]]:
    """``text`` split into stream chunks at arbitrary boundaries (they join back to it)."""
    from .faults import split_at

    return chunk_cuts(max_cuts=max_cuts, max_offset=len(text)).map(lambda cuts: split_at(text, cuts))


def faults(
    *, statuses: Sequence[int] = (429, 500, 502, 503, 400), max_latency: float = 5.0
) -> st.SearchStrategy[Fault]:
    """One attempt's fault: an error status, a timeout, a cut stream or extra latency."""
    return st.one_of(
        st.builds(Status, st.sampled_from(list(statuses)), st.one_of(st.none(), st.sampled_from([0.5, 1.0, 3.0]))),
        st.builds(TimedOut, st.sampled_from([1.0, 30.0])),
        st.builds(Cut, st.integers(0, 6)),
        st.builds(Slow, st.floats(0.01, max_latency, allow_nan=False)),
    )


def fault_plans(
    models: Sequence[str] = ("m",), *, max_attempts: int = 3, per: str = "request", **fault_options: Any
) -> st.SearchStrategy[FaultPlan]:
    """Plans giving each of ``models`` up to ``max_attempts`` attempts that may fail."""
    attempt = st.one_of(st.none(), faults(**fault_options))
    per_model = st.lists(attempt, max_size=max_attempts).map(tuple)
    return st.fixed_dictionaries({model: per_model for model in models}).map(
        lambda plan: FaultPlan(plan, per=per)  # type: ignore[arg-type]
    )


_EMAILS = ("alice.smith@example.com", "bob@mail.example.org", "j.doe+llm@corp.example.net")
_PHONES = ("+1 415-555-0134", "(212) 555-0198", "+44 20 7946 0958")
_CARDS = ("4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005")


def pii_values() -> st.SearchStrategy[str]:
    """Realistic personal data (emails, phone numbers, Luhn-valid card numbers) to plant
    in a provider's answer and look for in what the caller gets."""
    return st.sampled_from(_EMAILS + _PHONES + _CARDS)


def declared(item: Any) -> LayerInfo:
    """The declarations of a layer instance, a layer class, or a ``functools.partial``
    of a class (a factory of fresh layers), read without building one."""
    target = item.func if isinstance(item, partial) else item
    return layer_info(target)


def _accepted(infos: Sequence[LayerInfo]) -> bool:
    try:
        _check_ordering(infos)
    except ConfigError:
        return False
    return True


def _must_precede(infos: Sequence[LayerInfo]) -> list[set[int]]:
    """For each layer, the layers that must come before it (be further out)."""
    before: list[set[int]] = [set() for _ in infos]
    for i, info in enumerate(infos):
        for order in info.ordering:
            for j, other in enumerate(infos):
                if j == i or order.capability not in other.provides:
                    continue
                if order.where == "inside":
                    before[i].add(j)
                else:
                    before[j].add(i)
    return before


def orderings(layers: Sequence[T]) -> st.SearchStrategy[list[T]]:
    """Orders of ``layers`` (outermost first) that ``Stack`` accepts: random topological
    orders of the declared constraints. Items may be layers, layer classes or
    ``partial``\\ s of classes (to build fresh layers per example). Raises
    ``ConfigError`` if no order satisfies the constraints."""
    items = list(layers)
    infos = [declared(item) for item in items]
    before = _must_precede(infos)

    @st.composite
    def draw_order(draw: st.DrawFn) -> list[T]:
        placed: list[int] = []
        left = list(range(len(items)))
        while left:
            ready = [i for i in left if before[i] <= set(placed)]
            if not ready:
                raise ConfigError("the layers' ordering constraints contradict each other: no order satisfies them")
            choice = draw(st.sampled_from(ready))
            placed.append(choice)
            left.remove(choice)
        return [items[i] for i in placed]

    return draw_order()


def all_orderings(layers: Sequence[T]) -> tuple[list[list[T]], list[list[T]]]:
    """Every permutation of ``layers``, split into ``(accepted, rejected)`` by the
    declared constraints (for tables; ``n!`` grows fast, keep ``n`` small)."""
    items = list(layers)
    infos = [declared(item) for item in items]
    accepted: list[list[T]] = []
    rejected: list[list[T]] = []
    for permutation in _permutations(len(items)):
        (accepted if _accepted([infos[i] for i in permutation]) else rejected).append([items[i] for i in permutation])
    return accepted, rejected


def _permutations(n: int) -> Iterator[tuple[int, ...]]:
    return itertools.permutations(range(n))


def instantiate(item: Any) -> Any:
    """A fresh layer from a class or ``partial``; a layer instance is returned as is."""
    if isinstance(item, partial) or inspect.isclass(item):
        return item()
    return item
