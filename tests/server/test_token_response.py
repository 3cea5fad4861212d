"""The token response assembled from pre-encoded parts writes what `JSONResponse` would."""

from __future__ import annotations

import dataclasses

import pytest
from starlette.responses import JSONResponse

from keyturn.core.tokens import IssuedToken
from keyturn.server.errors import NO_STORE
from keyturn.server.routes.oauth import token_response
from keyturn.service import TokenPair

ACCESS = IssuedToken(
    token="eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJrZXk6YSJ9.c2ln",
    jti="j",
    kid="k",
    issued_at=1_000,
    expires_at=1_900,
    claims={},
)
DPOP_BOUND = dataclasses.replace(ACCESS, claims={"cnf": {"jkt": "thumbprint"}})


@pytest.mark.parametrize(
    "pair",
    [
        TokenPair(access=ACCESS, scopes=frozenset()),
        TokenPair(access=ACCESS, scopes=frozenset({"read", "wr!te", "é"})),
        TokenPair(access=ACCESS, scopes=frozenset({"a"}), refresh_token='kt_rt_x"y'),
        TokenPair(access=DPOP_BOUND, scopes=frozenset({"a"})),
    ],
    ids=["no-scope", "scopes", "refresh-token", "dpop-bound"],
)
def test_the_body_and_headers_are_json_responses(pair: TokenPair) -> None:
    expected: dict[str, object] = {
        "access_token": pair.access.token,
        "token_type": "DPoP" if pair.access is DPOP_BOUND else "Bearer",
        "expires_in": 900,
        "scope": " ".join(sorted(pair.scopes)),
    }
    if pair.refresh_token is not None:
        expected["refresh_token"] = pair.refresh_token
    reference = JSONResponse(expected, headers=NO_STORE)

    response = token_response(pair)

    assert response.body == reference.body
    assert response.raw_headers == reference.raw_headers
