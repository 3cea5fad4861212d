"""A drop-in for the ``APIJwt`` class of the ``api-jwt`` and ``api-jwt-2`` packages.

Migrate by changing ``from api_jwt import APIJwt`` to
``from keyturn.compat.apijwt import APIJwt``. Tokens keep api-jwt's wire format (RS256,
no ``kid``; numbers and lists as strings), so mixed fleets keep interoperating, while
verification goes through Keyturn's hardened legacy profile
(`keyturn.core.compat_tokens.verify_legacy_token`) and the ``allowed``/``PER_KEY`` checks
through `keyturn.core.policy.ClaimsPolicy`. ``docs/compat-apijwt.md`` lists the differences.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from itertools import chain
from typing import Any, Final, TypeAlias

from keyturn.core.compat_tokens import issue_legacy_token, verify_legacy_token
from keyturn.core.policy import BUILTIN_CLAIMS, ClaimKind, ClaimRule, ClaimsPolicy, Grant, RoleRule
from keyturn.core.signing import SigningKey, VerificationKey
from keyturn.core.tokens import REGISTERED_CLAIMS
from keyturn.errors import ExpiredTokenError, InvalidTokenError, PolicyViolation, SigningKeyError

__all__ = ["APIJwt"]

LOG = logging.getLogger(__name__)

PublicKeyInput: TypeAlias = str | bytes | VerificationKey
PrivateKeyInput: TypeAlias = str | bytes | SigningKey

#: api-jwt's defaults (``APIJwt.__init__`` of api-jwt 1.2.2 and api-jwt-2 1.3.2).
_DEFAULT_ALLOWED: Final[Mapping[str, Any]] = {
    "keys": {"user": "auth_user", "admin": "auth_admin"},
    "level": [0.0, 1.0, 2.0, 3.0, 4.0],
    "dnt": [0, 1, 2, 3],
    "scopes": {"PER_KEY": {"user": ["user:all"], "admin": ["admin:all"]}},
}
_DEFAULT_EXTRAS: Final[Mapping[str, Any]] = {
    "level": 0.0,
    "factor": "",
    "target": "",
    "dnt": 0,
    "scopes": [],
}
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
#: api-jwt checks a value against a non-list, non-dict ``allowed`` entry by its type.
_EXAMPLE_KINDS: Final[Mapping[type, ClaimKind]] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
}
_GENERATED: list[SigningKey] = []
_GENERATED_LOCK = threading.Lock()


def _generated_key() -> SigningKey:
    """Return this process's generated RSA key, made on first use (never hard-coded)."""
    with _GENERATED_LOCK:
        if not _GENERATED:
            _GENERATED.append(SigningKey.generate("RS256"))
        return _GENERATED[0]


def _utc(timestamp: float) -> datetime:
    # api-jwt reports times as naive UTC datetimes (datetime.utcfromtimestamp).
    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None)


def _public_key(value: PublicKeyInput) -> VerificationKey:
    if isinstance(value, VerificationKey):
        if value.alg != "RS256":
            raise SigningKeyError(f"api-jwt tokens are RS256; this key verifies {value.alg}")
        return value
    if not isinstance(value, str | bytes):
        raise SigningKeyError("public keys must be PEM strings")
    return VerificationKey.from_pem(value, alg="RS256")


def _public_keys(value: PublicKeyInput | Iterable[PublicKeyInput]) -> list[VerificationKey]:
    """Load one PEM, a JSON list of PEMs, or a list of PEMs, as api-jwt accepts them."""
    items: Iterable[PublicKeyInput]
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        items = parsed if isinstance(parsed, list) else [value]
    elif isinstance(value, VerificationKey):
        items = [value]
    else:
        items = value
    return [_public_key(item) for item in items]


def _private_key(value: PrivateKeyInput) -> SigningKey:
    if isinstance(value, SigningKey):
        if value.alg != "RS256":
            raise SigningKeyError(f"api-jwt tokens are RS256; this key signs {value.alg}")
        return value
    return SigningKey.from_pem(value, alg="RS256")


def _claim_kind(name: str, default: Any, spec: Any) -> ClaimKind:
    """Map an api-jwt extra to a policy kind: built-ins are fixed, examples give a type."""
    if name in BUILTIN_CLAIMS:
        return "strings" if name == "factor" and isinstance(default, list) else "any"
    if spec is None or isinstance(spec, Mapping | list | tuple | set | frozenset):
        return "any"
    kind = _EXAMPLE_KINDS.get(type(spec))
    if kind is None:
        raise ValueError(f"allowed[{name!r}] must be a list, a dict or an example value")
    return kind


def _values(spec: Any, where: str) -> frozenset[Any]:
    if isinstance(spec, str | bytes) or not isinstance(spec, Iterable):
        raise ValueError(f"{where} must be a list of values")
    try:
        return frozenset(spec)
    except TypeError as exc:
        raise ValueError(f"{where}: values must be strings, numbers or booleans") from exc


def _policy_from_apijwt(allowed: Mapping[str, Any], extras: Mapping[str, Any]) -> ClaimsPolicy:
    """Translate api-jwt's ``allowed`` and ``extras`` into a `ClaimsPolicy`.

    Each ``keys`` entry becomes a role whose issuer is the ``iss`` value. A ``PER_KEY``
    table becomes per-role limits; a key it does not list may set nothing (api-jwt raised
    KeyError there).

    Raises:
        ValueError: the configuration cannot be expressed (the message names the entry).
    """
    keys = allowed.get("keys")
    if not isinstance(keys, Mapping) or not all(
        isinstance(name, str) and isinstance(issuer, str) for name, issuer in keys.items()
    ):
        raise ValueError("allowed['keys'] must map key names to their 'iss' strings")
    role_scopes: dict[str, frozenset[Any]] = dict.fromkeys(keys, frozenset())
    role_claims: dict[str, dict[str, frozenset[Any]]] = {name: {} for name in keys}
    scopes: frozenset[Any] = frozenset()
    any_scope = False
    rules = []
    for name, default in extras.items():
        spec = allowed.get(name)
        per_key = spec.get("PER_KEY") if isinstance(spec, Mapping) else None
        if per_key is not None and not isinstance(per_key, Mapping):
            raise ValueError(f"allowed[{name!r}]['PER_KEY'] must map key names to lists")
        per_role = (
            {
                role: _values(per_key.get(role, []), f"allowed[{name!r}]['PER_KEY'][{role!r}]")
                for role in keys
            }
            if per_key is not None
            else {}
        )
        if per_key is not None:
            values: frozenset[Any] | None = frozenset(chain.from_iterable(per_role.values()))
        elif isinstance(spec, Mapping | list | tuple | set | frozenset):
            values = _values(spec, f"allowed[{name!r}]")
        else:
            values = None  # no entry, or an example value: any value (of that type)
        if name == "scopes":
            role_scopes.update(per_role)
            scopes = frozenset() if per_key is not None or values is None else values
            any_scope = values is None
            continue
        for role, role_values in per_role.items():
            role_claims[role][name] = role_values
        rules.append(ClaimRule(name, kind=_claim_kind(name, default, spec), allowed=values))
    return ClaimsPolicy(
        roles=tuple(
            RoleRule(name, issuer=issuer, scopes=role_scopes[name], claims=role_claims[name])
            for name, issuer in keys.items()
        ),
        scopes=scopes,
        claims=tuple(rules),
        allow_any_scope=any_scope,
        roles_claim=None,
    )


def _wire_value(name: str, value: Any) -> Any:
    """Serialise a claim as api-jwt does: lists comma-joined, numbers as ``str()``."""
    if isinstance(value, list | tuple):
        if not all(isinstance(item, str) and "," not in item for item in value):
            raise ValueError(
                f"{name!r}: api-jwt joins lists with commas, so items must be "
                "strings without commas"
            )
        return ",".join(value)
    if isinstance(value, bool | int | float):
        return str(value)
    return value


def _typed(name: str, raw: Any, default: Any) -> Any:
    """Read a decoded claim back into the type of its extra's default, as api-jwt does."""
    if isinstance(default, list):
        if isinstance(raw, str):
            return raw.split(",")
        if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            return list(raw)
    elif isinstance(default, bool):
        if isinstance(raw, bool) or raw in ("True", "False"):
            return raw in (True, "True")
    elif isinstance(default, float):
        if (isinstance(raw, str) and _NUMBER.fullmatch(raw)) or _is_number(raw):
            number = float(raw)
            if math.isfinite(number):
                return number
    elif isinstance(default, int):
        if (isinstance(raw, str) and _INTEGER.fullmatch(raw)) or (
            _is_number(raw) and raw == int(raw)
        ):
            return int(raw)
    else:
        return raw
    raise InvalidTokenError(f"claim {name!r} does not hold a {type(default).__name__}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class APIJwt:
    """A JWT for APIs, configured once, then used to `encode` and `decode` tokens.

    The same object keeps the state of its last operation (``is_valid``, ``user``, ...),
    as api-jwt does, so share it between threads only with a lock.

    Args:
        public_keys: PEM public key(s) that verify tokens: one PEM, a JSON list of PEMs or a
            list. Without them, the public half of ``private_key`` is trusted.
        private_key: the PEM RSA private key that signs tokens. Without any key, a
            per-process generated RSA pair is used and a warning logged.
        ttl: default lifetime of encoded tokens, in seconds (3600).
        extras: extra claim names and their defaults (see `set_extras`).
        allowed: allowed values per claim, ``keys`` and ``PER_KEY`` (see `set_allowed`).
        audience: Keyturn addition: put this ``aud`` in tokens and require it (api-jwt-2
            1.3.2 verifiers need ``audience="aud"``). None: tokens carry no ``aud``.
        leeway: Keyturn addition: seconds of clock skew accepted on ``exp`` (0, as api-jwt).
        clock: Keyturn addition: returns the current UNIX time; inject one in tests.

    Raises:
        SigningKeyError: a key is not an RSA key of at least 2048 bits in PEM.
    """

    def __init__(
        self,
        public_keys: PublicKeyInput | Iterable[PublicKeyInput] | None = None,
        private_key: PrivateKeyInput | None = None,
        ttl: float | None = None,
        *,
        extras: Mapping[str, Any] | None = None,
        allowed: Mapping[str, Any] | None = None,
        audience: str | None = None,
        leeway: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._allowed: dict[str, Any] = copy.deepcopy(dict(_DEFAULT_ALLOWED))
        self._extras: dict[str, Any] = copy.deepcopy(dict(_DEFAULT_EXTRAS))
        self._policy: ClaimsPolicy | None = None
        self._ttl: float = ttl or 3600
        self._audience = audience
        self._leeway = leeway
        self._clock = clock
        self._signing_key = _generated_key()
        self._public: list[VerificationKey] = [self._signing_key.verification_key]
        self.override_keys(public_keys=public_keys, private_key=private_key)
        if private_key and not public_keys:
            self._public = [self._signing_key.verification_key]
        if not private_key:
            LOG.warning(
                "APIJwt has no private key: encode() signs with a per-process generated RSA "
                "key that no other process trusts%s",
                "" if public_keys else ", and decode() trusts only that key",
            )
        self._valid = False
        self._expired = True
        self._bad = False
        self._token: str | None = None
        self._user: dict[str, Any] = {"id": "", "exp": _utc(clock())}
        for name, default in (extras or {}).items():
            self.set_extras(name, default)
        for name, values in (allowed or {}).items():
            self.set_allowed(name, values)

    def reset_keys(self) -> None:
        """Go back to the per-process generated key pair (api-jwt: its dummy pair)."""
        LOG.warning("APIJwt keys reset to the per-process generated RSA key pair")
        self._signing_key = _generated_key()
        self._public = [self._signing_key.verification_key]

    def override_keys(
        self,
        public_keys: PublicKeyInput | Iterable[PublicKeyInput] | None = None,
        private_key: PrivateKeyInput | None = None,
    ) -> None:
        """Replace the public keys, the private key, or both (empty values change nothing).

        Raises:
            SigningKeyError: a key is not a usable RSA PEM.
        """
        if public_keys:
            self._public = _public_keys(public_keys)
        if private_key:
            self._signing_key = _private_key(private_key)

    def add_public_keys(
        self, keys: PublicKeyInput | Iterable[PublicKeyInput] | None = None
    ) -> None:
        """Trust more public keys, given as one PEM or a list of PEMs.

        Raises:
            SigningKeyError: a key is not a usable RSA PEM.
        """
        if keys is None:
            return
        items = [keys] if isinstance(keys, str | bytes | VerificationKey) else keys
        self._public.extend(_public_key(key) for key in items)

    def set_extras(self, key: str, default: Any) -> None:
        """Allow the claim ``key`` in encoded tokens, with ``default`` (None: left out).

        Raises:
            ValueError: ``key`` is a registered claim, which only the issuer sets.
        """
        if key in REGISTERED_CLAIMS:
            raise ValueError(f"{key!r} is a registered claim and cannot be an extra")
        self._extras[key] = copy.deepcopy(default)
        self._policy = None

    def set_allowed(self, key: str, values: Any) -> None:
        """Set the allowed values of a claim: a list, ``{"PER_KEY": {key: list}}``, an
        example value whose type is required, or None for any value.

        ``keys`` is special: it maps key names to the ``iss`` their tokens carry.
        """
        self._allowed[key] = copy.deepcopy(values)
        self._policy = None

    def encode(
        self,
        subject: str | None = None,
        key: str = "user",
        exp: float | None = None,
        **kwargs: Any,
    ) -> str | None:
        """Sign a token for ``subject`` as key type ``key``, living ``exp`` seconds.

        Extra claims come as keyword arguments; each must have been declared with
        `set_extras` and fit `set_allowed` (``PER_KEY`` lists are looked up by ``key``).
        ``extras=`` and ``allowed=`` are short-cuts for those two calls.

        Returns:
            The token, or None when ``key`` is not a configured key name.

        Raises:
            ValueError: no subject, or a value the configuration does not allow.
            AttributeError: a claim that was never declared with `set_extras`.
        """
        for name, default in kwargs.pop("extras", {}).items():
            self.set_extras(name, default)
        for name, values in kwargs.pop("allowed", {}).items():
            self.set_allowed(name, values)
        keys = self._allowed.get("keys")
        if not isinstance(keys, Mapping) or key not in keys:
            self._valid, self._bad = False, True
            LOG.warning("APIJwt key name %r is not configured", key)
            return None
        if subject is None:
            raise ValueError("subject is not set in token encode")
        if not isinstance(subject, str) or not subject:
            raise ValueError("subject must be a non-empty string")
        for name in kwargs:
            if name not in self._extras:
                raise AttributeError(f"{name!r} is not an allowed extra; declare it first")
        given = {
            name: self._coerce(name, value) for name, value in kwargs.items() if value is not None
        }
        grant = self._check(key, given)
        expires_at = math.floor(self._clock() + (self._ttl if exp is None else exp))
        payload: dict[str, Any] = {"iss": grant.issuer, "sub": subject, "exp": expires_at}
        if self._audience is not None:
            payload["aud"] = self._audience
        payload.update((name, value) for name, value in self._extras.items() if value is not None)
        payload.update(given)
        payload = {
            name: _wire_value(name, value) if name not in {"exp", "aud"} else value
            for name, value in payload.items()
        }
        self._token = issue_legacy_token(self._signing_key, payload)
        self._valid, self._expired, self._bad = True, False, False
        self._user = {"id": subject, "exp": _utc(expires_at)}
        self._user.update((name, value) for name, value in payload.items() if name != "exp")
        return self._token

    def decode(self, token: str | bytes | None = None) -> dict[str, Any] | None:
        """Verify ``token`` and return its claims, or None; sets `is_valid`, `is_bad`, ...

        The result holds every claim, with the extras read back into their defaults'
        types (``level`` a float, ``scopes`` a list), ``id`` (the subject) and ``exp`` (a
        naive UTC datetime).
        """
        if token is None:
            self._valid = False
            LOG.error("Cannot decode an empty token")
            return None
        self._token = token if isinstance(token, str) else token.decode("ascii", "replace")
        self._user = {"id": "", "exp": _utc(self._clock())}
        try:
            verified = verify_legacy_token(
                token,
                keys=self._public,
                now=self._clock(),
                leeway=self._leeway,
                audience=self._audience,
            )
            user = self._user_from(verified.subject, verified.expires_at, verified.claims)
        except ExpiredTokenError:
            self._valid, self._expired, self._bad = False, True, False
            LOG.info("Token has expired")
            return None
        except InvalidTokenError as exc:
            self._valid, self._expired, self._bad = False, False, True
            LOG.info("Token refused: %s", exc.message)
            return None
        self._valid, self._expired, self._bad = True, False, False
        self._user = user
        return user

    @property
    def user(self) -> dict[str, Any]:
        """The claims of the last encoded or decoded token."""
        return self._user

    @property
    def jwt(self) -> str | None:
        """The last encoded or decoded token."""
        return self._token

    @property
    def is_valid(self) -> bool:
        """Whether the last token was encoded, or decoded and verified."""
        return self._valid

    @property
    def is_expired(self) -> bool:
        """Whether the last token had expired when decoded, or has expired since."""
        if not self._expired:
            expiry = self._user.get("exp")
            self._expired = not isinstance(expiry, datetime) or expiry < _utc(self._clock())
        return self._expired

    @property
    def is_bad(self) -> bool:
        """Whether the last token was refused for a reason other than expiry."""
        return self._bad

    @property
    def expiry(self) -> datetime:
        """When the last token expires, as a naive UTC datetime."""
        expiry: datetime = self._user["exp"]
        return expiry

    def __getattr__(self, name: str) -> Any:
        """Read a claim of the last token as an attribute (``obj.level``, ``obj.scopes``)."""
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._user[name]
        except KeyError:
            raise AttributeError(name) from None

    def _coerce(self, name: str, value: Any) -> Any:
        # api-jwt wraps a single value for a list-valued extra ("scopes": "user:all").
        if isinstance(self._extras.get(name), list) and isinstance(value, str):
            return [value]
        return list(value) if isinstance(value, tuple) else value

    def _check(self, key: str, given: Mapping[str, Any]) -> Grant:
        if self._policy is None:
            self._policy = _policy_from_apijwt(self._allowed, self._extras)
        policy = self._policy
        scopes = given.get("scopes")
        custom = {
            name: value
            for name, value in given.items()
            if name not in BUILTIN_CLAIMS and name != "scopes"
        }
        try:
            return policy.build_claims(
                roles=[key],
                requested_scopes=scopes or [],
                # api-jwt keys carry no scope list: the request stands in for it, so the
                # policy alone decides, and no allowed list for scopes means any scope.
                key_scopes=scopes,
                level=given.get("level"),
                factor=given.get("factor"),
                target=given.get("target"),
                dnt=given.get("dnt"),
                extras=custom,
            )
        except PolicyViolation as exc:
            LOG.warning("APIJwt refused claim %r: %s", exc.claim, exc.reason)
            raise ValueError(exc.message) from exc

    def _user_from(
        self, subject: str, expires_at: int, claims: Mapping[str, Any]
    ) -> dict[str, Any]:
        user = {name: value for name, value in claims.items() if name != "exp"}
        for name, default in self._extras.items():
            raw = claims.get(name)
            if raw is None or raw in ("", []):
                if default is not None:
                    user[name] = copy.deepcopy(default)
            else:
                user[name] = _typed(name, raw, default)
        # api-jwt always reports a level and a factor.
        user["level"] = _typed("level", claims.get("level") or 0.0, 0.0)
        user.setdefault("factor", "")
        user["id"] = subject
        user["exp"] = _utc(expires_at)
        return user
