"""``GET /admin/spend?key=…&team=…&from=YYYY-MM-DD&to=YYYY-MM-DD``: the spend report.

The ledger (``onion._spend``) lives where ``[state]`` says and is fed by every ``budget``
layer of the stack (its ``on_spend``, unless the stack set its own): each settled call
with its real cost, cache hits at zero. ``from`` defaults to the first of this month,
``to`` to today (UTC, inclusive); a range over 366 days or a bad date is a 400.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from .._spend import (
    LedgerFeed,
    MemorySpendLedger,
    RedisSpendLedger,
    SpendLedger,
    SQLiteSpendLedger,
    spend_report,
    today,
)
from ..errors import BadRequest
from ._admin import AdminAnswer, AdminRequest, AdminRoutes

if TYPE_CHECKING:
    from ..config import Gateway

__all__ = ["add_spend_routes"]


def _ledger(gateway: Gateway) -> SpendLedger:
    from ..config import state_settings

    backend, path, redis_url = state_settings(gateway.config)
    if backend == "redis" and redis_url:
        return RedisSpendLedger(redis_url)
    if backend == "sqlite" and path:
        return SQLiteSpendLedger(path)
    return MemorySpendLedger()


def _date(query: dict[str, str] | object, name: str, default: str) -> str:
    value = getattr(query, "get", lambda *_: None)(name) or default
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise BadRequest(f"query {name!r}: expected a date YYYY-MM-DD, not {value[:40]!r}", param=name) from None


def add_spend_routes(routes: AdminRoutes, gateway: Gateway) -> None:
    """Register ``GET /admin/spend`` and feed the ledger from the stack's budget layers
    (only when the admin API is on and the stack has a budget layer)."""
    budgets = [layer for layer in gateway.stack.layers if "budget" in getattr(layer, "provides", ())]
    if not gateway.config.server.admin_key or not budgets:
        return
    ledger = _ledger(gateway)
    feed = LedgerFeed(ledger)
    for layer in budgets:
        if getattr(layer, "on_spend", None) is None:
            layer.on_spend = feed  # type: ignore[attr-defined]

    async def spend(request: AdminRequest) -> AdminAnswer:
        now = today()
        last = _date(request.query, "to", now)
        first = _date(request.query, "from", now[:8] + "01")
        if first > last:
            raise BadRequest("query 'from' is after 'to'", param="from")
        if (date.fromisoformat(last) - date.fromisoformat(first)).days > 366:
            raise BadRequest("the range is over 366 days; ask for less", param="from")
        rows = await ledger.rows(first, last)
        report = spend_report(rows, first, last, request.query.get("key"), request.query.get("team"))
        return AdminAnswer(200, report)

    routes.add("GET", "/admin/spend", spend)
