"""The client's token bookkeeping, sans I/O: what to ask ``/v1/token`` and what answers mean.

`token_flow` is a generator in the style of httpx's auth flows: it yields a
`httpx.Request` to send, a `Wait` to sleep or a `Persist` to report a changed refresh
token, and receives the response (or the `httpx.TransportError` that replaced it). The
sync and async drivers in `keyturn.client._auth` only send, sleep and call back, so both
share every decision made here.
"""

from __future__ import annotations

import base64
import email.utils
import math
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import quote

import httpx

from keyturn.client._errors import (
    CredentialsRejectedError,
    KeyturnUnavailableError,
    NoCredentialsError,
    TokenEndpointError,
)
from keyturn.client._proofs import DPoP
from keyturn.core.assertions import CLIENT_ASSERTION_TYPE, create_client_assertion
from keyturn.core.signing import SigningKey
from keyturn.core.tokens import peek_unverified_claims
from keyturn.errors import MalformedTokenError

__all__ = [
    "AccessToken",
    "Persist",
    "RetryPolicy",
    "TokenState",
    "Wait",
    "token_flow",
]

GrantType: TypeAlias = Literal["client_credentials", "refresh_token"]
Step: TypeAlias = "httpx.Request | Wait | Persist"
Result: TypeAlias = "httpx.Response | httpx.TransportError | None"

#: Statuses worth another try: the server or something in front of it is overloaded.
_TRANSIENT_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
#: RFC 6749 §5.2 codes that say the presented credential itself is no good.
_REFUSED_CREDENTIAL: Final = frozenset({"invalid_grant", "invalid_client"})
#: What to check after ``invalid_dpop_proof`` without and with DPoP (a proof is dated).
_NO_DPOP: Final = "the client's dpop option: Keyturn wants DPoP proofs here (dpop=True)"
_BAD_DPOP: Final = "this machine's clock and the client's dpop key"
#: The token types the client can send (RFC 6750 ``Bearer``, RFC 9449 ``DPoP``).
_TOKEN_TYPES: Final = {"bearer": "Bearer", "dpop": "DPoP"}
#: Seconds a client assertion lives (Keyturn accepts at most 300; it is single use anyway).
ASSERTION_LIFETIME: Final = 60
#: A token response is a few hundred bytes; anything this big is not one (OWASP API10).
MAX_TOKEN_RESPONSE_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient token-endpoint failures are retried.

    Waits double from ``backoff`` up to ``max_backoff`` seconds; a ``Retry-After`` from
    Keyturn is honoured as the minimum wait. When Keyturn asks for a longer wait than
    ``max_backoff``, the client stops and raises `KeyturnUnavailableError` with it.
    """

    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < self.backoff:
            raise ValueError("need retries >= 0 and 0 <= backoff <= max_backoff")

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number ``attempt`` (from 1), or None to give up."""
        if attempt > self.retries:
            return None
        wait: float = min(self.backoff * 2.0 ** (attempt - 1), self.max_backoff)
        if retry_after is not None:
            if retry_after > self.max_backoff:
                return None
            wait = max(wait, retry_after)
        return wait


@dataclass(frozen=True, slots=True)
class Wait:
    """Sleep this many seconds, then send ``None`` back into the flow."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Persist:
    """The refresh token changed (``None``: it was discarded); tell the callback."""

    refresh_token: str | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An access token and, on the client's own clock, when to renew and stop using it.

    ``token_type`` is the ``Authorization`` scheme to send it with: ``Bearer``, or
    ``DPoP`` for a token bound to the client's DPoP key (every use needs a proof).
    """

    value: str = field(repr=False)
    refresh_at: float
    expires_at: float
    scope: str | None
    generation: int
    token_type: str = "Bearer"  # noqa: S105 -- a scheme name, not a secret

    @property
    def bound(self) -> bool:
        """True for a DPoP-bound token: every use needs a proof signed by the DPoP key."""
        return self.token_type == "DPoP"  # noqa: S105 -- a scheme name, not a secret


@dataclass(frozen=True, slots=True)
class _Rejected:
    error: CredentialsRejectedError
    persist: Persist | None


@dataclass(frozen=True, slots=True)
class _NonceWanted:
    """RFC 9449 §8: the token endpoint wants a proof with the nonce it has just sent."""

    error: TokenEndpointError


@dataclass(frozen=True, slots=True)
class _Transient:
    message: str
    status_code: int | None = None
    retry_after: float | None = None


class TokenState:
    """Credentials and the current access token of one client.

    Not thread-safe by itself: the drivers hold a lock around every flow.

    Args:
        server_url: Keyturn's public base URL (with any ``KEYTURN_URL_PREFIX``).
        api_key: the API key (``client_credentials`` grant).
        refresh_token: a refresh token to start from (``refresh_token`` grant).
        private_key: authenticate with a client assertion signed by this key
            (``private_key_jwt``, RFC 7523) instead of an API key.
        client_id: the Keyturn key id, the assertion's ``iss`` and ``sub``.
        audience: the assertion's ``aud`` (default: the token endpoint URL).
        dpop: DPoP-bind the tokens (RFC 9449): each token request carries a proof.
        identifier: sent with every token request; Keyturn refuses a key registered
            to another identifier.
        scopes: scopes to ask for; ``None`` asks for the key's default.
        refresh_ratio: renew once this share of the token's lifetime has passed.
        leeway: stop using a token this many seconds before it expires, for clock skew
            between Keyturn, this client and the services checking the token.
    """

    def __init__(
        self,
        server_url: str,
        *,
        api_key: str | None = None,
        refresh_token: str | None = None,
        private_key: SigningKey | None = None,
        client_id: str | None = None,
        audience: str | None = None,
        dpop: DPoP | None = None,
        identifier: str | None = None,
        scopes: Iterable[str] | None = None,
        refresh_ratio: float = 0.8,
        leeway: float = 10.0,
    ) -> None:
        if not api_key and not refresh_token and private_key is None:
            raise NoCredentialsError(
                "give the client an api_key or a private_key, a refresh_token, or both"
            )
        if api_key and private_key is not None:
            raise ValueError("give the client an api_key or a private_key, not both")
        if private_key is not None and not client_id:
            raise ValueError("a private_key needs its client_id: the Keyturn key's id")
        if not 0 < refresh_ratio <= 1 or leeway < 0:
            raise ValueError("need 0 < refresh_ratio <= 1 and leeway >= 0")
        url = httpx.URL(server_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"server_url must be an http(s) URL, got {server_url!r}")
        self.token_url = str(url).rstrip("/") + "/v1/token"
        self.api_key = api_key or None
        self.refresh_token = refresh_token or None
        self.private_key = private_key
        self.client_id = client_id or None
        self.audience = audience or self.token_url
        self.dpop = dpop
        self.identifier = identifier
        self.scope = " ".join(sorted(set(scopes))) if scopes is not None else None
        self.refresh_ratio = refresh_ratio
        self.leeway = leeway
        self.token: AccessToken | None = None
        self.generation = 0
        #: No proactive renewal before this time (set after one failed, while still valid).
        self.hold_until = -math.inf

    def usable(self, now: float) -> AccessToken | None:
        """The current token if it may still be sent at ``now``."""
        token = self.token
        if token is not None and now < token.expires_at:
            return token
        return None

    def due(self, now: float) -> bool:
        """True when a new token should be fetched (none yet, or renewal time reached)."""
        return self.token is None or (now >= self.token.refresh_at and now >= self.hold_until)

    def build_request(self, now: float | None = None) -> tuple[GrantType, httpx.Request]:
        """The next token request: the refresh token if there is one, else the key.

        With an API key or a private key, every request authenticates with it (HTTP
        Basic, or a fresh client assertion): Keyturn issues no refresh token to
        ``client_credentials`` by default, so the key is used again at each renewal; with
        ``KEYTURN_CLIENT_CREDENTIALS_REFRESH_TOKENS=true`` it redeems the key's refresh
        tokens, which need the key's authentication (RFC 6749 §6). With DPoP, the request
        carries a fresh proof. ``now`` (default: the time) dates the assertion and proof.
        """
        now = time.time() if now is None else now
        params: dict[str, str] = {}
        headers = {"Accept": "application/json"}
        grant: GrantType
        if self.refresh_token is not None:
            grant = "refresh_token"
            params = {"grant_type": grant, "refresh_token": self.refresh_token}
        elif self.api_key is not None or self.private_key is not None:
            grant = "client_credentials"
            params = {"grant_type": grant}
        else:
            raise NoCredentialsError(
                "no key or refresh token is left (both were refused earlier); "
                "create a new key and construct a new client"
            )
        self._authenticate(params, headers, now)
        if self.scope is not None:
            params["scope"] = self.scope
        if self.identifier is not None:
            params["identifier"] = self.identifier
        request = httpx.Request("POST", self.token_url, data=params, headers=headers)
        if self.dpop is not None:
            request.headers["DPoP"] = self.dpop.proof("POST", request.url, now=now)
        return grant, request

    def _authenticate(self, params: dict[str, str], headers: dict[str, str], now: float) -> None:
        """Add the client authentication, if any: the key's, even to a refresh grant
        (RFC 6749 §6: a key's refresh token is redeemed with the key's authentication)."""
        if self.api_key is not None:
            # RFC 6749 §2.3.1: form-urlencode the client id and secret before HTTP Basic.
            user = quote(self.client_id, safe="") if self.client_id is not None else ""
            secret = quote(self.api_key, safe="")
            credentials = base64.b64encode(f"{user}:{secret}".encode()).decode()
            headers["Authorization"] = f"Basic {credentials}"
        elif self.private_key is not None and self.client_id is not None:
            # RFC 7523 §2.2: a fresh single-use assertion per request.
            params["client_id"] = self.client_id
            params["client_assertion_type"] = CLIENT_ASSERTION_TYPE
            params["client_assertion"] = create_client_assertion(
                self.private_key,
                client_id=self.client_id,
                audience=self.audience,
                now=int(now),
                lifetime=ASSERTION_LIFETIME,
            )

    def apply(
        self, grant: GrantType, result: httpx.Response | httpx.TransportError, now: float
    ) -> _Transient | _Rejected | _NonceWanted | Persist | None:
        """Take Keyturn's answer in; return what the flow must do next.

        Returns None when a token was stored and the refresh token did not change,
        `Persist` when it did (or was discarded and the key is still there to try),
        `_Rejected` when the credential was refused and nothing is left to try,
        `_Transient` when the request may be retried, `_NonceWanted` when it may be
        retried at once with the DPoP nonce Keyturn sent.

        Raises:
            TokenEndpointError: any other refusal or a malformed answer.
        """
        if isinstance(result, httpx.TransportError):
            return _Transient(f"could not reach Keyturn ({type(result).__name__})")
        status = result.status_code
        # RFC 9449 §8: every response may carry the nonce for the next proof.
        has_nonce = self.dpop is not None and self.dpop.remember(httpx.URL(self.token_url), result)
        if status in _TRANSIENT_STATUSES:
            return _Transient(
                f"Keyturn answered {status}",
                status_code=status,
                retry_after=_retry_after(result.headers.get("Retry-After"), now),
            )
        body = _json_body(result)
        if status == 200:
            return self._store(body, now)
        return self._refusal(grant, status, body, nonce_sent=has_nonce)

    def _refusal(
        self, grant: GrantType, status: int, body: Any, *, nonce_sent: bool
    ) -> _Rejected | _NonceWanted | Persist:
        """What an error answer means: a refused credential, a nonce to retry with, or
        (raised) a `TokenEndpointError` that names what to check."""
        error = body.get("error") if isinstance(body, dict) else None
        description = body.get("error_description") if isinstance(body, dict) else None
        detail = f": {description}" if isinstance(description, str) else ""
        if status in (400, 401) and error in _REFUSED_CREDENTIAL:
            return self._discard(grant, status, str(error), detail)
        if status == 400 and error == "use_dpop_nonce" and nonce_sent:
            return _NonceWanted(
                TokenEndpointError(
                    f"Keyturn wants a DPoP nonce again after a retry with one{detail}",
                    status_code=status,
                    error_code=error,
                )
            )
        if status in (404, 405):  # no token endpoint there: the URL, not the credentials
            raise TokenEndpointError(
                f"{self.token_url} answered {status}: check server_url, which must be "
                "Keyturn's public listener with its URL prefix (not the admin listener)",
                status_code=status,
                error_code=error if isinstance(error, str) else "invalid_response",
            )
        if isinstance(error, str):
            check = "the client's scopes and identifier"
            if error == "invalid_dpop_proof":  # RFC 9449 §5
                check = _NO_DPOP if self.dpop is None else _BAD_DPOP
            raise TokenEndpointError(
                f"Keyturn refused the token request ({error}{detail}); check {check}",
                status_code=status,
                error_code=error,
            )
        raise TokenEndpointError(
            f"Keyturn answered {status} without an OAuth error; is {self.token_url} "
            "the token endpoint of a Keyturn server?",
            status_code=status,
            error_code="invalid_response",
        )

    def _store(self, body: Any, now: float) -> Persist | None:
        if not isinstance(body, dict):
            raise _not_a_token("the body is not a JSON object")
        value = body.get("access_token")
        token_type = body.get("token_type")
        if not isinstance(value, str) or not value:
            raise _not_a_token("access_token is missing")
        scheme = _TOKEN_TYPES.get(token_type.lower()) if isinstance(token_type, str) else None
        if scheme is None or (scheme == "DPoP" and self.dpop is None):
            raise _not_a_token(
                "token_type is not Bearer" if self.dpop is None else "token_type is not DPoP"
            )
        lifetime = _lifetime(body.get("expires_in"), value)
        scope = body.get("scope")
        self.generation += 1
        self.token = AccessToken(
            value=value,
            refresh_at=now + lifetime * self.refresh_ratio,
            # Measured from when the answer arrived, on our clock: no skew against
            # Keyturn's; the leeway covers the services that check the token.
            expires_at=now + max(lifetime - self.leeway, lifetime * self.refresh_ratio),
            scope=scope if isinstance(scope, str) else None,
            generation=self.generation,
            token_type=scheme,
        )
        self.hold_until = -math.inf
        rotated = body.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != self.refresh_token:
            # RFC 6749 §6: a new refresh token replaces the old one, which must be dropped.
            self.refresh_token = rotated
            return Persist(rotated)
        return None

    def _discard(
        self, grant: GrantType, status: int, error: str, detail: str
    ) -> Persist | _Rejected:
        persist = None
        if grant == "refresh_token":
            self.refresh_token = None
            persist = Persist(None)
            if self.api_key is not None or self.private_key is not None:
                return persist  # the flow goes on with the key
            what = "the refresh token"
            todo = "give the client a key or a new refresh token"
        elif self.private_key is not None:
            self.private_key = None
            what = "the private key's client assertion"
            todo = (
                "the key is unknown, expired or revoked, this public key is not registered "
                "to it, or this machine's clock is wrong: check the key and the clock"
            )
        else:
            self.api_key = None
            what = "the API key"
            todo = "the key is unknown, expired or revoked: create a new one"
        self.token = None
        rejected = CredentialsRejectedError(
            f"Keyturn refused {what} ({error}{detail}); {todo}",
            status_code=status,
            error_code=error,
        )
        return _Rejected(rejected, persist)


def token_flow(
    state: TokenState, policy: RetryPolicy, clock: Callable[[], float], *, retry: bool = True
) -> Generator[Step, Result, AccessToken]:
    """Get a new access token into ``state``, retrying transient failures.

    With ``retry=False`` one transient failure ends the flow (the caller still holds a
    usable token and will try again later).

    Raises:
        KeyturnUnavailableError: every attempt failed transiently; credentials are kept.
        CredentialsRejectedError: Keyturn refused the credential and nothing is left.
        NoCredentialsError, TokenEndpointError: see their docs.
    """
    attempt = 0
    nonce_retried = False
    while True:
        grant, request = state.build_request(clock())
        result = yield request
        if result is None:
            raise TypeError("the driver must send a response or a transport error")
        outcome = state.apply(grant, result, clock())
        if isinstance(outcome, _NonceWanted):
            if nonce_retried:
                raise outcome.error
            nonce_retried = True  # RFC 9449 §8: once, at once, with the nonce just sent
            continue
        if isinstance(outcome, _Rejected):
            if outcome.persist is not None:
                yield outcome.persist
            raise outcome.error
        if isinstance(outcome, Persist):
            yield outcome
            if outcome.refresh_token is None:
                continue  # the refresh token was refused: go on at once with the key
        if not isinstance(outcome, _Transient):
            assert state.token is not None  # noqa: S101 -- apply() stored one
            return state.token
        attempt += 1
        wait = policy.delay(attempt, outcome.retry_after) if retry else None
        if wait is None:
            state.hold_until = clock() + (outcome.retry_after or policy.backoff)
            tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
            raise KeyturnUnavailableError(
                f"{outcome.message} after {tries}; the API key and refresh token are kept, "
                "try again later",
                status_code=outcome.status_code,
                retry_after=outcome.retry_after,
            )
        yield Wait(wait)


def _json_body(response: httpx.Response) -> Any:
    if len(response.content) > MAX_TOKEN_RESPONSE_BYTES:
        raise _not_a_token(f"the body is over {MAX_TOKEN_RESPONSE_BYTES} bytes")
    try:
        return response.json()
    except ValueError:
        return None


def _lifetime(expires_in: Any, token: str) -> float:
    """Seconds the token lives: ``expires_in``, else ``exp - iat`` read from the token."""
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        if expires_in > 0:
            return float(expires_in)
        raise _not_a_token("expires_in is not positive")
    try:
        _, claims = peek_unverified_claims(token)  # only to schedule renewal, never to trust
    except MalformedTokenError:
        claims = {}
    exp, iat = claims.get("exp"), claims.get("iat")
    if isinstance(exp, int) and isinstance(iat, int) and exp > iat:
        return float(exp - iat)
    raise _not_a_token("expires_in is missing and the token has no exp and iat")


def _retry_after(value: str | None, now: float) -> float | None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _not_a_token(reason: str) -> TokenEndpointError:
    return TokenEndpointError(
        f"Keyturn's token response is malformed ({reason})",
        status_code=200,
        error_code="invalid_response",
    )
