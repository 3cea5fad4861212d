"""Route helpers shared by several route families (today: the OAuth 2.0 token endpoints)."""

__all__: list[str] = []
