"""Passwords of human users: the rules a new password must meet, and argon2id hashing.

Rules (OWASP ASVS 5.0 §6.2): at least `MIN_PASSWORD_LENGTH` characters (15 recommended),
up to `MAX_PASSWORD_LENGTH` accepted, no composition rules and no truncation, and not
one of the bundled common passwords (the UK NCSC's top-100k list of passwords seen in
breaches, ``data/common-passwords.txt.gz``). A password is used exactly as given: no
trimming, no case folding, no Unicode normalisation (ASVS 6.2.8).

Hashing: `PasswordHasher` wraps ``argon2.PasswordHasher`` with the OWASP parameters
(argon2id, m=19 MiB, t=2, p=1) and says when a stored hash was made with other ones, so
a login can upgrade it. Everything here is synchronous and CPU-bound; the service runs
it in a worker thread.
"""

from __future__ import annotations

import gzip
import secrets
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Final

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from keyturn.errors import WeakPasswordError

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "OWASP_PARAMETERS",
    "RECOMMENDED_PASSWORD_LENGTH",
    "PasswordHasher",
    "PasswordParameters",
    "check_new_password",
    "is_common_password",
]

#: ASVS 6.2.1: at least 8 characters; 15 are strongly recommended.
MIN_PASSWORD_LENGTH: Final = 8
RECOMMENDED_PASSWORD_LENGTH: Final = 15
#: ASVS 6.2.9 asks for at least 64; the cap only bounds the work one request can cause.
MAX_PASSWORD_LENGTH: Final = 1024
_COMMON_PASSWORDS: Final = "common-passwords.txt.gz"


@dataclass(frozen=True, slots=True)
class PasswordParameters:
    """argon2id cost parameters; ``memory_cost`` is in KiB."""

    memory_cost: int = 19456
    time_cost: int = 2
    parallelism: int = 1
    hash_len: int = 32
    salt_len: int = 16

    def __post_init__(self) -> None:
        if self.parallelism < 1 or self.time_cost < 1:
            raise ValueError("time_cost and parallelism must be at least 1")
        if self.memory_cost < 8 * self.parallelism:
            raise ValueError("memory_cost must be at least 8 KiB per lane")
        if self.hash_len < 16 or self.salt_len < 16:
            raise ValueError("hash_len and salt_len must be at least 16 bytes")


#: OWASP Password Storage Cheat Sheet: "argon2id with a minimum configuration of 19 MiB
#: of memory, an iteration count of 2, and 1 degree of parallelism".
OWASP_PARAMETERS: Final = PasswordParameters()


class PasswordHasher:
    """argon2id hashing and verification with fixed parameters.

    ``verify`` never raises for a wrong password or a corrupt stored hash: it returns
    False, so callers have one failure path. `verify_dummy` spends the same work on a
    hash of a random password, for logins naming an unknown account (ASVS 6.3.8).
    """

    def __init__(self, parameters: PasswordParameters = OWASP_PARAMETERS) -> None:
        self.parameters = parameters
        self._hasher = argon2.PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_cost,
            parallelism=parameters.parallelism,
            hash_len=parameters.hash_len,
            salt_len=parameters.salt_len,
            type=argon2.Type.ID,
        )
        self._dummy_hash: str | None = None

    def hash(self, password: str) -> str:
        """Hash ``password`` (a PHC string: ``$argon2id$v=19$m=...,t=...,p=...$salt$hash``)."""
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        """True when ``password`` matches ``password_hash``; False otherwise, never raises."""
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def verify_dummy(self, password: str) -> bool:
        """Do the work of a verification that fails; always False."""
        if self._dummy_hash is None:
            self._dummy_hash = self.hash(secrets.token_urlsafe(32))
        self.verify(self._dummy_hash, password)
        return False

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the stored hash was made with other parameters (or is not argon2id)."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True


@cache
def _common_passwords() -> frozenset[str]:
    data = files("keyturn.core").joinpath("data", _COMMON_PASSWORDS).read_bytes()
    return frozenset(gzip.decompress(data).decode("utf-8").splitlines())


def is_common_password(password: str) -> bool:
    """True when ``password`` (in any letter case) is on the bundled common-password list."""
    return password.lower() in _common_passwords()


def check_new_password(password: str, *, email: str | None = None) -> None:
    """Refuse a new password that breaks the rules; accept anything else as it is.

    Raises:
        WeakPasswordError: too short, too long, common, or the account's own email.
    """
    if not isinstance(password, str):
        raise WeakPasswordError("the password must be a string")
    length = len(password)
    if length < MIN_PASSWORD_LENGTH:
        raise WeakPasswordError(
            f"the password must have at least {MIN_PASSWORD_LENGTH} characters "
            f"({RECOMMENDED_PASSWORD_LENGTH} or more recommended)"
        )
    if length > MAX_PASSWORD_LENGTH:
        raise WeakPasswordError(f"the password may have at most {MAX_PASSWORD_LENGTH} characters")
    if email is not None and password.lower() in {email.lower(), email.split("@")[0].lower()}:
        raise WeakPasswordError("the password may not be the account's email address")
    if is_common_password(password):
        raise WeakPasswordError("the password is on the list of common passwords; choose another")
