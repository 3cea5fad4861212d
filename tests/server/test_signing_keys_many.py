"""Many signing keys on one connection: the partial-index arbiter keeps working.

PostgreSQL switches a prepared statement to a generic plan after five executions; an
``ON CONFLICT`` arbiter whose partial-index predicate was a bound parameter then matched
no index and every later insert failed (schemathesis found it as a 500 from
``POST /v1/admin/signing-keys/rotate``).
"""

from __future__ import annotations

import httpx

ROTATIONS = 8


async def test_signing_keys_rotate_again_and_again(admin: httpx.AsyncClient) -> None:
    kids = []
    for number in range(ROTATIONS):
        response = await admin.post(
            "/v1/admin/signing-keys/rotate", params={"immediately": str(number % 2 == 0).lower()}
        )
        assert response.status_code == 201, response.text
        kids.append(response.json()["kid"])

    listed = (await admin.get("/v1/admin/signing-keys")).json()["signing_keys"]
    assert set(kids) <= {key["kid"] for key in listed}
    assert [key["state"] for key in listed].count("active") == 1
