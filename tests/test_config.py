"""Settings: KEYTURN_* names, JWThenticator's names, validation and masking."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from keyturn.config import Settings


def test_defaults_are_the_safe_embedded_setup() -> None:
    settings = Settings.from_environment({})

    assert settings.access_token_lifetime == timedelta(minutes=15)
    assert settings.admin_host == "127.0.0.1"
    assert settings.embedded_database is True
    assert settings.should_migrate_on_start is True
    assert settings.resolved_database_url.endswith(".keyturn/keyturn.db")
    assert settings.resolved_database_url.startswith("sqlite")


def test_keyturn_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYTURN_ACCESS_TOKEN_LIFETIME", "300")
    monkeypatch.setenv("KEYTURN_DATABASE_URL", "postgresql://db/kt")

    settings = Settings.from_environment()

    assert settings.access_token_lifetime == timedelta(seconds=300)
    assert settings.resolved_database_url == "postgresql://db/kt"
    assert settings.should_migrate_on_start is False


def test_jwthenticator_names_map_onto_keyturn_settings() -> None:
    settings = Settings.from_environment(
        {
            "PORT": "9000",
            "URL_PREFIX": "/auth/",
            "DISABLE_EXTERNAL_API": "true",
            "DISABLE_INTERNAL_API": "1",
            "JWT_LEASE_TIME": "90000",
            "JWT_AUDIENCE": "svc-a,svc-b",
            "KEY_EXPIRY": "172800",
            "REFRESH_TOKEN_EXPIRY": "86400",
            "RSA_PRIVATE_KEY_PATH": "/keys/jwt.pem",
            "DB_USER": "kt",
            "DB_PASS": "p@ss:word",
            "DB_HOST": "db.internal",
            "DB_NAME": "auth",
        }
    )

    assert settings.public_port == 9000
    assert settings.url_prefix == "/auth"
    assert settings.disable_public_api is True
    assert settings.disable_admin_api is True
    assert settings.access_token_lifetime == timedelta(hours=25)
    assert settings.audience == "svc-a"
    assert settings.legacy_key_lifetime == timedelta(days=2)
    assert settings.legacy_refresh_token_lifetime == timedelta(days=1)
    assert settings.signing_key_file == Path("/keys/jwt.pem")
    assert settings.resolved_database_url == "postgresql://kt:p%40ss%3Aword@db.internal/auth"


def test_keyturn_name_wins_over_the_legacy_one() -> None:
    settings = Settings.from_environment({"PORT": "9000", "KEYTURN_PUBLIC_PORT": "7000"})

    assert settings.public_port == 7000


@pytest.mark.parametrize(
    ("environ", "field"),
    [
        pytest.param({"KEYTURN_ACCESS_TOKEN_LIFETIME": "0"}, "access_token_lifetime", id="zero"),
        pytest.param({"KEYTURN_ACCESS_TOKEN_LIFETIME": "-5"}, "access_token_lifetime", id="neg"),
        pytest.param({"JWT_LEASE_TIME": "999999"}, "access_token_lifetime", id="too-long"),
        pytest.param({"KEYTURN_LEEWAY": "3600"}, "leeway", id="leeway"),
        pytest.param({"KEYTURN_PUBLIC_PORT": "70000"}, "public_port", id="port"),
        pytest.param({"KEYTURN_SIGNING_ALGORITHM": "HS256"}, "signing_algorithm", id="hs256"),
        pytest.param({"KEYTURN_URL_PREFIX": "auth"}, "url_prefix", id="prefix"),
        pytest.param({"KEYTURN_NO_SUCH_SETTING": "1"}, "no_such_setting", id="unknown"),
    ],
)
def test_bad_values_name_the_field(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], field: str
) -> None:
    """T-TIME-09: a bad lifetime is a clear start-up error, never an overflow later."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError) as exc_info:
        Settings.from_environment()

    assert field in str(exc_info.value)


def test_masked_hides_every_secret() -> None:
    settings = Settings.from_environment(
        {
            "KEYTURN_PEPPER": "pepper-value",
            "KEYTURN_ADMIN_TOKEN": "admin-value",
            "DB_PASS": "db-password",
        }
    )

    shown = settings.masked()

    text = repr(shown) + repr(settings)
    for secret in ("pepper-value", "admin-value", "db-password"):
        assert secret not in text
    assert shown["pepper"] == "**********"
    assert shown["access_token_lifetime"] == 900


def test_service_config_carries_the_token_settings() -> None:
    settings = Settings.from_environment(
        {"KEYTURN_ISSUER": "https://kt.example", "KEYTURN_ACCESS_TOKEN_LIFETIME": "60"}
    )

    config = settings.service_config()

    assert config.issuer == "https://kt.example"
    assert config.access_lifetime_seconds == 60


def test_client_side_variables_do_not_stop_the_server() -> None:
    """The examples' KEYTURN_URL & co. share a shell with `keyturn serve`."""
    settings = Settings.from_environment(
        {"KEYTURN_URL": "http://kt", "KEYTURN_API_KEY": "kt_x", "KEYTURN_AUDIENCE": "orders"}
    )

    assert settings.audience == "orders"


def test_a_misspelt_setting_still_stops_the_server() -> None:
    with pytest.raises(ValidationError):
        Settings.from_environment({"KEYTURN_AUDIENCES": "orders"})


def test_db_port_joins_the_host_and_the_schema_defaults_to_keyturn() -> None:
    settings = Settings.from_environment({"DB_HOST": "db.internal", "DB_PORT": "6543"})

    assert settings.resolved_database_url == "postgresql://postgres@db.internal:6543/jwthenticator"
    assert settings.database_schema == "keyturn"


def test_a_schema_name_that_needs_quoting_is_refused() -> None:
    with pytest.raises(ValidationError, match="schema name"):
        Settings.from_environment({"KEYTURN_DATABASE_SCHEMA": "Key Turn"})
