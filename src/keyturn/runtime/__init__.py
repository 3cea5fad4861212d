"""The composition root shared by the server and the CLI (see `keyturn.runtime.secrets`)."""

__all__: list[str] = []
