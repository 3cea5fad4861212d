"""``deploy/nginx/keyturn.conf`` carries what Keyturn needs to check a DPoP proof.

A real nginx, the shipped file, in front of the echo upstream; in place of Keyturn a
recorder that keeps every ``/v1/validate`` call it gets and answers as Keyturn would
(200, or 401 with a DPoP challenge). The test pins nginx's side of RFC 9449 at the gate:
the token and the proof reach ``/v1/validate`` with the client's method and URL, which
the client cannot choose, and a refusal reaches the client with its DPoP challenge.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from keyturn.verify._remote import ORIGINAL_METHOD_HEADER, ORIGINAL_URL_HEADER
from tests.deploy.conftest import NginxGateway, Upstream

CHALLENGE = 'DPoP realm="keyturn", algs="ES256", error="invalid_dpop_proof"'
GOOD_PROOF = "aGVhZGVy.Y2xhaW1z.c2ln"


@dataclass
class Recorder:
    """What the stand-in Keyturn received on ``/v1/validate``, one header dict per call."""

    calls: list[dict[str, str]] = field(default_factory=list)


def recorder_handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if not self.path.startswith("/v1/validate"):
                self._send(200, {})
                return
            recorder.calls.append({name.lower(): value for name, value in self.headers.items()})
            if self.headers.get("DPoP") == GOOD_PROOF:
                self._send(200, {"X-Keyturn-Subject": "key:k1"})
            else:
                self._send(401, {"WWW-Authenticate": CHALLENGE})

        def _send(self, status: int, headers: dict[str, str]) -> None:
            body = json.dumps({}).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test reads `recorder.calls`."""

    return Handler


@dataclass
class Gate:
    gateway: NginxGateway
    recorder: Recorder

    def get(self, path: str, method: str = "GET", **headers: str) -> httpx.Response:
        self.recorder.calls.clear()
        return httpx.request(method, f"{self.gateway.url}{path}", headers=headers, timeout=10)


@pytest.fixture(scope="module")
def gate(echo_upstream: Upstream, nginx_gateway: Callable[..., NginxGateway]) -> Iterator[Gate]:
    recorder = Recorder()
    server = ThreadingHTTPServer(("127.0.0.1", 0), recorder_handler(recorder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        yield Gate(nginx_gateway(keyturn=address, app=echo_upstream.address), recorder)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_rfc9449_7_1_token_proof_method_and_url_reach_v1_validate(gate: Gate) -> None:
    response = gate.get(
        "/orders/17?page=2",
        method="DELETE",
        Authorization="DPoP the-token",
        DPoP=GOOD_PROOF,
    )

    assert response.status_code == 200
    assert response.json()["headers"]["x-keyturn-subject"] == ["key:k1"]
    (call,) = gate.recorder.calls
    assert call["authorization"] == "DPoP the-token"
    assert call["dpop"] == GOOD_PROOF
    assert call[ORIGINAL_METHOD_HEADER.lower()] == "DELETE"
    assert call[ORIGINAL_URL_HEADER.lower()] == f"{gate.gateway.url}/orders/17?page=2"


def test_rfc9449_4_3_the_client_cannot_choose_the_method_and_url_keyturn_checks(
    gate: Gate,
) -> None:
    """A proof made for another request cannot be passed off by naming that request."""
    forged = {ORIGINAL_METHOD_HEADER: "GET", ORIGINAL_URL_HEADER: "https://elsewhere/x"}

    gate.get("/anything", method="POST", Authorization="DPoP t", DPoP=GOOD_PROOF, **forged)

    (call,) = gate.recorder.calls
    assert call[ORIGINAL_METHOD_HEADER.lower()] == "POST"
    assert call[ORIGINAL_URL_HEADER.lower()] == f"{gate.gateway.url}/anything"


def test_rfc9449_7_1_a_refusal_reaches_the_client_with_keyturns_dpop_challenge(
    gate: Gate,
) -> None:
    response = gate.get("/anything", Authorization="DPoP the-token", DPoP="replayed.proof.x")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == CHALLENGE
    assert "headers" not in response.text  # the upstream's echo never came back
