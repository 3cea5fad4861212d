"""Settings for rate limits, login throttling, the replay store and password hashing."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from keyturn.core.throttle import LoginLimits

__all__ = ["LimitSettings"]


class LimitSettings(BaseModel):
    """How much a client may ask for, and where shared counters and used jtis live."""

    redis_url: SecretStr | None = Field(None, description="Redis for shared rate limits.")
    replay_store: Literal["database", "redis"] = Field(
        "database",
        description="Where used client-assertion jtis are kept: database or redis (REDIS_URL).",
    )
    rate_limit_enabled: bool = Field(True, description="Rate-limit the token endpoints.")
    rate_limit_per_address: int = Field(
        1200, ge=1, description="Token requests per minute from one client address."
    )
    rate_limit_per_key: int = Field(
        300, ge=1, description="Token requests per minute for one API key."
    )
    login_rate_limit_window: int = Field(
        300, ge=1, le=86400, description="Seconds in one login-throttling window."
    )
    login_rate_limit_per_address: int = Field(
        30, ge=1, description="Login attempts per window from one client address."
    )
    login_rate_limit_per_account_address: int = Field(
        10, ge=1, description="Login attempts per window for one email from one address."
    )
    login_rate_limit_per_account: int = Field(
        50, ge=1, description="Login attempts per window for one email from all addresses."
    )
    password_hash_concurrency: int | None = Field(
        None,
        ge=1,
        le=64,
        description="argon2 hashes computed at once, in worker threads; default: half "
        "the CPUs, at least 1.",
    )

    def login_limits(self) -> LoginLimits:
        """The login throttling limits (`keyturn.core.throttle`)."""
        return LoginLimits(
            window=self.login_rate_limit_window,
            per_address=self.login_rate_limit_per_address,
            per_account_address=self.login_rate_limit_per_account_address,
            per_account=self.login_rate_limit_per_account,
        )
