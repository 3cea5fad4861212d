"""Password rules (ASVS 5.0 §6.2) and the argon2id hasher."""

from __future__ import annotations

import argon2
import pytest

from keyturn.core.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    OWASP_PARAMETERS,
    RECOMMENDED_PASSWORD_LENGTH,
    PasswordHasher,
    PasswordParameters,
    check_new_password,
    is_common_password,
)
from keyturn.errors import InvalidRequestError, WeakPasswordError

#: Cheap parameters: these tests are about behaviour, not cost.
FAST = PasswordParameters(memory_cost=8, time_cost=1)


def test_the_production_defaults_are_owasp_argon2id() -> None:
    """OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB (19456 KiB), t=2, p=1."""
    assert (OWASP_PARAMETERS.memory_cost, OWASP_PARAMETERS.time_cost) == (19456, 2)
    assert OWASP_PARAMETERS.parallelism == 1

    stored = PasswordHasher().hash("correct horse battery staple")

    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert argon2.extract_parameters(stored).type is argon2.Type.ID


def test_the_rule_constants_follow_asvs() -> None:
    assert MIN_PASSWORD_LENGTH == 8
    assert RECOMMENDED_PASSWORD_LENGTH == 15
    assert MAX_PASSWORD_LENGTH >= 64


def test_verify_accepts_the_password_and_nothing_else() -> None:
    hasher = PasswordHasher(FAST)
    stored = hasher.hash("Tr0ub4dor&3-but-longer")

    assert hasher.verify(stored, "Tr0ub4dor&3-but-longer")
    assert not hasher.verify(stored, "tr0ub4dor&3-but-longer")
    assert not hasher.verify(stored, "Tr0ub4dor&3-but-longer ")


@pytest.mark.parametrize("stored", ["", "not a hash", "$argon2id$v=19$m=8,t=1,p=1$broken"])
def test_verify_of_a_corrupt_hash_is_false_not_an_exception(stored: str) -> None:
    assert PasswordHasher(FAST).verify(stored, "whatever-password") is False


def test_verify_dummy_is_always_false() -> None:
    hasher = PasswordHasher(FAST)

    assert hasher.verify_dummy("any password at all") is False
    assert hasher.verify_dummy("") is False


def test_needs_rehash_when_the_parameters_change() -> None:
    old = PasswordHasher(PasswordParameters(memory_cost=8, time_cost=1)).hash("a long passphrase")
    current = PasswordHasher(PasswordParameters(memory_cost=16, time_cost=1))

    assert current.needs_rehash(old)
    assert not current.needs_rehash(current.hash("a long passphrase"))
    assert current.needs_rehash("$2b$12$a-bcrypt-hash-is-not-argon2id")


def test_a_password_is_used_exactly_as_given() -> None:
    """ASVS 6.2.8: no truncation, trimming or normalisation; 6.2.9: long ones work."""
    hasher = PasswordHasher(FAST)
    long_password = "x" * 500 + "y"
    stored = hasher.hash(long_password)

    assert hasher.verify(stored, long_password)
    assert not hasher.verify(stored, "x" * 500)
    assert not hasher.verify(hasher.hash("café-au-lait-42"), "cafe\u0301-au-lait-42")


@pytest.mark.parametrize(
    "password",
    [
        pytest.param("x7#Kq2!", id="seven-characters"),
        pytest.param("", id="empty"),
        pytest.param("a" * (MAX_PASSWORD_LENGTH + 1), id="over-the-cap"),
        pytest.param("password123", id="common"),
        pytest.param("PassWord123", id="common-in-other-case"),
        pytest.param("iloveyou1234", id="common-longer"),
        pytest.param("alice@example.com", id="the-email"),
    ],
)
def test_weak_passwords_are_refused(password: str) -> None:
    with pytest.raises(WeakPasswordError) as exc_info:
        check_new_password(password, email="alice@example.com")

    assert exc_info.value.status_code == 400
    assert isinstance(exc_info.value, InvalidRequestError)
    assert password not in exc_info.value.message or password == ""


@pytest.mark.parametrize(
    "password",
    [
        pytest.param("zq8vlw3m", id="eight-characters"),
        pytest.param("all lower case words only", id="no-composition-rules"),
        pytest.param("ü" * 64, id="sixty-four-non-ascii"),
        pytest.param("p" * MAX_PASSWORD_LENGTH, id="at-the-cap"),
    ],
)
def test_passwords_that_meet_the_rules_are_accepted(password: str) -> None:
    check_new_password(password, email="alice@example.com")


def test_the_short_password_message_recommends_fifteen() -> None:
    with pytest.raises(WeakPasswordError, match="15 or more recommended"):
        check_new_password("short")


def test_the_bundled_common_password_list_is_loaded() -> None:
    """The NCSC top-100k list ships in the package: entries of 8+ characters are checked."""
    assert is_common_password("qwertyuiop")
    assert is_common_password("QWERTYUIOP")
    assert not is_common_password("a very unlikely passphrase 9f3e")


@pytest.mark.parametrize(
    "values",
    [
        {"memory_cost": 4},
        {"time_cost": 0},
        {"parallelism": 0},
        {"hash_len": 8},
    ],
)
def test_parameters_refuse_nonsense(values: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be at least"):
        PasswordParameters(**values)
