"""The serving process keeps start-up objects out of the garbage collector (issue 19: p99)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc
from keyturn.server.app import create_app
from keyturn.server.runner import GC_YOUNG_THRESHOLD, settle_heap

app = create_app
before = gc.get_freeze_count()
settle_heap()
print(before, gc.get_freeze_count(), gc.get_threshold()[0] == GC_YOUNG_THRESHOLD)
"""


def test_settle_heap_freezes_what_start_up_left_and_raises_the_young_threshold() -> None:
    result = subprocess.run(  # noqa: S603 -- this interpreter, a fixed script
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )

    before, after, threshold = result.stdout.split()
    assert int(before) == 0
    assert int(after) > 10_000  # the modules, the app factory, SQLAlchemy, pydantic...
    assert threshold == "True"
