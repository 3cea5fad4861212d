r"""A FastAPI service that verifies Keyturn tokens locally, against the issuer's JWKS.

``Depends(require_scopes(...))`` hands each endpoint the token's typed claims, answers
RFC 6750 401/403 responses, and puts the bearer scheme in ``/docs`` ("Authorize").

Try it: paste this into bash at the repository's root (``pip install 'keyturn[fastapi]'
uvicorn``; ``curl``). It starts Keyturn, creates a key that may ask for ``orders:read``,
trades it for a token, starts this service on port 8000 and calls it::

    export KEYTURN_URL=${KEYTURN_URL:-http://localhost:8080}  # where Keyturn listens
    export KEYTURN_ISSUER=$KEYTURN_URL    # the tokens' iss: Keyturn and this service agree
    SERVICE=http://localhost:${SERVICE_PORT:-8000}
    keyturn serve &                       # data in ./.keyturn; or run it in another terminal
    until curl -fso /dev/null "$KEYTURN_URL/healthz"; do sleep 0.2; done  # wait until ready
    KEY=$(keyturn keys create --name orders-demo --scope orders:read --json |
          python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
    TOKEN=$(curl -fsS -u ":$KEY" -d grant_type=client_credentials "$KEYTURN_URL/v1/token" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
    ALLOW_INSECURE_HTTP=1 python3 examples/fastapi_service.py &   # http: for localhost only
    until curl -fso /dev/null "$SERVICE/health"; do sleep 0.2; done
    call() {  # METHOD PATH: print what the service answers
      curl -so /dev/null -w "$1 $2: %{http_code}\n" -X "$1" "$SERVICE$2" \
        -H "Authorization: Bearer $TOKEN"
    }
    call GET /orders
    call POST /orders
    kill %2 %1; wait                      # stop the service and Keyturn

Among the servers' log lines it prints (the token has ``orders:read``, not ``orders:write``)::

    GET /orders: 200
    POST /orders: 403

Keyturn elsewhere (another port, behind a proxy)? Set ``KEYTURN_URL`` to the URL this
service reaches it at, and ``KEYTURN_ISSUER`` to the same value **for Keyturn too**: a
token is accepted only from the exact issuer (``KEYTURN_ISSUER``, default
``http://localhost:8080`` whatever port Keyturn listens on). ``KEYTURN_AUDIENCE``
likewise. ``tests/examples/test_recipes.py`` runs this recipe.
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
    uvicorn.run(app, port=int(os.environ.get("SERVICE_PORT", "8000")))
