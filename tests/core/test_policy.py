"""The claims policy: scopes (per role and per key), roles, assurance claims and extras."""

from __future__ import annotations

import datetime
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from keyturn.core.policy import (
    DEFAULT_LEVELS,
    ClaimRule,
    ClaimsPolicy,
    Grant,
    RoleRule,
)
from keyturn.core.tokens import REGISTERED_CLAIMS
from keyturn.errors import PolicyViolation

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "policy.toml"

POLICY = ClaimsPolicy(
    roles=(
        RoleRule("user", issuer="auth_user", scopes=frozenset({"user:all"})),
        RoleRule(
            "support",
            issuer="auth_support",
            scopes=frozenset({"support:all", "support:mobile"}),
            claims={"level": frozenset({2.0, 3.0})},
        ),
        RoleRule(
            "admin",
            issuer="auth_admin",
            scopes=frozenset({"admin:all", "user:all"}),
            claims={"level": frozenset({3.0, 4.0}), "factor": frozenset({"otp"})},
        ),
    ),
    scopes=frozenset({"profile:read"}),
    claims=(
        ClaimRule("level", allowed=frozenset({0.0, 1.0, 2.0, 3.0, 4.0})),
        ClaimRule("factor", allowed=frozenset({"password", "otp"})),
        ClaimRule("target"),
        ClaimRule("dnt", default=0),
        ClaimRule("country", kind="string", allowed=frozenset({"NO", "SE"}), default="NO"),
    ),
    default_roles=("user",),
)

# Two roles without issuers, so that one token may hold both.
TEAMS = ClaimsPolicy(
    roles=(
        RoleRule("reader", scopes=frozenset({"docs:read"}), claims={"level": frozenset({1.0})}),
        RoleRule("writer", scopes=frozenset({"docs:write"}), claims={"level": frozenset({3.0})}),
    ),
    claims=(ClaimRule("level", allowed=frozenset({1.0, 2.0, 3.0})),),
)


def violation(policy: ClaimsPolicy = POLICY, **arguments: Any) -> PolicyViolation:
    with pytest.raises(PolicyViolation) as exc_info:
        policy.build_claims(**arguments)
    return exc_info.value


# -- scopes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("roles", "requested", "expected"),
    [
        pytest.param(["user"], ["user:all"], {"user:all"}, id="role-scope"),
        pytest.param(["user"], ["profile:read"], {"profile:read"}, id="policy-wide-scope"),
        pytest.param(
            ["admin"],
            ["admin:all", "profile:read"],
            {"admin:all", "profile:read"},
            id="role-and-policy-wide",
        ),
        pytest.param(["support"], [], set(), id="nothing-asked-explicitly"),
        pytest.param(
            ["user"],
            "user:all profile:read",
            {"user:all", "profile:read"},
            id="space-separated-string",
        ),
    ],
)
def test_requested_scopes_inside_policy_and_role_are_granted(
    roles: list[str], requested: Any, expected: set[str]
) -> None:
    grant = POLICY.build_claims(roles=roles, requested_scopes=requested)

    assert grant.scopes == expected


@pytest.mark.parametrize(
    ("roles", "requested", "refused"),
    [
        pytest.param(["user"], ["admin:all"], "admin:all", id="other-roles-scope"),
        pytest.param(["user"], ["user:all", "root"], "root", id="partly-unknown"),
        pytest.param(
            ["support"], ["user:all", "admin:all"], "admin:all user:all", id="two-refused"
        ),
    ],
)
def test_requested_scopes_outside_role_are_refused(
    roles: list[str], requested: list[str], refused: str
) -> None:
    error = violation(roles=roles, requested_scopes=requested)

    assert (error.claim, error.value) == ("scope", refused)
    assert error.error_code == "invalid_scope"


@pytest.mark.parametrize(
    ("requested", "key_scopes"),
    [
        pytest.param(["user:all"], ["profile:read"], id="not-on-key"),
        pytest.param(["user:all", "profile:read"], ["user:all"], id="partly-on-key"),
        pytest.param(["root"], ["root"], id="on-key-but-not-in-policy"),
    ],
)
def test_requested_scopes_must_also_be_on_the_key(
    requested: list[str], key_scopes: list[str]
) -> None:
    error = violation(roles=["user"], requested_scopes=requested, key_scopes=key_scopes)

    assert error.claim == "scope"


@pytest.mark.parametrize(
    ("key_scopes", "expected"),
    [
        pytest.param(None, {"profile:read", "user:all"}, id="key-without-list"),
        pytest.param(["user:all", "admin:all", "root"], {"user:all"}, id="key-list-narrows"),
        pytest.param([], set(), id="key-with-empty-list"),
    ],
)
def test_nothing_requested_grants_what_key_and_roles_allow(
    key_scopes: list[str] | None, expected: set[str]
) -> None:
    grant = POLICY.build_claims(roles=["user"], key_scopes=key_scopes)

    assert grant.scopes == expected


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param("two words", id="space"),
        pytest.param('say"hi"', id="double-quote"),
        pytest.param("back\\slash", id="backslash"),
        pytest.param("caf\u00e9", id="non-ascii"),
        pytest.param("", id="empty"),
        pytest.param(7, id="not-a-string"),
    ],
)
def test_scope_tokens_must_follow_rfc6749_grammar(scope: Any) -> None:
    """RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )."""
    error = violation(roles=["user"], requested_scopes=[scope])

    assert (error.claim, error.value) == ("scope", scope)


def test_grant_scope_is_the_sorted_space_separated_string() -> None:
    grant = POLICY.build_claims(roles=["admin"], requested_scopes=["user:all", "admin:all"])

    assert grant.scope == "admin:all user:all"


def test_a_token_with_several_roles_may_hold_the_scopes_of_each() -> None:
    grant = TEAMS.build_claims(roles=["reader", "writer"], requested_scopes=None)

    assert grant.scopes == {"docs:read", "docs:write"}
    assert grant.claims["roles"] == ["reader", "writer"]


# -- roles ----------------------------------------------------------------------------------


def test_unknown_role_is_refused() -> None:
    error = violation(roles=["user", "root"])

    assert (error.claim, error.value) == ("roles", "root")
    assert error.error_code == "invalid_request"


def test_default_roles_apply_when_none_are_named() -> None:
    grant = POLICY.build_claims()

    assert grant.roles == ("user",)
    assert grant.claims["roles"] == ["user"]
    assert grant.issuer == "auth_user"


def test_role_issuer_is_reported_not_put_in_claims() -> None:
    """The issuer alias is apijwt's ``iss``; a policy never writes a registered claim."""
    grant = POLICY.build_claims(roles=["admin"], level=3.0)

    assert grant.issuer == "auth_admin"
    assert "iss" not in grant.claims


def test_roles_with_different_issuers_cannot_share_a_token() -> None:
    error = violation(roles=["user", "support"], level=2.0)

    assert (error.claim, error.value) == ("roles", ["user", "support"])


def test_roles_claim_can_be_left_out() -> None:
    policy = ClaimsPolicy(roles=(RoleRule("user"),), default_roles=("user",), roles_claim=None)

    assert policy.build_claims().claims == {}


# -- level, factor, target, dnt -------------------------------------------------------------


@pytest.mark.parametrize(
    ("roles", "level"),
    [
        pytest.param(["user"], 0.0, id="user-none"),
        pytest.param(["user"], 4.0, id="user-certificate"),
        pytest.param(["support"], 2.0, id="support-password"),
        pytest.param(["admin"], 3, id="admin-integer-spelling"),
        pytest.param(["reader", "writer"], 3.0, id="either-roles-level"),
    ],
)
def test_level_inside_the_roles_allowed_values_is_granted(roles: list[str], level: float) -> None:
    policy = TEAMS if "reader" in roles else POLICY

    claims = policy.build_claims(roles=roles, level=level).claims

    assert claims["level"] == float(level)
    assert type(claims["level"]) is float


@pytest.mark.parametrize(
    ("roles", "level"),
    [
        pytest.param(["user"], 3.5, id="not-in-policy"),
        pytest.param(["support"], 1.0, id="narrowed-by-role"),
        pytest.param(["admin"], 2.0, id="admin-needs-mfa"),
        pytest.param(["user"], "3.0", id="string"),
        pytest.param(["user"], True, id="boolean"),
        pytest.param(["user"], math.nan, id="nan"),
        pytest.param(["user"], math.inf, id="infinity"),
    ],
)
def test_level_outside_the_roles_allowed_values_is_refused(roles: list[str], level: Any) -> None:
    error = violation(roles=roles, level=level)

    assert error.claim == "level"
    assert error.value is level


@pytest.mark.parametrize(
    ("roles", "factor"),
    [
        pytest.param(["user"], "yubikey", id="not-in-policy"),
        pytest.param(["admin"], "password", id="narrowed-by-role"),
        pytest.param(["user"], ["otp"], id="list-for-a-string-claim"),
    ],
)
def test_factor_outside_allowed_values_is_refused(roles: list[str], factor: Any) -> None:
    error = violation(roles=roles, factor=factor, level=3.0)

    assert error.claim == "factor"


def test_factor_can_be_a_list_of_strings() -> None:
    policy = ClaimsPolicy(
        claims=(ClaimRule("factor", kind="strings", allowed=frozenset({"password", "otp"})),)
    )

    claims = policy.build_claims(factor=("password", "otp", "password")).claims

    assert claims["factor"] == ["password", "otp"]
    assert violation(policy, factor=["password", "sms"]).value == "sms"


def test_target_is_any_string_up_to_255_characters() -> None:
    assert POLICY.build_claims(target="someone@example.com").claims["target"] == (
        "someone@example.com"
    )
    assert violation(target="x" * 256).claim == "target"
    assert violation(target=42).claim == "target"


@pytest.mark.parametrize("dnt", [0, 1, 2, 3])
def test_dnt_accepts_0_to_3(dnt: int) -> None:
    assert POLICY.build_claims(dnt=dnt).claims["dnt"] == dnt


@pytest.mark.parametrize(
    "dnt",
    [
        pytest.param(4, id="four"),
        pytest.param(-1, id="negative"),
        pytest.param(True, id="bool"),
        pytest.param(1.0, id="float"),
        pytest.param("1", id="string"),
    ],
)
def test_dnt_refuses_anything_but_the_integers_0_to_3(dnt: Any) -> None:
    assert violation(dnt=dnt).claim == "dnt"


def test_defaults_fill_claims_the_caller_leaves_out() -> None:
    claims = POLICY.build_claims(roles=["user"]).claims

    assert claims == {"roles": ["user"], "dnt": 0, "country": "NO"}


def test_a_default_the_role_does_not_allow_must_be_overridden() -> None:
    """Every value is checked, defaults too: a role can make a claim mandatory."""
    policy = ClaimsPolicy(
        roles=(RoleRule("admin", claims={"level": frozenset({3.0})}),),
        claims=(ClaimRule("level", allowed=frozenset({0.0, 3.0}), default=0.0),),
    )

    assert violation(policy, roles=["admin"]).claim == "level"
    assert policy.build_claims(roles=["admin"], level=3.0).claims["level"] == 3.0


# -- custom extras --------------------------------------------------------------------------


def test_custom_extra_inside_allowed_values_replaces_the_default() -> None:
    assert POLICY.build_claims(extras={"country": "SE"}).claims["country"] == "SE"


@pytest.mark.parametrize(
    ("extras", "claim"),
    [
        pytest.param({"country": "DK"}, "country", id="not-allowed"),
        pytest.param({"country": 1}, "country", id="wrong-type"),
        pytest.param({"nickname": "bob"}, "nickname", id="undeclared"),
        pytest.param({"roles": ["admin"]}, "roles", id="roles-through-extras"),
        pytest.param({"scopes": "admin:all"}, "scopes", id="apijwt-scopes-through-extras"),
    ],
)
def test_custom_extras_are_refused(extras: dict[str, Any], claim: str) -> None:
    assert violation(extras=extras).claim == claim


def test_built_in_claims_may_come_through_extras() -> None:
    """A key's stored claims arrive as one mapping: level and factor included."""
    claims = POLICY.build_claims(roles=["admin"], extras={"level": 4, "factor": "otp"}).claims

    assert (claims["level"], claims["factor"]) == (4.0, "otp")
    assert violation(roles=["admin"], extras={"level": 1.0}).claim == "level"


def test_a_claim_given_twice_is_refused() -> None:
    error = violation(roles=["admin"], level=3.0, extras={"level": 4.0})

    assert (error.claim, error.value) == ("level", 4.0)


@pytest.mark.parametrize("name", sorted(REGISTERED_CLAIMS))
def test_registered_claims_cannot_be_set_through_extras(name: str) -> None:
    error = violation(extras={name: "attacker"})

    assert (error.claim, error.value) == (name, "attacker")
    assert "registered" in error.reason


@pytest.mark.parametrize("name", sorted(REGISTERED_CLAIMS))
def test_registered_claims_cannot_be_declared(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^claims\.{name}: registered"):
        ClaimRule(name)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(math.nan, id="nan"),
        pytest.param([1.0, math.inf], id="infinity-in-list"),
        pytest.param({1: "a"}, id="non-string-key"),
        pytest.param({"a", "b"}, id="set"),
        pytest.param(datetime.datetime(2024, 1, 1), id="datetime"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param("x" * 1025, id="long-string"),
    ],
)
def test_extras_must_be_json(value: Any) -> None:
    policy = ClaimsPolicy(claims=(ClaimRule("note"),))

    assert violation(policy, extras={"note": value}).claim == "note"


def test_any_kind_extra_keeps_json_values_and_checks_list_items() -> None:
    policy = ClaimsPolicy(
        claims=(ClaimRule("note"), ClaimRule("tags", allowed=frozenset({"a", "b", 1}))),
    )

    claims = policy.build_claims(extras={"note": {"k": [1, 2.5, None]}, "tags": ("a", 1)}).claims

    assert claims == {"note": {"k": [1, 2.5, None]}, "tags": ["a", 1]}
    assert violation(policy, extras={"tags": ["a", "c"]}).value == "c"
    assert violation(policy, extras={"tags": True}).value is True  # True is not 1


def test_grant_claims_are_read_only_json() -> None:
    grant = POLICY.build_claims(roles=["admin"], level=4.0, factor="otp", target="t")

    assert json.loads(json.dumps(dict(grant.claims), allow_nan=False)) == dict(grant.claims)
    with pytest.raises(TypeError):
        grant.claims["level"] = 0.0  # type: ignore[index]


# -- the default policy ---------------------------------------------------------------------


def test_default_policy_grants_what_the_key_lists() -> None:
    policy = ClaimsPolicy.default()

    grant = policy.build_claims(key_scopes=["read", "write"], requested_scopes=["read"])

    assert grant == Grant(
        scopes=frozenset({"read"}), claims={"roles": ["default"]}, roles=("default",)
    )
    assert policy.build_claims(key_scopes=["read", "write"]).scopes == {"read", "write"}


def test_default_policy_grants_no_scope_that_no_key_lists() -> None:
    policy = ClaimsPolicy.default()

    assert policy.build_claims().scopes == frozenset()
    assert violation(policy, requested_scopes=["admin"]).claim == "scope"
    assert violation(policy, requested_scopes=["admin"], key_scopes=["read"]).claim == "scope"


@pytest.mark.parametrize("level", sorted(DEFAULT_LEVELS))
def test_default_policy_accepts_the_documented_levels(level: float) -> None:
    assert ClaimsPolicy.default().build_claims(level=level).claims["level"] == level


def test_default_policy_refuses_other_levels_and_custom_claims() -> None:
    policy = ClaimsPolicy.default()

    assert violation(policy, level=2.5).claim == "level"
    assert violation(policy, extras={"tenant": "acme"}).claim == "tenant"
    assert policy.build_claims(factor="anything", target="t", dnt=3).claims == {
        "roles": ["default"],
        "factor": "anything",
        "target": "t",
        "dnt": 3,
    }


# -- TOML -----------------------------------------------------------------------------------


def test_example_policy_file_loads() -> None:
    policy = ClaimsPolicy.from_toml_file(EXAMPLE)

    assert [role.name for role in policy.roles] == ["user", "support", "admin"]
    assert policy.default_roles == ("user",)
    assert policy.scopes == {"profile:read"}
    admin = policy.role("admin")
    assert admin is not None
    assert admin.issuer == "auth_admin"
    assert admin.claims == {"level": {3.0, 3.1, 3.5, 4.0}, "factor": {"otp", "yubikey"}}


def test_example_policy_grants_a_support_token() -> None:
    policy = ClaimsPolicy.from_toml_file(EXAMPLE)

    grant = policy.build_claims(
        roles=["support"],
        requested_scopes=["support:mobile"],
        level=3.1,
        factor="yubikey",
        target="user@domain.com",
        extras={"groups": ["staff"]},
    )

    assert grant.scopes == {"support:mobile"}
    assert grant.issuer == "auth_support"
    assert grant.claims == {
        "roles": ["support"],
        "level": 3.1,
        "factor": "yubikey",
        "target": "user@domain.com",
        "dnt": 0,
        "country": "NO",
        "groups": ["staff"],
    }


def test_example_policy_makes_admins_state_a_second_factor_level() -> None:
    policy = ClaimsPolicy.from_toml_file(EXAMPLE)

    assert violation(policy, roles=["admin"]).claim == "level"  # the 0.0 default is refused
    assert violation(policy, roles=["admin"], level=3.0, factor="password").claim == "factor"
    assert policy.build_claims(roles=["admin"], level=3.0, factor="otp").claims["level"] == 3.0


def test_toml_and_mapping_build_the_same_policy() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")

    assert ClaimsPolicy.from_toml(text) == ClaimsPolicy.from_mapping(tomllib.loads(text))


def test_policy_built_in_code_equals_the_same_policy_in_toml() -> None:
    text = """
        default_roles = ["user"]
        [roles.user]
        issuer = "auth_user"
        scopes = ["user:all"]
        [claims.level]
        allowed = [1, 2.0]
    """
    in_code = ClaimsPolicy(
        roles=(RoleRule("user", issuer="auth_user", scopes=frozenset({"user:all"})),),
        claims=(ClaimRule("level", allowed=frozenset({1.0, 2.0})),),
        default_roles=("user",),
    )

    assert ClaimsPolicy.from_toml(text) == in_code


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param("this is not toml", "policy is not valid TOML", id="syntax"),
        pytest.param("scopez = []", "scopez: unknown field", id="unknown-top-level"),
        pytest.param('scopes = "read"', "scopes: expected a list of strings", id="scopes-string"),
        pytest.param('scopes = ["a b"]', "scopes:", id="scope-grammar"),
        pytest.param("roles = 1", "roles: expected a table", id="roles-not-table"),
        pytest.param(
            "[roles.admin]\nscope = []", "roles.admin.scope: unknown field", id="unknown-role-field"
        ),
        pytest.param("[roles.admin]\nissuer = 1", "roles.admin.issuer", id="issuer-type"),
        pytest.param('[roles.admin]\nscopes = ["ok", 2]', "roles.admin.scopes", id="role-scopes"),
        pytest.param(
            "[roles.admin.claims]\nlevel = [3.0]",
            "roles.admin.claims.level",
            id="role-limits-undeclared-claim",
        ),
        pytest.param(
            "[claims.level]\nallowed = [1.0]\n[roles.a.claims]\nlevel = [2.0]",
            "roles.a.claims.level: a role can only narrow",
            id="role-widens",
        ),
        pytest.param(
            "[claims.level]\n[roles.a.claims]\nlevel = 3.0",
            "roles.a.claims.level",
            id="role-limit-not-list",
        ),
        pytest.param(
            '[claims.level]\nallowed = ["high"]', "claims.level.allowed", id="level-string"
        ),
        pytest.param('[claims.level]\ntype = "string"', "claims.level.type", id="level-kind"),
        pytest.param("[claims.dnt]\nallowed = [0, 4]", "claims.dnt.allowed", id="dnt-range"),
        pytest.param(
            "[claims.level]\nallowed = [1.0]\ndefault = 2.0",
            "claims.level.default",
            id="default-not-allowed",
        ),
        pytest.param("[claims.level]\nallowed = 1.0", "claims.level.allowed", id="allowed-scalar"),
        pytest.param(
            "[claims.level]\nrequired = true",
            "claims.level.required: unknown field",
            id="unknown-claim-field",
        ),
        pytest.param('[claims.x]\ntype = "blob"', "claims.x.type", id="unknown-kind"),
        pytest.param("[claims.x]\nallowed = [[1]]", "claims.x.allowed", id="nested-allowed"),
        pytest.param("[claims.x]\ndefault = 2024-01-01", "claims.x.default", id="toml-date"),
        pytest.param("[claims.iss]", "claims.iss: registered", id="registered"),
        pytest.param("[claims.scopes]", "claims.scopes: registered", id="apijwt-scopes"),
        pytest.param('[claims."bad name"]', "claims.bad name", id="claim-name"),
        pytest.param('default_roles = ["ghost"]', "default_roles", id="unknown-default-role"),
        pytest.param('roles_claim = "sub"', "roles_claim", id="roles-claim-registered"),
        pytest.param("roles_claim = 1", "roles_claim", id="roles-claim-type"),
        pytest.param('allow_any_scope = "yes"', "allow_any_scope", id="any-scope-type"),
        pytest.param(
            'allow_any_scope = true\nscopes = ["a"]', "allow_any_scope", id="any-scope-with-list"
        ),
    ],
)
def test_bad_policy_is_refused_with_the_field_named(text: str, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(field)}"):
        ClaimsPolicy.from_toml(text)


def test_empty_roles_claim_leaves_roles_out() -> None:
    policy = ClaimsPolicy.from_toml('roles_claim = ""\ndefault_roles = ["u"]\n[roles.u]')

    assert policy.roles_claim is None
    assert policy.build_claims().claims == {}


def test_declaring_a_claim_twice_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^claims: a claim is declared twice"):
        ClaimsPolicy(claims=(ClaimRule("level"), ClaimRule("level")))


@pytest.mark.parametrize(
    ("holder", "words"),
    [("key", "this key and its roles"), ("user", "this user and their roles")],
)
def test_a_refused_scope_is_explained_in_the_holders_words(holder: str, words: str) -> None:
    policy = ClaimsPolicy()

    with pytest.raises(PolicyViolation) as refused:
        policy.build_claims(key_scopes=["read"], requested_scopes=["write"], holder=holder)  # type: ignore[arg-type]

    assert refused.value.claim == "scope"
    assert refused.value.reason == f"not allowed for {words}"
