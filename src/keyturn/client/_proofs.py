"""Keys that never leave the device: the client's private key and its DPoP proofs.

* `load_private_key` -- a `SigningKey` from a key, a PEM file path or PEM bytes.
* `DPoP` -- makes a fresh RFC 9449 proof for each request and remembers, per origin, the
  latest ``DPoP-Nonce`` each server handed out (RFC 9449 §8, §9).

Sans I/O like `keyturn.client._tokens`: the drivers in `keyturn.client._auth` send.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Final, TypeAlias

import httpx

from keyturn.core.dpop import create_dpop_proof
from keyturn.core.signing import SigningKey
from keyturn.errors import SigningKeyError

__all__ = ["DPOP_NONCE_HEADER", "DPoP", "PrivateKeySource", "load_private_key", "origin"]

#: A private key as the client takes it: loaded, a PEM file's path, or PEM bytes.
PrivateKeySource: TypeAlias = "SigningKey | str | os.PathLike[str] | bytes"
#: RFC 9449 §8: the response header carrying the server's nonce.
DPOP_NONCE_HEADER: Final = "DPoP-Nonce"
#: RFC 9449 §8.1: a nonce is 1*NQCHAR (printable ASCII but the double quote and backslash).
_NONCE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,512}")
#: RFC 9449 §9: a resource server asks for a nonce with this error in its DPoP challenge.
_NONCE_CHALLENGE = re.compile(
    r'(?:^|[\s,])dpop\s.*\berror\s*=\s*"?use_dpop_nonce\b', re.IGNORECASE | re.DOTALL
)
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def load_private_key(value: PrivateKeySource) -> SigningKey:
    """A private key: a `SigningKey` as it is, PEM bytes, PEM text, or a PEM file's path.

    Raises:
        SigningKeyError: not a usable ES256, EdDSA or RS256 private key (unencrypted).
        OSError: the file cannot be read.
    """
    if isinstance(value, SigningKey):
        return value
    if isinstance(value, bytes):
        return SigningKey.from_pem(value)
    if isinstance(value, str) and "-----BEGIN" in value:
        return SigningKey.from_pem(value)
    if not isinstance(value, str | os.PathLike):
        raise TypeError("private_key must be a SigningKey, a PEM file path or PEM bytes")
    path = Path(value)
    try:
        return SigningKey.from_pem(path.read_bytes())
    except SigningKeyError as exc:
        raise SigningKeyError(f"{path}: {exc.message}") from exc


def origin(url: httpx.URL) -> str:
    """RFC 6454 origin of ``url`` (scheme, host, port), the scope a nonce belongs to."""
    port = url.port if url.port is not None else _DEFAULT_PORTS.get(url.scheme)
    return f"{url.scheme}://{url.host}:{port}"


class DPoP:
    """A DPoP key (RFC 9449) and the nonces servers gave it; safe to share across threads.

    Args:
        key: the key every proof is signed with (the token is bound to it).
    """

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self._nonces: dict[str, str] = {}
        self._lock = threading.Lock()

    def proof(
        self, method: str, url: httpx.URL, *, now: float, access_token: str | None = None
    ) -> str:
        """A fresh proof for one request (new ``jti``; the origin's latest nonce, if any)."""
        with self._lock:
            nonce = self._nonces.get(origin(url))
        return create_dpop_proof(
            self.key,
            method=method,
            url=str(url),
            now=int(now),
            access_token=access_token,
            nonce=nonce,
        )

    def remember(self, url: httpx.URL, response: httpx.Response) -> bool:
        """Keep the ``DPoP-Nonce`` a response carries for its origin; True when it had one."""
        nonce = response.headers.get(DPOP_NONCE_HEADER, "").strip()
        if _NONCE.fullmatch(nonce) is None:
            return False
        with self._lock:
            self._nonces[origin(url)] = nonce
        return True

    def nonce(self, url: httpx.URL) -> str | None:
        """The nonce the next proof to ``url``'s origin will carry."""
        with self._lock:
            return self._nonces.get(origin(url))

    def resource_wants_nonce(self, url: httpx.URL, response: httpx.Response) -> bool:
        """Remember the response's nonce; True when it is a resource server's RFC 9449 §9
        challenge (401, ``WWW-Authenticate: DPoP error="use_dpop_nonce"``) with a nonce."""
        has_nonce = self.remember(url, response)
        if response.status_code != 401 or not has_nonce:
            return False
        challenges = response.headers.get_list("WWW-Authenticate")
        return any(_NONCE_CHALLENGE.search(challenge) for challenge in challenges)
