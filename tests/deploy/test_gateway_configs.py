"""The Traefik and Envoy examples in ``deploy/`` name Keyturn's real routes and headers.

Neither proxy runs here; these tests parse the shipped YAML and compare every route,
header name, issuer and audience with what the server defines, so renaming one on the
server side without the examples fails the suite.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from keyturn.config import Settings
from keyturn.core.dpop import CONFIRMATION_CLAIM
from keyturn.core.signing import SigningKey
from keyturn.core.tokens import issue_access_token, parse_scope, peek_unverified_claims
from keyturn.rfc9449 import DPOP_HEADER
from keyturn.server.v1 import IDENTITY_HEADERS, public_routes
from tests.deploy.conftest import DEPLOY

TRAEFIK = yaml.safe_load((DEPLOY / "traefik" / "dynamic.yaml").read_text())
ENVOY = yaml.safe_load((DEPLOY / "envoy" / "envoy.yaml").read_text())
DEFAULTS = Settings()
#: The public listener's v1 routes: the paths a gateway may name.
PUBLIC_PATHS = {route.path for route in public_routes("")}
#: Which claim each identity header carries (the fields of `identity_headers`).
CLAIM_OF = {
    "subject": "sub",
    "client_id": "client_id",
    "scope": "scope",
    "identifier": "identifier",
    "jti": "jti",
    "expires": "exp",
}


def a_token_claims() -> dict[str, Any]:
    """The claims of a real Keyturn access token with an identifier and a scope."""
    token = issue_access_token(
        SigningKey.generate("ES256"),
        issuer=DEFAULTS.issuer,
        audience=DEFAULTS.audience,
        subject="key:k1",
        client_id="k1",
        now=1_800_000_000,
        lifetime=900,
        scopes=["read"],
        identifier="svc",
    ).token
    return peek_unverified_claims(token)[1]


def test_every_identity_header_has_a_claim_in_real_tokens() -> None:
    claims = a_token_claims()

    assert set(CLAIM_OF) == set(IDENTITY_HEADERS)
    assert set(CLAIM_OF.values()) <= set(claims)


# -- Traefik -----------------------------------------------------------------------------


def forward_auths() -> dict[str, dict[str, Any]]:
    middlewares = TRAEFIK["http"]["middlewares"]
    found = {name: m["forwardAuth"] for name, m in middlewares.items() if "forwardAuth" in m}
    assert found, "deploy/traefik/dynamic.yaml has no forwardAuth middleware"
    return found


@pytest.mark.parametrize("name", sorted(forward_auths()))
def test_traefik_forward_auth_calls_v1_validate_and_copies_the_identity_headers(
    name: str,
) -> None:
    auth = forward_auths()[name]
    address = urlsplit(auth["address"])
    pattern = re.compile(auth["authResponseHeadersRegex"])

    assert address.path == "/v1/validate"
    assert address.path in PUBLIC_PATHS
    for scope in parse_qs(address.query).get("scope", []):
        assert parse_scope(scope)  # a well-formed RFC 6749 §3.3 scope list
    assert auth["authRequestHeaders"] == ["Authorization", DPOP_HEADER]
    assert set(auth["authResponseHeaders"]) == set(IDENTITY_HEADERS.values())
    assert all(pattern.search(header) for header in IDENTITY_HEADERS.values())
    assert not pattern.search("Authorization")


def test_traefik_lets_only_keyturns_own_endpoints_through_without_a_token() -> None:
    routers = TRAEFIK["http"]["routers"]
    open_routers = {name: r for name, r in routers.items() if not r.get("middlewares")}
    named = {
        path
        for router in open_routers.values()
        for path in re.findall(r"Path(?:Prefix)?\(`([^`]+)`\)", router["rule"])
    }

    assert {r["service"] for r in open_routers.values()} == {"keyturn"}
    assert named - {"/.well-known/"} <= PUBLIC_PATHS
    assert "/v1/validate" not in named
    assert {p for p in PUBLIC_PATHS if p.startswith("/.well-known/")}
    for router in routers.values():
        for middleware in router.get("middlewares", []):
            assert middleware in forward_auths()


# -- Envoy -------------------------------------------------------------------------------


def http_filters() -> list[dict[str, Any]]:
    listener = ENVOY["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    filters: list[dict[str, Any]] = manager["http_filters"]
    return filters


def jwt_provider() -> dict[str, Any]:
    (jwt,) = [f for f in http_filters() if f["name"] == "envoy.filters.http.jwt_authn"]
    (provider,) = jwt["typed_config"]["providers"].values()
    assert isinstance(provider, dict)
    return provider


def test_envoy_verifies_keyturns_issuer_and_audience_with_its_jwks() -> None:
    provider = jwt_provider()
    jwks_uri = urlsplit(provider["remote_jwks"]["http_uri"]["uri"])
    clusters = {c["name"] for c in ENVOY["static_resources"]["clusters"]}

    assert provider["issuer"] == DEFAULTS.issuer
    assert provider["audiences"] == [DEFAULTS.audience]
    assert jwks_uri.path == "/.well-known/jwks.json"
    assert jwks_uri.path in PUBLIC_PATHS
    assert provider["remote_jwks"]["http_uri"]["cluster"] in clusters
    assert provider["clock_skew_seconds"] == DEFAULTS.leeway


def test_envoy_caches_the_jwks_for_less_than_the_signing_key_publish_delay() -> None:
    """A new key is published this long before it signs; a longer cache would miss it."""
    cached = int(jwt_provider()["remote_jwks"]["cache_duration"].removesuffix("s"))

    assert cached < DEFAULTS.signing_key_publish_delay.total_seconds()


def test_envoy_sets_the_identity_headers_from_the_claims_they_carry() -> None:
    mapping = {m["header_name"]: m["claim_name"] for m in jwt_provider()["claim_to_headers"]}

    assert mapping == {IDENTITY_HEADERS[field]: claim for field, claim in CLAIM_OF.items()}


def test_envoy_removes_client_identity_headers_before_verifying() -> None:
    names = [f["name"] for f in http_filters()]
    (mutation,) = [f for f in http_filters() if f["name"] == "envoy.filters.http.header_mutation"]
    removed = {m["remove"] for m in mutation["typed_config"]["mutations"]["request_mutations"]}

    assert removed == {header.lower() for header in IDENTITY_HEADERS.values()}
    assert names.index("envoy.filters.http.header_mutation") < names.index(
        "envoy.filters.http.jwt_authn"
    )
    assert names[-1] == "envoy.filters.http.router"


def test_envoy_requires_a_token_everywhere_but_keyturns_own_endpoints() -> None:
    (jwt,) = [f for f in http_filters() if f["name"] == "envoy.filters.http.jwt_authn"]
    rules = jwt["typed_config"]["rules"]
    open_paths = {
        r["match"].get("path") or r["match"]["prefix"] for r in rules if "requires" not in r
    }

    assert rules[-1] == {"match": {"prefix": "/"}, "requires": {"provider_name": "keyturn"}}
    assert open_paths - {"/.well-known/"} <= PUBLIC_PATHS
    assert "/v1/validate" not in open_paths


def test_envoy_refuses_dpop_bound_tokens_it_cannot_check() -> None:
    """jwt_authn checks no DPoP proof: a token with ``cnf`` must not pass as Bearer (§7.1)."""
    names = [f["name"] for f in http_filters()]
    (rbac,) = [f for f in http_filters() if f["name"] == "envoy.filters.http.rbac"]
    rules = rbac["typed_config"]["rules"]
    (policy,) = rules["policies"].values()
    (principal,) = policy["principals"]
    matcher = principal["metadata"]

    assert rules["action"] == "DENY"
    assert policy["permissions"] == [{"any": True}]
    assert matcher["filter"] == "envoy.filters.http.jwt_authn"
    assert matcher["path"] == [{"key": jwt_provider()["payload_in_metadata"]}, {"key": "cnf"}]
    assert matcher["path"][-1]["key"] == CONFIRMATION_CLAIM
    assert matcher["value"] == {"present_match": True}
    jwt_at, rbac_at = names.index("envoy.filters.http.jwt_authn"), names.index(rbac["name"])
    assert jwt_at < rbac_at < names.index("envoy.filters.http.router")


# -- Envoy with ext_authz ----------------------------------------------------------------

ENVOY_EXT_AUTHZ = yaml.safe_load((DEPLOY / "envoy" / "envoy-ext-authz.yaml").read_text())
EXT_AUTHZ = "envoy.filters.http.ext_authz"


def ext_authz_manager() -> dict[str, Any]:
    listener = ENVOY_EXT_AUTHZ["static_resources"]["listeners"][0]
    manager: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return manager


def ext_authz_config() -> dict[str, Any]:
    (ext_authz,) = [f for f in ext_authz_manager()["http_filters"] if f["name"] == EXT_AUTHZ]
    config: dict[str, Any] = ext_authz["typed_config"]
    return config


def exact_patterns(matcher: dict[str, Any]) -> set[str]:
    return {pattern["exact"] for pattern in matcher["patterns"]}


def test_envoy_ext_authz_asks_keyturns_ext_authz_route_and_fails_closed() -> None:
    config = ext_authz_config()
    service = config["http_service"]
    clusters = {c["name"] for c in ENVOY_EXT_AUTHZ["static_resources"]["clusters"]}

    assert service["path_prefix"] == "/v1/ext_authz"
    assert f"{service['path_prefix']}/{{path:path}}" in PUBLIC_PATHS
    assert service["server_uri"]["cluster"] in clusters
    assert config["failure_mode_allow"] is False
    assert config["status_on_error"] == {"code": "ServiceUnavailable"}
    assert "with_request_body" not in config  # Keyturn reads no body


def test_envoy_ext_authz_passes_the_credential_proof_host_and_scheme() -> None:
    request = ext_authz_config()["http_service"]["authorization_request"]

    assert exact_patterns(request["allowed_headers"]) == {
        "authorization",
        DPOP_HEADER.lower(),
        "host",
        "x-forwarded-proto",
    }
    # Only Envoy's own headers_to_add may name required scopes, never the client.
    assert "x-keyturn-scope" not in exact_patterns(request["allowed_headers"])
    assert ext_authz_manager()["use_remote_address"] is True  # Envoy sets the scheme


def test_envoy_ext_authz_forwards_the_identity_and_returns_the_challenge() -> None:
    response = ext_authz_config()["http_service"]["authorization_response"]

    assert exact_patterns(response["allowed_upstream_headers"]) == {
        header.lower() for header in IDENTITY_HEADERS.values()
    }
    assert exact_patterns(response["allowed_client_headers"]) == {"www-authenticate", "retry-after"}


def test_envoy_ext_authz_removes_client_identity_headers_before_the_check() -> None:
    filters = ext_authz_manager()["http_filters"]
    names = [f["name"] for f in filters]
    (mutation,) = [f for f in filters if f["name"] == "envoy.filters.http.header_mutation"]
    removed = {m["remove"] for m in mutation["typed_config"]["mutations"]["request_mutations"]}

    assert removed == {header.lower() for header in IDENTITY_HEADERS.values()}
    assert names.index(mutation["name"]) < names.index(EXT_AUTHZ)
    assert names[-1] == "envoy.filters.http.router"
    assert "envoy.filters.http.jwt_authn" not in names


def test_envoy_ext_authz_checks_everything_but_keyturns_own_endpoints() -> None:
    (host,) = ext_authz_manager()["route_config"]["virtual_hosts"]
    unchecked = {
        route["match"].get("path") or route["match"]["prefix"]
        for route in host["routes"]
        if route.get("typed_per_filter_config", {}).get(EXT_AUTHZ, {}).get("disabled")
    }

    assert host["routes"][-1] == {"match": {"prefix": "/"}, "route": {"cluster": "app"}}
    assert unchecked - {"/.well-known/"} <= PUBLIC_PATHS
    assert {"/v1/validate", "/v1/ext_authz"}.isdisjoint(unchecked)
