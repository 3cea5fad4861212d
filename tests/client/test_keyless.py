"""The client with a private key (RFC 7523 ``private_key_jwt``) and DPoP (RFC 9449).

A scripted token endpoint and service behind `httpx.MockTransport` check every proof and
assertion the client sends with the core's own verifiers.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jwt
import pytest

from keyturn.client import (
    AsyncClient,
    Client,
    CredentialsRejectedError,
    KeyturnAuth,
    NoCredentialsError,
    TokenEndpointError,
)
from keyturn.core.assertions import (
    CLIENT_ASSERTION_TYPE,
    VerifiedAssertion,
    verify_client_assertion,
)
from keyturn.core.dpop import DPoPProof, access_token_hash, verify_dpop_proof
from keyturn.core.signing import SigningKey
from keyturn.errors import SigningKeyError
from keyturn.testing import FakeClock

KEYTURN = "https://keyturn.test"
TOKEN_URL = f"{KEYTURN}/v1/token"
SERVICE = "https://api.test/reports?page=2"
CLIENT_ID = "k_device17"
DEVICE = SigningKey.generate("ES256")
DPOP_KEY = SigningKey.generate("EdDSA")
NONCE_CHALLENGE = 'DPoP algs="ES256 EdDSA RS256", error="use_dpop_nonce"'


@dataclass
class Scripted:
    """A token endpoint and a service that check what the client sends.

    ``token_answers`` / ``service_answers`` are answered first, in order; after them the
    token endpoint issues ``token_type`` tokens and the service answers 200.
    """

    clock: FakeClock
    token_type: str = "DPoP"
    audiences: tuple[str, ...] = (TOKEN_URL,)
    token_answers: list[httpx.Response] = field(default_factory=list)
    service_answers: list[httpx.Response] = field(default_factory=list)
    forms: list[dict[str, str]] = field(default_factory=list)
    basic: list[str] = field(default_factory=list)
    assertions: list[VerifiedAssertion] = field(default_factory=list)
    token_proofs: list[tuple[DPoPProof, str | None]] = field(default_factory=list)
    service_requests: list[httpx.Request] = field(default_factory=list)
    issued: int = 0

    def now(self) -> int:
        return int(self.clock.timestamp())

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "keyturn.test":
            return self.token(request)
        return self.service(request)

    def token(self, request: httpx.Request) -> httpx.Response:
        form = dict(parse_qsl(request.content.decode()))
        self.forms.append(form)
        self.basic.append(request.headers.get("authorization", ""))
        if "client_assertion" in form:
            assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
            assert "authorization" not in request.headers  # one method (RFC 6749 §2.3)
            self.assertions.append(
                verify_client_assertion(
                    form["client_assertion"],
                    client_id=form["client_id"],
                    keys=[DEVICE.verification_key],
                    audiences=self.audiences,
                    now=self.now(),
                    leeway=0,
                )
            )
        if "dpop" in request.headers:
            proof = request.headers["dpop"]
            checked = verify_dpop_proof(
                proof, method="POST", url=str(request.url), now=self.now(), leeway=0
            )
            self.token_proofs.append((checked, _claims(proof).get("nonce")))
        if self.token_answers:
            return self.token_answers.pop(0)
        self.issued += 1
        body = {"access_token": f"at-{self.issued}", "token_type": self.token_type}
        return httpx.Response(200, json=body | {"expires_in": 900})

    def service(self, request: httpx.Request) -> httpx.Response:
        # The client resends the same object after a 401: keep what was sent each time.
        self.service_requests.append(
            httpx.Request(request.method, request.url, headers=request.headers.copy())
        )
        if self.service_answers:
            return self.service_answers.pop(0)
        return httpx.Response(200)


def _claims(proof: str, part: int = 1) -> dict[str, Any]:
    """A JWS's payload (``part=0``: its header), decoded without checking anything."""
    payload = proof.split(".")[part]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def nonce_wanted_at_the_token_endpoint(nonce: str) -> httpx.Response:
    body = {"error": "use_dpop_nonce", "error_description": "a nonce is required"}
    return httpx.Response(400, json=body, headers={"DPoP-Nonce": nonce})


def nonce_wanted_by_the_service(nonce: str) -> httpx.Response:
    headers = {"WWW-Authenticate": NONCE_CHALLENGE, "DPoP-Nonce": nonce}
    return httpx.Response(401, headers=headers)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keyturn(clock: FakeClock) -> Scripted:
    return Scripted(clock)


@pytest.fixture
def make(keyturn: Scripted, clock: FakeClock) -> Callable[..., Client]:
    def client(**options: Any) -> Client:
        return Client(
            KEYTURN,
            clock=clock.timestamp,
            sleep=clock.advance,
            transport=httpx.MockTransport(keyturn.handle),
            **options,
        )

    return client


def check_resource_proof(request: httpx.Request, token: str, clock: FakeClock) -> str | None:
    """The request's proof is valid for it and the token; returns its nonce."""
    assert request.headers["authorization"] == f"DPoP {token}"
    proof = request.headers["dpop"]
    checked = verify_dpop_proof(
        proof,
        method=request.method,
        url=str(request.url),
        now=int(clock.timestamp()),
        leeway=0,
        access_token=token,
    )
    assert checked.jkt == DPOP_KEY.kid
    assert _claims(proof)["ath"] == access_token_hash(token)
    nonce: str | None = _claims(proof).get("nonce")
    return nonce


# -- private_key_jwt (RFC 7523) ---------------------------------------------------------


def test_rfc7523_2_2_each_token_request_carries_a_fresh_assertion(
    make: Callable[..., Client], keyturn: Scripted, clock: FakeClock
) -> None:
    """iss = sub = the key id, aud = the token endpoint, a new jti every time, no secret."""
    keyturn.token_type = "Bearer"
    client = make(client_id=CLIENT_ID, private_key=DEVICE)

    client.access_token()
    clock.advance(minutes=13)  # past 80 % of 900 s
    client.access_token()

    assert [a.client_id for a in keyturn.assertions] == [CLIENT_ID, CLIENT_ID]
    assert [a.kid for a in keyturn.assertions] == [DEVICE.kid, DEVICE.kid]
    assert keyturn.assertions[0].jti != keyturn.assertions[1].jti
    assert [form["grant_type"] for form in keyturn.forms] == ["client_credentials"] * 2
    assert all(form["client_id"] == CLIENT_ID for form in keyturn.forms)
    assert keyturn.basic == ["", ""]  # no other client authentication
    claims = _claims(keyturn.forms[1]["client_assertion"])
    assert claims["aud"] == TOKEN_URL
    assert claims["iat"] == int(clock.timestamp())
    assert 0 < claims["exp"] - claims["iat"] <= 300


@pytest.mark.parametrize("source", ["path", "str", "bytes", "text"])
def test_the_private_key_is_read_from_a_pem_file_or_pem_bytes(
    make: Callable[..., Client], keyturn: Scripted, tmp_path: Path, source: str
) -> None:
    keyturn.token_type = "Bearer"
    pem = tmp_path / "device.pem"
    pem.write_bytes(DEVICE.private_pem())
    private_key = {
        "path": pem,
        "str": str(pem),
        "bytes": DEVICE.private_pem(),
        "text": DEVICE.private_pem().decode(),
    }[source]

    make(client_id=CLIENT_ID, private_key=private_key).access_token()

    assert [a.kid for a in keyturn.assertions] == [DEVICE.kid]


def test_a_private_key_needs_a_client_id_and_excludes_an_api_key(tmp_path: Path) -> None:
    public = tmp_path / "device.pub.pem"
    public.write_bytes(DEVICE.verification_key.public_pem())

    with pytest.raises(ValueError, match="client_id"):
        KeyturnAuth(KEYTURN, private_key=DEVICE)
    with pytest.raises(ValueError, match="not both"):
        KeyturnAuth(KEYTURN, client_id=CLIENT_ID, private_key=DEVICE, api_key="kt_x")
    with pytest.raises(SigningKeyError, match=r"device\.pub\.pem"):
        KeyturnAuth(KEYTURN, client_id=CLIENT_ID, private_key=public)
    with pytest.raises(NoCredentialsError):
        KeyturnAuth(KEYTURN, client_id=CLIENT_ID)


def test_the_assertion_audience_can_be_the_issuer_identifier(
    make: Callable[..., Client], keyturn: Scripted
) -> None:
    keyturn.token_type = "Bearer"
    keyturn.audiences = ("https://issuer.example",)

    make(client_id=CLIENT_ID, private_key=DEVICE, audience="https://issuer.example").access_token()

    assert _claims(keyturn.forms[0]["client_assertion"])["aud"] == "https://issuer.example"


def test_a_refresh_grant_is_authenticated_with_an_assertion_too(
    make: Callable[..., Client], keyturn: Scripted
) -> None:
    """RFC 6749 §6: a key's refresh token is redeemed with the key's authentication."""
    keyturn.token_type = "Bearer"

    make(client_id=CLIENT_ID, private_key=DEVICE, refresh_token="ktr_saved").access_token()

    assert keyturn.forms[0]["grant_type"] == "refresh_token"
    assert [a.client_id for a in keyturn.assertions] == [CLIENT_ID]


def test_a_refused_assertion_discards_the_private_key(
    make: Callable[..., Client], keyturn: Scripted
) -> None:
    body = {"error": "invalid_client", "error_description": "the client assertion is invalid"}
    keyturn.token_answers.append(httpx.Response(401, json=body))
    client = make(client_id=CLIENT_ID, private_key=DEVICE)

    with pytest.raises(CredentialsRejectedError) as refused:
        client.access_token()
    with pytest.raises(NoCredentialsError):
        client.access_token()

    assert refused.value.error_code == "invalid_client"
    assert "clock" in str(refused.value)
    assert len(keyturn.forms) == 1


# -- DPoP (RFC 9449) ---------------------------------------------------------------------


def test_rfc9449_5_the_token_request_carries_a_proof_and_gets_a_bound_token(
    make: Callable[..., Client], keyturn: Scripted, clock: FakeClock
) -> None:
    """htm POST, htu the token endpoint, the DPoP key's jwk; token_type DPoP is used."""
    client = make(client_id=CLIENT_ID, private_key=DEVICE, dpop=DPOP_KEY)

    assert client.get(SERVICE).status_code == 200

    [(proof, nonce)] = keyturn.token_proofs
    assert (proof.jkt, nonce) == (DPOP_KEY.kid, None)
    assert client.auth.dpop_key is DPOP_KEY
    [request] = keyturn.service_requests
    assert check_resource_proof(request, "at-1", clock) is None
    assert _claims(request.headers["dpop"])["htu"] == "https://api.test/reports"


def test_rfc9449_4_2_every_request_gets_a_fresh_proof(
    make: Callable[..., Client], keyturn: Scripted, clock: FakeClock
) -> None:
    client = make(api_key="kt_secret", dpop=DPOP_KEY)

    client.get(SERVICE)
    client.post("https://api.test/jobs", json={})

    first, second = keyturn.service_requests
    check_resource_proof(first, "at-1", clock)
    check_resource_proof(second, "at-1", clock)
    assert _claims(second.headers["dpop"])["htm"] == "POST"
    assert _claims(first.headers["dpop"])["jti"] != _claims(second.headers["dpop"])["jti"]
    assert keyturn.forms[0]["grant_type"] == "client_credentials"


def test_dpop_true_makes_an_ephemeral_es256_key(
    make: Callable[..., Client], keyturn: Scripted
) -> None:
    client = make(api_key="kt_secret", dpop=True)

    client.access_token()

    key = client.auth.dpop_key
    assert key is not None
    assert key.alg == "ES256"
    assert keyturn.token_proofs[0][0].jkt == key.kid


def test_rfc9449_8_a_token_endpoint_nonce_is_retried_once_with_the_nonce(
    make: Callable[..., Client], keyturn: Scripted
) -> None:
    keyturn.token_answers.append(nonce_wanted_at_the_token_endpoint("n-1"))
    client = make(api_key="kt_secret", dpop=DPOP_KEY)

    client.access_token()

    assert [nonce for _, nonce in keyturn.token_proofs] == [None, "n-1"]
    first, second = (proof for proof, _ in keyturn.token_proofs)
    assert first.jti != second.jti


def test_rfc9449_8_a_second_nonce_demand_is_an_error_not_a_loop(
    make: Callable[..., Client], keyturn: Scripted
) -> None:
    keyturn.token_answers += [
        nonce_wanted_at_the_token_endpoint("n-1"),
        nonce_wanted_at_the_token_endpoint("n-2"),
    ]
    client = make(api_key="kt_secret", dpop=DPOP_KEY)

    with pytest.raises(TokenEndpointError) as refused:
        client.access_token()

    assert refused.value.error_code == "use_dpop_nonce"
    assert [nonce for _, nonce in keyturn.token_proofs] == [None, "n-1"]
    client.access_token()  # the key is kept; the latest nonce is used
    assert keyturn.token_proofs[-1][1] == "n-2"


def test_a_nonce_demand_without_a_nonce_is_not_retried(
    make: Callable[..., Client], keyturn: Scripted
) -> None:
    keyturn.token_answers.append(
        httpx.Response(400, json={"error": "use_dpop_nonce", "error_description": "no"})
    )

    with pytest.raises(TokenEndpointError):
        make(api_key="kt_secret", dpop=DPOP_KEY).access_token()

    assert len(keyturn.forms) == 1


def test_rfc9449_9_a_resource_server_nonce_is_retried_once_with_the_same_token(
    make: Callable[..., Client], keyturn: Scripted, clock: FakeClock
) -> None:
    keyturn.service_answers.append(nonce_wanted_by_the_service("rs-1"))
    client = make(api_key="kt_secret", dpop=DPOP_KEY)

    assert client.get(SERVICE).status_code == 200

    first, second = keyturn.service_requests
    assert check_resource_proof(first, "at-1", clock) is None
    assert check_resource_proof(second, "at-1", clock) == "rs-1"
    assert len(keyturn.forms) == 1  # no renewal for a nonce


def test_rfc9449_9_a_second_resource_challenge_is_returned(
    make: Callable[..., Client], keyturn: Scripted
) -> None:
    keyturn.service_answers += [
        nonce_wanted_by_the_service("rs-1"),
        nonce_wanted_by_the_service("rs-2"),
    ]
    client = make(api_key="kt_secret", dpop=DPOP_KEY)

    assert client.get(SERVICE).status_code == 401

    assert len(keyturn.service_requests) == 2
    assert len(keyturn.forms) == 1


def test_rfc9449_8_every_dpop_nonce_is_remembered_per_origin(
    make: Callable[..., Client], keyturn: Scripted, clock: FakeClock
) -> None:
    keyturn.token_answers.append(
        httpx.Response(
            200,
            json={"access_token": "at-x", "token_type": "DPoP", "expires_in": 900},
            headers={"DPoP-Nonce": "kt-1"},
        )
    )
    keyturn.service_answers.append(httpx.Response(200, headers={"DPoP-Nonce": "rs-1"}))
    client = make(api_key="kt_secret", dpop=DPOP_KEY)

    client.get(SERVICE)
    client.get("https://api.test/other")
    client.get("https://elsewhere.test/")
    client.access_token(force=True)

    _, second, elsewhere = keyturn.service_requests
    assert check_resource_proof(second, "at-x", clock) == "rs-1"
    assert check_resource_proof(elsewhere, "at-x", clock) is None
    assert [nonce for _, nonce in keyturn.token_proofs] == [None, "kt-1"]


def test_a_401_after_a_nonce_retry_still_renews_the_token_once(
    make: Callable[..., Client], keyturn: Scripted, clock: FakeClock
) -> None:
    keyturn.service_answers += [
        nonce_wanted_by_the_service("rs-1"),
        httpx.Response(401, headers={"WWW-Authenticate": 'DPoP error="invalid_token"'}),
    ]
    client = make(api_key="kt_secret", dpop=DPOP_KEY)

    assert client.get(SERVICE).status_code == 200

    *_, last = keyturn.service_requests
    assert len(keyturn.service_requests) == 3
    assert check_resource_proof(last, "at-2", clock) == "rs-1"


def test_a_bearer_answer_to_a_dpop_request_is_used_as_bearer(
    make: Callable[..., Client], keyturn: Scripted
) -> None:
    """RFC 9449 §5: a server without DPoP issues a bearer token; no proof goes with it."""
    keyturn.token_type = "bearer"
    client = make(api_key="kt_secret", dpop=DPOP_KEY)

    client.get(SERVICE)

    [request] = keyturn.service_requests
    assert request.headers["authorization"] == "Bearer at-1"
    assert "dpop" not in request.headers


def test_a_dpop_token_the_client_did_not_ask_for_is_refused(
    make: Callable[..., Client], keyturn: Scripted
) -> None:
    with pytest.raises(TokenEndpointError, match="token_type is not Bearer"):
        make(api_key="kt_secret").access_token()


def test_without_dpop_nothing_changes(make: Callable[..., Client], keyturn: Scripted) -> None:
    keyturn.token_type = "Bearer"
    keyturn.service_answers.append(nonce_wanted_by_the_service("rs-1"))
    client = make(api_key="kt_secret")

    client.get(SERVICE)

    assert "dpop" not in keyturn.forms[0]
    assert [r.headers["authorization"] for r in keyturn.service_requests] == [
        "Bearer at-1",
        "Bearer at-2",
    ]
    assert all("dpop" not in r.headers for r in keyturn.service_requests)


async def test_the_async_client_proves_and_retries_nonces_the_same_way(
    keyturn: Scripted, clock: FakeClock
) -> None:
    keyturn.token_answers.append(nonce_wanted_at_the_token_endpoint("n-1"))
    keyturn.service_answers.append(nonce_wanted_by_the_service("rs-1"))

    async def no_wait(seconds: float) -> None:
        clock.advance(seconds)

    async with AsyncClient(
        KEYTURN,
        client_id=CLIENT_ID,
        private_key=DEVICE,
        dpop=DPOP_KEY,
        clock=clock.timestamp,
        sleep=no_wait,
        transport=httpx.MockTransport(keyturn.handle),
    ) as client:
        assert (await client.get(SERVICE)).status_code == 200

    assert [nonce for _, nonce in keyturn.token_proofs] == [None, "n-1"]
    assert len(keyturn.assertions) == 2
    first, second = keyturn.service_requests
    assert check_resource_proof(first, "at-1", clock) is None
    assert check_resource_proof(second, "at-1", clock) == "rs-1"


def test_a_client_id_with_an_api_key_is_the_basic_user_name(
    make: Callable[..., Client], keyturn: Scripted
) -> None:
    """RFC 6749 §2.3.1: ``client_id:secret``, each form-urlencoded (Keyturn checks both)."""
    keyturn.token_type = "Bearer"

    make(api_key="kt_k1/secret", client_id=CLIENT_ID).access_token()

    basic = keyturn.basic[0].removeprefix("Basic ")
    assert base64.b64decode(basic) == b"k_device17:kt_k1%2Fsecret"


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_pyjwt_an_independent_implementation_accepts_the_proofs_and_assertions(
    make: Callable[..., Client], keyturn: Scripted, alg: str
) -> None:
    """What the client signs is plain RFC 7515/7523/9449 JWTs: PyJWT verifies them with
    the proof's embedded jwk and the device's public PEM."""
    device = SigningKey.generate(alg)
    dpop = SigningKey.generate(alg)
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"access_token": "at-1", "token_type": "DPoP", "expires_in": 900}
        return httpx.Response(200, json=body)

    Client(
        KEYTURN,
        client_id=CLIENT_ID,
        private_key=device,
        dpop=dpop,
        transport=httpx.MockTransport(record),
    ).access_token()

    [request] = seen
    proof = request.headers["dpop"]
    header = _claims(proof, part=0)
    proof_claims = jwt.decode(proof, jwt.PyJWK(header["jwk"]).key, algorithms=[alg])
    form = dict(parse_qsl(request.content.decode()))
    assertion = jwt.decode(
        form["client_assertion"],
        device.verification_key.public_pem(),
        algorithms=[alg],
        audience=TOKEN_URL,
        issuer=CLIENT_ID,
        options={"require": ["exp", "iat", "jti", "sub"]},
    )
    assert (header["typ"], proof_claims["htm"], proof_claims["htu"]) == (
        "dpop+jwt",
        "POST",
        TOKEN_URL,
    )
    assert assertion["sub"] == CLIENT_ID
