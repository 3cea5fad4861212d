"""Revocation state a verifier can consult in O(1), with no I/O.

Three kinds of entry, all bounded in time:

* a revoked token id (``jti``), kept until that token would have expired anyway;
* a revoked refresh-token family, kept as the token id ``family:<id>`` until every
  access token issued from it has expired: every token whose ``sid`` claim names it is
  refused, whatever its ``iat`` (a family is never un-revoked);
* a revoked subject (``key:<id>``, ``user:<id>``) with the moment of revocation. Every
  token of a revoked key is refused whatever its ``iat``: a key is never un-revoked, and
  an authentication that read the key just before its revocation committed may stamp a
  later ``iat``. A user's tokens are refused when issued at or before that moment only:
  enabling a user again, or a new password, lets the later tokens through.

Never keyed on the token string: one JWT has several valid spellings (RFC 7515 padding,
ECDSA ``(r, n-s)``; T-SIG-05 in ``docs/threats.md``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Final

from keyturn.core.tokens import DEFAULT_LEEWAY, FAMILY_CLAIM, VerifiedToken

__all__ = [
    "FAMILY_PREFIX",
    "KEY_SUBJECT_PREFIX",
    "REVOCATION_MARGIN",
    "RevocationList",
    "family_entry",
]

#: Revoked families share the token-id namespace (and storage) with revoked ``jti``s;
#: a ``jti`` is a UUID and never starts with it.
FAMILY_PREFIX: Final = "family:"


def family_entry(family_id: str) -> str:
    """The revocation entry (stored like a ``jti``) that refuses a family's access tokens."""
    return FAMILY_PREFIX + family_id


#: Subjects of API keys: their revocation refuses every token they carry, whatever its iat.
KEY_SUBJECT_PREFIX: Final = "key:"
#: Seconds a revoked key's entry outlives its tokens' longest lifetime: tokens may carry an
#: ``iat`` up to the revocation's commit, which the database's time bounds keep well below.
REVOCATION_MARGIN: Final = 60


class RevocationList:
    """Revoked token ids and subjects; thread-safe, and replaced wholesale on a reload."""

    def __init__(self) -> None:
        self._tokens: dict[str, int] = {}  # jti -> its exp
        self._subjects: dict[str, int] = {}  # subject -> revoked at (UNIX seconds)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tokens) + len(self._subjects)

    def revoke_token(self, jti: str, *, expires_at: int) -> None:
        """Refuse the token ``jti`` until ``expires_at`` (after which it is dead anyway)."""
        with self._lock:
            self._tokens[jti] = max(expires_at, self._tokens.get(jti, expires_at))

    def revoke_family(self, family_id: str, *, until: int) -> None:
        """Refuse every token issued from refresh-token family ``family_id`` until ``until``."""
        self.revoke_token(family_entry(family_id), expires_at=until)

    def revoke_subject(self, subject: str, *, at: int) -> None:
        """Refuse every token of ``subject``: all of a key's, a user's issued up to ``at``."""
        with self._lock:
            self._subjects[subject] = max(at, self._subjects.get(subject, at))

    def replace(self, *, tokens: Mapping[str, int], subjects: Mapping[str, int]) -> None:
        """Swap in a complete state read from storage (jti -> exp, subject -> revoked at)."""
        new_tokens, new_subjects = dict(tokens), dict(subjects)
        with self._lock:
            self._tokens, self._subjects = new_tokens, new_subjects

    def is_revoked(self, token: VerifiedToken) -> bool:
        """Tell whether ``token``, its refresh-token family or its subject has been revoked."""
        if token.jti in self._tokens:
            return True
        family = token.claims.get(FAMILY_CLAIM)
        if isinstance(family, str) and FAMILY_PREFIX + family in self._tokens:
            return True
        revoked_at = self._subjects.get(token.subject)
        return revoked_at is not None and (
            token.issued_at <= revoked_at or token.subject.startswith(KEY_SUBJECT_PREFIX)
        )

    def prune(self, now: int, *, max_token_lifetime: int, leeway: int = DEFAULT_LEEWAY) -> int:
        """Drop entries that can no longer match a live token; return how many went.

        A verifier accepts a token until ``leeway`` seconds past its ``exp``, so pass the
        verifier's leeway: a jti entry is kept until then, and a subject entry until
        ``max_token_lifetime + leeway`` seconds past its revocation, by when every token
        issued before it has expired (``REVOCATION_MARGIN`` more for a key, whose last
        tokens may be stamped a little after it).
        """
        with self._lock:
            dead_tokens = [jti for jti, exp in self._tokens.items() if exp + leeway <= now]
            dead_subjects = [
                subject
                for subject, at in self._subjects.items()
                if at + max_token_lifetime + leeway + _margin(subject) <= now
            ]
            for jti in dead_tokens:
                del self._tokens[jti]
            for subject in dead_subjects:
                del self._subjects[subject]
        return len(dead_tokens) + len(dead_subjects)


def _margin(subject: str) -> int:
    return REVOCATION_MARGIN if subject.startswith(KEY_SUBJECT_PREFIX) else 0
