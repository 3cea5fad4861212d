"""What `keyturn.client` raises: each error says what happened and what to do next.

* KeyturnError                      (keyturn.errors)
  + ClientError                     base of every error the client raises
    + CredentialsRejectedError      Keyturn definitively refused the API key or refresh token
    + NoCredentialsError            no API key and no refresh token left to try
    + KeyturnUnavailableError       Keyturn unreachable, 5xx or 429 after the retries ran out
    + TokenEndpointError            any other refusal, or a response that is not a token

Only `CredentialsRejectedError` means a credential was thrown away; after every other
error the client still holds its key and refresh token and the next call tries again.
"""

from __future__ import annotations

from keyturn.errors import KeyturnError

__all__ = [
    "ClientError",
    "CredentialsRejectedError",
    "KeyturnUnavailableError",
    "NoCredentialsError",
    "TokenEndpointError",
]


class ClientError(KeyturnError):
    """Base class of the errors `keyturn.client` raises.

    ``status_code`` and ``error_code`` are those of Keyturn's answer when there was one.
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, error_code: str | None = None
    ) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        if error_code is not None:
            self.error_code = error_code


class CredentialsRejectedError(ClientError):
    """Keyturn answered ``invalid_grant`` or ``invalid_client``: the credential is gone.

    The refused API key or refresh token has been discarded (and the refresh-token
    callback told). Retrying cannot help: issue a new API key, or give the client one.
    """

    error_code = "invalid_grant"
    status_code = 400


class NoCredentialsError(ClientError):
    """There is neither an API key nor a refresh token to get an access token with."""

    error_code = "invalid_client"
    status_code = 401


class KeyturnUnavailableError(ClientError):
    """Keyturn could not be reached, or answered 5xx or 429, on every attempt.

    The API key and refresh token are kept; call again later, not sooner than
    ``retry_after`` seconds when Keyturn said so.
    """

    error_code = "temporarily_unavailable"
    status_code = 503

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, error_code=error_code)
        self.retry_after = retry_after


class TokenEndpointError(ClientError):
    """Keyturn refused the token request for another reason, or did not answer with a token.

    ``error_code`` is the RFC 6749 §5.2 code (``invalid_scope``, ``invalid_request``, ...):
    usually a configuration mistake such as asking for a scope the key does not have.
    Credentials are kept.
    """

    error_code = "invalid_request"
    status_code = 400
