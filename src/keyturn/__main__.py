"""``python -m keyturn``: the same as the ``keyturn`` command."""

from __future__ import annotations

from keyturn.cli import main

__all__ = ["main"]

if __name__ == "__main__":  # spawned server workers import this module as __mp_main__
    main()
