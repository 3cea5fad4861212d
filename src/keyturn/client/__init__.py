"""Keyturn's client: get, renew and send access tokens over httpx.

* `Client` / `AsyncClient` -- HTTP clients whose requests carry a token.
* `KeyturnAuth` -- the same as an `httpx.Auth`, for any `httpx.Client(auth=...)`.
* `RetryPolicy` -- how transient failures of Keyturn are retried.
* the errors, drawn in `keyturn.client._errors`: `ClientError` and its subclasses.

See ``docs/client.md``.
"""

from __future__ import annotations

from keyturn.client._auth import KeyturnAuth, RefreshTokenCallback
from keyturn.client._client import AsyncClient, Client
from keyturn.client._errors import (
    ClientError,
    CredentialsRejectedError,
    KeyturnUnavailableError,
    NoCredentialsError,
    TokenEndpointError,
)
from keyturn.client._tokens import RetryPolicy

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "CredentialsRejectedError",
    "KeyturnAuth",
    "KeyturnUnavailableError",
    "NoCredentialsError",
    "RefreshTokenCallback",
    "RetryPolicy",
    "TokenEndpointError",
]
