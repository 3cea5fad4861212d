"""Keyturn's sans-I/O core: keys, tokens, secrets and the claims policy.

Nothing in this package performs I/O or imports asyncio, a database driver or a web
framework; ``tests/core/test_purity.py`` checks that. Callers pass ``now`` and keys in.
"""
