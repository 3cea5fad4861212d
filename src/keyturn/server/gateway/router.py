"""`ExactRoutes`: the gateway's hot routes by exact ``(method, path)``, beside Starlette's router.

Starlette's router matches every route's regex in turn and builds request and response
objects; for the routes a gateway calls on every request of its own that cost more than
the answer (bench/README.md, "The validate routes are bound by Starlette"). `ExactRoutes`
finds the `GatewayEndpoint` objects among the Starlette app's routes and asks the same
objects for their answer on an exact match. `keyturn.server.telemetry.RequestTelemetry`
consults it first and sends the answer with the request id, so the request id, the
access line and the metrics are those of every other request; anything else goes to the
Starlette app.
"""

from __future__ import annotations

from typing import Final

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.routing import Route
from starlette.types import Receive, Scope

from keyturn.server.errors import client_gone
from keyturn.server.gateway.answers import Answer
from keyturn.server.gateway.endpoints import GatewayEndpoint
from keyturn.server.state import KeyturnState
from keyturn.server.telemetry import JTI_SCOPE_KEY, REQUEST_ID_SCOPE_KEY, bind_request_id

__all__ = ["ExactRoutes"]

_TRAILING: Final = "HEAD"  # Starlette's GET routes also take HEAD: left to its router


class ExactRoutes:
    """The app's `GatewayEndpoint` routes by exact ``(method, path)``.

    ``respond`` sets ``scope["route"]`` (the `Route`, whose template the telemetry counts)
    as Starlette's router does, and binds the request id into the log context when the
    endpoint ``logs`` while answering. A `ClientDisconnect` becomes the 499 of
    `keyturn.server.errors.client_gone`, as Starlette's exception handler renders it;
    any other exception propagates to `RequestTelemetry`, which answers 500.
    """

    def __init__(self, app: Starlette, *, state: KeyturnState) -> None:
        self.table: dict[tuple[str, str], tuple[Route, GatewayEndpoint]] = {}
        for route in app.routes:
            if isinstance(route, Route) and isinstance(route.endpoint, GatewayEndpoint):
                route.endpoint.bind(state)
                if route.param_convertors:  # /v1/ext_authz/{path}: left to Starlette
                    continue
                for method in route.methods or ():
                    if method != _TRAILING:
                        self.table[method, route.path] = (route, route.endpoint)

    async def respond(self, scope: Scope, receive: Receive) -> Answer | None:
        """The answer of the endpoint routed to, or None when no exact route matches."""
        found = self.table.get((scope["method"], scope["path"]))
        if found is None:
            return None
        scope["route"], endpoint = found
        if endpoint.logs:
            bind_request_id(scope[REQUEST_ID_SCOPE_KEY])
        try:
            answer = await endpoint.respond(scope, receive)
        except ClientDisconnect as exc:
            return Answer.of(await client_gone(Request(scope), exc))
        if answer.jti is not None:
            scope[JTI_SCOPE_KEY] = answer.jti
        return answer
