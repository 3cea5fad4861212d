"""Seal private signing keys at rest with a key-encryption key (AES-256-GCM).

The sealed form is ``version ‖ kek_id ‖ nonce ‖ ciphertext+tag`` with the key's ``kid`` as
associated data, so a ciphertext moved to another row fails to open (T-KEY-03, after ORY
Hydra's ``aead/aesgcm.go``). Several KEKs may be configured: the first seals, any opens,
which lets operators rotate the KEK without downtime.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyturn.errors import SigningKeyError

__all__ = ["KEK_BYTES", "KeyEncryptionKey", "KeyWrapper"]

KEK_BYTES: Final = 32
_VERSION: Final = b"\x01"
_ID_BYTES: Final = 8
_NONCE_BYTES: Final = 12


class KeyEncryptionKey:
    """A 256-bit AES key with a short public id (a hash prefix); its repr hides the key."""

    __slots__ = ("_aead", "id")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEK_BYTES:
            raise SigningKeyError(f"a key-encryption key is exactly {KEK_BYTES} bytes")
        self.id = hashlib.sha256(b"keyturn-kek-id\x00" + key).digest()[:_ID_BYTES]
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(id={self.id.hex()})"

    @classmethod
    def generate(cls) -> KeyEncryptionKey:
        """Draw a fresh random KEK that lives only in memory (tests, throwaway setups)."""
        return cls(secrets.token_bytes(KEK_BYTES))

    def encrypt(self, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        """AES-256-GCM encryption; returns ciphertext and tag."""
        return self._aead.encrypt(nonce, plaintext, associated_data)

    def decrypt(self, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
        """AES-256-GCM decryption.

        Raises:
            cryptography.exceptions.InvalidTag: wrong key, data or associated data.
        """
        return self._aead.decrypt(nonce, ciphertext, associated_data)


class KeyWrapper:
    """Seals with the first KEK, opens with whichever KEK sealed the blob."""

    def __init__(self, keks: Sequence[KeyEncryptionKey]) -> None:
        if not keks:
            raise SigningKeyError("at least one key-encryption key is needed")
        self._sealing = keks[0]
        self._by_id = {kek.id: kek for kek in keks}

    def seal(self, kid: str, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` (a private key) bound to ``kid``."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        ciphertext = self._sealing.encrypt(nonce, plaintext, kid.encode())
        return _VERSION + self._sealing.id + nonce + ciphertext

    def open(self, kid: str, sealed: bytes) -> bytes:
        """Decrypt a sealed private key.

        Raises:
            SigningKeyError: unknown format or KEK, or the blob was tampered with or
                belongs to another ``kid``.
        """
        header = 1 + _ID_BYTES + _NONCE_BYTES
        if len(sealed) <= header or sealed[:1] != _VERSION:
            raise SigningKeyError(f"sealed key {kid!r} has an unknown format")
        kek = self._by_id.get(sealed[1 : 1 + _ID_BYTES])
        if kek is None:
            raise SigningKeyError(
                f"sealed key {kid!r} was sealed by a key-encryption key that is not configured"
            )
        nonce, ciphertext = sealed[1 + _ID_BYTES : header], sealed[header:]
        try:
            return kek.decrypt(nonce, ciphertext, kid.encode())
        except InvalidTag as exc:
            raise SigningKeyError(f"sealed key {kid!r} does not open (tampered or moved)") from exc
