"""Email addresses as account names: the shape Keyturn accepts and the key it compares by.

An email is stored exactly as given and compared case-insensitively: `email_key` (the
Unicode case fold) is what the unique index and lookups use.
"""

from __future__ import annotations

import re
import secrets
import string
from typing import Final

from keyturn.errors import InvalidRequestError

__all__ = ["MAX_EMAIL_LENGTH", "check_email", "email_key", "new_user_id"]

#: RFC 5321 §4.5.3.1: a path is at most 256 octets, so an address at most 254.
MAX_EMAIL_LENGTH: Final = 254
# One "@", something on each side, no whitespace or control characters: deliverability is
# the operator's business, but a value that cannot be an address is refused.
_EMAIL: Final = re.compile(r"[^\s@\x00-\x1f\x7f]+@[^\s@\x00-\x1f\x7f]+")
_ID_ALPHABET: Final = string.ascii_letters + string.digits
_ID_LENGTH: Final = 16


def check_email(email: str) -> str:
    """Return ``email`` unchanged if it has the shape of an address.

    Raises:
        InvalidRequestError: empty, too long, or not ``local@domain``.
    """
    if not isinstance(email, str) or not 3 <= len(email) <= MAX_EMAIL_LENGTH:
        raise InvalidRequestError(f"an email address has 3 to {MAX_EMAIL_LENGTH} characters")
    if _EMAIL.fullmatch(email) is None:
        raise InvalidRequestError("not an email address (expected local@domain)")
    return email


def email_key(email: str) -> str:
    """The form emails are compared in: case-folded, otherwise as given."""
    return email.casefold()


def new_user_id() -> str:
    """A random user id: 16 base62 characters (95 bits), like API key ids."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))
