"""The documentation a newcomer reads stays navigable: a short README, a page per backend, links
that resolve, and no references to issue numbers nobody in the repository can look up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from evitdeploy.backends import BACKENDS

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MARKDOWN = [README, *sorted(DOCS.rglob("*.md"))]
# the backends this package ships; one registered from another distribution documents itself
SHIPPED = sorted(b.folder for b in BACKENDS.values() if not getattr(b, "package", ""))

# [text](target) and ![alt](target), not inside inline code; a target may carry a "title"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`[^`\n]*`")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
ISSUE_NUMBER = re.compile(r"\bissues?[ _#-]*\d+", re.I)
SOURCES = ("README.md", "docs", "evitdeploy", "tests", "benchmarks", "tools")
SOURCE_SUFFIXES = {".md", ".py", ".sh", ".toml", ".txt", ".cfg", ".yml", ".yaml"}


def relative_links(markdown: Path) -> list[str]:
    """Every link target in a Markdown file that points into the repository (no URL, no bare anchor)."""
    text = CODE_SPAN.sub("", FENCE.sub("", markdown.read_text(encoding="utf-8")))
    targets = [match.group(1) for match in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I) and not t.startswith("#")]


def test_the_readme_is_at_most_300_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines: move detail to a page under docs/"


@pytest.mark.parametrize("folder", SHIPPED)
def test_every_registered_backend_has_its_page(folder):
    page = DOCS / "backends" / f"{folder}.md"
    assert page.is_file(), f"backend {folder!r} is registered but {page.relative_to(ROOT)} does not exist"


def test_the_readme_links_every_backend_page():
    linked = {(README.parent / link.split("#")[0]).resolve() for link in relative_links(README)}
    missing = [folder for folder in SHIPPED if (DOCS / "backends" / f"{folder}.md").resolve() not in linked]
    assert not missing, f"README.md does not link docs/backends/ pages of: {', '.join(missing)}"


@pytest.mark.parametrize("markdown", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(markdown):
    broken = [link for link in relative_links(markdown) if not (markdown.parent / link.split("#")[0]).exists()]
    assert not broken, f"{markdown.relative_to(ROOT)} links to missing files: {broken}"


def test_the_link_check_sees_links_and_skips_code_and_urls(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "[a](a.md) ![b](img/b.png) [c](https://example.com/c.md) [d](#anchor) [e](e.md#part)\n`[f](f.md)`\n```\n[g](g.md)\n```\n",
        encoding="utf-8",
    )
    assert relative_links(page) == ["a.md", "img/b.png", "e.md#part"]


def _source_files():
    for name in SOURCES:
        path = ROOT / name
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from (p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts)


def test_no_file_cites_an_issue_number():
    """An issue number means nothing to a reader of this repository: say what the check is for.
    (Upstream references such as pytorch/executorch#22851 name their repository and stay.)"""
    this_file = Path(__file__).resolve()
    cited = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}"
        for path in _source_files()
        if path.resolve() != this_file
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if ISSUE_NUMBER.search(line)
    ]
    assert not cited, "issue numbers in:\n" + "\n".join(cited)


def test_the_issue_pattern_matches_the_spellings_seen():
    for cited in ("Issue 9's GPU checks", "issue 16 items 1, 7", "the issue-17 targets", '(issue 19, "Proof")', "issues #3"):
        assert ISSUE_NUMBER.search(cited), cited
    for fine in ("pytorch/executorch#22851", "efficientvit#113/#142", "an issue with 3 causes"):
        assert not ISSUE_NUMBER.search(fine), fine
