"""What a DPoP proof costs `JWKSVerifier.verify`, against a bearer token (issue 17).

Usage: python bench/bench_dpop.py [--count N] [--rounds R] [--alg ES256|EdDSA|RS256]

No network and no server: the verifier's JWKS comes from an in-process transport and its
clock stands still. Per round, interleaved, N calls each of:

* bearer cached    -- `verify(token)` answered from the verified-token cache (the usual case);
* bearer uncached  -- `verify(token)` with ``cache_size=0``: the token's signature every time;
* dpop cached      -- `verify(token, dpop_proof=..., method=, url=)`: the token from the
                      cache, then the proof (one signature check) and its replay-cache claim;
* dpop uncached    -- the same with ``cache_size=0``: two signature checks per call;
* proof only       -- `keyturn.core.dpop.verify_dpop_proof` alone, for the breakdown.

Every DPoP call gets its own proof (a fresh ``jti``), made before the round is timed. It
prints the median µs per call of each, the median per-round cost a proof adds, and the
median per-round ratio of a proof's check to an uncached token verify (steady under load).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import cryptography
import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from keyturn.core._encoding import b64url_encode, compact_json
from keyturn.core.dpop import create_dpop_proof, verify_dpop_proof
from keyturn.core.signing import KeySet, SigningKey
from keyturn.core.tokens import issue_access_token, peek_unverified_claims
from keyturn.verify import JWKSVerifier

ISSUER = "https://auth.example"
AUDIENCE = "api"
JWKS_URL = f"{ISSUER}/.well-known/jwks.json"
URL = "https://api.example/orders/17"
NOW = 1_800_000_000
OPERATIONS = ("bearer cached", "bearer uncached", "dpop cached", "dpop uncached", "proof only")


def _key(alg: str) -> SigningKey:
    if alg == "RS256":
        return SigningKey.from_private_key(rsa.generate_private_key(65537, 2048))
    return SigningKey.generate(alg)


def _token(issuer_key: SigningKey, device: SigningKey | None) -> str:
    """An access token; bound to ``device`` (``cnf.jkt``) when one is given."""
    token = issue_access_token(
        issuer_key,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="key:k1",
        client_id="k1",
        now=NOW,
        lifetime=900,
        scopes=["orders:read"],
    ).token
    if device is None:
        return token
    # issue_access_token refuses cnf as an extra claim (the server sets it): sign again.
    header, claims = peek_unverified_claims(token)
    claims["cnf"] = {"jkt": device.kid}
    signing_input = f"{b64url_encode(compact_json(header))}.{b64url_encode(compact_json(claims))}"
    return f"{signing_input}.{b64url_encode(issuer_key.sign(signing_input.encode('ascii')))}"


def _verifier(issuer_key: SigningKey, *, cache_size: int) -> JWKSVerifier:
    jwks = KeySet.of(issuer_key).jwks()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=jwks))
    return JWKSVerifier(
        JWKS_URL,
        issuer=ISSUER,
        audience=AUDIENCE,
        client=httpx.AsyncClient(transport=transport),
        cache_size=cache_size,
        replay_store=None,
        clock=lambda: float(NOW),
    )


async def _timed(count: int, call: Callable[[int], Awaitable[Any] | Any]) -> float:
    """Microseconds per call over ``count`` calls of ``call(i)``."""
    started = time.perf_counter()
    for i in range(count):
        result = call(i)
        if asyncio.iscoroutine(result):
            await result
    return (time.perf_counter() - started) / count * 1e6


async def _round(count: int, issuer_key: SigningKey, device: SigningKey) -> dict[str, float]:
    bearer = _token(issuer_key, None)
    bound = _token(issuer_key, device)
    cached, uncached = _verifier(issuer_key, cache_size=10_000), _verifier(issuer_key, cache_size=0)
    for verifier in (cached, uncached):
        await verifier.refresh()
        await verifier.verify(bearer)

    def proofs() -> list[str]:
        return [
            create_dpop_proof(device, method="GET", url=URL, now=NOW, access_token=bound)
            for _ in range(count)
        ]

    pools = {name: proofs() for name in ("dpop cached", "dpop uncached", "proof only")}
    calls: dict[str, Callable[[int], Any]] = {
        "bearer cached": lambda i: cached.verify(bearer),
        "bearer uncached": lambda i: uncached.verify(bearer),
        "dpop cached": lambda i: cached.verify(
            bound, dpop_proof=pools["dpop cached"][i], method="GET", url=URL
        ),
        "dpop uncached": lambda i: uncached.verify(
            bound, dpop_proof=pools["dpop uncached"][i], method="GET", url=URL
        ),
        "proof only": lambda i: verify_dpop_proof(
            pools["proof only"][i], method="GET", url=URL, now=NOW, leeway=30, access_token=bound
        ),
    }
    result = {name: await _timed(count, call) for name, call in calls.items()}
    await cached.aclose()
    await uncached.aclose()
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="calls per operation per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--alg", default="ES256", choices=("ES256", "EdDSA", "RS256"))
    args = parser.parse_args()
    issuer_key, device = _key("ES256"), _key(args.alg)
    rounds = [await _round(args.count, issuer_key, device) for _ in range(args.rounds)]
    print(
        f"Python {platform.python_version()}, cryptography {cryptography.__version__}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; token ES256, proof {args.alg}; "
        f"{args.count} calls x {args.rounds} rounds"
    )
    print(f"{'operation':<16} {'µs/call (median)':>18}")
    for name in OPERATIONS:
        print(f"{name:<16} {statistics.median(r[name] for r in rounds):>18.1f}")
    added = statistics.median(r["dpop cached"] - r["bearer cached"] for r in rounds)
    added_uncached = statistics.median(r["dpop uncached"] - r["bearer uncached"] for r in rounds)
    print(f"a proof adds {added:.1f} µs to a cached verify, {added_uncached:.1f} µs uncached")
    # Load on a shared machine moves every figure; the per-round ratio barely moves.
    ratio = statistics.median(r["proof only"] / r["bearer uncached"] for r in rounds)
    print(f"proof only / bearer uncached (one token signature check + claims): {ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
