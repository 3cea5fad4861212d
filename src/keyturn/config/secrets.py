"""Settings for the server's secrets: the key-encryption key, the pepper, a signing key."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

__all__ = ["SecretSettings"]


class SecretSettings(BaseModel):
    """Where the KEK, the pepper and an imported signing key come from."""

    kek: SecretStr | None = Field(
        None, description="Key-encryption key(s), base64url, comma-separated; first seals."
    )
    kek_file: Path | None = Field(None, description="File holding the KEK(s), one per line.")
    pepper: SecretStr | None = Field(None, description="Pepper for key hashes, base64url.")
    pepper_file: Path | None = Field(None, description="File holding the pepper.")
    signing_key_pem: SecretStr | None = Field(
        None, description="Import this PEM private key as the active signing key (migration)."
    )
    signing_key_file: Path | None = Field(None, description="Import the PEM key in this file.")
