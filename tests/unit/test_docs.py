"""The project carries its own docs: every page the code, the README and the docs cite is in the repository, and
nothing cites a file outside it (the design note is docs/design.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    p
    for folder in ("orchestrator", "launch", "benchmarks", "hydra_plugins", "tests", "docs", "docker", "dashboards")
    for p in (ROOT / folder).rglob("*")
    if p.suffix in {".py", ".md", ".yaml", ".yml", ".toml"} and p.is_file()
] + [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
CITED = re.compile(r"(?<![\w/.-])((?:docs|orchestrator|benchmarks|dashboards|docker)/[\w./-]+\.(?:md|csv|json|yaml))")
OUTSIDE = re.compile(r"DESIGN\.md|\.\./shared|shared/seeds|STYLE\.md|ENVIRONMENT\.md")


def test_the_design_note_is_in_the_repository_and_links_every_page() -> None:
    note = (ROOT / "docs" / "design.md").read_text()
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"design.md"}
    assert pages <= set(re.findall(r"\]\(([\w-]+\.md)\)", note))


def test_no_file_cites_a_path_that_is_not_in_the_repository() -> None:
    problems = []
    for path in SOURCES:
        if path == Path(__file__):
            continue
        text, name = path.read_text(errors="replace"), str(path.relative_to(ROOT))
        problems += [f"{name} cites {m.group(0)}, outside the repository" for m in OUTSIDE.finditer(text)]
        problems += [f"{name} cites {c}" for c in CITED.findall(text) if not (ROOT / c.rstrip(".")).exists()]
    assert not problems, "\n".join(problems)
