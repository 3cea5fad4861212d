"""Source comments cite only what the repository holds (docs/architecture.md, docs/threats.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THREAT_ID = re.compile(r"\bT-[A-Z]{2,5}-\d{2}\b")
#: Documents that once lived outside the repository and must not be cited.
OUTSIDE = re.compile(r"shared/research|research/\w+\.md|DEVELOPERS\.md")


def _files() -> list[Path]:
    trees = ("src", "tests", "bench", "examples", "docs")
    return sorted(
        path
        for tree in trees
        for path in (ROOT / tree).rglob("*")
        if path.suffix in {".py", ".md", ".toml"} and path.is_file()
    )


def test_every_cited_threat_id_is_in_the_catalogue() -> None:
    catalogue = set(THREAT_ID.findall((ROOT / "docs" / "threats.md").read_text("utf-8")))
    cited = {
        (path.relative_to(ROOT).as_posix(), threat)
        for path in _files()
        for threat in THREAT_ID.findall(path.read_text("utf-8"))
    }

    assert len(catalogue) > 80
    assert sorted((path, threat) for path, threat in cited if threat not in catalogue) == []


def test_no_file_cites_a_document_outside_the_repository() -> None:
    citing = [
        path.relative_to(ROOT).as_posix()
        for path in [*_files(), ROOT / "README.md"]
        if path != Path(__file__).resolve() and OUTSIDE.search(path.read_text("utf-8"))
    ]

    assert citing == []


@pytest.mark.parametrize("text", ["see shared/research/security.md", "(DEVELOPERS.md)"])
def test_an_outside_citation_is_detected(text: str) -> None:
    assert OUTSIDE.search(text)
