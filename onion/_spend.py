"""The spend ledger: what each key, team and model spent per UTC day, for ``GET /admin/spend``.

Fed by a ``budget`` layer's ``on_spend`` (every settled call: its key, team, model, real
cost, and whether a cache answered it at zero cost). One row per (day, key, team, model)
holds the calls, the cost in integer nano-dollars and the cache hits, so the report is
exact and its size grows with keys x models x days, not with calls. Stores as ``[state]``:
memory (one process, lost on restart), SQLite (one ``UPSERT`` per call), Redis (one
``HINCRBY`` pipeline per call, a hash per day shared by every worker).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread

from ._redis import RedisClient

__all__ = ["MemorySpendLedger", "RedisSpendLedger", "SQLiteSpendLedger", "SpendLedger", "SpendRow", "spend_report"]

NANO = 1_000_000_000
SpendRow = tuple[str, str, str, str, int, int, int]
"""``(day, key, team, model, calls, nano-dollars, cache hits)``; ``""`` for no key or team."""

_SEP = "\x1f"


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).date().isoformat()


class SpendLedger(Protocol):
    """Where spend rows live."""

    async def add(self, day: str, key: str, team: str, model: str, nano: int, cached: bool) -> None: ...

    async def rows(self, first: str, last: str) -> list[SpendRow]: ...


class LedgerFeed:
    """The ``on_spend`` callback of a ``budget`` layer, writing to a ledger (any record
    with ``key``, ``team``, ``model``, ``cost`` in USD, ``cached`` and ``at``)."""

    def __init__(self, ledger: SpendLedger) -> None:
        self.ledger = ledger

    async def __call__(self, record: Any) -> None:
        await self.ledger.add(
            _day(record.at),
            record.key or "",
            record.team or "",
            record.model,
            round(record.cost * NANO),
            bool(record.cached),
        )


class MemorySpendLedger:
    """Rows in this process (lost on restart)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str, str], list[int]] = {}

    async def add(self, day: str, key: str, team: str, model: str, nano: int, cached: bool) -> None:
        row = self._rows.setdefault((day, key, team, model), [0, 0, 0])
        row[0] += 1
        row[1] += nano
        row[2] += cached

    async def rows(self, first: str, last: str) -> list[SpendRow]:
        return [(*k, *v) for k, v in self._rows.items() if first <= k[0] <= last]  # type: ignore[misc]


class SQLiteSpendLedger:
    """Rows in a local SQLite file (survives restarts)."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS onion_spend (day TEXT, key TEXT, team TEXT, model TEXT, calls INTEGER, "
            "nano INTEGER, cached INTEGER, PRIMARY KEY (day, key, team, model))"
        )

    def _add(self, *row: Any) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO onion_spend VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT(day, key, team, model) DO UPDATE "
                "SET calls = calls + 1, nano = nano + excluded.nano, cached = cached + excluded.cached",
                row,
            )

    async def add(self, day: str, key: str, team: str, model: str, nano: int, cached: bool) -> None:
        await anyio.to_thread.run_sync(self._add, day, key, team, model, nano, int(cached))

    def _rows(self, first: str, last: str) -> list[SpendRow]:
        with self._lock:
            sql = "SELECT * FROM onion_spend WHERE day BETWEEN ? AND ? ORDER BY day, key, model"
            return [tuple(row) for row in self._db.execute(sql, (first, last))]  # type: ignore[misc]

    async def rows(self, first: str, last: str) -> list[SpendRow]:
        return await anyio.to_thread.run_sync(self._rows, first, last)

    async def aclose(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()


class RedisSpendLedger:
    """Rows in Redis: a hash per day, ``key␟team␟model␟field`` → count (kept 400 days)."""

    def __init__(self, url: str, *, prefix: str = "onion:spend", client: RedisClient | None = None) -> None:
        self.redis = client or RedisClient(url, timeout=1.0, deadline=0.5)
        self.prefix = prefix

    async def add(self, day: str, key: str, team: str, model: str, nano: int, cached: bool) -> None:
        name, base = f"{self.prefix}:{day}", _SEP.join((key, team, model))

        def write() -> None:
            pipe = self.redis.sync.pipeline(transaction=True)
            pipe.hincrby(name, base + _SEP + "calls", 1)
            pipe.hincrby(name, base + _SEP + "nano", nano)
            if cached:
                pipe.hincrby(name, base + _SEP + "cached", 1)
            pipe.expire(name, 400 * 86400)
            pipe.execute()

        await self.redis.run(write)

    async def rows(self, first: str, last: str) -> list[SpendRow]:
        days = _days(first, last)

        def read() -> list[dict[bytes, bytes]]:
            pipe = self.redis.sync.pipeline(transaction=False)
            for day in days:
                pipe.hgetall(f"{self.prefix}:{day}")
            return pipe.execute()

        out: list[SpendRow] = []
        for day, fields in zip(days, await self.redis.run(read), strict=True):
            rows: dict[tuple[str, str, str], dict[str, int]] = {}
            for field, value in fields.items():
                key, team, model, what = field.decode().split(_SEP)
                rows.setdefault((key, team, model), {})[what] = int(value)
            out += [(day, *k, v.get("calls", 0), v.get("nano", 0), v.get("cached", 0)) for k, v in rows.items()]
        return out

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()


def _days(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def spend_report(
    rows: Iterable[SpendRow], first: str, last: str, key: str | None = None, team: str | None = None
) -> dict[str, Any]:
    """The JSON of ``GET /admin/spend``: totals, then the same by key, team, model and day
    (USD; ``cache_hits`` are calls a cache answered at zero cost), and the rows."""
    total = {"usd": 0.0, "calls": 0, "cache_hits": 0}
    groups: dict[str, dict[str, dict[str, Any]]] = {"by_key": {}, "by_team": {}, "by_model": {}, "by_day": {}}
    listed = []
    nano_total = 0
    for day, row_key, row_team, model, calls, nano, cached in sorted(rows):
        if (key is not None and row_key != key) or (team is not None and row_team != team):
            continue
        nano_total += nano
        total["calls"] += calls
        total["cache_hits"] += cached
        for group, name in (("by_key", row_key), ("by_team", row_team), ("by_model", model), ("by_day", day)):
            slot = groups[group].setdefault(name, {"usd": 0.0, "nano": 0, "calls": 0, "cache_hits": 0})
            slot["nano"] += nano
            slot["calls"] += calls
            slot["cache_hits"] += cached
        listed.append(
            {"day": day, "key": row_key, "team": row_team, "model": model, "usd": nano / NANO, "calls": calls}
            | {"cache_hits": cached}
        )
    for group in groups.values():
        for slot in group.values():
            slot["usd"] = slot.pop("nano") / NANO
    total["usd"] = nano_total / NANO
    return {"object": "spend", "from": first, "to": last, "total": total, **groups, "rows": listed}


def today() -> str:
    """Today's UTC date, ISO."""
    return _day(time.time())
