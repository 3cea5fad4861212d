"""Strict base64url (RFC 7515 §2: no padding, no other characters) and compact JSON."""

from __future__ import annotations

import binascii
import json
from typing import Any, Final

__all__ = ["b64url_decode", "b64url_encode", "compact_json"]

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SEXTETS = {char: value for value, char in enumerate(_ALPHABET)}
_SPARE_BITS = (0, 0, 0b1111, 0b11)  # by len(segment) % 4
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
# Built once: json.dumps with any option builds a new JSONEncoder on every call.
_COMPACT_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":")
)


def b64url_encode(data: bytes) -> str:
    """Encode ``data`` as unpadded base64url."""
    # base64.urlsafe_b64encode then rstrip, in two C calls: "=" only ever ends the output.
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE, b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Decode canonical unpadded base64url; the caller has already checked the alphabet.

    Only the one spelling that `b64url_encode` produces is accepted: a final character
    with stray low bits (``AB`` for ``AA``) is another spelling of the same bytes.

    Raises:
        ValueError: the length or the final character cannot be canonical base64url.
    """
    remainder = len(segment) % 4
    if remainder == 1:
        raise ValueError("impossible base64url length")
    # A final group of 2 (or 3) characters carries 4 (or 2) bits no byte uses; canonical
    # base64url sets them to zero (RFC 4648 §3.5). Checked in O(1), before decoding.
    if remainder and _SEXTETS.get(segment[-1], 0x3F) & _SPARE_BITS[remainder]:
        raise ValueError("non-canonical base64url")
    try:
        padded = segment.encode("ascii").translate(_TO_STANDARD) + b"=" * (-remainder % 4)
        return binascii.a2b_base64(padded, strict_mode=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError("invalid base64url") from exc


def compact_json(value: Any) -> bytes:
    """Serialise ``value`` as UTF-8 JSON without whitespace; NaN and Infinity refused."""
    return _COMPACT_ENCODER.encode(value).encode()
