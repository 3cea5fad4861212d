"""DPoP against bearer: the token endpoint's grant and /v1/validate, on SQLite and PostgreSQL.

Usage: python bench/bench_dpop_server.py [--seconds 3] [--concurrency 16] [--backend both]
                                  [--rounds 3] [--serial 400]

Same harness as ``bench_service.py`` (one process, N concurrent callers, median of the
rounds). Five operations per backend:

* ``client_credentials (bearer)``: `KeyturnService.authenticate` without a refresh token
  (``/v1/token``'s default), the bearer figure;
* ``client_credentials (DPoP)``: the same after ``service.dpop.check`` of a fresh proof
  (one signature check plus one replay-store insert), binding the token;
* ``client_credentials (private_key_jwt)``: the key authenticates with a fresh RFC 7523
  client assertion instead of its secret (one signature check plus one replay-store
  insert for the assertion's ``jti``);
* ``validate (bearer)`` and ``validate (DPoP)``: the ``/v1/validate`` endpoint object
  (`V1ValidateEndpoint.respond`, headers parsed as the server gets them) for a bearer
  token, and for a bound token with the original request's proof (``ath``, a replay-store
  insert, ``check_binding``).

Proofs are a client's work: they are made before each measurement (``--proofs`` per
operation and round), so the figures are the server's cost alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).parent))
from bench_service import ADMIN_DSN, Operation, Row, _measure, _measure_serial, _print

from keyturn.core.assertions import ClientAssertion, create_client_assertion
from keyturn.core.dpop import create_dpop_proof
from keyturn.core.keywrap import KeyEncryptionKey, KeyWrapper
from keyturn.core.secrets import Pepper
from keyturn.core.signing import SigningKey
from keyturn.server.gateway.endpoints import V1ValidateEndpoint
from keyturn.service import KeyturnService, ServiceConfig
from keyturn.storage.sql import SQLStorage

ISSUER = "https://auth.example"
TOKEN_URL = f"{ISSUER}/v1/token"
RESOURCE = "https://api.example/orders"


class Proofs:
    """A pool of fresh proofs made ahead; one more is made on the spot if it runs dry."""

    def __init__(self, key: SigningKey, method: str, url: str, token: str | None) -> None:
        self._key, self._method, self._url, self._token = key, method, url, token
        self._pool: list[str] = []
        self.ran_dry = 0
        #: Set for a pool of client assertions (RFC 7523) instead of DPoP proofs.
        self.client_id: str | None = None

    def _make(self) -> str:
        if self.client_id is not None:
            return create_client_assertion(
                self._key, client_id=self.client_id, audience=self._url, now=int(time.time())
            )
        return create_dpop_proof(
            self._key,
            method=self._method,
            url=self._url,
            now=int(time.time()),
            access_token=self._token,
        )

    def refill(self, count: int) -> None:
        self._pool = [self._make() for _ in range(count)]

    def take(self) -> str:
        if self._pool:
            return self._pool.pop()
        self.ran_dry += 1
        return self._make()


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _bench_backend(url: str, args: argparse.Namespace) -> dict[str, Row]:
    storage = await SQLStorage.open(
        url, migrate=True, pool_size=args.concurrency, max_overflow=0, statement_timeout=5.0
    )
    service = KeyturnService(
        storage,
        pepper=Pepper.generate(),
        key_wrapper=KeyWrapper([KeyEncryptionKey.generate()]),
        config=ServiceConfig(issuer=ISSUER),
    )
    device = SigningKey.generate("ES256")
    try:
        await service.start()
        created = await service.create_key(scopes=["read"])
        key = created.secret or ""
        await service.add_public_keys(created.record.id, [device.verification_key])
        assertions = Proofs(device, "POST", TOKEN_URL, None)
        assertions.client_id = created.record.id
        bearer = (await service.authenticate(key, issue_refresh_token=False)).access.token
        jkt = await service.dpop.check(
            [create_dpop_proof(device, method="POST", url=TOKEN_URL, now=int(time.time()))],
            method="POST",
            urls=(TOKEN_URL,),
        )
        assert jkt is not None
        bound = (
            await service.authenticate(key, issue_refresh_token=False, dpop_jkt=jkt.jkt)
        ).access.token
        endpoint = V1ValidateEndpoint()
        endpoint.bind(SimpleNamespace(service=service))  # type: ignore[arg-type]
        token_proofs = Proofs(device, "POST", TOKEN_URL, None)
        validate_proofs = Proofs(device, "GET", RESOURCE, bound)
        bearer_scope: dict[str, Any] = {
            "headers": [(b"authorization", f"Bearer {bearer}".encode())],
            "query_string": b"",
        }

        async def cc_bearer(_: int) -> None:
            await service.authenticate(key, issue_refresh_token=False)

        async def cc_dpop(_: int) -> None:
            proof = await service.dpop.check(
                [token_proofs.take()], method="POST", urls=(TOKEN_URL,)
            )
            assert proof is not None
            await service.authenticate(key, issue_refresh_token=False, dpop_jkt=proof.jkt)

        async def cc_assertion(_: int) -> None:
            credential = ClientAssertion(assertions.take(), created.record.id, (TOKEN_URL,))
            await service.authenticate(credential, issue_refresh_token=False)

        async def validate_bearer(_: int) -> None:
            answer = await endpoint.respond(bearer_scope, _receive)
            assert answer.status == 200

        async def validate_dpop(_: int) -> None:
            scope = {
                "headers": [
                    (b"authorization", f"DPoP {bound}".encode()),
                    (b"dpop", validate_proofs.take().encode()),
                    (b"x-original-method", b"GET"),
                    (b"x-original-url", RESOURCE.encode()),
                ],
                "query_string": b"",
            }
            answer = await endpoint.respond(scope, _receive)
            assert answer.status == 200, answer.headers

        operations: dict[str, tuple[Operation, Proofs | None]] = {
            "client_credentials (bearer)": (cc_bearer, None),
            "client_credentials (DPoP)": (cc_dpop, token_proofs),
            "client_credentials (private_key_jwt)": (cc_assertion, assertions),
            "validate (bearer)": (validate_bearer, None),
            "validate (DPoP)": (validate_dpop, validate_proofs),
        }
        rows = {name: Row() for name in operations}
        for _ in range(args.rounds):
            for name, (op, pool) in operations.items():
                if pool is not None:
                    pool.refill(args.proofs)
                await _measure(op, args.seconds, args.concurrency, rows[name])
                if args.serial:
                    if pool is not None:
                        pool.refill(args.serial)
                    await _measure_serial(op, args.serial, rows[name])
        dry = token_proofs.ran_dry + validate_proofs.ran_dry + assertions.ran_dry
        if dry:
            print(f"note: {dry} proofs were made during measurement (raise --proofs)")
        return rows
    finally:
        await storage.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3, help="report the median of R rounds")
    parser.add_argument("--serial", type=int, default=0, metavar="N", help="also time N calls")
    parser.add_argument("--proofs", type=int, default=30000, help="proofs made per measurement")
    args = parser.parse_args()

    results: list[tuple[str, dict[str, Row]]] = []
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            results.append(("SQLite", await _bench_backend(url, args)))
    if args.backend in ("postgresql", "both"):
        name = f"keyturn_bench_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
            results.append(("PostgreSQL", await _bench_backend(url, args)))
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    _print(results, args)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    asyncio.run(main())
