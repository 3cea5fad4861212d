"""A FastAPI service that verifies Keyturn tokens locally, against the issuer's JWKS.

``Depends(require_scopes(...))`` hands each endpoint the token's typed claims, answers
RFC 6750 401/403 responses, and puts the bearer scheme in ``/docs`` ("Authorize").

Run it next to a Keyturn server (``pip install 'keyturn[fastapi]' uvicorn``)::

    keyturn serve &
    KEYTURN_URL=http://localhost:8080 ALLOW_INSECURE_HTTP=1 python examples/fastapi_service.py
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI

from keyturn.integrations.starlette import require_scopes
from keyturn.verify import JWKSVerifier, VerifiedToken


def create_app(
    keyturn_url: str, *, issuer: str, audience: str, allow_insecure_http: bool = False
) -> FastAPI:
    """The orders service: reading needs ``orders:read``, writing ``orders:write``."""
    verifier = JWKSVerifier(
        f"{keyturn_url.rstrip('/')}/.well-known/jwks.json",
        issuer=issuer,
        audience=audience,
        allow_insecure_http=allow_insecure_http,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await verifier.refresh()  # fail at start-up, not on the first request
        yield
        await verifier.aclose()

    app = FastAPI(title="Orders", lifespan=lifespan)
    read_orders = require_scopes("orders:read", verifier=verifier)
    write_orders = require_scopes("orders:write", verifier=verifier)

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/orders")
    async def list_orders(
        token: Annotated[VerifiedToken, Depends(read_orders)],
    ) -> dict[str, object]:
        return {"orders": [], "for": token.subject, "client_id": token.client_id}

    @app.post("/orders", status_code=201)
    async def create_order(
        token: Annotated[VerifiedToken, Depends(write_orders)],
    ) -> dict[str, object]:
        return {"created": True, "by": token.subject}

    return app


if __name__ == "__main__":
    url = os.environ.get("KEYTURN_URL", "http://localhost:8080")
    app = create_app(
        url,
        issuer=os.environ.get("KEYTURN_ISSUER", url),
        audience=os.environ.get("KEYTURN_AUDIENCE", "keyturn"),
        allow_insecure_http=os.environ.get("ALLOW_INSECURE_HTTP") == "1",  # local only
    )
    uvicorn.run(app, port=8000)
