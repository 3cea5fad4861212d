"""Compact JWS, read strictly: the format check, the JSON rules and the header allowlist.

The steps every Keyturn verifier (`keyturn.core.tokens`, `keyturn.core.compat_tokens`,
`keyturn.core.jwthenticator_tokens`) takes before a signature is checked: a token that
is not three unpadded base64url segments is refused before any decoding; header and
payload must be UTF-8 JSON objects without duplicate members, NaN or lone surrogates; the
header may name only ``alg``, ``kid`` and ``typ``, and the key (found by ``kid``) decides
the algorithm.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Protocol

from keyturn.core._encoding import b64url_decode, compact_json
from keyturn.core.signing import VerificationKey
from keyturn.errors import MalformedTokenError, TokenClaimsError, TokenSignatureError

__all__ = ["KeyLookup", "check_header", "json_object", "parse_header", "split"]

# RFC 8725bis §3.14: a compact JWS holds only base64url characters and two dots.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_ALLOWED_HEADER: Final = frozenset({"alg", "kid", "typ"})
# kid is only ever a dict key, but a sane charset and length stop junk early (T-HDR-05).
# "=" and "+" appear in JWThenticator's base64(SHA-1) kids.
_KID = re.compile(r"[A-Za-z0-9_.:=+/-]{1,128}")


class KeyLookup(Protocol):
    """Where the verifier finds trusted keys by ``kid`` (a `KeySet` is one)."""

    def get(self, kid: str) -> VerificationKey | None: ...


def _no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7519 §4: a JWT with duplicate claim names may be rejected; we do (T-IN-06).
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity (RFC 8259 §6)


# Built once: json.loads with hooks would construct a new decoder on every call.
_JSON_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_no_duplicate_members, parse_constant=_refuse_constant
)


def json_object(segment: str, part: str) -> dict[str, Any]:
    """The JSON object in one base64url segment; ``part`` names it in the error.

    Raises:
        MalformedTokenError: not base64url, not UTF-8, not a JSON object, or not strict JSON.
    """
    try:
        text = b64url_decode(segment).decode("utf-8")
        value = _JSON_DECODER.decode(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeError included
        raise MalformedTokenError(f"token {part} is not base64url-encoded UTF-8 JSON") from exc
    if not isinstance(value, dict):
        raise MalformedTokenError(f"token {part} is not a JSON object")
    # RFC 8725 §3.7: UTF-8 only. Decoded UTF-8 holds no surrogates, so only a "\u" escape
    # can smuggle in a lone one (json.loads keeps "\ud800" as is); re-encoding finds it.
    if "\\u" in text:
        try:
            compact_json(value)
        except (ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
            raise MalformedTokenError(f"token {part} holds a lone UTF-16 surrogate") from exc
    return value


def split(token: str | bytes, max_bytes: int) -> tuple[str, str, str]:
    """A compact JWS's three segments, checked for shape and size before any decoding.

    Raises:
        MalformedTokenError: not ASCII, longer than ``max_bytes``, or not three unpadded
            base64url segments.
    """
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError as exc:
            raise MalformedTokenError("token is not a compact JWS") from exc
    if not isinstance(token, str):
        raise MalformedTokenError("token must be a string")
    if len(token) > max_bytes:
        raise MalformedTokenError(f"token is longer than {max_bytes} bytes")
    if _COMPACT_JWS.fullmatch(token) is None:
        raise MalformedTokenError(
            "token is not a compact JWS: expected three unpadded base64url segments"
        )
    header, payload, signature = token.split(".")
    return header, payload, signature


@functools.lru_cache(maxsize=256)
def parse_header(segment: str) -> Mapping[str, Any]:
    """The header segment as a read-only mapping, parsed once per spelling."""
    # A deployment's headers repeat (one spelling per signing key), so each is parsed once.
    # A pure function of the segment; read-only, since every caller shares the result.
    return MappingProxyType(json_object(segment, "header"))


def check_header(header: Mapping[str, Any], keys: KeyLookup, token_type: str) -> VerificationKey:
    """The trusted key ``header`` names, after checking its members, ``typ`` and ``alg``.

    Raises:
        MalformedTokenError: a member beyond alg, kid, typ, or no usable alg or kid.
        TokenClaimsError: ``typ`` is not ``token_type``.
        TokenSignatureError: the kid is not trusted, or alg is not its key's algorithm.
    """
    if not header.keys() <= _ALLOWED_HEADER:
        # RFC 7519 §7.2 step 5; also refuses crit, jku, jwk, x5u, x5c (T-HDR-01..04).
        raise MalformedTokenError("token header may only contain alg, kid and typ")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower().removeprefix("application/") != token_type:
        raise TokenClaimsError(f"token type (typ) must be {token_type}")  # RFC 9068 §4
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or not alg:
        raise MalformedTokenError("token header has no algorithm")
    if not isinstance(kid, str) or _KID.fullmatch(kid) is None:
        raise MalformedTokenError("token header has no usable key id (kid)")
    key = keys.get(kid)
    if key is None:
        raise TokenSignatureError("token is signed by a key this verifier does not trust")
    if alg != key.alg:
        # RFC 8725 §3.1: the key decides the algorithm; the header only has to agree.
        raise TokenSignatureError("token algorithm does not match its signing key")
    return key
