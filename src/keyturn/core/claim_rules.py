"""The rules a claims policy is made of: `ClaimRule`, `RoleRule`, and the `Grant` it returns.

A `ClaimRule` checks one claim's value against its kind and allowed values; a `RoleRule`
holds a role's issuer alias, scopes and narrowed claim values. `keyturn.core.policy`
composes them into a `ClaimsPolicy`; everything here is pure and raises `ValueError` for a
rule that contradicts itself, `PolicyViolation` for a value a rule refuses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias, get_args

from keyturn.core.scopes import format_scope, parse_scope
from keyturn.core.tokens import REGISTERED_CLAIMS
from keyturn.errors import PolicyViolation

__all__ = [
    "BUILTIN_CLAIMS",
    "CLAIM_KINDS",
    "CLAIM_NAME",
    "DEFAULT_LEVELS",
    "DNT_VALUES",
    "RESERVED_CLAIMS",
    "ClaimKind",
    "ClaimRule",
    "Grant",
    "RoleRule",
    "scope_set",
    "scope_token",
]

ClaimKind: TypeAlias = Literal["string", "strings", "integer", "number", "boolean", "any"]
CLAIM_KINDS: Final[tuple[ClaimKind, ...]] = get_args(ClaimKind)
#: The assurance levels apijwt documents: none, external, password, MFA, Yubikey,
#: external MFA, certificate.
DEFAULT_LEVELS: Final = frozenset({0.0, 1.0, 2.0, 3.0, 3.1, 3.5, 4.0})
#: Do-not-track: 0 track, 1 do not track, 2 do not keep even anonymous data, 3 test user.
DNT_VALUES: Final = frozenset({0, 1, 2, 3})
#: The kinds each built-in claim may take; the first one is used when a rule names none.
BUILTIN_CLAIMS: Final[Mapping[str, tuple[ClaimKind, ...]]] = MappingProxyType(
    {
        "level": ("number",),
        "factor": ("string", "strings"),
        "target": ("string",),
        "dnt": ("integer",),
    }
)
#: Names no policy may declare: the registered claims, and apijwt's ``scopes`` (Keyturn
#: puts scopes in the registered ``scope``; a second scope claim would contradict it).
RESERVED_CLAIMS: Final = REGISTERED_CLAIMS | {"scopes"}

CLAIM_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_MAX_STRING: Final = 1024
_MAX_TARGET: Final = 255  # the same bound the verifier puts on ``sub``
_MAX_DEPTH: Final = 16


def _plain_json(value: Any, depth: int = 0) -> Any:
    """Return ``value`` as plain JSON (tuples become lists) or raise ValueError."""
    if depth > _MAX_DEPTH:
        raise ValueError("value is nested too deeply")
    if isinstance(value, str):
        if len(value) > _MAX_STRING:
            raise ValueError(f"strings are limited to {_MAX_STRING} characters")
        return value
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("NaN and Infinity are not JSON")  # RFC 8259 §6
        return value
    if isinstance(value, list | tuple):
        return [_plain_json(item, depth + 1) for item in value]
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise ValueError("JSON object keys must be strings")
        return {key: _plain_json(item, depth + 1) for key, item in value.items()}
    raise ValueError(f"a {type(value).__name__} is not a JSON value")


def _matches(value: Any, allowed: frozenset[Any]) -> bool:
    # Python has 1 == 1.0 == True; in a token a boolean is never a number.
    return any(
        isinstance(value, bool) is isinstance(candidate, bool) and value == candidate
        for candidate in allowed
    )


def scope_token(value: Any) -> str:
    """Return ``value`` if it is one RFC 6749 §3.3 scope-token, else raise ValueError."""
    if not isinstance(value, str) or parse_scope(value) != {value}:
        raise ValueError(f"{value!r} is not a single RFC 6749 §3.3 scope token")
    return value


def scope_set(values: Iterable[str], where: str) -> frozenset[str]:
    """``values`` as a set of scope tokens; ``where`` names the field in the ValueError."""
    if isinstance(values, str):
        raise ValueError(f"{where}: expected a list of scope tokens, not a string")
    try:
        return frozenset(scope_token(value) for value in values)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token may carry: its scopes and its policy claims (never registered ones)."""

    scopes: frozenset[str]
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    roles: tuple[str, ...] = ()
    #: The roles' issuer alias (apijwt writes it to ``iss``; Keyturn's own tokens do not).
    issuer: str | None = None

    @property
    def scope(self) -> str:
        """The scopes as the space-separated ``scope`` string (RFC 6749 §3.3)."""
        return format_scope(self.scopes)


@dataclass(frozen=True, slots=True)
class ClaimRule:
    """What one claim may hold: its kind, its allowed values and its default.

    Built-in claims have fixed kinds: ``level`` a number, ``dnt`` an integer from 0 to 3,
    ``target`` a string, ``factor`` a string or a list of strings; on them the kind
    ``"any"`` (the default) stands for the built-in one.

    Raises:
        ValueError: the name is reserved, or the kind, allowed values or default do not fit.
    """

    name: str
    kind: ClaimKind = "any"
    #: None: any value of the kind. For lists, every item must be allowed.
    allowed: frozenset[Any] | None = None
    #: Used when the caller gives no value; None leaves the claim out.
    default: Any = field(default=None, hash=False)

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or CLAIM_NAME.fullmatch(name) is None:
            raise ValueError(f"claims.{name}: a claim name is 1-64 of A-Z a-z 0-9 _ . : -")
        if name in RESERVED_CLAIMS:
            raise ValueError(f"claims.{name}: registered claims are set by Keyturn, not a policy")
        kinds = BUILTIN_CLAIMS.get(name, CLAIM_KINDS)
        kind = kinds[0] if self.kind == "any" and name in BUILTIN_CLAIMS else self.kind
        if kind not in kinds:
            raise ValueError(f"claims.{name}.type: must be one of {', '.join(kinds)}")
        object.__setattr__(self, "kind", kind)
        allowed = DNT_VALUES if self.allowed is None and name == "dnt" else self.allowed
        if allowed is not None:
            allowed = self.normalise_allowed(allowed, f"claims.{name}.allowed")
        object.__setattr__(self, "allowed", allowed)
        if self.default is not None:
            try:
                default = self.check(self.default, allowed)
            except PolicyViolation as exc:
                raise ValueError(f"claims.{name}.default: {exc.reason}") from exc
            object.__setattr__(self, "default", default)

    def normalise_allowed(self, values: Iterable[Any], where: str) -> frozenset[Any]:
        """Check a set of allowed values against the kind; numbers become floats.

        Raises:
            ValueError: a value is not of the kind (``where`` names the field).
        """
        if isinstance(values, str | bytes | Mapping):
            raise ValueError(f"{where}: expected a list of values")
        result: set[Any] = set()
        for value in values:
            try:
                result.add(self._scalar(value, "string" if self.kind == "strings" else self.kind))
            except PolicyViolation as exc:
                raise ValueError(f"{where}: {value!r} {exc.reason}") from exc
        if self.name == "dnt" and not result <= DNT_VALUES:
            raise ValueError(f"{where}: dnt values are 0, 1, 2 or 3")
        return frozenset(result)

    def check(self, value: Any, allowed: frozenset[Any] | None) -> Any:
        """Return ``value`` normalised if it fits the kind and ``allowed``.

        Raises:
            PolicyViolation: the value has the wrong type or is not allowed.
        """
        if self.kind == "strings":
            if not isinstance(value, list | tuple):
                raise PolicyViolation(self.name, value, "must be a list of strings")
            checked: Any = list(dict.fromkeys(self._scalar(item, "string") for item in value))
            items = checked
        elif self.kind == "any":
            try:
                checked = _plain_json(value)
            except ValueError as exc:
                raise PolicyViolation(self.name, value, str(exc)) from exc
            if allowed is not None and isinstance(checked, dict):
                raise PolicyViolation(self.name, value, "an object cannot be one of the values")
            items = checked if isinstance(checked, list) else [checked]
        else:
            checked = self._scalar(value, self.kind)
            items = [checked]
        if self.name == "target" and len(checked) > _MAX_TARGET:
            raise PolicyViolation(self.name, value, f"longer than {_MAX_TARGET} characters")
        if allowed is not None:
            for item in items:
                if isinstance(item, list | dict) or not _matches(item, allowed):
                    raise PolicyViolation(self.name, item, "not an allowed value")
        return checked

    def _scalar(self, value: Any, kind: ClaimKind) -> Any:
        if kind == "string":
            if not isinstance(value, str):
                raise PolicyViolation(self.name, value, "must be a string")
            if len(value) > _MAX_STRING:
                raise PolicyViolation(self.name, value, f"longer than {_MAX_STRING} characters")
            return value
        if kind == "boolean":
            if not isinstance(value, bool):
                raise PolicyViolation(self.name, value, "must be a boolean")
            return value
        if kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise PolicyViolation(self.name, value, "must be an integer")
            return value
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PolicyViolation(self.name, value, "must be a number")
            if not math.isfinite(value):
                raise PolicyViolation(self.name, value, "NaN and Infinity are not JSON")
            return float(value)
        try:  # "any" in an allowed list: a JSON scalar
            scalar = _plain_json(value)
        except ValueError as exc:
            raise PolicyViolation(self.name, value, str(exc)) from exc
        if scalar is None or isinstance(scalar, list | dict):
            raise PolicyViolation(self.name, value, "must be a string, number or boolean")
        return scalar


@dataclass(frozen=True, slots=True)
class RoleRule:
    """One role (apijwt's ``keys`` entry): its issuer alias, its scopes and claim limits.

    Raises:
        ValueError: a bad name, issuer or scope token.
    """

    name: str
    #: apijwt puts this in ``iss`` ("auth_user"); Keyturn reports it as `Grant.issuer`.
    issuer: str | None = None
    #: Scopes this role may hold on top of the policy-wide ones (apijwt's ``PER_KEY``).
    scopes: frozenset[str] = frozenset()
    #: Per-claim allowed values for holders of this role; each narrows the policy's list.
    claims: Mapping[str, frozenset[Any]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or CLAIM_NAME.fullmatch(self.name) is None:
            raise ValueError(f"roles.{self.name}: a role name is 1-64 of A-Z a-z 0-9 _ . : -")
        if self.issuer is not None and (not isinstance(self.issuer, str) or not self.issuer):
            raise ValueError(f"roles.{self.name}.issuer: must be a non-empty string")
        object.__setattr__(self, "scopes", scope_set(self.scopes, f"roles.{self.name}.scopes"))
        if not isinstance(self.claims, Mapping):
            raise ValueError(f"roles.{self.name}.claims: must be a table of allowed values")
        object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))
