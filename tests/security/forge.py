"""Hand-built hostile tokens for the attack catalogue (``docs/threats.md``).

`forge` assembles a compact JWS from any header, payload and signature, valid or not; the
other helpers derive one token from another (re-sign, flip a bit, malleate an ECDSA
signature) or run the verifier the way every security test configures it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import pytest

from keyturn.core.signing import SigningKey
from keyturn.core.tokens import (
    MAX_TOKEN_BYTES,
    KeyLookup,
    TokenVerifier,
    VerifiedToken,
    verify_access_token,
)
from keyturn.errors import InvalidTokenError

NOW: Final = 1_700_000_000
ISSUER: Final = "https://kt.example"
AUDIENCE: Final = "api"
LEEWAY: Final = 30
LIFETIME: Final = 900
SUBJECT: Final = "key:k1"
CLIENT_ID: Final = "k1"
JTI: Final = "0b7e7a5c-3f0e-4d4b-9d43-5a1f2e4c6b7a"
#: The order n of the P-256 group (SEC 2 §2.4.2), for ECDSA ``(r, n - s)`` and ``r = n``.
P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

DROP: Final[Any] = object()
"""Pass as a header or claim value to leave that member out."""


def b64(data: bytes) -> str:
    """Unpadded base64url, as a compact JWS spells every segment."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(segment: str) -> bytes:
    """Decode an unpadded base64url segment (lenient: for building forgeries only)."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def encode_segment(value: Any) -> str:
    """Turn a header or payload into a segment.

    A `str` is taken as an already-encoded segment and used verbatim; `bytes` are
    base64url-encoded as they are; anything else is serialised as compact JSON first.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return b64(value)
    return b64(json.dumps(value, separators=(",", ":")).encode())


def forge(
    header: Any, payload: Any, signature: bytes | str = b"", *, key: SigningKey | None = None
) -> str:
    """Assemble ``header.payload.signature``; with ``key``, sign it for real instead."""
    signing_input = f"{encode_segment(header)}.{encode_segment(payload)}"
    if key is not None:
        signature = key.sign(signing_input.encode("ascii"))
    sig = signature if isinstance(signature, str) else b64(signature)
    return f"{signing_input}.{sig}"


def _apply(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**base, **overrides}
    return {name: value for name, value in merged.items() if value is not DROP}


def header_for(key: SigningKey, **overrides: Any) -> dict[str, Any]:
    """The header Keyturn issues for ``key`` (``alg``, ``kid``, ``typ``), with changes."""
    return _apply({"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}, overrides)


def claims_at(now: int = NOW, /, **overrides: Any) -> dict[str, Any]:
    """A complete, valid RFC 9068 claim set issued at ``now``, with changes."""
    base = {
        "iss": ISSUER,
        "sub": SUBJECT,
        "aud": AUDIENCE,
        "exp": now + LIFETIME,
        "iat": now,
        "jti": JTI,
        "client_id": CLIENT_ID,
        "scope": "read",
        "token_id": JTI,
    }
    return _apply(base, overrides)


def signed(
    key: SigningKey, *, header: Mapping[str, Any] | None = None, **claim_overrides: Any
) -> str:
    """A token really signed by ``key``: its usual header and claims, with changes."""
    return forge(header_for(key, **(header or {})), claims_at(**claim_overrides), key=key)


def signed_raw(key: SigningKey, payload: bytes, **header_overrides: Any) -> str:
    """A token really signed by ``key`` over an arbitrary payload byte string."""
    return forge(header_for(key, **header_overrides), payload, key=key)


def split(token: str) -> tuple[str, str, str]:
    """The three segments of a compact JWS."""
    header, payload, signature = token.split(".")
    return header, payload, signature


def with_signature(token: str, signature: bytes | str) -> str:
    """Replace the signature segment (``bytes`` are encoded, a `str` is used verbatim)."""
    header, payload, _ = split(token)
    return forge(header, payload, signature)


def resign(token: str, key: SigningKey) -> str:
    """Keep the header and payload segments exactly; sign them with ``key``."""
    header, payload, _ = split(token)
    return forge(header, payload, key=key)


def hmac_sha256(header: Any, payload: Any, secret: bytes) -> str:
    """An HS256 token MACed with ``secret`` (the algorithm-confusion attack, T-ALG-02)."""
    signing_input = f"{encode_segment(header)}.{encode_segment(payload)}"
    mac = hmac.digest(secret, signing_input.encode("ascii"), hashlib.sha256)
    return f"{signing_input}.{b64(mac)}"


def flip_bit(token: str, segment: int, bit: int) -> str:
    """Flip one bit of the decoded bytes of segment ``segment`` (0, 1 or 2), re-encoded."""
    parts = list(split(token))
    data = bytearray(unb64(parts[segment]))
    data[bit // 8 % len(data)] ^= 1 << (bit % 8)
    parts[segment] = b64(bytes(data))
    return ".".join(parts)


def es256_signature(r: int, s: int) -> bytes:
    """The RFC 7518 §3.4 ES256 signature ``R || S`` (32 bytes each, big-endian)."""
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def es256_rs(token: str) -> tuple[int, int]:
    """The ``(r, s)`` pair of an ES256 token's signature."""
    signature = unb64(split(token)[2])
    return int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")


def malleate(token: str) -> str:
    """The other valid spelling of an ES256 token: signature ``(r, n - s)`` (T-SIG-05)."""
    r, s = es256_rs(token)
    return with_signature(token, es256_signature(r, P256_ORDER - s))


def verify(token: Any, keys: KeyLookup, *, now: float = NOW, **options: Any) -> VerifiedToken:
    """Run `verify_access_token` as every security test configures it."""
    settings = {"issuer": ISSUER, "audience": AUDIENCE, "leeway": LEEWAY, **options}
    return verify_access_token(token, keys=keys, now=now, **settings)


def verifier(keys: KeyLookup, **options: Any) -> TokenVerifier:
    """A `TokenVerifier` (cache on) configured like `verify`, its clock fixed at `NOW`."""
    settings = {"issuer": ISSUER, "audience": AUDIENCE, "leeway": LEEWAY, **options}
    return TokenVerifier(keys, clock=lambda: NOW, **settings)


@dataclass
class RecordingServer:
    """A loopback HTTP server that answers 200 to anything and records every request path."""

    url: str
    hits: list[str] = field(default_factory=list)


@contextmanager
def recording_server() -> Iterator[RecordingServer]:
    """Serve on ``127.0.0.1`` at a free port in a thread; stop and close on exit."""
    record = RecordingServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            record.hits.append(self.path)
            body = b'{"keys":[]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    record.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def assert_rejected(token: Any, keys: KeyLookup, expected: type[InvalidTokenError]) -> None:
    """Check that ``token`` is refused with exactly ``expected``, by both entry points.

    `verify_access_token` and a caching `TokenVerifier` (asked twice, so a wrongly cached
    result would show) must both raise ``expected``, nothing is cached, and no message in
    the exception chain repeats the token or its signature segment.
    """
    with pytest.raises(InvalidTokenError) as exc_info:
        verify(token, keys)
    assert exc_info.type is expected, f"{exc_info.type.__name__}: {exc_info.value}"
    checker = verifier(keys)
    for _ in range(2):
        with pytest.raises(expected):
            checker.verify(token)
    assert checker.cache is not None
    assert len(checker.cache) == 0
    assert_not_echoed(exc_info.value, token)


def assert_not_echoed(error: BaseException, token: Any) -> None:
    """No message in ``error``'s chain (causes included) contains the token or its signature."""
    if not isinstance(token, str) or not 8 <= len(token) <= MAX_TOKEN_BYTES:
        return
    rendered = "".join(traceback.format_exception(error)) + repr(error)
    assert token not in rendered
    signature = token.rsplit(".", 1)[-1]
    if len(signature) >= 8:
        assert signature not in rendered
