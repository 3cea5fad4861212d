"""The FastAPI half of `keyturn.integrations.starlette` (imports FastAPI, so it is optional).

Annotations here are resolved by FastAPI at run time, so every type they name is a
module global. The import goes one way: `keyturn.integrations.starlette` imports this
module (lazily) and passes in how to read the token its middleware verified.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Final, TypeAlias

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.requests import Request

from keyturn.core.tokens import VerifiedToken, parse_scope
from keyturn.errors import KeyturnError
from keyturn.rfc6750 import BearerFailure
from keyturn.rfc9449 import Scheme, access_credential, claimed_scheme, failure_for

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


#: Verifies a request's credential (``(scheme, token)``), with its proof for DPoP.
VerifyRequest: TypeAlias = Callable[[Request, tuple[Scheme, str]], Awaitable[VerifiedToken]]


async def _verified(
    request: Request,
    verify: VerifyRequest | None,
    authenticated: Callable[[Request], VerifiedToken | None],
) -> VerifiedToken:
    if verify is not None:
        credential = access_credential(request.headers.get("authorization"))
        if credential is None:
            raise _Anonymous
        return await verify(request, credential)
    verified = authenticated(request)
    if verified is None:
        raise _Anonymous
    return verified


def scopes_dependency(
    scopes: Iterable[str],
    verify: VerifyRequest | None,
    authenticated: Callable[[Request], VerifiedToken | None],
) -> Callable[..., Awaitable[VerifiedToken]]:
    """Build the dependency `keyturn.integrations.starlette.require_scopes` returns.

    ``verify`` checks the request's credential (the dependency's own verifier);
    ``authenticated`` reads the token an authentication middleware already verified off
    the request (None: anonymous), used when there is no ``verify``.
    """
    required = frozenset(scope for value in scopes for scope in parse_scope(value))

    async def keyturn_token(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(BEARER_SCHEME),  # noqa: B008
    ) -> VerifiedToken:
        # `credentials` is declared for the OpenAPI document; the header is parsed by
        # Keyturn's stricter RFC 6750 / RFC 9449 reader instead.
        verified: VerifiedToken | None = None
        try:
            verified = await _verified(request, verify, authenticated)
            verified.require_scopes(required)
        except _Anonymous:
            raise _http_error(failure_for(None)) from None
        except KeyturnError as exc:
            # The scheme of the header; after a verified bound token, DPoP (it came so).
            scheme = claimed_scheme(request.headers.get("authorization"))
            if verified is not None:
                scheme = "dpop" if verified.jkt else "bearer"
            raise _http_error(failure_for(exc, scheme=scheme)) from exc
        return verified

    return keyturn_token
