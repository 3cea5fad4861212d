"""The claims policy: what a token may say about roles, scopes and assurance, with no I/O.

A `ClaimsPolicy` is declared once, in TOML (``docs/policy.md``) or in code, and asked once
per token: `ClaimsPolicy.build_claims` returns a `Grant` or raises `PolicyViolation`
naming the offending claim and value.

* roles    apijwt's ``keys``: each role has an optional issuer alias and its own scopes
* scopes   allowed to every role, plus each role's own (apijwt's ``PER_KEY``)
* claims   ``level``, ``factor``, ``target``, ``dnt`` and custom extras, each with a kind,
           allowed values (globally, and narrowed per role) and a default

A claim the policy does not declare cannot be set, and registered claims
(`keyturn.core.tokens.REGISTERED_CLAIMS`) cannot be declared at all.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

from keyturn.core.claim_rules import (
    BUILTIN_CLAIMS,
    CLAIM_KINDS,
    CLAIM_NAME,
    DEFAULT_LEVELS,
    DNT_VALUES,
    RESERVED_CLAIMS,
    ClaimKind,
    ClaimRule,
    Grant,
    RoleRule,
    scope_set,
    scope_token,
)
from keyturn.core.scopes import format_scope
from keyturn.core.tokens import REGISTERED_CLAIMS
from keyturn.errors import PolicyViolation

__all__ = [
    "BUILTIN_CLAIMS",
    "CLAIM_KINDS",
    "DEFAULT_LEVELS",
    "DNT_VALUES",
    "RESERVED_CLAIMS",
    "ClaimKind",
    "ClaimRule",
    "ClaimsPolicy",
    "Grant",
    "RoleRule",
]

_POLICY_FIELDS: Final = frozenset(
    {"scopes", "allow_any_scope", "default_roles", "roles_claim", "roles", "claims"}
)
_ROLE_FIELDS: Final = frozenset({"issuer", "scopes", "claims"})
_CLAIM_FIELDS: Final = frozenset({"type", "allowed", "default"})


@dataclass(frozen=True, slots=True)
class ClaimsPolicy:
    """A declarative policy of what may be put in a token; build it once, use it per token.

    Raises:
        ValueError: the policy contradicts itself (the message names the field).
    """

    roles: tuple[RoleRule, ...] = ()
    #: Scopes every role may hold.
    scopes: frozenset[str] = frozenset()
    claims: tuple[ClaimRule, ...] = ()
    #: The roles a token gets when the caller names none.
    default_roles: tuple[str, ...] = ()
    #: True: the policy puts no bound on scopes, the key's own scope list does.
    allow_any_scope: bool = False
    #: The claim that lists the token's roles; None leaves roles out of the token.
    roles_claim: str | None = "roles"
    _roles: Mapping[str, RoleRule] = field(init=False, repr=False, compare=False)
    _claims: Mapping[str, ClaimRule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", scope_set(self.scopes, "scopes"))
        claims = {rule.name: rule for rule in self.claims}
        if len(claims) != len(tuple(self.claims)):
            raise ValueError("claims: a claim is declared twice")
        roles: dict[str, RoleRule] = {}
        for role in self.roles:
            if role.name in roles:
                raise ValueError(f"roles.{role.name}: the role is declared twice")
            roles[role.name] = _narrowed(role, claims)
        for name in self.default_roles:
            if name not in roles:
                raise ValueError(f"default_roles: {name!r} is not a declared role")
        if self.roles_claim is not None:
            if self.roles_claim in RESERVED_CLAIMS or self.roles_claim in claims:
                raise ValueError(f"roles_claim: {self.roles_claim!r} is taken by another claim")
            if CLAIM_NAME.fullmatch(self.roles_claim) is None:
                raise ValueError("roles_claim: a claim name is 1-64 of A-Z a-z 0-9 _ . : -")
        if not isinstance(self.allow_any_scope, bool):
            raise ValueError("allow_any_scope: must be true or false")
        if self.allow_any_scope and (self.scopes or any(role.scopes for role in roles.values())):
            raise ValueError(
                "allow_any_scope: cannot be combined with scope lists, which it "
                "would silently ignore"
            )
        object.__setattr__(self, "roles", tuple(roles.values()))
        object.__setattr__(self, "claims", tuple(claims.values()))
        object.__setattr__(self, "default_roles", tuple(self.default_roles))
        object.__setattr__(self, "_roles", MappingProxyType(roles))
        object.__setattr__(self, "_claims", MappingProxyType(claims))

    @classmethod
    def default(cls) -> ClaimsPolicy:
        """Return the policy used when none is configured: permissive, but never inventive.

        One role, ``default``. Scopes are bounded by each key's own scope list only, so a
        key without one can be granted no scope at all. ``level`` must be one of
        `DEFAULT_LEVELS`, ``dnt`` 0-3, ``factor`` and ``target`` any string; no claim has
        a default, and no custom claim is allowed.
        """
        return cls(
            roles=(RoleRule("default"),),
            default_roles=("default",),
            allow_any_scope=True,
            claims=(
                ClaimRule("level", allowed=DEFAULT_LEVELS),
                ClaimRule("factor"),
                ClaimRule("target"),
                ClaimRule("dnt"),
            ),
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ClaimsPolicy:
        """Build a policy from parsed TOML or JSON (the layout ``docs/policy.md`` describes).

        Raises:
            ValueError: an unknown field, a value of the wrong type, or a contradiction;
                the message starts with the dotted name of the field.
        """
        _only(data, _POLICY_FIELDS, "policy")
        roles_claim = data.get("roles_claim", "roles")
        if not isinstance(roles_claim, str):
            raise ValueError('roles_claim: must be a claim name, or "" to leave roles out')
        return cls(
            roles=tuple(
                _role_from_mapping(name, spec)
                for name, spec in _table(data.get("roles", {}), "roles").items()
            ),
            scopes=frozenset(_strings(data.get("scopes", []), "scopes")),
            claims=tuple(
                _claim_from_mapping(name, spec)
                for name, spec in _table(data.get("claims", {}), "claims").items()
            ),
            default_roles=tuple(_strings(data.get("default_roles", []), "default_roles")),
            allow_any_scope=data.get("allow_any_scope", False),
            roles_claim=roles_claim or None,
        )

    @classmethod
    def from_toml(cls, text: str) -> ClaimsPolicy:
        """Parse a policy from TOML text.

        Raises:
            ValueError: the text is not TOML, or not a valid policy (see `from_mapping`).
        """
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"policy is not valid TOML: {exc}") from exc
        return cls.from_mapping(data)

    @classmethod
    def from_toml_file(cls, path: str | PathLike[str]) -> ClaimsPolicy:
        """Read and parse a TOML policy file (the only I/O in this module).

        Raises:
            OSError: the file cannot be read.
            ValueError: see `from_toml`.
        """
        return cls.from_toml(Path(path).read_text(encoding="utf-8"))

    def role(self, name: str) -> RoleRule | None:
        """Return the declared role called ``name``, or None."""
        return self._roles.get(name)

    def build_claims(
        self,
        *,
        roles: Iterable[str] | None = None,
        requested_scopes: Iterable[str] | None = None,
        key_scopes: Iterable[str] | None = None,
        level: float | None = None,
        factor: str | Iterable[str] | None = None,
        target: str | None = None,
        dnt: int | None = None,
        extras: Mapping[str, Any] | None = None,
        holder: Literal["key", "user"] = "key",
    ) -> Grant:
        """Decide what a token may carry, or refuse.

        Scopes: the grantable set is (policy-wide scopes | the roles' scopes), narrowed to
        ``key_scopes`` when the key has a list. ``requested_scopes`` must be a subset of it;
        when None, the whole grantable set is granted. A space-separated string is parsed.

        Claims: each declared claim gets the given value or its default; every value, the
        defaults too, must fit the claim's kind and the allowed values of the roles.

        Args:
            roles: the token's roles; None means the policy's ``default_roles``.
            requested_scopes: the scopes the client asked for.
            key_scopes: the API key's own scope list; None when the key has none.
            level: authentication assurance level.
            factor: the authentication factor(s) used.
            target: whom the scopes apply to, when not the subject.
            dnt: do-not-track, 0-3.
            extras: other claims declared by the policy (a key's stored claims); may
                also hold ``level``, ``factor``, ``target`` or ``dnt`` when not given above.
            holder: whom a refused scope is explained to: an API key or a user.

        Raises:
            PolicyViolation: names the claim (``scope`` for scopes, ``roles`` for roles) and
                the offending value.
        """
        role_rules = self._resolve_roles(roles)
        scopes = self._grant_scopes(role_rules, requested_scopes, key_scopes, holder)
        given = self._given(
            {"level": level, "factor": factor, "target": target, "dnt": dnt}, extras or {}
        )
        claims: dict[str, Any] = {}
        if self.roles_claim is not None and role_rules:
            claims[self.roles_claim] = [role.name for role in role_rules]
        for rule in self.claims:
            value = given.get(rule.name)
            if value is None:
                value = rule.default
            if value is not None:
                claims[rule.name] = rule.check(value, _allowed_for(rule, role_rules))
        return Grant(
            scopes=scopes,
            claims=MappingProxyType(claims),
            roles=tuple(role.name for role in role_rules),
            issuer=_issuer(role_rules),
        )

    def _given(self, given: dict[str, Any], extras: Mapping[str, Any]) -> dict[str, Any]:
        """The claim values asked for: the arguments, merged with ``extras``, all declared."""
        for name, value in extras.items():
            if name in REGISTERED_CLAIMS:
                raise PolicyViolation(name, value, "registered claims cannot be set as extras")
            if name in {"scopes", self.roles_claim}:
                raise PolicyViolation(name, value, "set this claim with its own argument")
            if value is None:
                continue
            if given.get(name) is not None:
                raise PolicyViolation(name, value, "given both as an argument and in extras")
            given[name] = value
        for name, value in given.items():
            if value is not None and name not in self._claims:
                raise PolicyViolation(name, value, "the policy does not allow this claim")
        return given

    def _resolve_roles(self, roles: Iterable[str] | None) -> tuple[RoleRule, ...]:
        names = self.default_roles if roles is None else roles
        if isinstance(names, str):
            names = (names,)
        resolved: dict[str, RoleRule] = {}
        for name in names:
            role = self._roles.get(name) if isinstance(name, str) else None
            if role is None:
                raise PolicyViolation("roles", name, "unknown role")
            resolved[name] = role
        return tuple(resolved.values())

    def _grant_scopes(
        self,
        role_rules: tuple[RoleRule, ...],
        requested: Iterable[str] | None,
        key_scopes: Iterable[str] | None,
        holder: Literal["key", "user"],
    ) -> frozenset[str]:
        if isinstance(key_scopes, str):
            key_scopes = key_scopes.split()
        by_key = None if key_scopes is None else frozenset(key_scopes)
        if self.allow_any_scope:
            # Nothing grants a scope nobody named: no key list means no scope.
            grantable = by_key or frozenset()
        else:
            by_policy = self.scopes.union(*(role.scopes for role in role_rules))
            grantable = by_policy if by_key is None else by_policy & by_key
        if requested is None:
            return grantable
        if isinstance(requested, str):
            requested = [scope for scope in requested.split(" ") if scope]
        asked: set[str] = set()
        for scope in requested:
            try:
                asked.add(scope_token(scope))
            except ValueError as exc:
                raise PolicyViolation("scope", scope, str(exc)) from exc
        refused = asked - grantable
        if refused:
            # RFC 6749 §3.3: never issue a scope beyond what the client may have.
            raise PolicyViolation("scope", format_scope(refused), _NOT_ALLOWED[holder])
        return frozenset(asked)


#: Why a requested scope is refused, in the holder's words.
_NOT_ALLOWED: Final = {
    "key": "not allowed for this key and its roles",
    "user": "not allowed for this user and their roles",
}


def _issuer(role_rules: tuple[RoleRule, ...]) -> str | None:
    """The issuer alias the roles share, or None; roles with different ones are refused."""
    issuers = {role.issuer for role in role_rules if role.issuer is not None}
    if len(issuers) > 1:
        names = [role.name for role in role_rules]
        raise PolicyViolation("roles", names, "these roles have different issuers")
    return issuers.pop() if issuers else None


def _allowed_for(rule: ClaimRule, role_rules: tuple[RoleRule, ...]) -> frozenset[Any] | None:
    """Return the values ``rule`` allows for holders of ``role_rules`` (None: any)."""
    if not role_rules:
        return rule.allowed
    allowed: set[Any] = set()
    for role in role_rules:
        # A token with several roles may carry what any one of them allows.
        own = role.claims.get(rule.name, rule.allowed)
        if own is None:
            return None
        allowed |= own
    return frozenset(allowed)


def _narrowed(role: RoleRule, claims: Mapping[str, ClaimRule]) -> RoleRule:
    """Check a role's claim limits against the policy's claims and normalise them."""
    limits: dict[str, frozenset[Any]] = {}
    for name, values in role.claims.items():
        where = f"roles.{role.name}.claims.{name}"
        rule = claims.get(name)
        if rule is None:
            raise ValueError(f"{where}: the policy declares no claim {name!r}")
        limits[name] = rule.normalise_allowed(values, where)
        if rule.allowed is not None and not limits[name] <= rule.allowed:
            extra = sorted(map(repr, limits[name] - rule.allowed))
            raise ValueError(
                f"{where}: a role can only narrow claims.{name}.allowed, "
                f"which lacks {', '.join(extra)}"
            )
    return replace(role, claims=MappingProxyType(limits))


def _only(data: Any, fields: frozenset[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a table")
    unknown = sorted(set(data) - fields)
    if unknown:
        prefix = "" if where == "policy" else f"{where}."
        raise ValueError(
            f"{prefix}{unknown[0]}: unknown field (expected one of {', '.join(sorted(fields))})"
        )


def _table(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a table")
    return data


def _strings(data: Any, where: str) -> list[str]:
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise ValueError(f"{where}: expected a list of strings")
    return data


def _role_from_mapping(name: str, spec: Any) -> RoleRule:
    where = f"roles.{name}"
    _only(spec, _ROLE_FIELDS, where)
    issuer = spec.get("issuer")
    if issuer is not None and not isinstance(issuer, str):
        raise ValueError(f"{where}.issuer: expected a string")
    limits = _table(spec.get("claims", {}), f"{where}.claims")
    for claim, values in limits.items():
        if not isinstance(values, list):
            raise ValueError(f"{where}.claims.{claim}: expected a list of allowed values")
    return RoleRule(
        name=name,
        issuer=issuer,
        scopes=frozenset(_strings(spec.get("scopes", []), f"{where}.scopes")),
        claims={
            claim: frozenset(_hashable(values, f"{where}.claims.{claim}"))
            for claim, values in limits.items()
        },
    )


def _claim_from_mapping(name: str, spec: Any) -> ClaimRule:
    where = f"claims.{name}"
    _only(spec, _CLAIM_FIELDS, where)
    kind = spec.get("type", "any")
    if kind not in CLAIM_KINDS:
        raise ValueError(f"{where}.type: must be one of {', '.join(CLAIM_KINDS)}")
    allowed = spec.get("allowed")
    if allowed is not None and not isinstance(allowed, list):
        raise ValueError(f"{where}.allowed: expected a list of values")
    return ClaimRule(
        name=name,
        kind=kind,
        allowed=None if allowed is None else frozenset(_hashable(allowed, f"{where}.allowed")),
        default=spec.get("default"),
    )


def _hashable(values: list[Any], where: str) -> list[Any]:
    for value in values:
        if isinstance(value, list | dict):
            raise ValueError(f"{where}: allowed values are strings, numbers or booleans")
    return values
