"""``GET /metrics`` on the admin listener: HTTP, domain, pool and signing-key metrics."""

from __future__ import annotations

import secrets

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.server.metrics import ServerMetrics
from keyturn.testing import FakeClock

from .conftest import (
    ADMIN_TOKEN,
    IDENTIFIER,
    LEGACY_KEY,
    OTHER_IDENTIFIER,
    REMOTE,
    MakeClient,
    OpenState,
    bearer,
    create_key,
    legacy_tokens,
    register_legacy_key,
    v1_tokens,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def sqlite_state(open_state: OpenState, sqlite_database_url: str) -> KeyturnState:
    """Keys get refresh tokens, so the rotating-refresh counters move too."""
    return await open_state(sqlite_database_url, client_credentials_refresh_tokens=True)


async def scrape(admin: httpx.AsyncClient) -> Samples:
    """Every sample of a scrape, keyed by name and label set."""
    response = await admin.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests(samples: Samples, route: str, status: str, method: str = "GET") -> float:
    return value(
        samples,
        "keyturn_http_requests_total",
        listener="public",
        method=method,
        route=route,
        status=status,
    )


async def test_requests_are_counted_by_route_template_and_status(
    sqlite_public: httpx.AsyncClient, sqlite_admin: httpx.AsyncClient
) -> None:
    await register_legacy_key(sqlite_admin)
    jwt = (await legacy_tokens(sqlite_public))["jwt"]
    for _ in range(3):
        assert (await sqlite_public.get("/validate_request", headers=bearer(jwt))).is_success
    await sqlite_public.get("/validate_request", headers=bearer("junk"))
    created = await create_key(sqlite_admin)
    await sqlite_admin.get(f"/v1/admin/keys/{created['record']['id']}")

    samples = await scrape(sqlite_admin)

    assert requests(samples, "/validate_request", "200") == 3  # the fast path counts too
    assert requests(samples, "/validate_request", "401") == 1
    assert requests(samples, "/authenticate", "200", method="POST") == 1
    admin_route = frozenset(
        {
            ("listener", "admin"),
            ("method", "GET"),
            ("route", "/v1/admin/keys/{key_id}"),
            ("status", "200"),
        }
    )
    assert samples[("keyturn_http_requests_total", admin_route)] == 1
    count = value(
        samples,
        "keyturn_http_request_duration_seconds_count",
        listener="public",
        route="/validate_request",
    )
    assert count == 4


async def test_random_paths_cannot_grow_the_label_sets(
    sqlite_public: httpx.AsyncClient, sqlite_admin: httpx.AsyncClient
) -> None:
    """Unbounded cardinality is impossible: every unrouted path is one ``unmatched`` route."""
    for _ in range(200):
        path = "/" + secrets.token_urlsafe(12)
        assert (await sqlite_public.get(path)).status_code == 404
    await sqlite_public.request("BREW", "/" + secrets.token_urlsafe(8))

    samples = await scrape(sqlite_admin)

    series = {
        labels: count
        for (name, labels), count in samples.items()
        if name == "keyturn_http_requests_total" and dict(labels)["listener"] == "public"
    }
    assert len(series) <= 7  # the fast path's five, bound at start, and these two
    assert {dict(labels)["route"] for labels, count in series.items() if count} == {"unmatched"}
    assert requests(samples, "unmatched", "404") == 200
    assert requests(samples, "unmatched", "404", method="other") == 1


async def test_domain_events_are_counted(
    sqlite_public: httpx.AsyncClient, sqlite_admin: httpx.AsyncClient, clock: FakeClock
) -> None:
    await register_legacy_key(sqlite_admin)
    legacy = await legacy_tokens(sqlite_public)
    refreshed = await sqlite_public.post(
        "/refresh", json={"refresh_token": legacy["refresh_token"], "identifier": IDENTIFIER}
    )
    assert refreshed.status_code == 200
    key = (await create_key(sqlite_admin))["key"]
    first = await v1_tokens(sqlite_public, key)
    rotate = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    client = {"data": rotate, "auth": ("", key)}
    assert (await sqlite_public.post("/v1/token", **client)).status_code == 200
    clock.advance(11)  # past the reuse grace: the replay revokes the family
    assert (await sqlite_public.post("/v1/token", **client)).status_code == 400
    wrong = {"key": LEGACY_KEY, "identifier": OTHER_IDENTIFIER}
    assert (await sqlite_public.post("/authenticate", json=wrong)).status_code == 401
    unknown = {"key": "never-registered-key-0123456789", "identifier": IDENTIFIER}
    assert (await sqlite_public.post("/authenticate", json=unknown)).status_code == 401
    assert (await sqlite_public.get("/v1/validate", headers=bearer("x.y.z"))).status_code == 401

    samples = await scrape(sqlite_admin)

    assert value(samples, "keyturn_tokens_issued_total", grant="api_key") == 2
    assert value(samples, "keyturn_tokens_issued_total", grant="refresh_token") == 2
    assert value(samples, "keyturn_refreshes_total", kind="legacy") == 1
    assert value(samples, "keyturn_refreshes_total", kind="rotating") == 1
    assert value(samples, "keyturn_refresh_reuse_detected_total") == 1
    failures = {
        dict(labels)["reason"]: v
        for (name, labels), v in samples.items()
        if name == "keyturn_authentication_failures_total" and v
    }
    assert failures == {
        "refresh_token_reused": 1,
        "identifier_mismatch": 1,
        "unknown_key": 1,
        "invalid_token": 1,
    }


async def test_rate_limit_hits_are_counted(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    state = await open_state(sqlite_database_url, rate_limit_per_address=2)
    public = make_client(build_public_app(state), peer=REMOTE)
    admin = make_client(build_admin_app(state))
    body = {"key": "never-registered-key-0123456789", "identifier": IDENTIFIER}
    statuses = [(await public.post("/authenticate", json=body)).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]

    samples = await scrape(admin)

    assert value(samples, "keyturn_rate_limited_total", limit="address") == 1
    assert value(samples, "keyturn_rate_limited_total", limit="key") == 0


async def test_signing_key_age_follows_the_clock(
    sqlite_admin: httpx.AsyncClient, clock: FakeClock
) -> None:
    clock.advance(3600)

    samples = await scrape(sqlite_admin)

    assert value(samples, "keyturn_signing_key_age_seconds") == 3600


@pytest.mark.postgresql
async def test_pool_gauges_show_size_and_checked_out(
    open_state: OpenState, postgresql_database_url: str, make_client: MakeClient
) -> None:
    state: KeyturnState = await open_state(postgresql_database_url, database_pool_size=5)
    admin = make_client(build_admin_app(state))
    async with state.storage.engine.connect():
        samples = await scrape(admin)

    assert value(samples, "keyturn_db_pool_size") == 5
    assert value(samples, "keyturn_db_pool_checked_out") == 1


async def test_metrics_need_the_admin_credential_off_loopback(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    state = await open_state(sqlite_database_url, admin_token=ADMIN_TOKEN)
    anonymous = make_client(build_admin_app(state), peer=REMOTE)
    scraper = make_client(build_admin_app(state), peer=REMOTE, headers=bearer(ADMIN_TOKEN))

    assert (await anonymous.get("/metrics")).status_code == 401
    samples = await scrape(scraper)
    assert value(samples, "keyturn_authentication_failures_total", reason="admin_credential") == 1


def test_a_tally_flushes_exactly_what_observations_would_record() -> None:
    """The fast path's lock-free tally ends up as per-observation counting would."""
    tallied, observed = ServerMetrics(), ServerMetrics()
    tally = tallied.tally("public", "GET", "/v", 200)
    durations = [0.0004, 0.0005, 0.003, 0.003, 0.2, 20.0]
    for seconds in durations[:3]:
        tally.add(seconds)
    tallied.flush()
    tallied.flush()  # nothing new: adds nothing
    for seconds in durations[3:]:
        tally.add(seconds)
    tallied.flush()
    for seconds in durations:
        observed.requests.labels("public", "GET", "/v", "200").inc()
        observed.duration.labels("public", "/v").observe(seconds)

    def samples(metrics: ServerMetrics) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for family in metrics.registry.collect()
            if family.name.startswith("keyturn_http_")
            for s in family.samples
            if not s.name.endswith("_created")
        }

    assert samples(tallied) == samples(observed)
    assert samples(tallied)[("keyturn_http_request_duration_seconds_bucket", "0.0005")] == 2
    assert samples(tallied)[("keyturn_http_requests_total", "")] == 6
