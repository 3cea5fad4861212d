"""``jwthenticator`` as Keyturn's drop-in client provides it (test shim)."""
