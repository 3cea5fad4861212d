"""`Settings`: every setting in one typed class, composed from the groups beside it.

Each group (`StorageSettings`, `SecretSettings`, `TokenSettings`, `ListenerSettings`,
`LimitSettings`, `ProcessSettings`, `ConnectionSettings`) is a pydantic model in its own
module with its fields, their validators and the views built from them; `Settings`
inherits them all and adds reading the environment and the rules that span groups.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from keyturn.config.environment import (
    LEGACY_DATABASE,
    LEGACY_ENVIRONMENT,
    NOT_SETTINGS,
    legacy_overrides,
)
from keyturn.config.errors import SettingsError, describe, edits
from keyturn.config.limits import LimitSettings
from keyturn.config.listeners import ConnectionSettings, ListenerSettings
from keyturn.config.process import ProcessSettings
from keyturn.config.secrets import SecretSettings
from keyturn.config.storage import StorageSettings
from keyturn.config.tokens import TokenSettings
from keyturn.service.config import MAX_ACCESS_TOKEN_LIFETIME, ServiceConfig

__all__ = ["Settings", "closest_setting", "unknown_variables"]

#: A misspelling is at most this many edits away from a setting's name.
_MAX_EDITS = 2


# pydantic orders the fields from the last base to the first: storage, secrets, tokens,
# listeners, limits, process, connections -- the order `keyturn config show` and
# docs/configuration.md list them in. A new group goes first in this list.
class Settings(
    ConnectionSettings,
    ProcessSettings,
    LimitSettings,
    ListenerSettings,
    TokenSettings,
    SecretSettings,
    StorageSettings,
    BaseSettings,
):
    """Every knob Keyturn has; each field is ``KEYTURN_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="KEYTURN_", extra="forbid", validate_default=True, hide_input_in_errors=True
    )

    # Where each setting's value came from (`source`): filled by `from_environment`.
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **values: Any) -> Settings:
        """Build settings from ``KEYTURN_*`` plus JWThenticator's names (``KEYTURN_*`` wins).

        ``values`` (command-line options) win over both. An unknown ``KEYTURN_*`` variable
        close to a setting's name is refused as a misspelling; any other is left alone
        (`unknown_variables`).

        Raises:
            SettingsError: a variable is misspelt or a value is malformed; each problem
                names the variable, never its value.
        """
        env = os.environ if environ is None else environ
        refused, _ignored = unknown_variables(env)
        if refused:
            raise SettingsError(
                [
                    f"unknown setting {variable} (did you mean {meant}?)"
                    for variable, meant in refused.items()
                ]
            )
        legacy = {
            name: value
            for name, value in legacy_overrides(env).items()
            if f"KEYTURN_{name.upper()}" not in env
        }
        own = {
            name.removeprefix("KEYTURN_").lower(): value
            for name, value in env.items()
            if name.startswith("KEYTURN_")
            and name.removeprefix("KEYTURN_").lower() in cls.model_fields
        }
        sources = _sources(env, legacy, own, values)
        try:
            settings = cls(**{**legacy, **own, **values})
        except ValidationError as exc:
            raise SettingsError(_problems(exc, sources, values)) from None
        settings._sources = sources
        return settings

    def service_config(self) -> ServiceConfig:
        """`TokenSettings.service_config`, with key records trusted from memory for at most
        ``poll_interval``: the bound the verifier honours for revocations (issue 19)."""
        config = super().service_config()
        return dataclasses.replace(config, key_cache_ttl=timedelta(seconds=self.poll_interval))

    def public_url(self, path: str = "") -> str:
        """``path`` as clients reach it: the issuer, then ``url_prefix`` (RFC 8414 metadata,
        the token endpoint a client assertion's ``aud`` or a DPoP proof's ``htu`` may name)."""
        return f"{self.issuer.rstrip('/')}{self.url_prefix}{path}"

    def source(self, name: str) -> str:
        """Where setting ``name`` came from: ``default``, ``command line``, or a variable."""
        return self._sources.get(name, "default")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.access_token_lifetime > MAX_ACCESS_TOKEN_LIFETIME:
            # Room for JWThenticator's 25 h JWT_LEASE_TIME, and no more.
            raise ValueError("access_token_lifetime: at most two days (172800 seconds)")
        if self.signing_key_pem is not None and self.signing_key_file is not None:
            raise ValueError(
                "signing_key_pem: set KEYTURN_SIGNING_KEY_PEM (RSA_PRIVATE_KEY) or "
                "KEYTURN_SIGNING_KEY_FILE (RSA_PRIVATE_KEY_PATH), not both"
            )
        if self.replay_store == "redis" and self.redis_url is None:
            raise ValueError("replay_store=redis needs redis_url (KEYTURN_REDIS_URL)")
        return self

    def masked(self) -> dict[str, Any]:
        """Every setting as JSON-able values, secrets shown as ``'**********'``."""
        shown: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                shown[name] = "**********"
            elif isinstance(value, timedelta):
                shown[name] = int(value.total_seconds())
            elif isinstance(value, Path):
                shown[name] = str(value)
            else:
                shown[name] = value
        return shown


def _sources(
    env: Mapping[str, str],
    legacy: Mapping[str, Any],
    own: Mapping[str, Any],
    values: Mapping[str, Any],
) -> dict[str, str]:
    """Where each setting comes from: a variable, ``command line`` or ``default``."""
    sources = dict.fromkeys(Settings.model_fields, "default")
    by_setting = {setting: variable for variable, setting in LEGACY_ENVIRONMENT.items()}
    for name in legacy:
        sources[name] = by_setting.get(name, "+".join(v for v in LEGACY_DATABASE if v in env))
    sources.update({name: f"KEYTURN_{name.upper()}" for name in own})
    sources.update(dict.fromkeys(values, "command line"))
    return sources


def _problems(
    exc: ValidationError, sources: Mapping[str, str], values: Mapping[str, Any]
) -> list[str]:
    """The validation errors as lines naming the variable or option at fault."""
    variables = {
        name: source if source not in ("default", "command line") else ""
        for name, source in sources.items()
    }
    names = {name: variable or f"KEYTURN_{name.upper()}" for name, variable in variables.items()}
    for name in values:
        names[name] = f"{name} (command line)"
    return list(
        dict.fromkeys(describe(error, names, Settings.model_fields) for error in exc.errors())
    )


def closest_setting(name: str) -> str | None:
    """The setting an unknown ``KEYTURN_<NAME>`` most likely meant, or None.

    A setting is close when its name is at most two edits away (``audiences`` for
    ``audience``), or when it ends with the whole name (``port`` for ``public_port``;
    the first such setting, in declaration order). ``name`` is lower case, no prefix.
    """
    fields = list(Settings.model_fields)
    near = [(edits(name, field), index, field) for index, field in enumerate(fields)]
    best = min(near)
    if best[0] <= _MAX_EDITS and best[0] < len(name):
        return best[2]
    return next((field for field in fields if field.endswith(f"_{name}")), None)


def unknown_variables(environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The ``KEYTURN_*`` variables in ``environ`` that are not settings, split in two.

    The rule: a name close to a setting (`closest_setting`) is a misspelling and refused
    (returned with the variable it meant); any other is someone else's variable -- a
    client's, a tool's -- and only reported. `NOT_SETTINGS` are neither.
    """
    refused: dict[str, str] = {}
    ignored: list[str] = []
    for variable in sorted(environ):
        if not variable.startswith("KEYTURN_") or variable in NOT_SETTINGS:
            continue
        name = variable.removeprefix("KEYTURN_").lower()
        if name in Settings.model_fields:
            continue
        meant = closest_setting(name)
        if meant is None:
            ignored.append(variable)
        else:
            refused[variable] = f"KEYTURN_{meant.upper()}"
    return refused, ignored
