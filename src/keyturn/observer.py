"""What the service reports as it works: the hook metrics and logs attach to.

`KeyturnService` calls a `ServiceObserver` at the moments operators count (a token
issued, a refresh, a refresh token reused, a credential refused) and knows nothing of
what listens. The default, `NullObserver`, does nothing; the server plugs in one that
feeds Prometheus and the request's log line (`keyturn.server.metrics`). Observers get
ids (the key id, the ``jti``), never a secret.
"""

from __future__ import annotations

from typing import Final, Protocol

__all__ = ["AUTH_FAILURE_REASONS", "GRANTS", "NullObserver", "ServiceObserver"]

#: The ``grant`` an issued access token came from.
GRANTS: Final = ("api_key", "refresh_token", "password")

#: Every ``reason`` `ServiceObserver.authentication_failed` may be given (a closed set,
#: so a metric labelled by it stays small).
AUTH_FAILURE_REASONS: Final = (
    "malformed_key",
    "unknown_key",
    "expired_key",
    "revoked_key",
    "identifier_mismatch",
    "client_id_mismatch",
    "client_authentication_required",
    "wrong_client",
    "malformed_refresh_token",
    "unknown_refresh_token",
    "expired_refresh_token",
    "revoked_refresh_token",
    "refresh_token_replayed",
    "refresh_token_reused",
    "key_unusable",
    "unknown_email",
    "wrong_password",
    "user_unusable",
    "invalid_token",
    "insufficient_scope",
    "admin_credential",
    "invalid_client_assertion",
    "client_assertion_replayed",
    "invalid_dpop_proof",
    "dpop_proof_replayed",
)


class ServiceObserver(Protocol):
    """Receives the service's countable events; every method must be cheap and not raise."""

    def token_issued(self, grant: str, *, key_id: str, jti: str) -> None:
        """An access token was issued (``grant`` is one of `GRANTS`)."""

    def token_refreshed(self, *, rotating: bool, key_id: str, jti: str) -> None:
        """A refresh token was exchanged (rotated, or a reusable legacy one presented)."""

    def refresh_reuse_detected(self, *, key_id: str, family_id: str) -> None:
        """A rotated-out refresh token came back after the grace window (RFC 9700 §4.14.2)."""

    def authentication_failed(self, reason: str, *, key_id: str | None = None) -> None:
        """A credential was refused (``reason`` is one of `AUTH_FAILURE_REASONS`)."""


class NullObserver:
    """Observes nothing (the default)."""

    def token_issued(self, grant: str, *, key_id: str, jti: str) -> None:
        """Ignore the event."""

    def token_refreshed(self, *, rotating: bool, key_id: str, jti: str) -> None:
        """Ignore the event."""

    def refresh_reuse_detected(self, *, key_id: str, family_id: str) -> None:
        """Ignore the event."""

    def authentication_failed(self, reason: str, *, key_id: str | None = None) -> None:
        """Ignore the event."""
