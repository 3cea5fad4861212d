"""``python -m keyturn.cli``: the same as the ``keyturn`` command."""

from __future__ import annotations

from keyturn.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
