"""OAuth scopes: the RFC 6749 §3.3 grammar, parsed and formatted one way everywhere."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["format_scope", "is_scope_token", "parse_scope"]

# RFC 6749 §3.3: scope-token = 1*NQCHAR (%x21 / %x23-5B / %x5D-7E).
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def is_scope_token(token: str) -> bool:
    """Whether ``token`` is one RFC 6749 §3.3 scope token (no space, quote or backslash)."""
    return _SCOPE_TOKEN.fullmatch(token) is not None


def parse_scope(scope: str) -> frozenset[str]:
    """Split an RFC 6749 §3.3 scope string into its tokens.

    Raises:
        ValueError: a token has a character outside the NQCHAR grammar.
    """
    tokens = frozenset(scope.split(" ")) - {""}
    for token in tokens:
        if not _SCOPE_TOKEN.fullmatch(token):
            raise ValueError("scope tokens may only contain printable ASCII except '\"' and '\\'")
    return tokens


def format_scope(scopes: Iterable[str]) -> str:
    """Join scope tokens into the space-separated form, sorted for a stable wire format."""
    return " ".join(sorted(set(scopes)))
