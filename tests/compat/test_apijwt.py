"""The api-jwt drop-in, tested from the package's README, docstrings and examples."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import inspect
import json
import logging
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import keyturn.compat.apijwt as apijwt_module
from keyturn.compat.apijwt import APIJwt
from keyturn.core.compat_tokens import issue_legacy_token
from keyturn.core.signing import SigningKey
from keyturn.core.tokens import REGISTERED_CLAIMS, issue_access_token
from keyturn.errors import SigningKeyError

NOW = 1_700_000_000  # 2023-11-14T22:13:20Z
SUBJECT = "user@domain.com"


def _pem_pair() -> tuple[rsa.RSAPrivateKey, str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # api-jwt's README loads a PKCS#1 ("RSA PRIVATE KEY") PEM and a SubjectPublicKeyInfo PEM.
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return key, private, public


RSA_KEY, PRIVATE_PEM, PUBLIC_PEM = _pem_pair()
_, OTHER_PRIVATE_PEM, OTHER_PUBLIC_PEM = _pem_pair()


def at(now: float) -> Callable[[], float]:
    return lambda: now


def issuer(**options: Any) -> APIJwt:
    """The auth service: holds the private key."""
    options.setdefault("clock", at(NOW))
    return APIJwt(public_keys=PUBLIC_PEM, private_key=PRIVATE_PEM, **options)


def verifier(now: float = NOW, **options: Any) -> APIJwt:
    """Any other service: holds only the public key."""
    return APIJwt(public_keys=PUBLIC_PEM, clock=at(now), **options)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def part(token: str, index: int) -> dict[str, Any]:
    segment = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return decoded


class HudyaJWT(APIJwt):
    """The wrapper from api-jwt's README ("Example use"), keys passed in directly."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(public_keys=PUBLIC_PEM, private_key=PRIVATE_PEM, ttl=3600, **kwargs)
        self.set_allowed("level", [0.0, 1.0, 2.0, 3.0, 3.1, 3.5, 4.0])
        self.set_allowed(
            "keys", {"user": "auth_user", "support": "auth_support", "admin": "auth_admin"}
        )
        self.set_allowed(
            "scopes",
            {
                "PER_KEY": {
                    "user": ["user:all", "NO", "SE", "DK"],
                    "support": [
                        "support:all",
                        "support:insurance",
                        "support:power",
                        "support:mobile",
                    ],
                    "admin": ["admin:all", "user:all"],
                }
            },
        )


# -- the README and the package's own examples ----------------------------------------------


def test_readme_example_encodes_and_decodes() -> None:
    """The README passes level='3.1' (a string), which api-jwt itself refuses; 3.1 is meant."""
    token = HudyaJWT(clock=at(NOW)).encode(
        subject=SUBJECT,
        level=3.1,
        factor="yubikey",
        target=SUBJECT,
        key="support",
        exp=3600,
        scopes=["support:mobile"],
        dnt=0,
    )
    assert token is not None

    jwt_data = HudyaJWT(clock=at(NOW))
    payload = jwt_data.decode(token)

    assert jwt_data.is_valid is True
    assert payload is not None
    assert "support:mobile" in payload["scopes"]  # the README's payload['scope'] is a typo
    assert (payload["level"], payload["factor"], payload["target"]) == (3.1, "yubikey", SUBJECT)
    assert payload["iss"] == "auth_support"


def test_new_token_has_the_subject_as_id() -> None:
    new = issuer()

    token = new.encode(SUBJECT)

    assert new.id == SUBJECT
    assert new.jwt == token
    assert (new.is_valid, new.is_expired, new.is_bad) == (True, False, False)


def test_decode_with_a_second_instance_holding_only_the_public_key() -> None:
    token = issuer().encode(SUBJECT, level=1.0, factor="password", scopes=["user:all"], exp=7200)
    new = verifier()

    payload = new.decode(token)

    assert new.is_valid is True
    assert payload == new.user
    assert new.level == 1.0
    assert "user:all" in new.scopes
    assert "fake" not in new.scopes
    assert new.factor == "password"
    assert new.expiry == datetime.datetime(2023, 11, 15, 0, 13, 20)  # NOW + 7200, naive UTC
    with pytest.raises(AttributeError):
        assert "fake" in new.groups


def test_decoded_payload_holds_typed_extras_id_and_expiry() -> None:
    token = issuer().encode(SUBJECT, level=1.0, dnt=3, scopes=["user:all"], exp=3600)

    payload = verifier().decode(token)

    assert payload == {
        "iss": "auth_user",
        "sub": SUBJECT,
        "id": SUBJECT,
        "exp": datetime.datetime(2023, 11, 14, 23, 13, 20),
        "level": 1.0,
        "factor": "",
        "target": "",
        "dnt": 3,
        "scopes": ["user:all"],
    }


def test_extras_declared_in_the_constructor() -> None:
    new = issuer(extras={"testkey": "default"}, allowed={"testkey": ["default", "nr2", "nr3"]})

    new.decode(new.encode(SUBJECT))
    assert (new.is_valid, new.testkey) == (True, "default")

    with pytest.raises(ValueError, match="testkey"):
        new.encode(SUBJECT, testkey="wrong")

    new.decode(new.encode(SUBJECT, testkey="nr3"))
    assert (new.is_valid, new.testkey) == (True, "nr3")


def test_list_extra_travels_comma_joined_and_comes_back_a_list() -> None:
    new = issuer()
    new.set_extras("groups", [])
    new.set_allowed("groups", ["group1", "group2"])

    token = new.encode(SUBJECT, groups=["group2", "group1"], exp=3600)
    assert token is not None
    assert part(token, 1)["groups"] == "group2,group1"

    other = verifier()
    other.set_extras("groups", [])
    other.decode(token)
    assert (other.is_valid, other.groups) == (True, ["group2", "group1"])


@pytest.mark.parametrize(
    "groups",
    [pytest.param("group3", id="single"), pytest.param(["group1", "group3"], id="in-a-list")],
)
def test_list_extra_values_outside_allowed_raise_value_error(groups: Any) -> None:
    new = issuer()
    new.set_extras("groups", [])
    new.set_allowed("groups", ["group1", "group2"])

    with pytest.raises(ValueError, match="group3"):
        new.encode(SUBJECT, groups=groups)


def test_single_value_for_a_list_extra_is_wrapped() -> None:
    new = issuer(extras={"factor": []}, allowed={"factor": ["password", "otp"]})

    token = new.encode(SUBJECT, factor="otp")
    assert token is not None
    other = verifier(extras={"factor": []})
    other.decode(token)

    assert part(token, 1)["factor"] == "otp"
    assert other.factor == ["otp"]


def test_scopes_without_an_allowed_entry_are_free() -> None:
    """api-jwt: "If key was not in _allowed, any value is allowed unless None"."""
    new = issuer()
    new.set_allowed("scopes", None)

    token = new.encode(SUBJECT, scopes=["anything", "at:all"])

    assert token is not None
    assert part(token, 1)["scopes"] == "anything,at:all"


def test_none_values_keep_the_defaults() -> None:
    token = issuer().encode(SUBJECT, factor=None, level=None, dnt=None, scopes=["user:all"])
    assert token is not None
    new = verifier()

    new.decode(token)

    assert (new.is_valid, new.factor, new.dnt, new.level) == (True, "", 0, 0.0)
    assert part(token, 1)["level"] == "0.0"


def test_numbers_travel_as_strings_and_come_back_typed() -> None:
    token = issuer().encode(SUBJECT, level=1.0, dnt=3, scopes=["user:all"], exp=3600)
    assert token is not None
    new = verifier()

    new.decode(token)

    assert (part(token, 1)["level"], part(token, 1)["dnt"]) == ("1.0", "3")
    assert (new.level, new.dnt) == (1.0, 3)
    assert (type(new.level), type(new.dnt)) == (float, int)


# -- allowed values and PER_KEY -------------------------------------------------------------


def test_unknown_key_name_returns_none_and_marks_bad() -> None:
    new = issuer()

    assert new.encode(SUBJECT, key="superuser") is None
    assert (new.is_valid, new.is_bad) == (False, True)


@pytest.mark.parametrize(
    "extras",
    [
        pytest.param({"level": 2.5}, id="level-not-allowed"),
        pytest.param({"level": "3.0"}, id="level-as-string"),
        pytest.param({"dnt": 4}, id="dnt-not-allowed"),
        pytest.param({"dnt": True}, id="dnt-boolean"),
        pytest.param({"scopes": ["admin:all"]}, id="scope-of-another-key"),
        pytest.param({"scopes": "nope"}, id="unknown-scope"),
    ],
)
def test_disallowed_value_raises_value_error(extras: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(extras)).rstrip("s")):
        issuer().encode(SUBJECT, **extras)


def test_undeclared_extra_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="groups"):
        issuer().encode(SUBJECT, groups=["group1"])


def test_subject_is_required() -> None:
    with pytest.raises(ValueError, match="subject"):
        issuer().encode()


def test_per_key_scopes_follow_the_key() -> None:
    new = issuer()
    new.set_allowed("scopes", {"PER_KEY": {"user": ["user:all"], "admin": ["admin:all", "extra"]}})

    token = new.encode(SUBJECT, key="admin", level=1.0, dnt=3, scopes=["extra", "admin:all"])
    assert token is not None
    with pytest.raises(ValueError, match="extra"):
        new.encode(SUBJECT, key="user", scopes=["extra"])

    other = verifier()
    other.decode(token)
    assert other.is_valid is True
    assert set(other.scopes) == {"admin:all", "extra"}
    assert other.iss == "auth_admin"


def test_per_key_without_an_entry_for_the_key_allows_no_scope() -> None:
    """api-jwt raised KeyError here; Keyturn refuses with a ValueError."""
    new = issuer()
    new.set_allowed("keys", {"user": "auth_user", "guest": "auth_guest"})

    assert new.encode(SUBJECT, key="guest") is not None
    with pytest.raises(ValueError, match="user:all"):
        new.encode(SUBJECT, key="guest", scopes=["user:all"])


def test_per_key_limits_apply_to_any_extra() -> None:
    new = issuer()
    new.set_allowed("level", {"PER_KEY": {"user": [1.0, 2.0], "admin": [3.0, 4.0]}})

    assert new.encode(SUBJECT, key="admin", level=3.0) is not None
    with pytest.raises(ValueError, match="level"):
        new.encode(SUBJECT, key="admin", level=2.0)
    with pytest.raises(ValueError, match="level"):
        new.encode(SUBJECT, key="user", level=3.0)


def test_example_value_in_allowed_requires_that_type() -> None:
    new = issuer(extras={"tenant": None}, allowed={"tenant": ""})

    assert new.encode(SUBJECT, tenant="acme") is not None
    with pytest.raises(ValueError, match="tenant"):
        new.encode(SUBJECT, tenant=7)


def test_encode_accepts_extras_and_allowed_short_cuts() -> None:
    """api-jwt's encode() docstring: "Use kwargs, extras={} or allowed={}, as short-cuts"."""
    new = issuer()

    token = new.encode(
        SUBJECT, extras={"team": "red"}, allowed={"team": ["red", "blue"]}, team="blue"
    )

    assert token is not None
    assert part(token, 1)["team"] == "blue"


@pytest.mark.parametrize("name", sorted(REGISTERED_CLAIMS))
def test_registered_claims_cannot_be_declared_as_extras(name: str) -> None:
    with pytest.raises(ValueError, match="registered"):
        issuer().set_extras(name, "x")


def test_list_items_with_commas_are_refused() -> None:
    """A comma would split one value into two on the other side."""
    new = issuer(extras={"groups": []})

    with pytest.raises(ValueError, match="comma"):
        new.encode(SUBJECT, groups=["a,b"])


# -- wire format ----------------------------------------------------------------------------


def test_wire_format_is_byte_identical_to_api_jwt() -> None:
    """api-jwt signs through PyJWT; RS256 is deterministic, so the tokens must be equal."""
    new = issuer(extras={"groups": []})

    token = new.encode(SUBJECT, key="admin", level=2, scopes="admin:all", groups=["g1", "g2"])

    expected_payload = {
        "iss": "auth_admin",
        "sub": SUBJECT,
        "exp": NOW + 3600,
        "level": "2",
        "factor": "",
        "target": "",
        "dnt": "0",
        "scopes": "admin:all",
        "groups": "g1,g2",
    }
    assert token == jwt.encode(expected_payload, RSA_KEY, algorithm="RS256")
    assert token is not None
    assert base64.urlsafe_b64decode(token.split(".")[0] + "=") == b'{"alg":"RS256","typ":"JWT"}'


@pytest.mark.parametrize(
    "sort_headers",
    [pytest.param(True, id="pyjwt2-header"), pytest.param(False, id="pyjwt1-header-order")],
)
def test_tokens_made_the_api_jwt_way_are_accepted(sort_headers: bool) -> None:
    """What api-jwt hands PyJWT: string extras and a datetime ``exp``."""
    payload = {
        "iss": "auth_user",
        "sub": SUBJECT,
        "exp": datetime.datetime(2023, 11, 14, 23, 13, 20, tzinfo=datetime.UTC),
        "level": "3.1",
        "factor": "yubikey",
        "target": "",
        "dnt": "0",
        "scopes": "user:all,NO",
    }
    token = jwt.encode(
        payload, PRIVATE_PEM, algorithm="RS256", headers={"typ": "JWT"}, sort_headers=sort_headers
    )
    new = verifier()

    new.decode(token)

    assert new.is_valid is True
    assert (new.level, new.scopes, new.expiry) == (
        3.1,
        ["user:all", "NO"],
        datetime.datetime(2023, 11, 14, 23, 13, 20),
    )


def test_pyjwt_verifies_what_the_drop_in_signs() -> None:
    token = issuer().encode(SUBJECT, level=3.0, factor="otp", scopes=["user:all"])
    assert token is not None

    claims = jwt.decode(token, PUBLIC_PEM, algorithms=["RS256"], options={"verify_exp": False})

    assert claims == part(token, 1)
    assert claims["exp"] == NOW + 3600


def test_audience_option_writes_and_requires_aud() -> None:
    """api-jwt-2 1.3.2 verifies with audience='aud', so its fleets need the claim."""
    token = issuer(audience="aud").encode(SUBJECT)
    assert token is not None
    assert part(token, 1)["aud"] == "aud"

    assert verifier(audience="aud").decode(token) is not None
    plain = verifier()
    assert plain.decode(token) is None
    assert plain.is_bad is True
    assert verifier(audience="aud").decode(issuer().encode(SUBJECT)) is None


# -- expiry ---------------------------------------------------------------------------------


def test_token_encoded_with_negative_exp_is_expired_everywhere() -> None:
    new = issuer()
    token = new.encode(SUBJECT, level=1.0, scopes=["user:all"], exp=-10)
    assert new.is_expired is True

    new2 = verifier()
    assert new2.decode(token) is None
    assert (new2.is_valid, new2.is_expired, new2.is_bad) == (False, True, False)


@pytest.mark.parametrize(
    ("seconds_later", "expired"),
    [
        pytest.param(59, False, id="one-second-before-exp"),
        pytest.param(60, True, id="at-exp"),
        pytest.param(3600, True, id="long-after"),
    ],
)
def test_token_expires_at_exp(seconds_later: int, expired: bool) -> None:
    token = issuer().encode(SUBJECT, exp=60)
    new = verifier(NOW + seconds_later)

    new.decode(token)

    assert (new.is_valid, new.is_expired) == (not expired, expired)


def test_is_expired_follows_the_clock_after_decoding() -> None:
    token = issuer().encode(SUBJECT, exp=60)
    now = [float(NOW)]
    new = APIJwt(public_keys=PUBLIC_PEM, clock=lambda: now[0])
    new.decode(token)
    assert new.is_expired is False

    now[0] = NOW + 61

    assert new.is_expired is True


# -- refused tokens -------------------------------------------------------------------------


def _replace_payload(token: str) -> str:
    header, _, signature = token.split(".")
    claims = part(token, 1) | {"level": "4.0"}
    return ".".join([header, b64(json.dumps(claims).encode()), signature])


def _hs256_with_public_key(token: str) -> str:
    """RFC 8725 §2.1: the public key used as an HMAC secret."""
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + token.split(".")[1]
    mac = hmac.new(PUBLIC_PEM.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def _with_header(header: bytes) -> Callable[[str], str]:
    def forge(token: str) -> str:
        _, payload, signature = token.split(".")
        return f"{b64(header)}.{payload}.{signature}"

    return forge


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_replace_payload, id="payload-changed"),
        pytest.param(
            lambda t: t[:-6] + ("AAAAAA" if not t.endswith("AAAAAA") else "BBBBBB"),
            id="signature-changed",
        ),
        pytest.param(lambda t: t.rsplit(".", 1)[0] + ".", id="signature-stripped"),
        pytest.param(_hs256_with_public_key, id="alg-hs256-key-confusion"),
        pytest.param(_with_header(b'{"alg":"none","typ":"JWT"}'), id="alg-none"),
        pytest.param(
            _with_header(b'{"alg":"RS256","typ":"JWT","jku":"https://x"}'), id="header-jku"
        ),
        pytest.param(_with_header(b'{"alg":"RS256","typ":"at+jwt"}'), id="typ-at-jwt"),
        pytest.param(lambda t: "not.a.token", id="garbage"),
        pytest.param(lambda t: t + "." + t, id="too-many-segments"),
        pytest.param(lambda t: t + "A" * 9000, id="oversized"),
    ],
)
def test_tampered_token_is_bad(tamper: Callable[[str], str]) -> None:
    token = issuer().encode(SUBJECT, level=1.0)
    assert token is not None
    new = verifier()

    assert new.decode(tamper(token)) is None
    assert (new.is_valid, new.is_bad, new.is_expired) == (False, True, False)


def test_token_signed_by_another_key_is_bad() -> None:
    forged = APIJwt(private_key=OTHER_PRIVATE_PEM, clock=at(NOW)).encode(SUBJECT, key="admin")
    new = verifier()

    assert new.decode(forged) is None
    assert new.is_bad is True


def test_keyturn_access_token_is_not_a_legacy_token() -> None:
    """RFC 8725 §3.11: typ at+jwt tokens are never read as api-jwt ones, same key or not."""
    issued = issue_access_token(
        SigningKey.from_pem(PRIVATE_PEM),
        issuer="https://auth.example",
        audience="api",
        subject="key:k1",
        client_id="k1",
        now=NOW,
        lifetime=300,
    )
    new = verifier()

    assert new.decode(issued.token) is None
    assert new.is_bad is True


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"level": "high"}, id="level-not-a-number"),
        pytest.param({"dnt": "1.5"}, id="dnt-not-an-integer"),
        pytest.param({"level": "nan"}, id="level-nan"),
        pytest.param({"exp": NOW + 60.5}, id="float-exp"),
        pytest.param({"exp": str(NOW + 60)}, id="string-exp"),
        pytest.param({"sub": ""}, id="empty-sub"),
        pytest.param({"sub": 42}, id="numeric-sub"),
    ],
)
def test_signed_token_with_mistyped_claims_is_bad(claims: dict[str, Any]) -> None:
    token = issue_legacy_token(
        SigningKey.from_pem(PRIVATE_PEM),
        {"iss": "auth_user", "sub": SUBJECT, "exp": NOW + 60} | claims,
    )
    new = verifier()

    assert new.decode(token) is None
    assert new.is_bad is True


def test_failed_decode_forgets_the_previous_tokens_claims() -> None:
    """api-jwt kept stale claims, so ``obj.level`` after a failed decode read the old token."""
    new = verifier()
    new.decode(issuer().encode(SUBJECT, key="admin", level=4.0))
    assert new.level == 4.0

    new.decode("not.a.token")

    with pytest.raises(AttributeError):
        _ = new.level
    assert new.id == ""


def test_decoding_nothing_returns_none() -> None:
    new = verifier()

    assert new.decode(None) is None
    assert new.is_valid is False


# -- keys -----------------------------------------------------------------------------------


def test_without_keys_a_generated_pair_is_used_and_a_warning_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="keyturn.compat.apijwt"):
        first = APIJwt(clock=at(NOW))

    assert any("generated" in record.getMessage() for record in caplog.records)
    token = first.encode(SUBJECT)
    second = APIJwt(clock=at(NOW))  # the pair is per process, so instances interoperate
    assert second.decode(token) is not None
    assert verifier().decode(token) is None  # but nobody else trusts it


def test_no_private_key_is_hard_coded() -> None:
    assert "PRIVATE KEY" not in inspect.getsource(apijwt_module)


def test_public_keys_can_be_a_json_list() -> None:
    token = issuer().encode(SUBJECT)
    new = APIJwt(public_keys=json.dumps([OTHER_PUBLIC_PEM, PUBLIC_PEM]), clock=at(NOW))

    assert new.decode(token) is not None


def test_private_key_alone_trusts_its_own_public_half() -> None:
    new = APIJwt(private_key=PRIVATE_PEM, clock=at(NOW))

    assert new.decode(new.encode(SUBJECT)) is not None


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param("not a pem", id="garbage"),
        pytest.param(
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode(),
            id="ec-key",
        ),
    ],
)
def test_unusable_public_keys_are_refused_up_front(pem: str) -> None:
    with pytest.raises(SigningKeyError):
        APIJwt(public_keys=pem)


def test_key_management_follows_api_jwt() -> None:
    """api-jwt's own test_new_keypair, with the generated pair in place of its dummy pair."""
    jwt_token = APIJwt(clock=at(NOW))
    tok1 = jwt_token.encode(SUBJECT, level=1.0, scopes=["user:all"])

    # Override preset keys with a new pair: the token no longer validates.
    jwt_token.override_keys(PUBLIC_PEM, PRIVATE_PEM)
    jwt_token.decode(tok1)
    assert jwt_token.is_valid is False
    # Reset back: it validates again.
    jwt_token.reset_keys()
    jwt_token.decode(tok1)
    assert jwt_token.is_valid is True
    # Adding a public key keeps the old one.
    jwt_token.add_public_keys([PUBLIC_PEM])
    jwt_token.decode(tok1)
    assert jwt_token.is_valid is True
    # Reset, override the private key, add the new public key: both tokens validate.
    jwt_token.reset_keys()
    jwt_token.override_keys(private_key=PRIVATE_PEM)
    jwt_token.add_public_keys(PUBLIC_PEM)
    tok2 = jwt_token.encode(SUBJECT, level=1.0, scopes=["user:all"])
    jwt_token.decode(tok2)
    assert jwt_token.is_valid is True
    jwt_token.decode(tok1)
    assert jwt_token.is_valid is True
    # Reset keys: tok2 fails, tok1 validates.
    jwt_token.reset_keys()
    jwt_token.decode(tok2)
    assert jwt_token.is_valid is False
    jwt_token.decode(tok1)
    assert jwt_token.is_valid is True
