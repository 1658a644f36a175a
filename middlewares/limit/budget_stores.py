"""Where ``budget`` keeps spend: in process memory, in a local SQLite file, or in Redis.

Each budget is one row: the calendar window it counts (``period``: the UTC day or month
number), what was ``spent`` in it (reconciled, real costs) and what is ``reserved`` by
calls still running. Amounts are integer **nano-dollars** (1e-9 USD), so a reservation
and its refund cancel exactly and a spend is the exact sum of its costs.

- ``reserve(lines, amount)``: for every budget line ``(id, limit, window)`` at once,
  admit only if ``spent + reserved + amount <= limit`` for all of them, then add
  ``amount`` to each one's ``reserved``. All or nothing, atomically.
- ``settle(lines, admission, amount, cost)``: the call ended; take its ``amount`` back out
  of ``reserved`` (if its window is still the current one) and add the real ``cost`` to
  ``spent``. A call that outlived its window is charged to the new one: money spent is
  never dropped.

``MemoryBudgetStore``: one process, lost on restart. ``SQLiteBudgetStore``: a local
file, survives restarts, shared by the worker processes of one machine (one transaction
per reserve and per settle; reservations are expiring holds, as in Redis). ``RedisBudgetStore``:
shared by every gateway process; one Lua script per reserve and per settle, on the Redis
server's clock, so the processes agree on the window; a reservation is a hold that
expires, so a worker that dies mid-call does not keep it until the window resets.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

import anyio
import anyio.to_thread

from onion import RedisClient

__all__ = [
    "Admission",
    "BudgetLine",
    "BudgetStore",
    "MemoryBudgetStore",
    "RedisBudgetStore",
    "SQLiteBudgetStore",
    "Window",
    "window_of",
]

Window = Literal["day", "month"]
"""A budget's window: the UTC calendar day or month."""

BudgetLine = tuple[str, int, Window]
"""One budget a call is charged against: ``(id, limit in nano-dollars, window)``."""


_EPOCH = date(1970, 1, 1)


def window_of(window: str, now: float) -> tuple[int, float]:
    """The calendar window holding Unix time ``now``: its number (days since the epoch,
    or ``year * 12 + month - 1``) and the Unix time it ends (UTC midnight)."""
    day = int(now // 86400)
    if window == "day":
        return day, (day + 1) * 86400.0
    # From the day number, not datetime.fromtimestamp: that rounds to the microsecond and
    # would put the last half-microsecond of a month in the next one.
    moment = _EPOCH + timedelta(days=day)
    month = moment.year * 12 + moment.month - 1
    year, index = divmod(month + 1, 12)
    return month, datetime(year, index + 1, 1, tzinfo=UTC).timestamp()


class _Calendar:
    """``window_of`` remembered until the window ends: the per-call path reads a cached
    pair instead of building datetimes."""

    __slots__ = ("_current",)

    def __init__(self) -> None:
        self._current: dict[str, tuple[float, float, int]] = {}  # window -> (starts, ends, number)

    def __call__(self, window: str, now: float) -> tuple[int, float]:
        known = self._current.get(window)
        if known is not None and known[0] <= now < known[1]:
            return known[2], known[1]
        number, ends = window_of(window, now)
        if window == "day":
            starts = number * 86400.0
        else:
            year, index = divmod(number, 12)
            starts = datetime(year, index + 1, 1, tzinfo=UTC).timestamp()
        self._current[window] = (starts, ends, number)
        return number, ends


class Admission:
    """What ``reserve`` answers, and ``settle`` is given back.

    Admitted: ``refused == -1``, ``periods`` holds each line's window number and ``hold``
    names the reservation (Redis). Refused: ``refused`` is the index of the line that
    refused, ``resets_at`` when its window ends, ``retry_after`` the seconds until then.
    """

    __slots__ = ("hold", "periods", "refused", "remaining", "resets_at", "retry_after")

    def __init__(
        self,
        periods: Sequence[int],
        refused: int = -1,
        retry_after: float = 0.0,
        resets_at: float = 0.0,
        hold: str = "",
        remaining: int = -1,
    ) -> None:
        self.remaining = remaining  # admitted: the least room left in any of its budgets
        self.periods = periods
        self.hold = hold
        self.refused = refused
        self.retry_after = retry_after
        self.resets_at = resets_at


class BudgetStore(Protocol):
    """Where the budgets live (see the module docstring for the two operations)."""

    async def reserve(self, lines: Sequence[BudgetLine], amount: int) -> Admission: ...

    async def settle(self, lines: Sequence[BudgetLine], admission: Admission, amount: int, cost: int) -> None: ...

    async def status(self, budget_id: str, window: Window) -> tuple[int, int, float]:
        """``(spent, reserved, resets_at)`` of one budget's current window."""
        ...


Row = list[int]  # [period, spent, reserved]


def _current(row: Row | None, period: int) -> Row:
    # A row from an earlier window starts over: its spend belonged to that window.
    return row if row is not None and row[0] == period else [period, 0, 0]


def _reserve(
    rows: list[Row | None], lines: Sequence[BudgetLine], amount: int, now: float, calendar: _Calendar
) -> tuple[list[Row], Admission]:
    """The decision, shared by the memory and SQLite stores (Redis runs it in Lua)."""
    current: list[Row] = []
    refused, wait, resets_at = -1, 0.0, 0.0
    for index, ((_, limit, window), row) in enumerate(zip(lines, rows, strict=True)):
        period, ends = calendar(window, now)
        fresh = _current(row, period)
        current.append(fresh)
        if fresh[1] + fresh[2] + amount > limit and ends - now > wait:
            # Every budget must have room, so the caller waits for the latest reset.
            refused, wait, resets_at = index, ends - now, ends
    if refused >= 0:
        return current, Admission((), refused, wait, resets_at)
    for row in current:
        row[2] += amount
    remaining = min((limit - row[1] - row[2] for (_, limit, _), row in zip(lines, current, strict=True)), default=-1)
    return current, Admission([row[0] for row in current], remaining=max(remaining, 0) if lines else -1)


def _settle(
    rows: list[Row | None],
    lines: Sequence[BudgetLine],
    periods: Sequence[int],
    amount: int,
    cost: int,
    now: float,
    calendar: _Calendar,
    held: Sequence[bool] | None = None,
) -> list[Row]:
    # ``held[i]``: the call's hold on line i was still there (not released as expired).
    current: list[Row] = []
    for index, ((_, _, window), row, reserved_in) in enumerate(zip(lines, rows, periods, strict=True)):
        fresh = _current(row, calendar(window, now)[0])
        if fresh[0] == reserved_in and (held is None or held[index]):
            fresh[2] = max(0, fresh[2] - amount)
        fresh[1] += cost
        current.append(fresh)
    return current


class MemoryBudgetStore:
    """Budgets in this process's memory (the default for a stack built in code): exact,
    no I/O, **lost on restart**. ``clock`` returns Unix time (default ``time.time``)."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.now = clock or time.time
        self._rows: dict[str, Row] = {}
        self._calendar = _Calendar()

    async def reserve(self, lines: Sequence[BudgetLine], amount: int) -> Admission:
        rows = self._rows
        current, admission = _reserve([rows.get(line[0]) for line in lines], lines, amount, self.now(), self._calendar)
        for line, row in zip(lines, current, strict=True):
            rows[line[0]] = row
        return admission

    async def settle(self, lines: Sequence[BudgetLine], admission: Admission, amount: int, cost: int) -> None:
        rows = self._rows
        found = [rows.get(line[0]) for line in lines]
        current = _settle(found, lines, admission.periods, amount, cost, self.now(), self._calendar)
        for line, row in zip(lines, current, strict=True):
            rows[line[0]] = row

    async def status(self, budget_id: str, window: Window) -> tuple[int, int, float]:
        now = self.now()
        period, ends = window_of(window, now)
        _, spent, reserved = _current(self._rows.get(budget_id), period)
        return spent, reserved, ends


class SQLiteBudgetStore:
    """Budgets in a local SQLite file (the embedded default for ``onion serve``): spend
    survives restarts. Each reserve and settle is one ``BEGIN IMMEDIATE`` transaction,
    run in a worker thread, so several worker processes sharing the file stay atomic.

    Each running call's reservation is also a row of ``budget_hold`` that expires after
    ``hold_seconds`` (default an hour: longer than any call), so the reservations of a
    process that stopped mid-call are released then, without one worker's restart
    releasing another's live reservations.
    """

    def __init__(
        self, path: str | Path, *, clock: Callable[[], float] | None = None, hold_seconds: float = 3600.0
    ) -> None:
        self.now = clock or time.time
        self.hold_seconds = hold_seconds
        self._calendar = _Calendar()
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS budget "
            "(id TEXT PRIMARY KEY, period INTEGER NOT NULL, spent INTEGER NOT NULL, reserved INTEGER NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS budget_hold (hold TEXT NOT NULL, id TEXT NOT NULL, period INTEGER NOT NULL, "
            "amount INTEGER NOT NULL, expires REAL NOT NULL, PRIMARY KEY (hold, id))"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS budget_hold_expires ON budget_hold (expires)")

    def _rows(self, ids: list[str]) -> list[Row | None]:
        marks = ",".join("?" * len(ids))
        found = {
            row[0]: [row[1], row[2], row[3]]
            for row in self._db.execute(f"SELECT id, period, spent, reserved FROM budget WHERE id IN ({marks})", ids)
        }
        return [found.get(budget_id) for budget_id in ids]

    def _write(self, ids: list[str], rows: list[Row]) -> None:
        self._db.executemany(
            "INSERT INTO budget (id, period, spent, reserved) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET period = excluded.period, spent = excluded.spent, "
            "reserved = excluded.reserved",
            [(budget_id, *row) for budget_id, row in zip(ids, rows, strict=True)],
        )

    def _release_expired(self, now: float) -> None:
        # Holds past their expiry belong to calls whose process stopped (one indexed read,
        # usually empty). A hold from an earlier window is only deleted: that window is over.
        expired = self._db.execute("SELECT id, period, amount FROM budget_hold WHERE expires <= ?", (now,)).fetchall()
        if expired:
            self._db.executemany(
                "UPDATE budget SET reserved = MAX(0, reserved - ?) WHERE id = ? AND period = ?",
                [(amount, budget_id, period) for budget_id, period, amount in expired],
            )
            self._db.execute("DELETE FROM budget_hold WHERE expires <= ?", (now,))

    def _reserve_sync(self, lines: Sequence[BudgetLine], amount: int) -> Admission:
        ids = [line[0] for line in lines]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                now = self.now()
                self._release_expired(now)
                current, admission = _reserve(self._rows(ids), lines, amount, now, self._calendar)
                if admission.refused < 0:
                    self._write(ids, current)
                    admission.hold = hold = _member()
                    expires = now + self.hold_seconds
                    self._db.executemany(
                        "INSERT INTO budget_hold (hold, id, period, amount, expires) VALUES (?, ?, ?, ?, ?)",
                        [
                            (hold, budget_id, row[0], amount, expires)
                            for budget_id, row in zip(ids, current, strict=True)
                        ],
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return admission

    def _settle_sync(self, lines: Sequence[BudgetLine], admission: Admission, amount: int, cost: int) -> None:
        ids = [line[0] for line in lines]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                held = [
                    self._db.execute(
                        "DELETE FROM budget_hold WHERE hold = ? AND id = ?", (admission.hold, budget_id)
                    ).rowcount
                    == 1
                    for budget_id in ids
                ]
                rows = self._rows(ids)
                current = _settle(rows, lines, admission.periods, amount, cost, self.now(), self._calendar, held)
                self._write(ids, current)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    async def reserve(self, lines: Sequence[BudgetLine], amount: int) -> Admission:
        return await anyio.to_thread.run_sync(self._reserve_sync, lines, amount)

    async def settle(self, lines: Sequence[BudgetLine], admission: Admission, amount: int, cost: int) -> None:
        await anyio.to_thread.run_sync(self._settle_sync, lines, admission, amount, cost)

    async def status(self, budget_id: str, window: Window) -> tuple[int, int, float]:
        period, ends = window_of(window, self.now())
        with self._lock:
            (row,) = self._rows([budget_id])
        _, spent, reserved = _current(row, period)
        return spent, reserved, ends

    async def aclose(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()


# The calendar in Lua (Redis 5+ runs Lua 5.1: numbers are doubles, exact for integers
# below 2^53, so nano-dollars up to $9M). Howard Hinnant's civil-date algorithms.
_CALENDAR = """
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
local function window_of(window, now)
  local days = math.floor(now / 86400)
  if window == 'day' then return days, (days + 1) * 86400 end
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  local month = y * 12 + m - 1
  local next_month = month + 1
  return month, days_from_civil(math.floor(next_month / 12), next_month % 12 + 1, 1) * 86400
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
-- One budget is three keys: h (p: window number, s: spent, r: reserved), z (the holds of
-- running calls, member -> expiry) and a (member -> amount held).
local function row(h, z, a, period, ends)
  local r = redis.call('HMGET', h, 'p', 's', 'r')
  if tonumber(r[1]) ~= period then
    -- A new window: the old one's spend and holds stay with it.
    redis.call('HSET', h, 'p', period, 's', 0, 'r', 0)
    redis.call('DEL', z, a)
    redis.call('EXPIREAT', h, ends + 86400)
    return 0, 0
  end
  local reserved = tonumber(r[3])
  -- Holds past their expiry belong to calls whose process died: release them.
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, 100)
  if #old > 0 then
    local amounts = redis.call('HMGET', a, unpack(old))
    for j = 1, #old do reserved = reserved - tonumber(amounts[j] or '0') end
    if reserved < 0 then reserved = 0 end
    redis.call('ZREM', z, unpack(old))
    redis.call('HDEL', a, unpack(old))
    redis.call('HSET', h, 'r', reserved)
  end
  return tonumber(r[2]), reserved
end
"""

# KEYS: three per budget (see row). ARGV: amount, member, hold seconds, then per budget:
# limit, window. Returns {-1, 0, 0, period...} when admitted, else {refused index, ms to
# wait, resets_at in s}. Admitted, the third value is the least room left (nano-dollars).
_RESERVE = (
    _CALENDAR
    + """
local amount, member, hold = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local n = #KEYS / 3
local periods, ends_of = {}, {}
local refused, wait, resets_at, remaining = -1, 0, 0, 0
for i = 1, n do
  local limit, window = tonumber(ARGV[2 * i + 2]), ARGV[2 * i + 3]
  local period, ends = window_of(window, now)
  local spent, reserved = row(KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i], period, ends)
  periods[i], ends_of[i] = period, ends
  local room = limit - spent - reserved - amount
  if room < 0 and ends - now > wait then
    refused, wait, resets_at = i - 1, ends - now, ends
  end
  if i == 1 or room < remaining then remaining = room end
end
if refused >= 0 then return {refused, math.ceil(wait * 1000), resets_at} end
for i = 1, n do
  local h, z, a = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  redis.call('HINCRBY', h, 'r', amount)
  redis.call('ZADD', z, now + hold, member)
  redis.call('HSET', a, member, amount)
  redis.call('EXPIREAT', z, ends_of[i] + 86400)
  redis.call('EXPIREAT', a, ends_of[i] + 86400)
end
return {-1, 0, math.max(remaining, 0), unpack(periods)}
"""
)

# KEYS: three per budget. ARGV: amount, cost, member, then per budget: the window number
# it was reserved in, window. A hold already released (expired, or its window ended)
# takes nothing back out of reserved; the cost is charged either way.
_SETTLE = (
    _CALENDAR
    + """
local amount, cost, member = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
for i = 1, #KEYS / 3 do
  local h, z, a = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local period, ends = window_of(ARGV[2 * i + 3], now)
  local _, reserved = row(h, z, a, period, ends)
  local held = redis.call('ZREM', z, member)
  redis.call('HDEL', a, member)
  if held == 1 and tonumber(ARGV[2 * i + 2]) == period then
    redis.call('HSET', h, 'r', math.max(0, reserved - amount))
  end
  redis.call('HINCRBY', h, 's', cost)
end
return 1
"""
)

# KEYS: three per budget. ARGV: member, then per budget: window. Takes back a hold that a
# reserve whose answer came too late may have made (the amount it holds, if it is there).
_RELEASE = (
    _CALENDAR
    + """
local member = ARGV[1]
for i = 1, #KEYS / 3 do
  local h, z, a = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local period, ends = window_of(ARGV[i + 1], now)
  local _, reserved = row(h, z, a, period, ends)
  local amount = tonumber(redis.call('HGET', a, member) or '0')
  if redis.call('ZREM', z, member) == 1 then
    redis.call('HDEL', a, member)
    redis.call('HSET', h, 'r', math.max(0, reserved - amount))
  end
end
return 1
"""
)

# KEYS: one budget's hash. ARGV: window. Returns {spent, reserved, resets_at}.
_STATUS = (
    _CALENDAR
    + """
local period, ends = window_of(ARGV[1], now)
local r = redis.call('HMGET', KEYS[1], 'p', 's', 'r')
if tonumber(r[1]) ~= period then return {0, 0, ends} end
return {tonumber(r[2]), tonumber(r[3]), ends}
"""
)

# Tests check the Lua calendar against ``window_of`` at given times.
_CALENDAR_AT = _CALENDAR + "\nlocal p, e = window_of(ARGV[1], tonumber(ARGV[2]))\nreturn {p, e}\n"


class RedisBudgetStore:
    """Budgets in Redis, shared by every gateway process and machine, through
    ``onion.RedisClient`` (a worker thread per call). Reserve and settle are each one Lua
    script (atomic on the server), and the window is read from the Redis server's clock,
    so every process agrees on when it resets. Each budget is three keys under one hash
    tag (``{id}``: totals, holds, held amounts); they expire a day after the window ends.

    Each running call's reservation is a **hold** that expires after ``hold_seconds``
    (default an hour: longer than any call): a process killed mid-call does not keep
    its reservations until the window resets. A call that outlives its hold is still
    charged its real cost when it ends. ``deadline``: seconds per Redis operation (past
    it the store is down for that call: fail open or closed, as the layer says).
    """

    def __init__(
        self, url: str, *, client: RedisClient | None = None, hold_seconds: float = 3600.0, deadline: float = 0.05
    ) -> None:
        self.redis = client or RedisClient(url, timeout=1.0, deadline=deadline)
        self.hold_seconds = hold_seconds
        self._reserve = self.redis.script(_RESERVE)
        self._settle = self.redis.script(_SETTLE)
        self._status = self.redis.script(_STATUS)
        self._release = self.redis.script(_RELEASE)

    @staticmethod
    def _keys(lines: Sequence[BudgetLine]) -> list[str]:
        keys: list[str] = []
        for line in lines:
            tag = f"{{{line[0]}}}"
            keys.extend((tag, tag + ":holds", tag + ":held"))
        return keys

    async def reserve(self, lines: Sequence[BudgetLine], amount: int) -> Admission:
        hold = _member()
        args: list[object] = [amount, hold, self.hold_seconds]
        for _, limit, window in lines:
            args.extend((limit, window))
        keys = self._keys(lines)
        try:
            answer = await self.redis.run(self._reserve, keys, args)
        except BaseException:
            # Past the deadline (or cancelled) the script may still have run: Redis executes
            # what it received, only its answer came late. Take back the hold it would have
            # made, so a call refused for a slow store keeps nothing reserved for an hour.
            await self._take_back(keys, hold, [window for _, _, window in lines])
            raise
        refused = int(answer[0])
        if refused >= 0:
            return Admission((), refused, int(answer[1]) / 1000, float(answer[2]))
        return Admission([int(period) for period in answer[3:]], hold=hold, remaining=int(answer[2]))

    async def _take_back(self, keys: list[str], hold: str, windows: list[str]) -> None:
        # Shielded (a cancelled reserve is taken back too) and past the client's breaker,
        # which the late answer may just have opened; best effort: if Redis is down as well,
        # the hold expires after ``hold_seconds``. Redis runs the script even if this
        # answer is late too.
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            with anyio.fail_after(self.redis.timeout):
                await anyio.to_thread.run_sync(self._release, keys, [hold, *windows], abandon_on_cancel=True)

    async def settle(self, lines: Sequence[BudgetLine], admission: Admission, amount: int, cost: int) -> None:
        args: list[object] = [amount, cost, admission.hold]
        for (_, _, window), period in zip(lines, admission.periods, strict=True):
            args.extend((period, window))
        await self.redis.run(self._settle, self._keys(lines), args)

    async def status(self, budget_id: str, window: Window) -> tuple[int, int, float]:
        spent, reserved, ends = await self.redis.run(self._status, [f"{{{budget_id}}}"], [window])
        return int(spent), int(reserved), float(ends)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()


_MEMBERS = itertools.count()
_PROCESS = os.urandom(6).hex()


def _member() -> str:
    # Unique across processes: a hold is named by the process and a counter.
    return f"{_PROCESS}:{next(_MEMBERS)}"
