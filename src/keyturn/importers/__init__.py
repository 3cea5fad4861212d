"""Importers: carry another key server's keys, tokens and signing key into Keyturn.

`keyturn.importers.jwthenticator` reads a JWThenticator 1.6.3 database (``keyturn import
jwthenticator``); see docs/migrate-from-jwthenticator.md.
"""
