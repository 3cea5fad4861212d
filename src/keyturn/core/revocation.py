"""Revocation state a verifier can consult in O(1), with no I/O.

Two kinds of entry, both bounded in time:

* a revoked token id (``jti``), kept until that token would have expired anyway;
* a revoked subject (``key:<id>``, ``user:<id>``) with the moment of revocation: every
  token issued to it at or before that moment is refused.

Never keyed on the token string: one JWT has several valid spellings (RFC 7515 padding,
ECDSA ``(r, n-s)``; ``shared/research/security.md`` §0.3).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from keyturn.core.tokens import DEFAULT_LEEWAY, VerifiedToken

__all__ = ["RevocationList"]


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

    def revoke_subject(self, subject: str, *, at: int) -> None:
        """Refuse every token issued to ``subject`` at or before ``at``."""
        with self._lock:
            self._subjects[subject] = max(at, self._subjects.get(subject, at))

    def replace(self, *, tokens: Mapping[str, int], subjects: Mapping[str, int]) -> None:
        """Swap in a complete state read from storage (jti -> exp, subject -> revoked at)."""
        new_tokens, new_subjects = dict(tokens), dict(subjects)
        with self._lock:
            self._tokens, self._subjects = new_tokens, new_subjects

    def is_revoked(self, token: VerifiedToken) -> bool:
        """Tell whether ``token`` or its subject has been revoked."""
        if token.jti in self._tokens:
            return True
        revoked_at = self._subjects.get(token.subject)
        return revoked_at is not None and token.issued_at <= revoked_at

    def prune(self, now: int, *, max_token_lifetime: int, leeway: int = DEFAULT_LEEWAY) -> int:
        """Drop entries that can no longer match a live token; return how many went.

        A verifier accepts a token until ``leeway`` seconds past its ``exp``, so pass the
        verifier's leeway: a jti entry is kept until then, and a subject entry until
        ``max_token_lifetime + leeway`` seconds past its revocation, by when every token
        issued before it has expired.
        """
        with self._lock:
            dead_tokens = [jti for jti, exp in self._tokens.items() if exp + leeway <= now]
            dead_subjects = [
                subject
                for subject, at in self._subjects.items()
                if at + max_token_lifetime + leeway <= now
            ]
            for jti in dead_tokens:
                del self._tokens[jti]
            for subject in dead_subjects:
                del self._subjects[subject]
        return len(dead_tokens) + len(dead_subjects)
