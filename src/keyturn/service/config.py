"""What the service is configured with: `ServiceConfig` and its bounds.

`keyturn.config.Settings` builds a `ServiceConfig`; this module imports nothing from the
rest of the service, so the settings can depend on it alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from keyturn.core.dpop import DEFAULT_PROOF_MAX_AGE
from keyturn.core.signing import DEFAULT_ALGORITHM
from keyturn.core.tokens import DEFAULT_LEEWAY

__all__ = ["MAX_ACCESS_TOKEN_LIFETIME", "ServiceConfig", "utc_now"]

#: Room for JWThenticator's 25-hour JWT_LEASE_TIME; Keyturn's default is 15 minutes.
MAX_ACCESS_TOKEN_LIFETIME: Final = timedelta(days=2)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (the service's default clock)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """What the service needs to know; `keyturn.config.Settings` builds it.

    Args:
        issuer: the ``iss`` of every token, fixed by configuration (never the Host header).
        audience: the ``aud`` of every token and the one the verifier requires.
        access_token_lifetime: how long an access token lives.
        refresh_token_lifetime: absolute lifetime of a rotating refresh-token family.
        legacy_refresh_token_lifetime: lifetime of a JWThenticator (non-rotating) refresh token.
        legacy_key_lifetime: expiry given to keys registered through ``register_key``.
        key_rotation_grace: how long a rotated-out API key secret keeps working.
        refresh_reuse_grace: a replay this soon after a rotation is refused without
            revoking the family (concurrent or retried requests of the rightful client).
        signing_algorithm: algorithm of newly generated signing keys.
        signing_key_publish_delay: how long a new signing key is published before it signs
            (at least the JWKS cache lifetime of every verifier).
        leeway: clock skew tolerated by the verifier, in seconds.
        last_used_resolution: ``last_used_at`` is written at most this often per key.
        dpop_required: every token request needs a DPoP proof (RFC 9449), deployment-wide.
        dpop_nonce: token requests need a server nonce in their DPoP proof (RFC 9449 §8).
        dpop_proof_max_age: how old a DPoP proof's ``iat`` may be, in seconds.
        key_cache_ttl: how long a key record read from storage authenticates without being
            read again (`keyturn.service.keycache`): the bound within which a secret
            rotated out by another instance stops authenticating here. Zero (the library's
            default) reads every time; the server uses ``KEYTURN_POLL_INTERVAL``.
    """

    issuer: str = "http://localhost:8080"
    audience: str = "keyturn"
    access_token_lifetime: timedelta = timedelta(minutes=15)
    refresh_token_lifetime: timedelta = timedelta(days=30)
    legacy_refresh_token_lifetime: timedelta = timedelta(days=60)
    legacy_key_lifetime: timedelta = timedelta(days=120)
    key_rotation_grace: timedelta = timedelta(hours=24)
    refresh_reuse_grace: timedelta = timedelta(seconds=10)
    signing_algorithm: str = DEFAULT_ALGORITHM
    signing_key_publish_delay: timedelta = timedelta(minutes=10)
    leeway: int = DEFAULT_LEEWAY
    last_used_resolution: timedelta = timedelta(minutes=1)
    dpop_required: bool = False
    dpop_nonce: bool = False
    dpop_proof_max_age: int = DEFAULT_PROOF_MAX_AGE
    key_cache_ttl: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        for name in (
            "access_token_lifetime",
            "refresh_token_lifetime",
            "legacy_refresh_token_lifetime",
            "legacy_key_lifetime",
        ):
            value = getattr(self, name)
            if value <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        if self.access_token_lifetime > MAX_ACCESS_TOKEN_LIFETIME:
            raise ValueError("access_token_lifetime may be at most two days")
        if self.dpop_proof_max_age <= 0:
            raise ValueError("dpop_proof_max_age must be positive")
        for name in (
            "key_rotation_grace",
            "refresh_reuse_grace",
            "signing_key_publish_delay",
            "key_cache_ttl",
        ):
            if getattr(self, name) < timedelta(0):
                raise ValueError(f"{name} may not be negative")

    @property
    def access_lifetime_seconds(self) -> int:
        """The access-token lifetime in whole seconds."""
        return int(self.access_token_lifetime.total_seconds())
