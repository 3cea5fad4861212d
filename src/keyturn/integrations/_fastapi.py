"""The FastAPI half of `keyturn.integrations.starlette` (imports FastAPI, so it is optional).

Annotations here are resolved by FastAPI at run time, so every type they name is a
module global.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.requests import Request

from keyturn.core.tokens import VerifiedToken, parse_scope
from keyturn.errors import KeyturnError
from keyturn.integrations.starlette import KeyturnUser
from keyturn.rfc6750 import BearerFailure, bearer_token, failure_for
from keyturn.verify import Verifier

__all__ = ["BEARER_SCHEME", "scopes_dependency"]

#: The security scheme FastAPI lists in OpenAPI (``components.securitySchemes``).
BEARER_SCHEME: Final = HTTPBearer(
    auto_error=False,
    scheme_name="KeyturnBearer",
    bearerFormat="JWT",
    description="A Keyturn access token: `Authorization: Bearer <token>`.",
)


class _Anonymous(Exception):  # noqa: N818 -- control flow, never escapes this module
    """The request carries no bearer credential."""


def _http_error(failure: BearerFailure) -> HTTPException:
    return HTTPException(failure.status, detail=failure.body["detail"], headers=failure.headers)


async def _verified(request: Request, verifier: Verifier | None) -> VerifiedToken:
    if verifier is not None:
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise _Anonymous
        return await verifier.verify(token)
    if "user" not in request.scope:
        raise RuntimeError(
            "require_scopes() needs verifier=..., or keyturn's authentication_middleware "
            "in front of the application"
        )
    user = request.scope["user"]
    if not isinstance(user, KeyturnUser):
        raise _Anonymous
    return user.token


def scopes_dependency(
    scopes: Iterable[str], verifier: Verifier | None
) -> Callable[..., Awaitable[VerifiedToken]]:
    """Build the dependency `keyturn.integrations.starlette.require_scopes` returns."""
    required = frozenset(scope for value in scopes for scope in parse_scope(value))

    async def keyturn_token(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(BEARER_SCHEME),  # noqa: B008
    ) -> VerifiedToken:
        # `credentials` is declared for the OpenAPI document; the header is parsed by
        # Keyturn's stricter RFC 6750 reader instead.
        try:
            verified = await _verified(request, verifier)
            verified.require_scopes(required)
        except _Anonymous:
            raise _http_error(failure_for(None)) from None
        except KeyturnError as exc:
            raise _http_error(failure_for(exc)) from exc
        return verified

    return keyturn_token
