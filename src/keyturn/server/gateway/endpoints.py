"""Raw-ASGI endpoints of the gateway's hot routes, in Starlette's endpoint shape.

Each endpoint's ``respond(scope, receive)`` computes the route's `Answer`. Called as an
ASGI app (Starlette's `Route` uses a class endpoint as it is) it sends that answer;
`keyturn.server.gateway.router.ExactRoutes` calls ``respond`` on the same object and the
request telemetry sends the answer with the request id. `ExactRoutes` binds them to the
listener's `KeyturnState` (unbound, they read it from ``scope["app"]``, as Starlette sets
it). Failures are raised as a Starlette handler raises them: `ClientDisconnect` for a
client that hung up mid-body; anything unexpected propagates to the 500 handling.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar

from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from keyturn.errors import KeyturnError
from keyturn.server.dpop import add_dpop_nonce
from keyturn.server.errors import RequestRejectedError, oauth_error
from keyturn.server.gateway import answers
from keyturn.server.gateway.answers import Answer, JwksStyle, Refuse
from keyturn.server.gateway.dpop import check_request, dpop_proofs, original_request
from keyturn.server.http.bodies import check_declared_size, read_body
from keyturn.server.requests import (
    MAX_BODY_BYTES,
    authorization,
    check_json_media_type,
    parse_body,
    read_params,
)
from keyturn.server.state import KeyturnState, client_address
from keyturn.server.telemetry import JTI_SCOPE_KEY, REQUEST_ID_SCOPE_KEY, request_header

__all__ = [
    "EXT_AUTHZ_METHODS",
    "EXT_AUTHZ_PATH",
    "ExtAuthzEndpoint",
    "GatewayEndpoint",
    "JwksEndpoint",
    "LegacyTokenEndpoint",
    "TokenGrant",
    "V1TokenEndpoint",
    "V1ValidateEndpoint",
    "ValidateBodyEndpoint",
    "ValidateRequestEndpoint",
]

Model = TypeVar("Model", bound=BaseModel)

#: Where Envoy's ext_authz ``path_prefix`` points (after the listener's URL prefix).
EXT_AUTHZ_PATH: Final = "/v1/ext_authz"
#: The methods it takes (HEAD with GET): the client's; another one is a 405, denied.
EXT_AUTHZ_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class TokenAnswer(Protocol[Model]):  # type: ignore[misc]
    """`keyturn.server.legacy.answer_authenticate` / ``answer_refresh``."""

    def __call__(
        self, state: KeyturnState, body: Model, /, *, address: str, request_id: str | None
    ) -> Awaitable[Response]: ...


#: `keyturn.server.v1.token`: a token request's parameters to its answer (errors raised).
TokenGrant = Callable[[KeyturnState, Scope, dict[str, str]], Awaitable[Response]]


class GatewayEndpoint(ABC):
    """A hot route's endpoint: an ASGI app bound to the listener's state once.

    ``logs`` says whether answering may write a log line (the service's, the database's):
    `keyturn.server.gateway.router.ExactRoutes` then binds the request id into the log
    context first. The validate routes and the JWK Set answer without logging, and skip it.
    """

    _state: KeyturnState | None = None
    logs: ClassVar[bool] = True

    def bind(self, state: KeyturnState) -> None:
        """Serve ``state`` (the one `KeyturnState` of the listener that routes here)."""
        self._state = state

    def state(self, scope: Scope) -> KeyturnState:
        """The bound state, or the Starlette app's when unbound."""
        if self._state is not None:
            return self._state
        state: KeyturnState = scope["app"].state.keyturn
        return state

    @abstractmethod
    async def respond(self, scope: Scope, receive: Receive) -> Answer:
        """The route's answer to the request (success or failure), not sent yet."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = await self.respond(scope, receive)
        if answer.jti is not None:
            scope[JTI_SCOPE_KEY] = answer.jti  # for the access line
        await answer.send(send)


class ValidateRequestEndpoint(GatewayEndpoint):
    """``GET /validate_request`` (Bearer header) -> 200 ``{}`` or 401, for nginx."""

    logs = False

    async def respond(self, scope: Scope, receive: Receive) -> Answer:
        verify = (self._state or self.state(scope)).service.validate
        return answers.validate_request(verify, authorization(scope))


class V1ValidateEndpoint(GatewayEndpoint):
    """``GET /v1/validate[?scope=a+b]``: 200 with identity headers, or 401/403.

    A request with ``Authorization: DPoP`` or a ``DPoP`` header takes the DPoP path
    (`keyturn.server.gateway.dpop`); a Bearer one is answered as before (a bound token
    presented as Bearer is refused by `KeyturnService.validate`).
    """

    logs = False

    async def respond(self, scope: Scope, receive: Receive) -> Answer:
        service = (self._state or self.state(scope)).service
        headers = scope["headers"]
        proofs = dpop_proofs(headers)
        original = original_request(headers) if proofs else None
        required = answers.required_scopes(scope["query_string"])
        return await check_request(service, authorization(scope), proofs, original, required)


class ExtAuthzEndpoint(GatewayEndpoint):
    """``{prefix}/v1/ext_authz/{path}``, any method: Envoy's ext_authz HTTP service.

    Envoy sends the check with the client's method to ``path_prefix`` + the client's path
    and query, with the headers its ``allowed_headers`` lets through. The original URL is
    ``{X-Forwarded-Proto or http}://{Host}/{path}{?query}``; the scopes required come from
    ``X-Keyturn-Scope`` (the query is the client's). Answered by the same `check_request`
    as ``/v1/validate``.
    """

    logs = False

    def __init__(self, prefix: str) -> None:
        self._prefix = f"{prefix}{EXT_AUTHZ_PATH}".encode("ascii")

    async def respond(self, scope: Scope, receive: Receive) -> Answer:
        service = (self._state or self.state(scope)).service
        headers = scope["headers"]
        proofs = dpop_proofs(headers)
        scopes = request_header(headers, b"x-keyturn-scope")
        required = answers.header_scopes(None if scopes is None else scopes.decode("latin-1"))
        original = (scope["method"], self.original_url(scope)) if proofs else None
        return await check_request(service, authorization(scope), proofs, original, required)

    def original_url(self, scope: Scope) -> str:
        """The client's URL: the path after the prefix, its query, the Host and proto."""
        raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        path = raw.split(b"?", 1)[0].removeprefix(self._prefix).decode("latin-1") or "/"
        headers = scope["headers"]
        host = (request_header(headers, b"host") or b"").decode("latin-1").strip()
        proto = request_header(headers, b"x-forwarded-proto") or b"http"
        scheme = proto.decode("latin-1").split(",", 1)[0].strip().lower() or "http"
        query = scope["query_string"].decode("latin-1")
        return f"{scheme}://{host}{path}{'?' + query if query else ''}"


async def _json_body(scope: Scope, receive: Receive) -> bytes:
    """The body by `keyturn.server.requests.read_json`'s rules (media type, then size).

    Raises:
        RequestRejectedError: 415 or 413.
        ClientDisconnect: the client hung up mid-body.
    """
    headers = scope["headers"]
    content_type = request_header(headers, b"content-type") or b""
    check_json_media_type(content_type.decode("latin-1").split(";", 1)[0].strip().lower())
    check_declared_size(request_header(headers, b"content-length"), MAX_BODY_BYTES)
    return await read_body(receive, MAX_BODY_BYTES)


class ValidateBodyEndpoint(GatewayEndpoint):
    """``POST /validate {jwt}`` -> ``{"result": true}`` or 401 ``{}`` (errors: ``refuse``)."""

    logs = False

    def __init__(self, refuse: Refuse) -> None:
        self._refuse = refuse

    async def respond(self, scope: Scope, receive: Receive) -> Answer:
        verify = (self._state or self.state(scope)).service.validate
        try:
            body = await _json_body(scope, receive)
        except RequestRejectedError as exc:
            return Answer.of(self._refuse(exc))
        return answers.validate_body(verify, body, self._refuse)


class JwksEndpoint(GatewayEndpoint):
    """The JWK Set in ``style``, encoded once per key set (a reload installs a new one)."""

    logs = False

    def __init__(self, style: JwksStyle) -> None:
        self._style = style
        self._for: object = None
        self._answer = Answer(200, (), b"")

    async def respond(self, scope: Scope, receive: Receive) -> Answer:
        keys = (self._state or self.state(scope)).service.key_set
        if keys is not self._for:
            self._answer, self._for = answers.jwks(keys, self._style), keys
        return self._answer


class LegacyTokenEndpoint(GatewayEndpoint, Generic[Model]):
    """JWThenticator's ``POST /authenticate`` and ``POST /refresh``.

    The body is read and validated against ``model`` first: a refused body (media type,
    size, JSON, fields) is answered by ``refuse`` before any rate-limit hit or service
    call. A well-formed one goes to ``answer``, which renders its own errors.
    """

    def __init__(self, model: type[Model], answer: TokenAnswer[Model], refuse: Refuse) -> None:
        self._model = model
        self._answer_for: Callable[..., Awaitable[Response]] = answer
        self._refuse = refuse

    async def respond(self, scope: Scope, receive: Receive) -> Answer:
        state = self._state or self.state(scope)
        try:
            parsed = parse_body(self._model, await _json_body(scope, receive))
        except RequestRejectedError as exc:
            return Answer.of(self._refuse(exc))
        request_id: Any = scope.get(REQUEST_ID_SCOPE_KEY)
        response = await self._answer_for(
            state, parsed, address=client_address(scope), request_id=request_id
        )
        return Answer.of(response)


class V1TokenEndpoint(GatewayEndpoint):
    """``POST /v1/token`` (RFC 6749 §4.4, §6): the body read by `read_params`, then ``grant``.

    ``grant`` (`keyturn.server.v1.token`) turns the parameters into the §5.1 answer and
    raises its errors; they are answered in the §5.2 style (`oauth_error`, a 413/415 a
    problem document). Every answer carries a fresh ``DPoP-Nonce`` while the server
    requires nonces (`add_dpop_nonce`).
    """

    def __init__(self, grant: TokenGrant) -> None:
        self._grant = grant

    async def respond(self, scope: Scope, receive: Receive) -> Answer:
        state = self._state or self.state(scope)
        try:
            response = await self._grant(state, scope, await read_params(scope, receive))
        except KeyturnError as exc:
            response = oauth_error(exc)
        return Answer.of(add_dpop_nonce(state, response))
