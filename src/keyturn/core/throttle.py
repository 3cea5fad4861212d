"""Login throttling as pure decisions: which counters a login attempt touches, and limits.

ASVS 5.0 6.3.1 asks for brute-force controls, and 6.1.1 that they cannot be used to lock
a victim out. Every login attempt counts against three fixed windows, checked before any
password is hashed (so refusing a flood costs almost nothing):

* the client address, across all accounts (one machine guessing many accounts);
* the account together with the address (one machine guessing one account): the tight
  limit, and the one an attacker trips first. It never touches the account owner, who
  logs in from another address;
* the account, across all addresses (a distributed attack on one account): a looser
  limit, so only a sustained attack from many addresses can hold it, and each hold ends
  with its window.

Every limit is window-based, so no lockout outlives its window, and nothing needs an
administrator to unlock it. Accounts are counted by a digest of the normalised email
whether or not the account exists, so a 429 reveals nothing about which emails are
registered (ASVS 6.3.8), and no email address is written to the counter store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["LoginBucket", "LoginLimits", "login_buckets"]


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """How many login attempts each counter admits per ``window`` seconds."""

    window: int = 300
    per_address: int = 30
    per_account_address: int = 10
    per_account: int = 50

    def __post_init__(self) -> None:
        for name in ("window", "per_address", "per_account_address", "per_account"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass(frozen=True, slots=True)
class LoginBucket:
    """One counter a login attempt is charged to."""

    name: str
    limit: int
    window: int


def _account_digest(email_key: str) -> str:
    return hashlib.sha256(email_key.encode("utf-8")).hexdigest()[:32]


def login_buckets(email_key: str, address: str, limits: LoginLimits) -> tuple[LoginBucket, ...]:
    """The counters a login attempt for ``email_key`` from ``address`` is charged to.

    Tightest first: the first one over its limit decides the ``Retry-After``.
    """
    account = _account_digest(email_key)
    return (
        LoginBucket(
            f"login:acct-addr:{account}:{address}", limits.per_account_address, limits.window
        ),
        LoginBucket(f"login:addr:{address}", limits.per_address, limits.window),
        LoginBucket(f"login:acct:{account}", limits.per_account, limits.window),
    )
