"""The sans-I/O token flow, driven by hand as httpx's own auth tests drive theirs."""

from __future__ import annotations

import base64

import httpx
import pytest

from keyturn.client import CredentialsRejectedError, RetryPolicy
from keyturn.client._tokens import Persist, TokenState, Wait, token_flow
from keyturn.testing import FakeClock

from .conftest import KEYTURN


def test_the_flow_asks_sleeps_reports_and_returns_a_token() -> None:
    clock = FakeClock()
    state = TokenState(KEYTURN, api_key="kt_k1_s")
    flow = token_flow(state, RetryPolicy(), clock.timestamp)

    first = next(flow)
    assert isinstance(first, httpx.Request)
    assert first.url == f"{KEYTURN}/v1/token"
    assert flow.send(httpx.ConnectError("down")) == Wait(0.5)
    again = flow.send(None)
    assert isinstance(again, httpx.Request)
    body = {"access_token": "t1", "token_type": "bearer", "expires_in": 100, "refresh_token": "r1"}
    assert flow.send(httpx.Response(200, json=body)) == Persist("r1")
    with pytest.raises(StopIteration) as stop:
        flow.send(None)

    token = stop.value.value
    assert (token.value, token.refresh_at, token.expires_at) == (
        "t1",
        80.0 + 1767225600,
        90.0 + 1767225600,
    )
    assert state.refresh_token == "r1"


def test_a_refused_refresh_token_is_reported_then_the_key_is_used() -> None:
    state = TokenState(KEYTURN, api_key="kt_k1_s", refresh_token="ktr_old")
    flow = token_flow(state, RetryPolicy(), FakeClock().timestamp)

    assert b"refresh_token=ktr_old" in next(flow).read()
    refused = httpx.Response(400, json={"error": "invalid_grant"})
    assert flow.send(refused) == Persist(None)
    retry = flow.send(None)
    assert isinstance(retry, httpx.Request)
    assert retry.headers["authorization"].startswith("Basic ")


def test_a_refused_key_ends_the_flow_with_credentials_rejected() -> None:
    state = TokenState(KEYTURN, api_key="kt_k1_s")
    flow = token_flow(state, RetryPolicy(), FakeClock().timestamp)
    next(flow)

    with pytest.raises(CredentialsRejectedError):
        flow.send(httpx.Response(401, json={"error": "invalid_client"}))

    assert state.api_key is None


def test_without_expires_in_the_lifetime_comes_from_the_token() -> None:
    """``exp - iat`` (both read unverified), so the client's clock need not match Keyturn's."""
    import base64
    import json

    def segment(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    jwt = ".".join([segment({"alg": "ES256"}), segment({"iat": 5, "exp": 305}), "c2ln"])
    clock = FakeClock()
    state = TokenState(KEYTURN, api_key="kt_k1_s", leeway=0)
    flow = token_flow(state, RetryPolicy(), clock.timestamp)
    next(flow)

    with pytest.raises(StopIteration) as stop:
        flow.send(httpx.Response(200, json={"access_token": jwt, "token_type": "Bearer"}))

    assert stop.value.value.expires_at == clock.timestamp() + 300


def test_refresh_grants_authenticate_with_the_key_when_there_is_one() -> None:
    """RFC 6749 §6: Keyturn redeems a key's refresh token only with that key's authentication;
    a refresh token alone (a login's) goes without client authentication."""
    with_key = TokenState("https://kt.test", api_key="kt_k/1", refresh_token="ktr_r")
    alone = TokenState("https://kt.test", refresh_token="ktr_r")

    grant, request = with_key.build_request()
    lone_grant, lone_request = alone.build_request()

    assert (grant, lone_grant) == ("refresh_token", "refresh_token")
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b":kt_k%2F1").decode()
    assert "Authorization" not in lone_request.headers
    assert b"refresh_token=ktr_r" in request.content
