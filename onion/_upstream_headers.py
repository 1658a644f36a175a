"""Which upstream answer headers reach the client (``[server] upstream_headers``).

A gateway is transparent: the upstream's rate-limit state (``x-ratelimit-*``,
``anthropic-ratelimit-*``), its timing (``openai-processing-ms``) and its request id are
the caller's to read, so an allowlist of them passes through, names and values unchanged.

An entry is an exact name or a prefix ending in ``*`` (no other glob characters: a
frozenset of names and a tuple of prefixes is all a call checks). The pseudo-entry
``x-upstream-request-id`` forwards the upstream's ``x-request-id`` (OpenAI) or
``request-id`` (Anthropic) under that name, since onion's own ``x-request-id`` stays
onion's. It is an entry (in the default list) rather than always on, so ``[]`` really
forwards nothing and costs nothing.

Never forwarded, whatever is configured (an entry that could match one is refused):
framing and hop-by-hop headers, which the server writes for its own answer; cookies and
credentials; the gateway's own upstream identity (``openai-organization``,
``openai-project``); ``server`` and ``date``; and onion's own ``x-onion-*`` and
``x-request-id``. A value holding CR, LF or NUL is dropped (header injection).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["DEFAULT_UPSTREAM_HEADERS", "REQUEST_ID", "HeaderAllowlist"]

DEFAULT_UPSTREAM_HEADERS: tuple[str, ...] = (
    "x-ratelimit-*",
    "anthropic-ratelimit-*",
    "openai-processing-ms",
    "x-upstream-request-id",
)
"""The default ``[server] upstream_headers``."""

REQUEST_ID = "x-upstream-request-id"
"""The pseudo-entry, and the client's name, for the upstream's request id."""

_NEVER = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "content-type",
        "te",
        "trailer",
        "upgrade",
        "set-cookie",
        "authorization",
        "www-authenticate",
        "openai-organization",
        "openai-project",
        "server",
        "date",
        "x-request-id",
    }
)
_NEVER_PREFIXES = ("proxy-", "x-onion-")
_UPSTREAM_IDS = frozenset({b"x-request-id", b"request-id"})


def refusal(entry: str) -> str | None:
    """Why ``entry`` cannot be in the allowlist, or ``None`` when it can."""
    if not isinstance(entry, str) or not entry:
        return "an entry must be a non-empty header name or a prefix ending in '*'"
    name = entry.lower()
    if name == REQUEST_ID:
        return None
    prefix = name.endswith("*")
    stem = name[:-1] if prefix else name
    if any(char in stem for char in "*?[]") or not all(33 <= ord(char) < 127 and char != ":" for char in stem):
        return "only a header name, or a prefix ending in one '*', is supported"
    if not prefix:
        if name in _NEVER or name.startswith(_NEVER_PREFIXES):
            return f"{name!r} is never forwarded (framing, credentials, identity or onion's own header)"
        return None
    clash = sorted(never for never in _NEVER if never.startswith(stem))
    clash += [never + "*" for never in _NEVER_PREFIXES if never.startswith(stem) or stem.startswith(never)]
    if clash:
        return f"{entry!r} would match {clash[0]!r}, which is never forwarded"
    return None


class HeaderAllowlist:
    """A compiled ``upstream_headers`` list: ``pick(raw)`` returns the headers of an
    upstream answer the client gets, as a ``Response.headers`` dict.

    Built once per provider; raises ``ValueError`` naming an entry ``refusal`` refuses.
    Empty, it is falsy and the provider skips it.
    """

    __slots__ = ("_names", "_prefixes", "_request_id", "_verdicts")

    def __init__(self, entries: Iterable[str] = DEFAULT_UPSTREAM_HEADERS) -> None:
        names: set[bytes] = set()
        prefixes: list[bytes] = []
        self._request_id = False
        for index, entry in enumerate(entries):
            problem = refusal(entry)
            if problem is not None:
                raise ValueError(f"upstream_headers[{index}] = {str(entry)[:60]!r}: {problem}")
            name = entry.lower()
            if name == REQUEST_ID:
                self._request_id = True
            elif name.endswith("*"):
                prefixes.append(name[:-1].encode("ascii"))
            else:
                names.add(name.encode("ascii"))
        self._names = frozenset(names)
        self._prefixes = tuple(prefixes)
        # Each header name as the upstream spells it, and what this list does with it: an
        # upstream sends the same dozen or two names on every answer, so a name's verdict
        # is one dict look-up after its first answer (bounded, against an upstream that
        # invents names).
        self._verdicts: dict[bytes, _Verdict] = {}

    def __bool__(self) -> bool:
        return bool(self._names or self._prefixes or self._request_id)

    def pick(self, raw: Sequence[tuple[bytes, bytes]] | Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
        """The allowlisted headers of ``raw`` (byte pairs as received), names lower-cased
        and values unchanged; the upstream's request id as ``x-upstream-request-id``."""
        chosen: dict[str, str] = {}
        verdicts = self._verdicts
        # Plain checks, no generator: this runs on every header of every answer.
        for key, value in raw:
            verdict = verdicts.get(key)
            if verdict is None:
                verdict = self._verdict(key)
                if len(verdicts) < _MAX_VERDICTS:
                    verdicts[key] = verdict
            if verdict is _SKIP:
                continue
            # CR, LF, NUL as ints: a byte-string operand goes through the buffer protocol
            # (several times slower per check).
            if 13 in value or 10 in value or 0 in value:
                continue
            text = value.decode("latin-1")
            name, is_id = verdict
            if name is not None:
                chosen[name] = text
            if is_id:
                chosen.setdefault(REQUEST_ID, text)
        return chosen

    def _verdict(self, key: bytes) -> _Verdict:
        """For a header name as received: its forwarded (lower-case) name or ``None``, and
        whether it is the upstream's request id; ``_SKIP`` for neither."""
        name = key.lower()
        allowed = name in self._names or name.startswith(self._prefixes)
        is_id = self._request_id and name in _UPSTREAM_IDS
        if not allowed and not is_id:
            return _SKIP
        return (name.decode("latin-1") if allowed else None, is_id)


_Verdict = tuple[str | None, bool]
_SKIP: _Verdict = (None, False)
_MAX_VERDICTS = 256
