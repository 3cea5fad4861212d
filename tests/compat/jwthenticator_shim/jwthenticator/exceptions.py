"""``jwthenticator.exceptions`` -> the same classes in `keyturn.compat.jwthenticator`."""

from keyturn.compat.jwthenticator import (
    AuthenticationError,
    InvalidServerURLError,
    IsKeyRegisteredError,
    MissingCredentialsError,
    RefreshError,
    RegisterKeyError,
)

__all__ = [
    "AuthenticationError",
    "InvalidServerURLError",
    "IsKeyRegisteredError",
    "MissingCredentialsError",
    "RefreshError",
    "RegisterKeyError",
]
