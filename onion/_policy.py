"""``KeyPolicy``: what one client key may do, carried on ``context.key`` (kept apart from
``onion._keys`` so the context imports no hashing, SQLite or Redis code)."""

from __future__ import annotations

import fnmatch
from typing import Any, Literal

import msgspec

__all__ = ["KeyPolicy"]


class KeyPolicy(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What one client key may do. ``id`` is empty for a key from the config;
    ``expires`` is Unix time (``None``: never); ``models`` are globs (``fnmatch``; empty:
    every model); ``budget_usd`` over ``budget_window`` (UTC calendar ``"day"`` or
    ``"month"``), ``rpm``/``tpm`` per minute, each ``None`` when not limited."""

    name: str
    id: str = ""
    team: str | None = None
    models: tuple[str, ...] = ()
    budget_usd: float | None = None
    budget_window: Literal["day", "month"] = "month"
    rpm: int | None = None
    tpm: int | None = None
    expires: float | None = None
    metadata: dict[str, Any] = {}
    created: float = 0.0

    def allows(self, model: str) -> bool:
        """Whether this key may call ``model``."""
        return not self.models or any(fnmatch.fnmatchcase(model, glob) for glob in self.models)

    def expired(self, now: float) -> bool:
        """Whether the key has expired at Unix time ``now``."""
        return self.expires is not None and now >= self.expires


def expiry(value: Any) -> float:
    """An expiry as Unix time: from a number (Unix time), an ISO 8601 string, a
    ``datetime`` (naive means UTC) or a ``date`` (its UTC midnight); ``ValueError`` else."""
    import datetime as dt

    if isinstance(value, bool):
        raise ValueError("expected a date, a datetime or Unix seconds")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError("Unix seconds must be positive")
        return float(value)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value[:40]!r} is not an ISO 8601 date or datetime") from None
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp()
    raise ValueError("expected a date, a datetime or Unix seconds")
