"""The HTTP gateway: a hand-written ASGI app that puts the onion behind HTTP APIs.

It sits outside the outermost layer. For each request it checks the API key, reads the
body, lets the route's dialect (``onion.wire``) decode it into a ``Request``, calls the
stack in the request's own task, and writes back what the dialect encodes from the
``Response``: JSON for a complete answer, Server-Sent Events for a stream. No framework
(it would cost more per request and, for some, run ``call_next`` in another task):
headers are prebuilt bytes, JSON goes through msgspec, a streamed chunk costs one small
encode and one ``send``.

- ``_app``: ``GatewayApp`` (dispatch, lifespan, routes, the call of the stack) and
  ``create_app`` for a built ``onion.config.Gateway``; ``served_routes`` lists its routes;
- ``_http``: the mechanics every route shares (reading headers and a bounded body, API
  keys, writing answers, safe header pairs, cancelling a stream on disconnect);
- ``_admin``: ``AdminRoutes``, the ``/admin/`` API behind ``[server] admin_key``, to
  which features add their routes (``AdminRequest`` in, ``AdminAnswer`` out).

``onion serve`` runs ``create_app`` under uvicorn; any ASGI server can serve it.
"""

from __future__ import annotations

from ._admin import AdminAnswer, AdminRequest, AdminRoutes
from ._app import GatewayApp, create_app, served_routes

__all__ = ["AdminAnswer", "AdminRequest", "AdminRoutes", "GatewayApp", "create_app", "served_routes"]
