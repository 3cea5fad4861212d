"""Keyturn's settings: one typed class, read from ``KEYTURN_*`` environment variables.

JWThenticator's variable names keep working when set (`LEGACY_ENVIRONMENT`): each maps
onto its ``KEYTURN_*`` setting, and the ``KEYTURN_*`` name wins when both are set.
Keyturn's own defaults are the safer ones (a 15-minute access token, not JWThenticator's
25 hours).

Built once at the edge (the CLI or ``create_app``) and passed inward; nothing reads the
environment at import time.

`Settings` is composed from one group per module: ``storage`` (where state lives),
``secrets``, ``tokens`` (claims, lifetimes, signing), ``listeners`` (addresses, routes,
connection bounds), ``limits`` (rate limits, login throttling, replay store), ``process``
(workers, proxies, logging). ``environment`` holds JWThenticator's names and other tools'
variables; ``errors`` the wording of a bad value. A new setting goes into its group's module.
"""

from __future__ import annotations

from keyturn.config.environment import (
    CLIENT_VARIABLES,
    LEGACY_ENVIRONMENT,
    LEGACY_VARIABLES,
    NOT_SETTINGS,
    default_sqlite_url,
    legacy_overrides,
)
from keyturn.config.errors import SettingsError
from keyturn.config.settings import Settings, closest_setting, unknown_variables

__all__ = [
    "CLIENT_VARIABLES",
    "LEGACY_ENVIRONMENT",
    "LEGACY_VARIABLES",
    "NOT_SETTINGS",
    "Settings",
    "SettingsError",
    "closest_setting",
    "default_sqlite_url",
    "legacy_overrides",
    "unknown_variables",
]
