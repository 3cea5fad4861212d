"""An in-process issuer for verifier tests: keys, tokens, and a JWKS endpoint on
``httpx.MockTransport`` that counts its requests and can be told to misbehave."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpx
import pytest

from keyturn.core._encoding import b64url_encode, compact_json
from keyturn.core.dpop import CONFIRMATION_CLAIM, confirmation
from keyturn.core.signing import KeySet, SigningKey
from keyturn.core.tokens import issue_access_token, peek_unverified_claims
from keyturn.testing import FakeClock

ISSUER = "https://auth.example.com"
AUDIENCE = "orders-api"
JWKS_URL = "https://auth.example.com/.well-known/jwks.json"


@dataclass
class FakeIssuer:
    """Signs tokens and serves its JWKS; ``requests`` counts JWKS fetches."""

    clock: FakeClock
    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey.generate()])
    headers: dict[str, str] = field(default_factory=lambda: {"Cache-Control": "max-age=300"})
    status: int = 200
    #: Replaces the whole response when set (size, time and format attacks).
    respond: Callable[[httpx.Request], Awaitable[httpx.Response]] | None = None
    #: While set, each fetch announces itself on ``fetch_started`` and waits for it.
    gate: asyncio.Event | None = None
    fetch_started: asyncio.Event = field(default_factory=asyncio.Event)
    requests: int = 0

    @property
    def signing_key(self) -> SigningKey:
        return self.keys[0]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.fetch_started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.respond is not None:
            return await self.respond(request)
        jwks = KeySet.of(None, *(key.verification_key for key in self.keys)).jwks()
        return httpx.Response(self.status, json=jwks, headers=self.headers)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    def rotate(self) -> SigningKey:
        """Publish and sign with a new key; the old one stays published."""
        key = SigningKey.generate()
        self.keys.insert(0, key)
        return key

    def token(
        self,
        key: SigningKey | None = None,
        *,
        scopes: Iterable[str] = ("orders:read",),
        lifetime: int = 900,
        issuer: str = ISSUER,
    ) -> str:
        return issue_access_token(
            key or self.signing_key,
            issuer=issuer,
            audience=AUDIENCE,
            subject="key:k1",
            client_id="k1",
            now=int(self.clock.timestamp()),
            lifetime=lifetime,
            scopes=scopes,
        ).token


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def issuer(clock: FakeClock) -> FakeIssuer:
    return FakeIssuer(clock)


@pytest.fixture
async def http(issuer: FakeIssuer) -> AsyncIterator[httpx.AsyncClient]:
    async with issuer.client() as client:
        yield client


def bind_token(token: str, signing_key: SigningKey, jkt: str) -> str:
    """``token`` with ``cnf: {"jkt": jkt}`` added, signed again by ``signing_key``.

    `issue_access_token` refuses ``cnf`` as an extra claim (the server sets it from a
    checked proof), so a DPoP-bound token for the verifier tests is made here.
    """
    header, claims = peek_unverified_claims(token)
    claims[CONFIRMATION_CLAIM] = confirmation(jkt)
    signing_input = f"{b64url_encode(compact_json(header))}.{b64url_encode(compact_json(claims))}"
    signature = b64url_encode(signing_key.sign(signing_input.encode("ascii")))
    return f"{signing_input}.{signature}"
