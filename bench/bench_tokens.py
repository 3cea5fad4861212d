"""Sign and verify rates of Keyturn's core against the raw `cryptography` primitive.

Usage: python bench/bench_tokens.py [--seconds N] [--rounds R]

For ES256, RS256 (2048-bit) and EdDSA it measures, in interleaved rounds:

* raw sign / raw verify  -- the bare `cryptography` call on the same signing input;
* issue                  -- `keyturn.core.tokens.issue_access_token`;
* verify (uncached)      -- `keyturn.core.tokens.verify_access_token`, every check;
* verify (cached)        -- `TokenVerifier.verify` answering from its verified-token cache;
* PyJWT decode           -- `jwt.decode` with the key object and all claims, for comparison.

It prints the median ops/s of each, the median per-round ratios, and PASS/FAIL against
the targets: uncached verify within 2x of the raw primitive, cached verify at least 20x
faster than uncached. Exits 1 if a target is missed. Numbers drift on a shared machine;
compare ratios, and re-run before relying on one.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cryptography
import jwt
from cryptography.hazmat.backends.openssl.backend import backend
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from keyturn.core._encoding import b64url_decode
from keyturn.core.signing import KeySet, SigningKey
from keyturn.core.tokens import TokenVerifier, issue_access_token, verify_access_token

ISSUER = "https://kt.example"
AUDIENCE = "api"
UNCACHED_TARGET = 2.0  # uncached verify time / raw verify time, at most
CACHED_TARGET = 20.0  # cached verify rate / uncached verify rate, at least
OPERATIONS = ("raw sign", "issue", "raw verify", "verify", "verify cached", "pyjwt decode")


@dataclass
class Case:
    """Everything one algorithm's measurements need, built once before timing."""

    alg: str
    operations: dict[str, Callable[[], object]]


def _make_key(alg: str) -> SigningKey:
    if alg == "RS256":
        return SigningKey.from_private_key(rsa.generate_private_key(65537, 2048))
    return SigningKey.generate(alg)


def _raw_primitives(
    key: SigningKey, data: bytes, signature: bytes
) -> tuple[Callable[[], object], Callable[[], object]]:
    private, public = key.private_key, key.verification_key.public_key
    if isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(
        public, ec.EllipticCurvePublicKey
    ):
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        algorithm = ec.ECDSA(hashes.SHA256())
        return (lambda: private.sign(data, algorithm), lambda: public.verify(der, data, algorithm))
    if isinstance(private, rsa.RSAPrivateKey) and isinstance(public, rsa.RSAPublicKey):
        pad, sha256 = padding.PKCS1v15(), hashes.SHA256()
        return (
            lambda: private.sign(data, pad, sha256),
            lambda: public.verify(signature, data, pad, sha256),
        )
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    assert isinstance(public, ed25519.Ed25519PublicKey)
    return (lambda: private.sign(data), lambda: public.verify(signature, data))


def build_case(alg: str) -> Case:
    key = _make_key(alg)
    keys = KeySet.of(key)
    now = int(time.time())  # PyJWT reads the wall clock; Keyturn is handed the same now

    def issue() -> str:
        return issue_access_token(
            key,
            issuer=ISSUER,
            audience=AUDIENCE,
            subject="key:bench",
            client_id="bench",
            now=now,
            lifetime=3600,
            scopes=["read", "write"],
            identifier="bench",
        ).token

    token = issue()
    signing_input, _, signature_segment = token.rpartition(".")
    raw_sign, raw_verify = _raw_primitives(
        key, signing_input.encode("ascii"), b64url_decode(signature_segment)
    )
    cached = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, clock=lambda: now)
    cached.verify(token)
    public_key = key.verification_key.public_key
    required: Any = {"require": ["exp", "iat", "iss", "aud", "sub", "jti"]}

    operations: dict[str, Callable[[], object]] = {
        "raw sign": raw_sign,
        "issue": issue,
        "raw verify": raw_verify,
        "verify": lambda: verify_access_token(
            token, keys=keys, issuer=ISSUER, audience=AUDIENCE, now=now
        ),
        "verify cached": lambda: cached.verify(token),
        "pyjwt decode": lambda: jwt.decode(
            token, public_key, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER, options=required
        ),
    }
    for operation in operations.values():  # every path works before it is timed
        operation()
    return Case(alg=alg, operations=operations)


def _time(operation: Callable[[], object], iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        operation()
    return time.perf_counter() - start


def _calibrate(operation: Callable[[], object], budget: float) -> int:
    """The iteration count that takes about ``budget`` seconds."""
    iterations = 1
    while True:
        elapsed = _time(operation, iterations)
        if elapsed >= budget / 10:
            return max(1, int(iterations * budget / elapsed))
        iterations *= 4


def measure(case: Case, seconds: float, rounds: int) -> dict[str, list[float]]:
    """Seconds per operation in each round; the operations interleave inside a round."""
    budget = seconds / rounds
    counts = {name: _calibrate(op, budget) for name, op in case.operations.items()}
    per_op: dict[str, list[float]] = {name: [] for name in case.operations}
    for _ in range(rounds):
        for name, operation in case.operations.items():
            per_op[name].append(_time(operation, counts[name]) / counts[name])
    return per_op


def _rate(per_op: list[float]) -> float:
    return 1.0 / statistics.median(per_op)


def _ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator time / denominator time."""
    return statistics.median(n / d for n, d in zip(numerator, denominator, strict=True))


def _versions() -> str:
    return (
        f"Python {platform.python_version()}, cryptography {cryptography.__version__} "
        f"({backend.openssl_version_text()}), PyJWT {jwt.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="time per operation, over all rounds (2.0)"
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (7)")
    parser.add_argument(
        "--alg", action="append", choices=["ES256", "RS256", "EdDSA"], help="repeatable"
    )
    args = parser.parse_args(argv)
    algorithms = args.alg or ["ES256", "RS256", "EdDSA"]

    print(_versions())
    print(f"{args.rounds} rounds, ~{args.seconds:g} s per operation; medians\n")
    header = f"| {'operation':<14} | " + " | ".join(f"{alg:>19}" for alg in algorithms) + " |"
    results = {alg: measure(build_case(alg), args.seconds, args.rounds) for alg in algorithms}

    print("ops/s (µs per op)")
    print(header)
    print("|" + "-" * 16 + "|" + "|".join("-" * 21 for _ in algorithms) + "|")
    for name in OPERATIONS:
        cells = []
        for alg in algorithms:
            per_op = results[alg][name]
            cells.append(f"{_rate(per_op):>9,.0f} ({statistics.median(per_op) * 1e6:6.2f})")
        print(f"| {name:<14} | " + " | ".join(f"{cell:>19}" for cell in cells) + " |")

    print("\ntargets")
    print(
        "| alg   | verify / raw verify | target | cached speedup | target |"
        " pyjwt / raw verify | issue / raw sign |"
    )
    print(
        "|-------|---------------------|--------|----------------|--------|"
        + "-" * 20
        + "|"
        + "-" * 18
        + "|"
    )
    passed = True
    for alg in algorithms:
        times = results[alg]
        uncached = _ratio(times["verify"], times["raw verify"])
        speedup = _ratio(times["verify"], times["verify cached"])
        pyjwt_ratio = _ratio(times["pyjwt decode"], times["raw verify"])
        issue_ratio = _ratio(times["issue"], times["raw sign"])
        ok_uncached = uncached <= UNCACHED_TARGET
        ok_cached = speedup >= CACHED_TARGET
        passed = passed and ok_uncached and ok_cached
        print(
            f"| {alg:<5} | {uncached:>18.2f}x | {'PASS' if ok_uncached else 'FAIL':>6} "
            f"| {speedup:>13.0f}x | {'PASS' if ok_cached else 'FAIL':>6} "
            f"| {pyjwt_ratio:>17.2f}x | {issue_ratio:>15.2f}x |"
        )
    print(
        f"\ntargets: verify within {UNCACHED_TARGET:g}x of the raw primitive; "
        f"cached verify at least {CACHED_TARGET:g}x faster than uncached -> "
        f"{'PASS' if passed else 'FAIL'}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
