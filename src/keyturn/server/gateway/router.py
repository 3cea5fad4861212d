"""`ExactRoutes`: the gateway's hot routes by exact ``(method, path)``, in front of Starlette.

Starlette's router matches every route's regex in turn and builds request and response
objects; for the routes a gateway calls on every request of its own that cost more than
the answer (bench/README.md, "The validate routes are bound by Starlette"). `ExactRoutes`
finds the `GatewayEndpoint` objects among the Starlette app's routes and calls the same
objects itself for an exact match; anything else goes to the Starlette app. It sits inside
`keyturn.server.telemetry.RequestTelemetry`, so the request id, the access line and the
metrics are those of every other request.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from keyturn.server.errors import client_gone
from keyturn.server.gateway.endpoints import GatewayEndpoint
from keyturn.server.state import KeyturnState

__all__ = ["ExactRoutes"]


class ExactRoutes:
    """The ASGI app that dispatches the app's `GatewayEndpoint` routes by exact lookup.

    It sets ``scope["route"]`` (the `Route`, whose template the telemetry counts) as
    Starlette's router does. A `ClientDisconnect` becomes the 499 of
    `keyturn.server.errors.client_gone`, as Starlette's exception handler renders it;
    any other exception propagates to `RequestTelemetry`, which answers 500.
    """

    def __init__(self, app: Starlette, *, state: KeyturnState) -> None:
        self.app = app
        self.table: dict[tuple[str, str], tuple[Route, GatewayEndpoint]] = {}
        for route in app.routes:
            if isinstance(route, Route) and isinstance(route.endpoint, GatewayEndpoint):
                route.endpoint.bind(state)
                for method in route.methods or ():
                    if method != "HEAD":  # Starlette's GET routes also take HEAD
                        self.table[method, route.path] = (route, route.endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            found = self.table.get((scope["method"], scope["path"]))
            if found is not None:
                scope["route"], endpoint = found
                try:
                    await endpoint(scope, receive, send)
                except ClientDisconnect as exc:
                    response = await client_gone(Request(scope), exc)
                    await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        # The Starlette app's attributes (``routes``, ``state``), as the listener's app.
        return getattr(self.app, name)
