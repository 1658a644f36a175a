"""``GET /admin/spend``: placeholder until the spend ledger is wired."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._admin import AdminRoutes

if TYPE_CHECKING:
    from ..config import Gateway


def add_spend_routes(routes: AdminRoutes, gateway: Gateway) -> None:
    """Register ``GET /admin/spend`` (when the gateway keeps a spend ledger)."""
