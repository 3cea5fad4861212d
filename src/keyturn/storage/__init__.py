"""Storage: the repository interface (`keyturn.storage.base`) and its SQL implementation.

`keyturn.storage.sql.SQLStorage` runs on SQLite (the zero-setup default) and PostgreSQL;
`keyturn.storage.migrate` brings a database's schema up to date.
"""
