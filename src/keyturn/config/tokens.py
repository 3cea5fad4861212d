"""Settings for the tokens Keyturn issues: claims, lifetimes, signing and the policy."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from keyturn.core.dpop import DEFAULT_PROOF_MAX_AGE
from keyturn.core.signing import SUPPORTED_ALGORITHMS
from keyturn.service.config import ServiceConfig

__all__ = ["DURATIONS", "TokenSettings"]

#: The settings that are durations: whole seconds, or a number with a unit.
DURATIONS = (
    "access_token_lifetime",
    "refresh_token_lifetime",
    "legacy_refresh_token_lifetime",
    "legacy_key_lifetime",
    "key_rotation_grace",
    "refresh_reuse_grace",
    "signing_key_publish_delay",
)
#: Units a duration may carry in the environment: ``900`` and ``900s`` are the same.
_DURATION_UNITS: Mapping[str, int] = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"\s*(-?\d+)\s*([smhd]?)\s*", re.IGNORECASE)


class TokenSettings(BaseModel):
    """What goes into a token, how long it and its refresh token live, how it is signed."""

    issuer: str = Field("http://localhost:8080", min_length=1, description="Token `iss`.")
    audience: str = Field("keyturn", min_length=1, description="Token `aud`.")
    signing_algorithm: Literal["ES256", "RS256", "EdDSA"] = Field(
        "ES256", description=f"Algorithm of generated signing keys: {SUPPORTED_ALGORITHMS}."
    )
    access_token_lifetime: timedelta = Field(timedelta(minutes=15), description="Seconds.")
    refresh_token_lifetime: timedelta = Field(timedelta(days=30), description="Seconds.")
    legacy_refresh_token_lifetime: timedelta = Field(timedelta(days=60), description="Seconds.")
    legacy_key_lifetime: timedelta = Field(timedelta(days=120), description="Seconds.")
    key_rotation_grace: timedelta = Field(timedelta(hours=24), description="Seconds.")
    refresh_reuse_grace: timedelta = Field(timedelta(seconds=10), description="Seconds.")
    client_credentials_refresh_tokens: bool = Field(
        False, description="Issue rotating refresh tokens to client_credentials on /v1/token."
    )
    signing_key_publish_delay: timedelta = Field(timedelta(minutes=10), description="Seconds.")
    leeway: int = Field(30, ge=0, le=300, description="Clock skew tolerated, seconds.")
    policy_file: Path | None = Field(None, description="TOML claims policy (docs/policy.md).")
    dpop_required: bool = Field(
        False, description="Every token request needs a DPoP proof (RFC 9449): no bearer tokens."
    )
    dpop_nonce: bool = Field(
        False, description="/v1/token and /v1/login demand a server nonce in DPoP proofs (§8)."
    )
    dpop_proof_max_age: int = Field(
        DEFAULT_PROOF_MAX_AGE, ge=1, le=600, description="How old a DPoP proof may be, seconds."
    )

    @field_validator(*DURATIONS, mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        # Durations are whole seconds in the environment ("900"), as in JWThenticator,
        # or carry a unit: 900s, 15m, 24h, 30d.
        if not isinstance(value, str):
            return value
        match = _DURATION.fullmatch(value)
        if match is None:
            raise ValueError(
                "not a duration: use whole seconds (900) or a number with a unit s, m, h or d (15m)"
            )
        return timedelta(seconds=int(match[1]) * _DURATION_UNITS[match[2].lower()])

    @field_validator(
        "access_token_lifetime",
        "refresh_token_lifetime",
        "legacy_refresh_token_lifetime",
        "legacy_key_lifetime",
    )
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive number of seconds")
        if value > timedelta(days=3650):
            raise ValueError("must be at most ten years")
        return value

    @field_validator("key_rotation_grace", "refresh_reuse_grace", "signing_key_publish_delay")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("may not be negative")
        return value

    def service_config(self) -> ServiceConfig:
        """The part of the settings the token service needs."""
        return ServiceConfig(
            issuer=self.issuer,
            audience=self.audience,
            access_token_lifetime=self.access_token_lifetime,
            refresh_token_lifetime=self.refresh_token_lifetime,
            legacy_refresh_token_lifetime=self.legacy_refresh_token_lifetime,
            legacy_key_lifetime=self.legacy_key_lifetime,
            key_rotation_grace=self.key_rotation_grace,
            refresh_reuse_grace=self.refresh_reuse_grace,
            signing_algorithm=self.signing_algorithm,
            signing_key_publish_delay=self.signing_key_publish_delay,
            leeway=self.leeway,
            dpop_required=self.dpop_required,
            dpop_nonce=self.dpop_nonce,
            dpop_proof_max_age=self.dpop_proof_max_age,
        )
