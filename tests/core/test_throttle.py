"""Login throttling decisions: which counters an attempt is charged to."""

from __future__ import annotations

import pytest

from keyturn.core.accounts import check_email, email_key
from keyturn.core.throttle import LoginLimits, login_buckets
from keyturn.errors import InvalidRequestError

LIMITS = LoginLimits(window=300, per_address=30, per_account_address=10, per_account=50)


def test_an_attempt_is_charged_tightest_counter_first() -> None:
    buckets = login_buckets("alice@example.com", "203.0.113.7", LIMITS)

    assert [(b.limit, b.window) for b in buckets] == [(10, 300), (30, 300), (50, 300)]
    assert buckets[1].name == "login:addr:203.0.113.7"
    assert buckets[0].name.endswith(":203.0.113.7")


def test_counters_name_no_email_address() -> None:
    """The counter store (Redis) never sees the email, only a digest."""
    names = [b.name for b in login_buckets("alice@example.com", "203.0.113.7", LIMITS)]

    assert not any("alice" in name or "example" in name for name in names)


def test_letter_case_of_the_email_does_not_give_new_counters() -> None:
    upper = login_buckets(email_key("Alice@Example.COM"), "a", LIMITS)
    lower = login_buckets(email_key("alice@example.com"), "a", LIMITS)

    assert upper == lower


def test_other_addresses_share_only_the_account_counter() -> None:
    here = login_buckets("alice@example.com", "198.51.100.1", LIMITS)
    there = login_buckets("alice@example.com", "198.51.100.2", LIMITS)

    assert {b.name for b in here} & {b.name for b in there} == {here[2].name}


@pytest.mark.parametrize("field", ["window", "per_address", "per_account_address", "per_account"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        LoginLimits(**{field: 0})


@pytest.mark.parametrize(
    "email",
    [
        "",
        "no-at-sign",
        "two@@example.com",
        "sp ace@example.com",
        "nul\x00@example.com",
        "a" * 250 + "@b.cd",
    ],
)
def test_check_email_refuses_what_cannot_be_an_address(email: str) -> None:
    with pytest.raises(InvalidRequestError):
        check_email(email)


def test_check_email_keeps_the_address_as_given() -> None:
    assert check_email("Alice.Smith+tag@Example.org") == "Alice.Smith+tag@Example.org"
    assert email_key("Alice.Smith+tag@Example.org") == "alice.smith+tag@example.org"
