"""The README's Python example runs and prints what its comment promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) == 1

    result = subprocess.run(  # noqa: S603 -- our own README, run by our interpreter
        [sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=60, check=True
    )

    assert result.stdout == "key:k1 ['read']\n"
