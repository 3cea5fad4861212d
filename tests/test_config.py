"""Settings: KEYTURN_* names, JWThenticator's names, validation and masking."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from keyturn.config import (
    NOT_SETTINGS,
    Settings,
    SettingsError,
    default_sqlite_url,
    unknown_variables,
)


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
    ("environ", "problem"),
    [
        pytest.param(
            {"KEYTURN_ACCESS_TOKEN_LIFETIME": "0"},
            "invalid setting KEYTURN_ACCESS_TOKEN_LIFETIME: must be a positive number of seconds",
            id="zero",
        ),
        pytest.param(
            {"KEYTURN_ACCESS_TOKEN_LIFETIME": "-5"},
            "invalid setting KEYTURN_ACCESS_TOKEN_LIFETIME: must be a positive number of seconds",
            id="neg",
        ),
        pytest.param(
            {"JWT_LEASE_TIME": "999999"},
            "invalid setting JWT_LEASE_TIME: at most two days (172800 seconds)",
            id="too-long",
        ),
        pytest.param(
            {"KEYTURN_LEEWAY": "3600"},
            "invalid setting KEYTURN_LEEWAY: must be at most 300",
            id="leeway",
        ),
        pytest.param(
            {"KEYTURN_PUBLIC_PORT": "70000"},
            "invalid setting KEYTURN_PUBLIC_PORT: must be at most 65535",
            id="port",
        ),
        pytest.param(
            {"PORT": "http"}, "invalid setting PORT: must be a whole number", id="legacy-port"
        ),
        pytest.param(
            {"KEYTURN_SIGNING_ALGORITHM": "HS256"},
            "invalid setting KEYTURN_SIGNING_ALGORITHM: must be one of 'ES256', 'RS256' or 'EdDSA'",
            id="hs256",
        ),
        pytest.param(
            {"KEYTURN_URL_PREFIX": "auth"},
            "invalid setting KEYTURN_URL_PREFIX: must start with '/'",
            id="prefix",
        ),
        pytest.param(
            {"KEYTURN_AUDIENCES": "orders"},
            "unknown setting KEYTURN_AUDIENCES (did you mean KEYTURN_AUDIENCE?)",
            id="misspelt",
        ),
        pytest.param(
            {"KEYTURN_ISUER": "https://kt"},
            "unknown setting KEYTURN_ISUER (did you mean KEYTURN_ISSUER?)",
            id="letter-left-out",
        ),
        pytest.param(
            {"KEYTURN_PORT": "9090"},
            "unknown setting KEYTURN_PORT (did you mean KEYTURN_PUBLIC_PORT?)",
            id="word-left-out",
        ),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], problem: str
) -> None:
    """T-TIME-09: a bad lifetime is a clear start-up error, never an overflow later. The
    message names the variable as set (JWThenticator's too), in words, not pydantic's."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(SettingsError) as exc_info:
        Settings.from_environment()

    assert exc_info.value.problems == [problem]
    assert "pydantic" not in exc_info.value.message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("900", 900), ("900s", 900), ("15m", 900), ("15M", 900), ("2h", 7200), ("1d", 86400)],
)
def test_durations_take_seconds_or_a_unit(value: str, seconds: int) -> None:
    settings = Settings.from_environment({"KEYTURN_ACCESS_TOKEN_LIFETIME": value})

    assert settings.access_token_lifetime == timedelta(seconds=seconds)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as exc_info:
        Settings.from_environment({"KEYTURN_LEEWAY": "x", "KEYTURN_WORKERS": "0"})

    assert exc_info.value.problems == [
        "invalid setting KEYTURN_LEEWAY: must be a whole number",
        "invalid setting KEYTURN_WORKERS: must be at least 1",
    ]


@pytest.mark.parametrize(
    "variable",
    ["KEYTURN_URL", "KEYTURN_API_KEY", "KEYTURN_JWKS_URL", "KEYTURN_DASHBOARD_THEME"],
)
def test_variables_far_from_any_setting_never_stop_the_server(variable: str) -> None:
    refused, ignored = unknown_variables({variable: "x"})
    settings = Settings.from_environment({variable: "x"})

    assert refused == {}
    assert ignored == ([] if variable in NOT_SETTINGS else [variable])
    assert settings.public_port == 8080


def test_sources_say_where_each_value_came_from() -> None:
    settings = Settings.from_environment(
        {"PORT": "9000", "KEYTURN_ISSUER": "https://kt", "DB_HOST": "db"}, workers=2
    )

    assert settings.source("public_port") == "PORT"
    assert settings.source("issuer") == "KEYTURN_ISSUER"
    assert settings.source("database_url") == "DB_HOST"
    assert settings.source("workers") == "command line"
    assert settings.source("audience") == "default"


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
    with pytest.raises(SettingsError):
        Settings.from_environment({"KEYTURN_AUDIENCES": "orders"})


def test_db_port_joins_the_host_and_the_schema_defaults_to_keyturn() -> None:
    settings = Settings.from_environment({"DB_HOST": "db.internal", "DB_PORT": "6543"})

    assert settings.resolved_database_url == "postgresql://postgres@db.internal:6543/jwthenticator"
    assert settings.database_schema == "keyturn"


def test_a_schema_name_that_needs_quoting_is_refused() -> None:
    with pytest.raises(SettingsError, match="KEYTURN_DATABASE_SCHEMA: a database schema name"):
        Settings.from_environment({"KEYTURN_DATABASE_SCHEMA": "Key Turn"})


def test_the_default_database_is_keyturn_db_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEYTURN_DATABASE_URL", raising=False)

    expected = f"sqlite+aiosqlite:///{tmp_path}/.keyturn/keyturn.db"
    assert default_sqlite_url(Path(".keyturn")) == expected
    assert Settings(data_dir=Path(".keyturn")).resolved_database_url == expected
