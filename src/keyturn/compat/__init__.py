"""Drop-in replacements for the APIs Keyturn grew out of (apijwt, JWThenticator)."""
