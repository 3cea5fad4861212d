"""``jwthenticator.client`` -> `keyturn.compat.jwthenticator`."""

from keyturn.compat.jwthenticator import Client, InternalClient

__all__ = ["Client", "InternalClient"]
